//! cgroup id -> cgroup path -> workload.
//!
//! The kernel reports the owner of a socket as a cgroup v2 id, which is the inode number of the
//! cgroup's directory (`cgroup_id()` is `kernfs_node` id, include/linux/cgroup.h). The resolver
//! walks the cgroup tree below the attach point to map ids to paths, and parses the path into a
//! workload name: the container id for container runtimes, else the systemd unit.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tracing::debug;

/// Local identity of a socket owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Path relative to the cgroup v2 mount, starting with `/`.
    pub path: String,
    /// systemd unit, container id or last path component; empty for the root cgroup.
    pub workload: String,
}

/// Resolves cgroup ids by walking the cgroup tree, with a cache.
pub struct Resolver {
    mount: PathBuf,
    root: PathBuf,
    cache: HashMap<u64, Owner>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
}

impl Resolver {
    /// `mount` is the cgroup2 mount point, `root` the directory sockscope is attached to.
    pub fn new(mount: PathBuf, root: PathBuf, min_rescan: Duration) -> Self {
        Resolver { mount, root, cache: HashMap::new(), last_scan: None, min_rescan }
    }

    /// The owner of cgroup `id`; rescans the tree (at most once per `min_rescan`) on a miss.
    /// Unknown ids (cgroup already removed) resolve to an empty owner.
    pub fn resolve(&mut self, id: u64) -> Owner {
        if let Some(o) = self.cache.get(&id) {
            return o.clone();
        }
        let due = self.last_scan.is_none_or(|t| t.elapsed() >= self.min_rescan);
        if due {
            self.scan();
            if let Some(o) = self.cache.get(&id) {
                return o.clone();
            }
        }
        debug!(cgroup_id = id, "cgroup id not found below the attach point");
        Owner::default()
    }

    /// Walks the tree below the attach point and records every cgroup's id.
    pub fn scan(&mut self) {
        self.last_scan = Some(Instant::now());
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else { continue };
            let rel = relative_path(&self.mount, &dir);
            self.cache.entry(meta.ino()).or_insert_with(|| Owner { workload: workload_of(&rel), path: rel });
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(entry.path());
                }
            }
        }
    }
}

fn relative_path(mount: &Path, dir: &Path) -> String {
    match dir.strip_prefix(mount) {
        Ok(rel) if rel.as_os_str().is_empty() => "/".to_string(),
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => dir.display().to_string(),
    }
}

/// Container runtimes' scope names: `<prefix><64 hex>.scope` (systemd driver).
const CONTAINER_SCOPE_PREFIXES: [&str; 5] = ["docker-", "cri-containerd-", "crio-", "libpod-", "containerd-"];

/// Derives the workload from a cgroup path:
/// - a container id (first 12 hex digits, as `docker ps` shows) when a path component is a
///   container scope (`docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
///   `libpod-<id>.scope`) or a bare 64-hex id (cgroupfs driver: `/docker/<id>`,
///   `/kubepods/burstable/pod<uid>/<id>`);
/// - else the deepest systemd unit (`.service` or `.scope`), so `/system.slice/nginx.service`
///   and a unit's sub-cgroups give `nginx.service`;
/// - else the last component (a hand-made cgroup); empty for the root cgroup.
pub fn workload_of(path: &str) -> String {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for c in components.iter().rev() {
        if let Some(id) = container_id(c) {
            return id.chars().take(12).collect();
        }
    }
    if let Some(unit) = components.iter().rev().find(|c| c.ends_with(".service") || c.ends_with(".scope")) {
        return (*unit).to_string();
    }
    components.last().map(|c| (*c).to_string()).unwrap_or_default()
}

fn container_id(component: &str) -> Option<&str> {
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if is_id(component) {
        return Some(component);
    }
    let stem = component.strip_suffix(".scope")?;
    CONTAINER_SCOPE_PREFIXES.iter().find_map(|p| stem.strip_prefix(p)).filter(|id| is_id(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn systemd_units() {
        assert_eq!(workload_of("/system.slice/nginx.service"), "nginx.service");
        assert_eq!(workload_of("/system.slice/nginx.service/worker"), "nginx.service");
        assert_eq!(workload_of("/user.slice/user-1000.slice/session-3.scope"), "session-3.scope");
        assert_eq!(
            workload_of("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"),
            "foo.service"
        );
    }

    #[test]
    fn container_scopes() {
        assert_eq!(workload_of(&format!("/system.slice/docker-{ID}.scope")), "0123456789ab");
        assert_eq!(
            workload_of(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
            )),
            "0123456789ab"
        );
        assert_eq!(workload_of(&format!("/machine.slice/libpod-{ID}.scope/container")), "0123456789ab");
        assert_eq!(workload_of(&format!("/kubepods.slice/crio-{ID}.scope")), "0123456789ab");
    }

    #[test]
    fn cgroupfs_driver() {
        assert_eq!(workload_of(&format!("/docker/{ID}")), "0123456789ab");
        assert_eq!(workload_of(&format!("/kubepods/burstable/pod5678/{ID}")), "0123456789ab");
    }

    #[test]
    fn plain_and_root() {
        assert_eq!(workload_of("/"), "");
        assert_eq!(workload_of(""), "");
        assert_eq!(workload_of("/mytest/child"), "child");
        // Not a container id: wrong length.
        assert_eq!(workload_of("/system.slice/docker-abc.scope"), "docker-abc.scope");
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative_path(Path::new("/sys/fs/cgroup"), Path::new("/sys/fs/cgroup")), "/");
        assert_eq!(relative_path(Path::new("/sys/fs/cgroup"), Path::new("/sys/fs/cgroup/a/b")), "/a/b");
    }

    #[test]
    fn resolves_real_tree() {
        // A directory tree stands in for cgroupfs: ids are inode numbers either way.
        let tmp = std::env::temp_dir().join(format!("sockscope-resolver-{}", std::process::id()));
        let unit = tmp.join("system.slice/demo.service");
        fs::create_dir_all(&unit).expect("mkdir");
        let id = fs::metadata(&unit).expect("stat").ino();
        let mut r = Resolver::new(tmp.clone(), tmp.clone(), Duration::ZERO);
        let owner = r.resolve(id);
        assert_eq!(owner.path, "/system.slice/demo.service");
        assert_eq!(owner.workload, "demo.service");
        assert_eq!(r.resolve(u64::MAX), Owner::default());
        fs::remove_dir_all(&tmp).expect("cleanup");
    }
}
