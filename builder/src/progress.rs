//! Step lines on stderr, one when a stage starts and one when it ends with
//! its time, so a CI log shows where a build spent its minutes; the times
//! also go into the build summary.

use std::time::{Duration, Instant};

use anyhow::Result;

#[derive(Default)]
pub struct Stages {
    pub times: Vec<(&'static str, Duration)>,
}

impl Stages {
    pub fn run<T>(&mut self, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        log::info!("{name} ...");
        let start = Instant::now();
        let result = f();
        let took = start.elapsed();
        if result.is_ok() {
            log::info!("{name}: done in {:.1} s", took.as_secs_f64());
            self.times.push((name, took));
        }
        result
    }

    pub fn total(&self) -> Duration {
        self.times.iter().map(|(_, d)| *d).sum()
    }
}

/// `12.3 MiB`
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}
