//! Exposition of the series: Prometheus/OpenMetrics over HTTP.

pub mod format;
pub mod otlp;
pub mod prometheus;
pub mod web;

#[cfg(test)]
mod golden;
