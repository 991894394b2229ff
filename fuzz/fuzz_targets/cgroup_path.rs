//! cgroup paths as the kernel names them: kubepods (systemd and cgroupfs drivers, every QoS
//! class, runtime prefixes) and units. No panic; a pod cgroup's UID is canonical and its
//! container id hex.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockscope::identity::{cgroup::workload_of, kubepods::parse};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let _ = workload_of(path);
    if let Some(pod) = parse(path) {
        assert_eq!(pod.uid.len(), 36, "{pod:?}");
        assert!(sockscope::kubernetes::objects::parse_uid(&pod.uid).is_some(), "{pod:?}");
        if let Some(id) = &pod.container_id {
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{pod:?}");
        }
    }
});
