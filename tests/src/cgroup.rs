//! cgroups: the cgroup v2 mount, each test's own subtree, and the network namespaces the
//! kernel recorded for a cgroup's sockets.

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use crate::process::Proc;

/// The cgroup v2 mount (hybrid hosts mount it at /sys/fs/cgroup/unified).
pub fn cgroup2_mount() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    for line in mountinfo.lines() {
        if let Some((left, right)) = line.split_once(" - ")
            && right.starts_with("cgroup2 ")
            && let Some(mp) = left.split_whitespace().nth(4)
        {
            return PathBuf::from(mp);
        }
    }
    panic!("no cgroup2 mount: these tests need cgroup v2");
}

pub(crate) static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A per-test unique small number (for names and addresses).
pub fn unique() -> u32 {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    (std::process::id().wrapping_mul(31).wrapping_add(n * 7)) % 250 + 1
}

/// A fresh path in the temp directory, for a file a test creates to signal a child (a fault
/// trigger, a hold file): unique to this process and call, and absent.
pub fn signal_file(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let p = std::env::temp_dir().join(format!("sockscope-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A test's own cgroup subtree: `root` is what sockscope attaches to, children hold processes.
pub struct TestCgroup {
    pub root: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let base = cgroup2_mount().join("sockscope-e2e");
        let _ = fs::create_dir_all(&base);
        let root = base.join(format!(
            "{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&root).expect("create test cgroup");
        TestCgroup { root }
    }

    /// Creates (if needed) child cgroup `child` and returns its path.
    pub fn child(&self, child: &str) -> PathBuf {
        let p = self.root.join(child);
        fs::create_dir_all(&p).expect("create child cgroup");
        p
    }

    /// Spawns `cmd` inside child cgroup `child` (moved there before exec).
    pub fn spawn(&self, child: &str, cmd: &mut Command) -> Proc {
        self.move_before_exec(cmd, child);
        Proc::spawn(cmd)
    }

    /// Makes `cmd` move itself into child cgroup `child` between fork and exec.
    pub fn move_before_exec(&self, cmd: &mut Command, child: &str) {
        let procs = self.child(child).join("cgroup.procs");
        let procs_c = std::ffi::CString::new(procs.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs_c.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0\n".as_ptr().cast(), 2);
                libc::close(fd);
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Kill whatever is left, then remove the tree bottom-up.
        let _ = fs::write(self.root.join("cgroup.kill"), "1");
        for _ in 0..50 {
            let mut dirs = vec![];
            collect_dirs(&self.root, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            let mut ok = true;
            for d in dirs {
                if fs::remove_dir(&d).is_err() {
                    ok = false;
                }
            }
            if ok {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Network namespace cookies the kernel recorded for the cgroup at `dir` in the `CGROUP_NETNS`
/// maps of the running agents (`bpftool map dump`), as raw values.
pub fn kernel_cgroup_netns(dir: &Path) -> Vec<u64> {
    use std::os::unix::fs::MetadataExt;
    let id = fs::metadata(dir).expect("cgroup dir").ino();
    let out = Command::new("bpftool")
        .args(["map", "dump", "name", "CGROUP_NETNS", "-j"])
        .output()
        .expect("bpftool (installed by scripts/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout);
    // [{"key":["0x39",...],"value":["0x03",...]}, ...]: 8 little-endian bytes each.
    let bytes = |s: &str| -> u64 {
        let v: Vec<u8> = s
            .split(',')
            .filter_map(|b| {
                u8::from_str_radix(b.trim().trim_matches('"').trim_start_matches("0x"), 16).ok()
            })
            .collect();
        v.iter().rev().fold(0u64, |a, b| (a << 8) | *b as u64)
    };
    let mut found = Vec::new();
    for entry in text.split("{\"key\":[").skip(1) {
        let Some((key, rest)) = entry.split_once(']') else {
            continue;
        };
        let Some(value) = rest
            .split_once("\"value\":[")
            .and_then(|(_, v)| v.split_once(']'))
        else {
            continue;
        };
        if bytes(key) == id {
            found.push(bytes(value.0));
        }
    }
    found
}
