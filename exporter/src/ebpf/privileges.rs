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

use caps::{CapSet, Capability, CapsHashSet};

use super::error::{Error, Result};

/// What stays after the programs are attached: `open_by_handle_at()` on cgroup ids.
pub const KEEP: &[Capability] = &[Capability::CAP_DAC_READ_SEARCH];

fn err(what: &str, e: caps::errors::CapsError) -> Error {
    Error::Privileges(format!("{what}: {e}"))
}

/// The calling thread's effective set.
pub fn effective() -> Result<CapsHashSet> {
    caps::read(None, CapSet::Effective).map_err(|e| err("capget", e))
}

/// What [`reduce_to`] achieved.
#[derive(Debug)]
pub struct Reduced {
    /// The new effective set.
    pub effective: CapsHashSet,
    /// Why capabilities stayed in the bounding set, if they did (EPERM without CAP_SETPCAP):
    /// the other sets are reduced either way, and without them an execve could not regain
    /// any (no_new_privs is set too).
    pub bounding: Option<String>,
}

/// Reduces the calling thread's effective, permitted and inheritable sets to `keep` (only
/// capabilities it has), clears the ambient set, and drops the rest from the bounding set
/// where allowed (needs CAP_SETPCAP).
pub fn reduce_to(keep: &[Capability]) -> Result<Reduced> {
    let have = effective()?;
    let keep: CapsHashSet = keep.iter().copied().filter(|c| have.contains(c)).collect();
    // Bounding set first: dropping from it needs CAP_SETPCAP, which goes below. Only what this
    // kernel knows: PR_CAPBSET_DROP refuses the rest.
    let mut bounding = None;
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap)
            && let Err(e) = caps::drop(None, CapSet::Bounding, cap)
        {
            bounding.get_or_insert(e.to_string());
        }
    }
    // Kernels before 4.3 have no ambient set: nothing to clear there.
    let _ = caps::clear(None, CapSet::Ambient);
    // Effective before permitted: the effective set must stay within the permitted one.
    caps::set(None, CapSet::Effective, &keep).map_err(|e| err("capset", e))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| err("capset", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| err("capset", e))?;
    Ok(Reduced {
        effective: effective()?,
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

/// Names of the capabilities in a set, in the kernel's order, for the log (`net_admin`, ...).
pub fn names(set: &CapsHashSet) -> Vec<String> {
    let mut caps: Vec<Capability> = set.iter().copied().collect();
    caps.sort_by_key(|c| c.index());
    caps.iter()
        .map(|c| {
            let name = c.to_string().to_ascii_lowercase();
            name.strip_prefix("cap_").unwrap_or(&name).to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_kernel_order() {
        let set = CapsHashSet::from([
            Capability::CAP_BPF,
            Capability::CAP_NET_ADMIN,
            Capability::CAP_PERFMON,
        ]);
        assert_eq!(names(&set), ["net_admin", "perfmon", "bpf"]);
        assert!(names(&CapsHashSet::new()).is_empty());
    }

    #[test]
    fn reduces_a_threads_capabilities() {
        // On a thread of its own: capabilities are per thread, the test runner's stay.
        std::thread::spawn(|| {
            let before = effective().expect("capget");
            let reduced = reduce_to(KEEP).expect("capset");
            let after = reduced.effective;
            let want: CapsHashSet = KEEP
                .iter()
                .copied()
                .filter(|c| before.contains(c))
                .collect();
            assert_eq!(after, want);
            no_new_privs().expect("no_new_privs");
            assert!(has_no_new_privs());
            // What the kernel itself reports for the thread.
            let mask: u64 = after.iter().map(|c| c.bitmask()).sum();
            let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
            assert!(
                status.contains(&format!("CapEff:\t{mask:016x}")),
                "{status}"
            );
            assert!(
                status.contains(&format!("CapPrm:\t{mask:016x}")),
                "{status}"
            );
            assert!(status.contains("CapInh:\t0000000000000000"), "{status}");
            assert!(status.contains("CapAmb:\t0000000000000000"), "{status}");
            if reduced.bounding.is_none() {
                assert!(
                    status.contains(&format!("CapBnd:\t{mask:016x}")),
                    "{status}"
                );
            }
        })
        .join()
        .expect("thread");
    }
}
