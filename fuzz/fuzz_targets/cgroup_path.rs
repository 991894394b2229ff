//! cgroup paths as the kernel names them: kubepods (systemd and cgroupfs drivers, every QoS
//! class, runtime prefixes), container runtimes' and podman pods' cgroups, and units. No panic;
//! a pod cgroup's UID is canonical and its container id hex; a host container's and pod's short
//! ids are 12 hex digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockscope::identity::{cgroup::host_owner, kubepods::parse};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let owner = host_owner(path);
    for id in [&owner.container, &owner.pod] {
        assert!(
            id.is_empty() || (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())),
            "{owner:?}"
        );
    }
    assert!(owner.pod.is_empty() || !owner.container.is_empty(), "{owner:?}");
    if let Some(pod) = parse(path) {
        assert_eq!(pod.uid.len(), 36, "{pod:?}");
        assert!(sockscope::kubernetes::objects::parse_uid(&pod.uid).is_some(), "{pod:?}");
        if let Some(id) = &pod.container_id {
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{pod:?}");
        }
    }
});
