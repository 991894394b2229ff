//! Dropping capabilities once the programs are attached.
//!
//! Loading and attaching need CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (or CAP_SYS_ADMIN); after
//! that the agent only reads maps through file descriptors it already holds, mmaps, and reads
//! the cgroup tree, none of which the kernel checks capabilities for (map fds carry their
//! access, kernel/bpf/syscall.c `map_get_sys_perms`). Detaching is closing the link fds. What
//! stays: CAP_DAC_READ_SEARCH if the agent had it, for `open_by_handle_at()` on cgroup ids.
//!
//! Capabilities are per thread, so this runs on the main thread before any other exists;
//! threads started later inherit the reduced sets.

use crate::error::{Error, Result};

/// CAP_DAC_READ_SEARCH (include/uapi/linux/capability.h).
pub const CAP_DAC_READ_SEARCH: u32 = 2;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn get() -> std::io::Result<[Data; 2]> {
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: header and two data words as capget(2) expects for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(data)
}

/// The effective set as a bit mask.
pub fn effective() -> std::io::Result<u64> {
    let d = get()?;
    Ok(u64::from(d[0].effective) | (u64::from(d[1].effective) << 32))
}

/// What [`reduce_to`] achieved.
#[derive(Debug)]
pub struct Reduced {
    /// The new effective mask.
    pub effective: u64,
    /// Why capabilities stayed in the bounding set, if they did (EPERM without CAP_SETPCAP):
    /// the other sets are reduced either way, and without them an execve could not regain
    /// any (no_new_privs is set too).
    pub bounding: Option<std::io::Error>,
}

/// Reduces the calling thread's effective, permitted and inheritable sets to `keep` (only
/// capabilities it has), clears the ambient set, and drops the rest from the bounding set
/// where allowed (needs CAP_SETPCAP).
pub fn reduce_to(keep: u64) -> Result<Reduced> {
    let err = |what: &str, e: std::io::Error| Error::Privileges(format!("{what}: {e}"));
    let have = effective().map_err(|e| err("capget", e))?;
    let keep = keep & have;
    // Bounding set first: dropping from it needs CAP_SETPCAP, which goes below.
    let mut bounding = None;
    for cap in 0..64u32 {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                // EINVAL: past the last capability this kernel knows.
                if e.raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                bounding.get_or_insert(e);
            }
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: keep as u32,
            permitted: keep as u32,
            inheritable: 0,
        },
        Data {
            effective: (keep >> 32) as u32,
            permitted: (keep >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: header and two data words as capset(2) expects for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if r != 0 {
        return Err(err("capset", std::io::Error::last_os_error()));
    }
    Ok(Reduced {
        effective: effective().map_err(|e| err("capget", e))?,
        bounding,
    })
}

/// Sets no_new_privs on the calling thread (inherited by threads it creates): no execve can
/// grant privileges again (setuid binaries, file capabilities). See
/// Documentation/userspace-api/no_new_privs.rst.
pub fn no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r != 0 {
        return Err(Error::Privileges(format!(
            "prctl(PR_SET_NO_NEW_PRIVS): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Whether no_new_privs is set on the calling thread.
pub fn has_no_new_privs() -> bool {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 }
}

/// Names of the capabilities in a mask, for the log.
pub fn names(mask: u64) -> Vec<&'static str> {
    const NAMES: [&str; 41] = [
        "chown",
        "dac_override",
        "dac_read_search",
        "fowner",
        "fsetid",
        "kill",
        "setgid",
        "setuid",
        "setpcap",
        "linux_immutable",
        "net_bind_service",
        "net_broadcast",
        "net_admin",
        "net_raw",
        "ipc_lock",
        "ipc_owner",
        "sys_module",
        "sys_rawio",
        "sys_chroot",
        "sys_ptrace",
        "sys_pacct",
        "sys_admin",
        "sys_boot",
        "sys_nice",
        "sys_resource",
        "sys_time",
        "sys_tty_config",
        "mknod",
        "lease",
        "audit_write",
        "audit_control",
        "setfcap",
        "mac_override",
        "mac_admin",
        "syslog",
        "wake_alarm",
        "block_suspend",
        "audit_read",
        "perfmon",
        "bpf",
        "checkpoint_restore",
    ];
    (0..64)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| NAMES.get(b).copied().unwrap_or("unknown"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_masks() {
        assert_eq!(
            names((1 << 12) | (1 << 38) | (1 << 39)),
            ["net_admin", "perfmon", "bpf"]
        );
        assert!(names(0).is_empty());
    }

    #[test]
    fn reduces_a_threads_capabilities() {
        // On a thread of its own: capabilities are per thread, the test runner's stay.
        std::thread::spawn(|| {
            let before = effective().expect("capget");
            let after = reduce_to(1 << CAP_DAC_READ_SEARCH)
                .expect("capset")
                .effective;
            assert_eq!(after, before & (1 << CAP_DAC_READ_SEARCH));
            no_new_privs().expect("no_new_privs");
            assert!(has_no_new_privs());
            let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
            assert!(
                status.contains(&format!("CapEff:\t{after:016x}")),
                "{status}"
            );
        })
        .join()
        .expect("thread");
    }
}
