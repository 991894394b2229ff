//! The seccomp profile the agent's image is tested with (`deploy/seccomp/sockscope.json`):
//! the system calls the agent makes, plus the few its container runtime makes between loading
//! the filter and starting the agent, nothing else. It is built into the binary so that the
//! DaemonSet's init container puts exactly the profile of this build where the kubelet reads
//! Localhost profiles (`--install-seccomp-profile`): image and profile cannot drift apart.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// The profile, in the OCI runtime spec's seccomp format (what the kubelet's Localhost
/// profiles, containerd, CRI-O and podman read).
pub const PROFILE: &str = include_str!("../../deploy/seccomp/sockscope.json");

/// Why the profile could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating the directory, writing or renaming the file failed.
    #[error("cannot write the seccomp profile to {path}: {source}")]
    Write {
        /// The file (or its directory) that could not be written.
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes [`PROFILE`] to `path`, creating its directory. Atomically (a file beside it, then a
/// rename): a runtime starting a container meanwhile reads the old profile or the new one,
/// never part of one.
pub fn install(path: &Path) -> Result<(), Error> {
    let fail = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.as_deref().unwrap_or("sockscope.json"),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(PROFILE.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_is_an_allow_list() {
        let p: serde_json::Value = serde_json::from_str(PROFILE).expect("valid JSON");
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let names: Vec<&str> = p["syscalls"][0]["names"]
            .as_array()
            .expect("names")
            .iter()
            .filter_map(|n| n.as_str())
            .collect();
        // What the agent cannot run without, and what it never needs.
        for needed in ["bpf", "membarrier", "epoll_pwait", "rt_sigreturn"] {
            assert!(names.contains(&needed), "{needed} missing");
        }
        for refused in [
            "ptrace",
            "mount",
            "init_module",
            "kexec_load",
            "unshare",
            "bpf_x",
        ] {
            assert!(!names.contains(&refused), "{refused} allowed");
        }
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, names, "names sorted and unique");
    }

    #[test]
    fn install_writes_the_profile_and_replaces_an_old_one() {
        let dir = std::env::temp_dir().join(format!("sockscope-seccomp-{}", std::process::id()));
        let path = dir.join("profiles/sockscope.json");
        install(&path).expect("install");
        std::fs::write(&path, "old").expect("overwrite");
        install(&path).expect("install again");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), PROFILE);
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .collect();
        assert_eq!(left.len(), 1, "no temporary file left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn install_into_a_file_fails_with_the_path() {
        let file = std::env::temp_dir().join(format!("sockscope-seccomp-f-{}", std::process::id()));
        std::fs::write(&file, "").expect("file");
        let e = install(&file.join("sockscope.json")).expect_err("a file is no directory");
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        let _ = std::fs::remove_file(&file);
    }
}
