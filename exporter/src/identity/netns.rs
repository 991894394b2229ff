//! cgroup -> network namespace.
//!
//! Hostnames are cached per network namespace: what a pod resolved is what its containers
//! connect to, whichever container asked. Namespaces are identified by the kernel's netns
//! cookie (`bpf_get_netns_cookie()`, `SO_NETNS_COOKIE`), which never repeats while the system
//! runs.
//!
//! The cgroup/sock_create program records, for every cgroup that creates a socket, the cookie of
//! the namespace it was created in (`CGROUP_NETNS`). That needs neither the host's PID namespace
//! nor access to other processes' `/proc` entries. For cgroups whose sockets all predate the
//! agent, the fallback asks a process of the cgroup: it enters `/proc/<pid>/ns/net` on a
//! short-lived thread and reads `SO_NETNS_COOKIE` from a socket made there (needs the host's
//! PID namespace and CAP_SYS_ADMIN; without them those cgroups stay unnamed).

use std::{
    collections::HashMap,
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData};

/// Cached cgroups beyond this are forgotten at once (re-learnt on use).
const MAX_KNOWN: usize = 65536;
/// A known cgroup's namespace is re-read from the kernel's record after this long.
const RECHECK: Duration = Duration::from_secs(10);
/// A cgroup whose namespace could not be found is not looked at again for this long.
const MISS_RETRY: Duration = Duration::from_secs(1);
/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h), Linux 5.14+.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// Maps cgroups to network namespace cookies.
pub struct NetnsResolver {
    mount: PathBuf,
    kernel: Option<BpfHashMap<MapData, u64, u64>>,
    known: HashMap<u64, (u64, Instant)>,
    misses: HashMap<u64, Instant>,
}

impl NetnsResolver {
    /// `mount` is the cgroup2 mount point; `kernel` the `CGROUP_NETNS` map, when loaded.
    pub fn new(mount: PathBuf, kernel: Option<BpfHashMap<MapData, u64, u64>>) -> Self {
        NetnsResolver {
            mount,
            kernel,
            known: HashMap::new(),
            misses: HashMap::new(),
        }
    }

    /// The network namespace of cgroup `id` at `path` (relative to the mount). The kernel's
    /// record wins (it follows a cgroup whose new sockets move to another namespace); a
    /// namespace found once is kept otherwise, so flows a cgroup left behind after its processes
    /// exited are still labelled with the names it resolved.
    pub fn netns_of(&mut self, id: u64, path: &str) -> Option<u64> {
        // Fresh enough: no syscall (this runs for every flow of every drain).
        if let Some((ns, at)) = self.known.get(&id)
            && at.elapsed() < RECHECK
        {
            return Some(*ns);
        }
        if let Some(ns) = self.kernel.as_ref().and_then(|m| m.get(&id, 0).ok()) {
            self.remember(id, ns);
            return Some(ns);
        }
        if let Some((ns, _)) = self.known.get(&id) {
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
                self.remember(id, ns);
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

    /// Forgets a removed cgroup.
    pub fn forget(&mut self, id: u64) {
        self.known.remove(&id);
        self.misses.remove(&id);
    }

    fn remember(&mut self, id: u64, ns: u64) {
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&id) {
            self.known.clear();
        }
        self.misses.remove(&id);
        self.known.insert(id, (ns, Instant::now()));
    }
}

/// The namespace of the first process in `dir` that can be entered or, for cgroups whose
/// processes live in children (a pod's cgroup holds its containers'), in its child cgroups.
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
        .find_map(|pid| netns_cookie_of(&format!("/proc/{pid}/ns/net")))
}

/// The cookie of the network namespace at `ns_path` (an nsfs file such as `/proc/1/ns/net`):
/// a thread enters it and asks a socket made there. Only that thread changes namespace, and it
/// ends right after.
pub fn netns_cookie_of(ns_path: &str) -> Option<u64> {
    let file = fs::File::open(ns_path).ok()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only, with a valid nsfs fd.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            current_netns_cookie()
        })
        .join()
        .ok()
        .flatten()
    })
}

/// The cookie of the calling thread's network namespace.
pub fn current_netns_cookie() -> Option<u64> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd was just returned by the kernel and is not owned elsewhere.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: a u64 buffer of the length passed.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == size_of::<u64>()).then_some(cookie)
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
        let own = current_netns_cookie();
        assert!(own.is_some());
        assert_eq!(netns_cookie_of("/proc/self/ns/net"), own);
        let mut r = NetnsResolver::new(dir.clone(), None);
        // The pod directory has no processes of its own: found through its child.
        assert_eq!(r.netns_of(1, "/pod"), own);
        assert_eq!(r.netns_of(2, "/pod/ctr"), own);
        // Kept after the processes are gone.
        fs::write(child.join("cgroup.procs"), "").expect("write");
        assert_eq!(r.netns_of(2, "/pod/ctr"), own);
        assert_eq!(r.netns_of(3, "/missing"), None);
        assert_eq!(r.netns_of(4, ""), None);
        assert_eq!(netns_cookie_of("/nonexistent"), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
