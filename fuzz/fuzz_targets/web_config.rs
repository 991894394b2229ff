//! The web config file (exporter-toolkit's format). No panic; an error is one line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = sockscope::export::web::parse(text) {
        assert!(!e.contains('\n'), "{e:?}");
    }
});
