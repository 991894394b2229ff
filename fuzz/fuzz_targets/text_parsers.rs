//! Every other text sockscope reads from outside, or writes from outside values: a label
//! value rendered into the exposition (it must stay on its one line), the Accept and
//! Authorization headers, OTEL_* pairs, /proc files, durations and
//! sizes from flags. No panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let rendered = sockscope::export::text::one_label_line(text);
    assert_eq!(rendered.lines().count(), 1, "{rendered:?}");
    let _ = sockscope::export::text::wants_openmetrics(Some(text));
    let _ = sockscope::export::web::basic_credentials(text);
    for (k, v) in sockscope::config::otlp::pairs(text) {
        assert!(!k.contains(','), "{k:?}");
        let _ = v;
    }
    let _ = sockscope::config::otlp::percent_decode(text);
    let _ = sockscope::ebpf::preflight::parse_cap_eff(text);
    let _ = sockscope::ebpf::preflight::cgroup2_mounts(text);
    let _ = sockscope::ebpf::preflight::parse_port_range(text);
    let _ = sockscope::config::parse_interval(text);
    let _ = sockscope::config::parse_bytes(text);
    let _ = sockscope::config::parse_expiry(text);
    let _ = sockscope::fault::parse(&[text.to_string()]);
});
