//! Every other text sockscope reads from outside: the exposition text the OTLP exporter
//! converts, the Accept and Authorization headers, OTEL_* pairs, /proc files, durations and
//! sizes from flags. No panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let families = sockscope::export::otlp::snapshot::parse(text);
    let _ = families.len();
    let _ = sockscope::export::format::to_prometheus_text(text);
    let _ = sockscope::export::format::wants_openmetrics(Some(text));
    let _ = sockscope::export::web::basic_credentials(text);
    for (k, v) in sockscope::export::otlp::pairs(text) {
        assert!(!k.contains(','), "{k:?}");
        let _ = v;
    }
    let _ = sockscope::export::otlp::percent_decode(text);
    let _ = sockscope::ebpf::preflight::parse_cap_eff(text);
    let _ = sockscope::ebpf::preflight::cgroup2_mounts(text);
    let _ = sockscope::ebpf::preflight::parse_port_range(text);
    let _ = sockscope::config::parse_interval(text);
    let _ = sockscope::config::parse_bytes(text);
    let _ = sockscope::config::parse_expiry(text);
    let _ = sockscope::fault::parse(&[text.to_string()]);
});
