//! cgroup -> network namespace.
//!
//! Hostnames are cached per network namespace: what a pod resolved is what its containers
//! connect to, whichever container asked. The kernel reports sockets by cgroup, so the agent
//! maps a cgroup to the namespace of a process in it (`/proc/<pid>/ns/net`, whose inode number
//! identifies the namespace). All containers of a pod share the pod's namespace; on a plain host
//! most cgroups are in the host's.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Cached cgroups beyond this are forgotten at once (re-learnt on use).
const MAX_KNOWN: usize = 65536;
/// A cgroup without processes is not looked at again for this long.
const MISS_RETRY: Duration = Duration::from_secs(1);

/// Maps cgroups to network namespace ids (nsfs inode numbers).
pub struct NetnsResolver {
    mount: PathBuf,
    known: HashMap<u64, u64>,
    misses: HashMap<u64, Instant>,
}

impl NetnsResolver {
    /// `mount` is the cgroup2 mount point.
    pub fn new(mount: PathBuf) -> Self {
        NetnsResolver {
            mount,
            known: HashMap::new(),
            misses: HashMap::new(),
        }
    }

    /// The network namespace of cgroup `id` at `path` (relative to the mount). A namespace once
    /// found is kept, so a cgroup whose processes have exited keeps the namespace it had: the
    /// flows it left behind are still labelled with the names it resolved.
    pub fn netns_of(&mut self, id: u64, path: &str) -> Option<u64> {
        if let Some(ns) = self.known.get(&id) {
            return Some(*ns);
        }
        if path.is_empty()
            || self
                .misses
                .get(&id)
                .is_some_and(|t| t.elapsed() < MISS_RETRY)
        {
            return None;
        }
        let dir = self.mount.join(path.trim_start_matches('/'));
        match find(&dir) {
            Some(ns) => {
                if self.known.len() >= MAX_KNOWN {
                    self.known.clear();
                }
                self.misses.remove(&id);
                self.known.insert(id, ns);
                Some(ns)
            }
            None => {
                if self.misses.len() >= MAX_KNOWN {
                    self.misses.clear();
                }
                self.misses.insert(id, Instant::now());
                None
            }
        }
    }
}

/// The namespace of the first live process in `dir` or, for cgroups whose processes live in
/// children (a pod's cgroup holds its containers'), in its child cgroups.
fn find(dir: &Path) -> Option<u64> {
    if let Some(ns) = first_process_netns(dir) {
        return Some(ns);
    }
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| first_process_netns(&e.path()))
}

fn first_process_netns(dir: &Path) -> Option<u64> {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find_map(|pid| fs::metadata(format!("/proc/{pid}/ns/net")).ok())
        .map(|m| m.ino())
}

/// The network namespace of this process, for tests and the host's own sockets.
pub fn own_netns() -> Option<u64> {
    fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_namespace_through_a_fake_cgroup() {
        let dir = std::env::temp_dir().join(format!("sockscope-netns-{}", std::process::id()));
        let child = dir.join("pod").join("ctr");
        fs::create_dir_all(&child).expect("mkdir");
        fs::write(
            child.join("cgroup.procs"),
            format!("{}\n", std::process::id()),
        )
        .expect("write");
        let mut r = NetnsResolver::new(dir.clone());
        // The pod directory has no processes of its own: found through its child.
        assert_eq!(r.netns_of(1, "/pod"), own_netns());
        assert_eq!(r.netns_of(2, "/pod/ctr"), own_netns());
        // Kept after the processes are gone.
        fs::write(child.join("cgroup.procs"), "").expect("write");
        assert_eq!(r.netns_of(2, "/pod/ctr"), own_netns());
        assert_eq!(r.netns_of(3, "/missing"), None);
        assert_eq!(r.netns_of(4, ""), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
