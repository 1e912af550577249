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

/// A fake machine for tests of the CPU and memory thresholds (a real one can't be made busy
/// on demand): fixed readings, set with `GATEHOUSE_FAKE_METRICS=cpu=95,memory=90` (percent).
pub struct FakeMetrics {
    sample: Sample,
}

impl FakeMetrics {
    /// Parses `cpu=P,memory=P`; `None` when the text isn't that.
    pub fn parse(spec: &str) -> Option<Self> {
        let total: u64 = 16 << 30;
        let mut sample =
            Sample { total_memory_bytes: total, available_memory_bytes: total, ..Sample::default() };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=')?;
            let percent: f32 = value.trim().parse().ok().filter(|p| (0.0..=100.0).contains(p))?;
            match name.trim() {
                "cpu" => sample.cpu_percent = percent,
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss,
                    reason = "a percentage of 16 GiB"
                )]
                "memory" => {
                    sample.available_memory_bytes =
                        (total as f64 * (100.0 - f64::from(percent)) / 100.0) as u64;
                }
                _ => return None,
            }
        }
        Some(FakeMetrics { sample })
    }
}

impl MetricsSource for FakeMetrics {
    fn sample(&mut self) -> Sample {
        self.sample
    }

    fn cores(&self) -> usize {
        2
    }
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

#[cfg(test)]
mod fake_tests {
    use super::*;

    #[test]
    fn fake_metrics_report_what_they_are_told() {
        let mut fake = FakeMetrics::parse("cpu=5,memory=90").unwrap();
        let sample = fake.sample();
        assert!((sample.cpu_percent - 5.0).abs() < f32::EPSILON);
        assert_eq!(sample.available_memory_bytes, sample.total_memory_bytes / 10);
        assert!(FakeMetrics::parse("cpu=500").is_none());
        assert!(FakeMetrics::parse("disk=5").is_none());
    }
}
