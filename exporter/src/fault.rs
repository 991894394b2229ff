//! Faults the end-to-end tests inject into the real binary (a test aid, not a feature).
//!
//! The hidden flag `--fault <kind>=<file>` (repeatable) arms a fault that fires once `<file>`
//! exists, so a test decides the moment: it creates the file and measures what follows. Kinds:
//! - `drain-panic`: the drain thread panics at its next tick;
//! - `drain-stall`: the drain thread stops draining (sleeps) at its next tick;
//! - `drain-pause`: while the file exists, the drain thread skips its ticks (resuming when
//!   the file goes), so a test can put any amount of traffic into one drain interval;
//! - `dns-panic`: the DNS answer thread panics when it next wakes;
//! - `watch-panic`: every Kubernetes watch task panics at its next event;
//! - `map-delete`: while the file exists, deleting a drained map entry fails, and so does the
//!   zeroing the drain falls back to, as a kernel refusing both would.
//!
//! A hidden flag rather than a cargo feature: the binary the tests run is then the one that
//! ships, and a flag only whoever starts the agent can pass gives them no power they lack
//! (they could as well kill it). With no `--fault`, every check is a load of an empty list.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// What can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Panic in the drain thread.
    DrainPanic,
    /// The drain thread hangs.
    DrainStall,
    /// The drain thread waits while the trigger file exists.
    DrainPause,
    /// Panic in the DNS answer thread.
    DnsPanic,
    /// Panic in the Kubernetes watch tasks.
    WatchPanic,
    /// Map entry deletes (and the fallback zeroing) fail.
    MapDelete,
}

const KINDS: [(&str, Fault); 6] = [
    ("drain-panic", Fault::DrainPanic),
    ("drain-stall", Fault::DrainStall),
    ("drain-pause", Fault::DrainPause),
    ("dns-panic", Fault::DnsPanic),
    ("watch-panic", Fault::WatchPanic),
    ("map-delete", Fault::MapDelete),
];

static ARMED: OnceLock<Vec<(Fault, PathBuf)>> = OnceLock::new();

/// Parses `kind=file` specs.
pub fn parse(specs: &[String]) -> Result<Vec<(Fault, PathBuf)>, String> {
    specs
        .iter()
        .map(|spec| {
            let (kind, file) = spec
                .split_once('=')
                .ok_or_else(|| format!("--fault {spec:?}: write it as <kind>=<trigger file>"))?;
            let fault = KINDS
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, f)| *f)
                .ok_or_else(|| {
                    format!(
                        "--fault {spec:?}: unknown kind (one of {})",
                        KINDS.map(|(k, _)| k).join(", ")
                    )
                })?;
            if file.is_empty() {
                return Err(format!("--fault {spec:?}: the trigger file is empty"));
            }
            Ok((fault, PathBuf::from(file)))
        })
        .collect()
}

/// Arms the parsed faults for the rest of the process (once; later calls are ignored).
pub fn arm(faults: Vec<(Fault, PathBuf)>) {
    let _ = ARMED.set(faults);
}

/// Whether `fault` is armed and its trigger file exists.
pub fn fires(fault: Fault) -> bool {
    ARMED
        .get()
        .is_some_and(|armed| armed.iter().any(|(f, p)| *f == fault && exists(p)))
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let ok = parse(&["drain-panic=/tmp/x".into(), "map-delete=/y".into()]).expect("valid");
        assert_eq!(ok[0], (Fault::DrainPanic, PathBuf::from("/tmp/x")));
        assert_eq!(ok[1].0, Fault::MapDelete);
        for bad in ["drain-panic", "nope=/x", "dns-panic="] {
            let e = parse(&[bad.to_string()]).expect_err(bad);
            assert!(e.starts_with("--fault"), "{e}");
        }
        assert!(!fires(Fault::DrainStall));
    }
}
