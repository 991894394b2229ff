//! The decoder of forwarded DNS responses (hickory-proto): anything a pod can receive from
//! port 53, cut anywhere. No panic; every address it yields belongs to the question's chain,
//! and the name it yields is one the host cache would accept or refuse cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockscope::dns::answer::decode;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = decode(data) {
        assert!(!a.qname.is_empty());
        assert!(!a.qname.contains('\n'));
        let mut cache = sockscope::identity::hosts::HostCache::with_bytes(
            16,
            64 << 10,
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
        );
        let now = std::time::Instant::now();
        for (ip, ttl) in &a.addrs {
            let _ = cache.insert(1, *ip, &a.qname, *ttl, now);
            assert!(cache.bytes() <= 64 << 10);
        }
    }
});
