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
    /// The short id of the container runtime's pod (a podman pod) above the container, if any.
    pub pod: String,
    /// The short id of the container, if the cgroup is (inside) a container's.
    pub container: String,
}

impl Owner {
    /// The owner a cgroup path names.
    pub fn of_path(path: String) -> Self {
        let HostOwner {
            workload,
            pod,
            container,
        } = host_owner(&path);
        Owner {
            path,
            workload,
            pod,
            container,
        }
    }
}

/// Resolves cgroup ids, with a cache: first by file handle (exact, one syscall), else by
/// walking the tree below the attach point.
pub struct Resolver {
    mount: PathBuf,
    root: PathBuf,
    cache: HashMap<u64, Owner>,
    /// Ids that resolved to nothing, and when: not retried before `min_rescan`.
    misses: HashMap<u64, Instant>,
    min_rescan: Duration,
    /// Cached cgroups found removed, and since when: kept a while for their last counts.
    removed: HashMap<u64, Instant>,
}

impl Resolver {
    /// `mount` is the cgroup2 mount point, `root` the directory sockscope is attached to.
    pub fn new(mount: PathBuf, root: PathBuf, min_rescan: Duration) -> Self {
        Resolver {
            mount,
            root,
            cache: HashMap::new(),
            misses: HashMap::new(),
            min_rescan,
            removed: HashMap::new(),
        }
    }

    /// The owner of cgroup `id`. Unknown ids (cgroup already removed) resolve to an empty owner
    /// and are not looked up again for `min_rescan`.
    pub fn resolve(&mut self, id: u64) -> Owner {
        if let Some(o) = self.cache.get(&id) {
            return o.clone();
        }
        if self
            .misses
            .get(&id)
            .is_some_and(|t| t.elapsed() < self.min_rescan)
        {
            return Owner::default();
        }
        let found = self.by_handle(id).or_else(|| {
            self.scan();
            self.cache.get(&id).cloned()
        });
        match found {
            Some(o) => {
                self.misses.remove(&id);
                self.cache.insert(id, o.clone());
                o
            }
            None => {
                debug!(cgroup_id = id, "cgroup id not found below the attach point");
                self.misses.insert(id, Instant::now());
                Owner::default()
            }
        }
    }

    /// Whether cgroup `id` still exists (its directory is there); unknown ids do not.
    pub fn exists(&self, id: u64) -> bool {
        self.cache.get(&id).is_some_and(|o| {
            let dir = self.mount.join(o.path.trim_start_matches('/'));
            fs::metadata(dir).is_ok_and(|m| m.ino() == id)
        })
    }

    /// Forgets a removed cgroup (the id of a removed cgroup is never reused while the
    /// filesystem is mounted: kernfs ids are 64-bit and increase).
    pub fn forget(&mut self, id: u64) {
        self.cache.remove(&id);
        self.misses.remove(&id);
        self.removed.remove(&id);
    }

    /// Forgets cgroups removed at least `keep` ago (first seen missing by an earlier sweep),
    /// and misses older than the retry delay, so neither cache grows with churn.
    pub fn sweep(&mut self, keep: Duration) {
        let now = Instant::now();
        let ids: Vec<u64> = self.cache.keys().copied().collect();
        for id in ids {
            if self.exists(id) {
                self.removed.remove(&id);
            } else if now.saturating_duration_since(*self.removed.entry(id).or_insert(now)) >= keep
            {
                self.forget(id);
            }
        }
        let retry = self.min_rescan;
        self.misses.retain(|_, t| t.elapsed() < retry);
    }

    /// Cached cgroups.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Nothing cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Opens the cgroup directory from its id: kernfs ids are file handles of type
    /// `FILEID_KERNFS` (fs/kernfs/mount.c), so `open_by_handle_at()` finds it without a walk.
    fn by_handle(&self, id: u64) -> Option<Owner> {
        use std::os::fd::AsRawFd;
        const FILEID_KERNFS: libc::c_int = 0xfe;
        #[repr(C)]
        struct Handle {
            bytes: libc::c_uint,
            kind: libc::c_int,
            id: u64,
        }
        let mount = fs::File::open(&self.mount).ok()?;
        let mut handle = Handle {
            bytes: 8,
            kind: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` is a valid file_handle with 8 bytes of payload; the returned fd is
        // owned and closed below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount.as_raw_fd(),
                &mut handle as *mut Handle,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd was just returned by the kernel and is not owned elsewhere.
        let dir = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        let path = fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
        // Same inode check guards against a recycled id racing a removal.
        if dir.metadata().ok()?.ino() != id {
            return None;
        }
        Some(Owner::of_path(relative_path(&self.mount, &path)))
    }

    /// Walks the tree below the attach point and records every cgroup's id.
    pub fn scan(&mut self) {
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let rel = relative_path(&self.mount, &dir);
            self.cache
                .entry(meta.ino())
                .or_insert_with(|| Owner::of_path(rel));
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
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

/// Container runtimes' cgroup names: `<prefix><64 hex>.scope` (systemd driver), and for
/// podman also `libpod-<64 hex>` (cgroupfs driver, under `libpod_parent` or `--cgroup-parent`).
const CONTAINER_PREFIXES: [&str; 5] = [
    "docker-",
    "cri-containerd-",
    "crio-",
    "libpod-",
    "containerd-",
];

/// A runtime pod's cgroup above its containers' (podman: `machine-libpod_pod_<64 hex>.slice`
/// with systemd, the bare pod id with cgroupfs).
const POD_SLICE_PREFIX: &str = "machine-libpod_pod_";

/// What a cgroup path says of its owner on a host without Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOwner {
    /// The container's short id, else the deepest systemd unit, else the last component.
    pub workload: String,
    /// The short id of the runtime pod the container belongs to (podman pods), else empty.
    pub pod: String,
    /// The container's short id, else empty.
    pub container: String,
}

/// Derives the owner from a cgroup path:
/// - a container (short id: the first 12 hex digits, as `docker ps` and `podman ps` show) when a
///   path component is a container's: `docker-<id>.scope`, `cri-containerd-<id>.scope`,
///   `crio-<id>.scope`, `libpod-<id>.scope` (systemd driver), `libpod-<id>` (podman's cgroupfs
///   driver) or a bare 64-hex id (cgroupfs: `/docker/<id>`); the workload is the container, and
///   a podman pod above it (`machine-libpod_pod_<id>.slice`, or a bare 64-hex id above the
///   container's cgroup) gives the pod;
/// - else the deepest systemd unit (`.service` or `.scope`), so `/system.slice/nginx.service`
///   and a unit's sub-cgroups give `nginx.service`;
/// - else the last component (a hand-made cgroup); empty for the root cgroup.
pub fn host_owner(path: &str) -> HostOwner {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // The deepest container: a runtime may nest cgroups inside one (`.../container`).
    if let Some((i, id)) = components
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| container_id(c).map(|id| (i, id)))
    {
        let pod = components[..i]
            .iter()
            .rev()
            .find_map(|c| pod_id(c))
            .map(short_id)
            .unwrap_or_default();
        return HostOwner {
            workload: short_id(id),
            pod,
            container: short_id(id),
        };
    }
    let workload = components
        .iter()
        .rev()
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .or(components.last())
        .map(|c| (*c).to_string())
        .unwrap_or_default();
    HostOwner {
        workload,
        ..HostOwner::default()
    }
}

/// The workload a cgroup path names (see [`host_owner`]).
pub fn workload_of(path: &str) -> String {
    host_owner(path).workload
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

fn container_id(component: &str) -> Option<&str> {
    if is_id(component) {
        return Some(component);
    }
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    CONTAINER_PREFIXES
        .iter()
        .find_map(|p| stem.strip_prefix(p))
        .filter(|id| is_id(id))
}

fn pod_id(component: &str) -> Option<&str> {
    if is_id(component) {
        return Some(component);
    }
    component
        .strip_suffix(".slice")?
        .strip_prefix(POD_SLICE_PREFIX)
        .filter(|id| is_id(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn systemd_units() {
        assert_eq!(workload_of("/system.slice/nginx.service"), "nginx.service");
        assert_eq!(
            workload_of("/system.slice/nginx.service/worker"),
            "nginx.service"
        );
        assert_eq!(
            workload_of("/user.slice/user-1000.slice/session-3.scope"),
            "session-3.scope"
        );
        assert_eq!(
            workload_of("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"),
            "foo.service"
        );
    }

    #[test]
    fn container_scopes() {
        assert_eq!(
            workload_of(&format!("/system.slice/docker-{ID}.scope")),
            "0123456789ab"
        );
        assert_eq!(
            workload_of(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
            )),
            "0123456789ab"
        );
        assert_eq!(
            workload_of(&format!("/machine.slice/libpod-{ID}.scope/container")),
            "0123456789ab"
        );
        assert_eq!(
            workload_of(&format!("/kubepods.slice/crio-{ID}.scope")),
            "0123456789ab"
        );
    }

    const POD: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    #[test]
    fn podman_containers_and_pods() {
        let plain = HostOwner {
            workload: "0123456789ab".into(),
            pod: String::new(),
            container: "0123456789ab".into(),
        };
        let in_pod = HostOwner {
            pod: "fedcba987654".into(),
            ..plain.clone()
        };
        // cgroupfs driver (this machine kind: runc, --cgroup-manager cgroupfs), default parent
        // and a --cgroup-parent.
        assert_eq!(host_owner(&format!("/libpod_parent/libpod-{ID}")), plain);
        assert_eq!(host_owner(&format!("/ci/tests/libpod-{ID}")), plain);
        assert_eq!(
            host_owner(&format!("/libpod_parent/{POD}/libpod-{ID}")),
            in_pod
        );
        // systemd driver: scopes under machine.slice, a pod's slice above them, and the
        // sub-cgroup podman makes inside a container's scope on cgroup v2.
        assert_eq!(
            host_owner(&format!("/machine.slice/libpod-{ID}.scope")),
            plain
        );
        assert_eq!(
            host_owner(&format!("/machine.slice/libpod-{ID}.scope/container")),
            plain
        );
        assert_eq!(
            host_owner(&format!(
                "/machine.slice/machine-libpod_pod_{POD}.slice/libpod-{ID}.scope/container"
            )),
            in_pod
        );
        // conmon, the runtime's monitor beside each container, is not the container.
        assert_eq!(
            host_owner(&format!("/machine.slice/libpod-conmon-{ID}.scope")).workload,
            format!("libpod-conmon-{ID}.scope")
        );
        // Rootless podman under the user's systemd.
        assert_eq!(
            host_owner(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"
            )),
            plain
        );
    }

    #[test]
    fn cgroupfs_driver() {
        assert_eq!(workload_of(&format!("/docker/{ID}")), "0123456789ab");
        assert_eq!(
            workload_of(&format!("/kubepods/burstable/pod5678/{ID}")),
            "0123456789ab"
        );
    }

    #[test]
    fn plain_and_root() {
        assert_eq!(workload_of("/"), "");
        assert_eq!(workload_of(""), "");
        assert_eq!(workload_of("/mytest/child"), "child");
        // Not a container id: wrong length.
        assert_eq!(
            workload_of("/system.slice/docker-abc.scope"),
            "docker-abc.scope"
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/sys/fs/cgroup"), Path::new("/sys/fs/cgroup")),
            "/"
        );
        assert_eq!(
            relative_path(Path::new("/sys/fs/cgroup"), Path::new("/sys/fs/cgroup/a/b")),
            "/a/b"
        );
    }

    #[test]
    fn resolves_real_tree() {
        // A directory tree stands in for cgroupfs: ids are inode numbers either way.
        let tmp = std::env::temp_dir().join(format!("sockscope-resolver-{}", std::process::id()));
        let unit = tmp.join("system.slice/demo.service");
        fs::create_dir_all(&unit).expect("mkdir");
        let id = fs::metadata(&unit).expect("stat").ino();
        let mut r = Resolver::new(tmp.clone(), tmp.clone(), Duration::from_secs(60));
        let owner = r.resolve(id);
        assert_eq!(owner.path, "/system.slice/demo.service");
        assert_eq!(owner.workload, "demo.service");
        assert_eq!(r.resolve(u64::MAX), Owner::default());
        fs::remove_dir_all(&tmp).expect("cleanup");
    }
}
