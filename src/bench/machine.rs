//! What a bench ran on, so a row can be compared with another machine's: the CPU model and
//! its cores from /proc/cpuinfo, the GPUs, the libtorch the binary was built against.
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    /// Physical cores (distinct (package, core) pairs), when /proc/cpuinfo says.
    pub cpu_cores: Option<usize>,
    /// Logical CPUs this process may use.
    pub cpu_threads: usize,
    /// GPU names (CUDA devices as the worker reported them; MPS as "Apple MPS").
    pub gpus: Vec<String>,
    pub libtorch: String,
    pub os: String,
    pub sam2_tui: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let (cpu_model, cpu_cores) = parse_cpuinfo(&cpuinfo);
        Machine {
            cpu_model: cpu_model.unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            cpu_cores,
            cpu_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            gpus: vec![],
            libtorch: crate::worker::stats::torch_version(),
            os: format!("{} {}", std::env::consts::OS, kernel_release().unwrap_or_default()).trim().to_string(),
            sam2_tui: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Records a GPU name once (each CUDA row's worker reports it).
    pub fn add_gpu(&mut self, name: &str) {
        if !name.is_empty() && !self.gpus.iter().any(|g| g == name) {
            self.gpus.push(name.to_string());
        }
    }
}

/// The first "model name" and the number of distinct (physical id, core id) pairs.
pub fn parse_cpuinfo(text: &str) -> (Option<String>, Option<usize>) {
    let mut model = None;
    let mut cores = BTreeSet::new();
    let mut package = String::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "model name" if model.is_none() => model = Some(value.to_string()),
            "physical id" => package = value.to_string(),
            "core id" => {
                cores.insert((package.clone(), value.to_string()));
            }
            _ => {}
        }
    }
    (model, (!cores.is_empty()).then_some(cores.len()))
}

fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_cpuinfo;

    #[test]
    fn cpuinfo_gives_the_model_and_counts_hyperthreads_once() {
        let text = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nphysical id\t: 0\ncore id\t: 0\n\n\
                    processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nphysical id\t: 0\ncore id\t: 0\n\n\
                    processor\t: 2\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\nphysical id\t: 0\ncore id\t: 1\n";
        let (model, cores) = parse_cpuinfo(text);
        assert_eq!(model.as_deref(), Some("Intel(R) Xeon(R) Platinum 8481C"));
        assert_eq!(cores, Some(2));
    }
}
