//! The process's own metrics, in the names Prometheus clients use
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...),
//! read from `/proc` at each scrape.
//!
//! Written here on `procfs` (what kubert-prometheus-process uses) because
//! that crate's current release is built on prometheus-client 0.23, whose
//! registry cannot hold a collector for this host's 0.24.

use procfs::WithCurrentSystemInfo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads `/proc/self` when scraped; off Linux (or without `/proc`) it
/// reports nothing.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(process) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = process.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                stat.rss_bytes().get(),
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes (the wasm instance pool reserves address space, not memory)",
                stat.vsize,
            )?;
            gauge(
                &mut encoder,
                "process_threads",
                "OS threads in the process",
                u64::try_from(stat.num_threads).unwrap_or_default(),
            )?;
        }
        if let Ok(open) = process.fd_count() {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors",
                open as u64,
            )?;
        }
        if let Ok(limits) = process.limits()
            && let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            gauge(
                &mut encoder,
                "process_max_fds",
                "The most file descriptors the process may open",
                max,
            )?;
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn the_process_reports_its_memory_cpu_and_files() {
        let mut registry = Registry::with_prefix("leasehold");
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        // CPU time may still be 0 ticks in a test this short; the rest not.
        assert!(
            text.contains("leasehold_process_cpu_seconds_total "),
            "{text}"
        );
        for name in [
            "leasehold_process_resident_memory_bytes ",
            "leasehold_process_open_fds ",
            "leasehold_process_threads ",
        ] {
            let line = text
                .lines()
                .find(|line| line.starts_with(name))
                .unwrap_or_else(|| panic!("{name} in\n{text}"));
            let value: f64 = line[name.len()..].trim().parse().unwrap();
            assert!(value > 0.0, "{line}");
        }
    }
}
