//! The end-to-end tests, one binary with a module per area: the real sockscope binary and
//! eBPF programs against this kernel, real sockets, cgroups, namespaces, DNS servers,
//! Prometheus and Alertmanager. Compiled and linked once; `cargo test --test e2e <area>::`
//! runs one area (`cargo test --test e2e tcp::`).

mod agent;
mod alerts;
mod config;
mod dashboards;
mod deploy;
mod dns;
mod drops;
mod health;
mod image;
mod kubernetes;
mod otlp;
mod overflow;
mod package;
mod podman;
mod policy;
mod scenario;
mod tcp;
mod tcp_health;
mod udp;
mod web;
