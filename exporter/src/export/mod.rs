//! Everything made from a drain's snapshot: Prometheus text and OpenMetrics over HTTP, and
//! OTLP pushed to a collector.

pub mod otlp;
pub mod prometheus;
pub mod text;
pub mod web;
