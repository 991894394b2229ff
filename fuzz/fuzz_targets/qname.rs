//! Question names as label values: any bytes the kernel stores. The result is printable ASCII
//! (escapes for everything else), never empty, and bounded by the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockscope::identity::names::{presentation, qtype_name, rcode_name};

fuzz_target!(|data: &[u8]| {
    let name = presentation(data);
    assert!(!name.is_empty());
    assert!(name.bytes().all(|b| b.is_ascii_graphic()), "{name:?}");
    assert!(name.len() <= 4 * data.len() + 1);
    if data.len() >= 3 {
        let _ = qtype_name(u16::from_be_bytes([data[0], data[1]]));
        let _ = rcode_name(data[2]);
    }
});
