//! The YAML config file, parsed and applied over the defaults. No panic; an error is one line.
#![no_main]

use std::sync::OnceLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use sockscope::config::{Config, file::parse};

/// The defaults, parsed once: clap's parser costs more than the YAML.
fn defaults() -> &'static Config {
    static DEFAULTS: OnceLock<Config> = OnceLock::new();
    DEFAULTS.get_or_init(|| Config::try_parse_from(["sockscope"]).expect("defaults parse"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut config = defaults().clone();
    match parse(text).and_then(|f| f.apply(&mut config, &|_| false)) {
        Ok(()) => {
            let _ = sockscope::config::check(&config);
        }
        Err(e) => assert!(!e.contains('\n'), "{e:?}"),
    }
});
