//! Checks made before loading anything, so each missing prerequisite gets its own clear error
//! instead of an EPERM or EINVAL from deep inside the loader.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::error::{Error, Result};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails unless the process may load and attach cgroup eBPF programs.
pub fn check_privileges() -> Result<()> {
    let status = read("/proc/self/status")?;
    let effective = parse_cap_eff(&status).unwrap_or(0);
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_NET_ADMIN) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(Error::NotPrivileged { effective })
    }
}

/// The effective capability mask from /proc/self/status text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Fails unless the kernel exposes BTF.
pub fn check_btf() -> Result<()> {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Ok(())
    } else {
        Err(Error::NoBtf)
    }
}

/// A cgroup v2 mount and the directory inside it sockscope attaches to.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    /// Where the cgroup2 filesystem is mounted (cgroup paths are relative to this).
    pub mount: PathBuf,
    /// The directory programs are attached to (the mount itself unless --cgroup-root).
    pub attach: PathBuf,
}

/// Finds the cgroup v2 mount and validates `requested` (the --cgroup-root flag) against it.
pub fn cgroup_root(requested: Option<&Path>) -> Result<CgroupRoot> {
    let mountinfo = read("/proc/self/mountinfo")?;
    let mounts = cgroup2_mounts(&mountinfo);
    match requested {
        None => {
            // Prefer the unified layout's usual place; hybrid systems mount it elsewhere.
            let mount = mounts
                .iter()
                .find(|m| m.as_path() == Path::new("/sys/fs/cgroup"))
                .or_else(|| mounts.first())
                .cloned()
                .ok_or_else(|| {
                    Error::NoCgroupV2(
                        "no cgroup v2 filesystem is mounted (none in /proc/self/mountinfo): mount one, e.g. `mount -t cgroup2 none /sys/fs/cgroup`"
                            .into(),
                    )
                })?;
            Ok(CgroupRoot {
                attach: mount.clone(),
                mount,
            })
        }
        Some(path) => {
            let attach = fs::canonicalize(path)
                .map_err(|e| Error::NoCgroupV2(format!("--cgroup-root {}: {e}", path.display())))?;
            let mount = mounts
                .iter()
                .filter(|m| attach.starts_with(m))
                .max_by_key(|m| m.as_os_str().len())
                .cloned()
                .ok_or_else(|| {
                    Error::NoCgroupV2(format!(
                        "--cgroup-root {} is not inside a cgroup v2 mount (cgroup2 mounts: {})",
                        path.display(),
                        if mounts.is_empty() {
                            "none".to_string()
                        } else {
                            mounts
                                .iter()
                                .map(|m| m.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ))
                })?;
            Ok(CgroupRoot { mount, attach })
        }
    }
}

/// Mount points of cgroup2 filesystems in a mountinfo table.
pub fn cgroup2_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // "<id> <parent> <maj:min> <root> <mount point> <options> [optional...] - <fstype> ..."
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            if fstype != "cgroup2" {
                return None;
            }
            let mount_point = left.split_whitespace().nth(4)?;
            Some(PathBuf::from(unescape_mountinfo(mount_point)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Three octal digits; above \\377 it is no escape the kernel writes (and would
        // overflow a byte), so it stays as it is.
        let octal = (i + 3 < bytes.len())
            .then(|| &bytes[i + 1..i + 4])
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0')))
            .filter(|v| *v <= 0xff);
        if let Some(v) = octal {
            out.push(char::from(v as u8));
            i += 4;
        } else {
            out.push(bytes[i] as char);
            i += 1;
        }
    }
    out
}

/// The kernel's ephemeral port range for connect(), used to tell client from server on
/// connections that were already open when sockscope started.
pub fn ephemeral_port_range() -> (u16, u16) {
    const DEFAULT: (u16, u16) = (32768, 60999);
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_port_range(&s))
        .unwrap_or(DEFAULT)
}

/// `ip_local_port_range`'s two numbers, low then high.
pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().filter_map(|p| p.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
        _ => None,
    }
}

/// Whether the agent sees every process of the node: the TCP iterator walks the open files of
/// the tasks in the reader's PID namespace (`bpf_iter_task`, kernel/bpf/task_iter.c), so from a
/// nested PID namespace (a container without `hostPID`) it would miss other workloads' sockets.
/// A nested namespace shows as more than one pid on the `NSpid` line of /proc/self/status.
pub fn sees_every_process() -> std::result::Result<(), String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    match nspid_depth(&status) {
        Some(1) => Ok(()),
        Some(_) => Err(
            "the agent runs in a nested PID namespace and cannot see every \
             process's sockets (run it in the host PID namespace, e.g. hostPID: true)"
                .into(),
        ),
        None => Err("no NSpid line in /proc/self/status (kernel older than 4.1)".into()),
    }
}

/// The ids of the cgroup `root` and every cgroup below it: on cgroup v2 a cgroup's id is its
/// directory's inode number (`cgroup_id()` is the kernfs node id, include/linux/cgroup.h).
/// Directories that vanish during the walk are skipped.
pub fn cgroup_ids(root: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = fs::metadata(&dir) else {
            continue;
        };
        ids.push(meta.ino());
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        stack.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    ids
}

/// How many PID namespaces deep the process is: the number of pids on the `NSpid` line.
pub fn nspid_depth(status: &str) -> Option<usize> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let n = line.split_whitespace().count();
    (n > 0).then_some(n)
}

fn read(path: &str) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_above_a_byte_stay_as_they_are() {
        // Found by fuzzing (fuzz/regressions/text_parsers/mountinfo-octal-above-377).
        assert_eq!(unescape_mountinfo("a\\675b"), "a\\675b");
        assert_eq!(unescape_mountinfo("a\\040b"), "a b");
    }

    #[test]
    fn nested_pid_namespaces() {
        assert_eq!(nspid_depth("Name:\tx\nNSpid:\t4242\n"), Some(1));
        assert_eq!(nspid_depth("NSpid:\t4242\t7\t1\n"), Some(3));
        assert_eq!(nspid_depth("Name:\tx\n"), None);
        assert_eq!(nspid_depth("NSpid:\n"), None);
    }

    #[test]
    fn cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn finds_cgroup2_mounts() {
        let mi = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid shared:4 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid shared:5 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu rw shared:6 - cgroup cgroup rw,cpu
33 23 0:29 / /mnt/with\\040space rw - cgroup2 none rw
";
        assert_eq!(
            cgroup2_mounts(mi),
            vec![
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/mnt/with space")
            ]
        );
        assert!(cgroup2_mounts("").is_empty());
    }
}
