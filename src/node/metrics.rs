//! What a node measures about its machine for the heartbeat: CPU, memory and network rates
//! from the OS (sysinfo). Behind a trait, so tests can drive the thresholds with numbers of
//! their choosing.

use std::time::Instant;

/// One reading of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub cpu_percent: f32,
    pub available_memory_bytes: u64,
    pub total_memory_bytes: u64,
    pub network_in_bytes_per_second: u64,
    pub network_out_bytes_per_second: u64,
}

/// Where samples come from.
pub trait MetricsSource: Send {
    /// A fresh sample; rates cover the time since the previous call.
    fn sample(&mut self) -> Sample;
    /// Logical CPUs, for the default concurrency limit.
    fn cores(&self) -> usize;
}

/// The real machine, read through sysinfo.
pub struct SystemMetrics {
    system: Option<sysinfo::System>,
    networks: Option<sysinfo::Networks>,
    last: Instant,
    cores: usize,
}

impl SystemMetrics {
    /// Never fails: a platform sysinfo can't read reports zeros rather than stopping the node.
    pub fn new() -> Self {
        let mut system = sysinfo::System::new().ok();
        if let Some(system) = system.as_mut() {
            system.refresh_cpu_usage();
            system.refresh_memory();
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        SystemMetrics {
            system,
            networks: sysinfo::Networks::new_with_refreshed_list().ok(),
            last: Instant::now(),
            cores,
        }
    }
}

impl Default for SystemMetrics {
    fn default() -> Self {
        SystemMetrics::new()
    }
}

impl MetricsSource for SystemMetrics {
    fn sample(&mut self) -> Sample {
        let elapsed = self.last.elapsed().as_secs_f64().max(0.001);
        self.last = Instant::now();
        let mut sample = Sample::default();
        if let Some(system) = self.system.as_mut() {
            system.refresh_cpu_usage();
            system.refresh_memory();
            sample.cpu_percent = system.global_cpu_usage();
            sample.available_memory_bytes = system.available_memory();
            sample.total_memory_bytes = system.total_memory();
        }
        if let Some(networks) = self.networks.as_mut() {
            networks.refresh(true);
            let (received, sent) =
                networks.values().fold((0u64, 0u64), |(r, s), n| (r + n.received(), s + n.transmitted()));
            sample.network_in_bytes_per_second = per_second(received, elapsed);
            sample.network_out_bytes_per_second = per_second(sent, elapsed);
        }
        sample
    }

    fn cores(&self) -> usize {
        self.cores
    }
}

#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a rate for display and thresholds"
)]
fn per_second(bytes: u64, seconds: f64) -> u64 {
    (bytes as f64 / seconds) as u64
}

/// The default concurrency limit: `max(2, min(4 × cores, 2 × GiB of RAM))`.
pub fn default_concurrency(cores: usize, total_memory_bytes: u64) -> u32 {
    let by_cores = u64::try_from(cores).unwrap_or(u64::MAX).saturating_mul(4);
    let by_memory = (total_memory_bytes >> 30).saturating_mul(2);
    u32::try_from(by_cores.min(by_memory).max(2)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_concurrency_follows_its_formula() {
        assert_eq!(default_concurrency(2, 24 << 30), 8);
        assert_eq!(default_concurrency(16, 4 << 30), 8);
        assert_eq!(default_concurrency(1, 512 << 20), 2);
    }

    #[test]
    fn the_real_machine_reports_memory() {
        let mut metrics = SystemMetrics::new();
        let sample = metrics.sample();
        assert!(sample.total_memory_bytes > 0);
        assert!(sample.available_memory_bytes <= sample.total_memory_bytes);
        assert!(metrics.cores() >= 1);
    }
}
