//! Empty on the host: `exporter` lists this crate as a build dependency so cargo rebuilds the
//! eBPF object when it changes, which compiles this library for the host target.
#![no_std]
