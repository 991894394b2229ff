//! Exposition of the series: Prometheus/OpenMetrics over HTTP.

pub mod otlp;
pub mod prometheus;
pub mod text;
pub mod web;

#[cfg(test)]
mod golden;
