//! The restart policy as a pure state machine: crashes in, decisions out. Retry with
//! exponential backoff while the crash count within the window allows it; then go down
//! the fallback ladder (accelerator → cpu, then optionally a smaller model); then give up.
use super::options::RestartPolicy;
use sam2_api::device::DeviceChoice;
use sam2_api::model::ModelSize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One rung of the ladder: where the worker runs and with which model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rung {
    pub device: DeviceChoice,
    /// A name that overrides the device's for display, faults and the ladder ("accelerator"
    /// makes a CPU worker count as an accelerator in tests).
    pub label: Option<String>,
    pub size: Option<ModelSize>,
}

impl Rung {
    pub fn label(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.device.to_string())
    }

    /// Whether falling back to the CPU means anything from here.
    pub fn is_accelerator(&self) -> bool {
        match &self.label {
            Some(l) => l != "cpu",
            None => self.device != DeviceChoice::Cpu,
        }
    }

    pub fn cpu(&self) -> Rung {
        Rung { device: DeviceChoice::Cpu, label: None, size: self.size }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Restart on the same rung after `delay`; `attempt` counts crashes in the window.
    Retry {
        attempt: u32,
        delay: Duration,
    },
    /// Abandon this rung for `to` (a device or model change: the bank is not reusable).
    FallBack {
        to: Rung,
        reason: String,
    },
    GiveUp {
        reason: String,
    },
}

#[derive(Debug)]
pub struct CrashPolicy {
    policy: RestartPolicy,
    crashes: VecDeque<Instant>,
}

impl CrashPolicy {
    pub fn new(policy: RestartPolicy) -> Self {
        CrashPolicy { policy, crashes: VecDeque::new() }
    }

    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
        self.policy.initial_backoff.saturating_mul(factor).min(self.policy.max_backoff)
    }

    /// A worker on `rung` died at `now` (`why` names how).
    pub fn on_crash(&mut self, now: Instant, rung: &Rung, why: &str) -> Decision {
        self.crashes.push_back(now);
        while let Some(&first) = self.crashes.front() {
            if now.duration_since(first) > self.policy.window {
                self.crashes.pop_front();
            } else {
                break;
            }
        }
        let attempt = self.crashes.len() as u32;
        if attempt <= self.policy.max_retries {
            return Decision::Retry { attempt, delay: self.backoff(attempt) };
        }
        self.crashes.clear();
        let exhausted =
            format!("{} crashes within {}s on {} (last: {why})", attempt, self.policy.window.as_secs(), rung.label());
        self.next_rung(rung, &exhausted)
    }

    /// The next rung down, for a crash loop or an unrecoverable error on this one.
    pub fn next_rung(&mut self, rung: &Rung, reason: &str) -> Decision {
        self.crashes.clear();
        if rung.is_accelerator() && self.policy.fallback_to_cpu {
            return Decision::FallBack { to: rung.cpu(), reason: reason.to_string() };
        }
        if self.policy.smaller_model {
            if let Some(smaller) = rung.size.and_then(|s| s.smaller()) {
                return Decision::FallBack {
                    to: Rung { size: Some(smaller), ..rung.clone() },
                    reason: format!("{reason}; trying the {} model", smaller.name()),
                };
            }
        }
        Decision::GiveUp { reason: reason.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_retries: u32, smaller: bool) -> CrashPolicy {
        CrashPolicy::new(RestartPolicy {
            max_retries,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            fallback_to_cpu: true,
            smaller_model: smaller,
        })
    }

    fn mps(size: Option<ModelSize>) -> Rung {
        Rung { device: DeviceChoice::Mps, label: None, size }
    }

    #[test]
    fn retries_with_exponential_backoff_capped_at_the_maximum() {
        let mut p = policy(4, false);
        let t = Instant::now();
        let delays: Vec<_> = (0..4)
            .map(|i| match p.on_crash(t + Duration::from_secs(i), &mps(None), "SIGABRT") {
                Decision::Retry { delay, .. } => delay.as_millis(),
                d => panic!("{d:?}"),
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 350, 350]);
    }

    #[test]
    fn falls_back_from_an_accelerator_to_cpu_when_retries_are_exhausted() {
        let mut p = policy(2, false);
        let t = Instant::now();
        assert!(matches!(p.on_crash(t, &mps(None), "SIGABRT"), Decision::Retry { attempt: 1, .. }));
        assert!(matches!(p.on_crash(t, &mps(None), "SIGABRT"), Decision::Retry { attempt: 2, .. }));
        match p.on_crash(t, &mps(None), "SIGABRT") {
            Decision::FallBack { to, reason } => {
                assert_eq!(to.device, DeviceChoice::Cpu);
                assert!(reason.contains("3 crashes") && reason.contains("SIGABRT"), "{reason}");
            }
            d => panic!("{d:?}"),
        }
        // The count starts over on the new rung.
        assert!(matches!(p.on_crash(t, &mps(None).cpu(), "SIGSEGV"), Decision::Retry { attempt: 1, .. }));
    }

    #[test]
    fn crashes_outside_the_window_are_forgotten() {
        let mut p = policy(1, false);
        let t = Instant::now();
        assert!(matches!(p.on_crash(t, &mps(None), "x"), Decision::Retry { attempt: 1, .. }));
        assert!(matches!(p.on_crash(t + Duration::from_secs(61), &mps(None), "x"), Decision::Retry { attempt: 1, .. }));
    }

    #[test]
    fn a_labelled_cpu_counts_as_the_accelerator_rung() {
        let mut p = policy(0, false);
        let acc = Rung { device: DeviceChoice::Cpu, label: Some("accelerator".into()), size: None };
        match p.on_crash(Instant::now(), &acc, "SIGABRT") {
            Decision::FallBack { to, .. } => {
                assert_eq!(to, Rung { device: DeviceChoice::Cpu, label: None, size: None })
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn cpu_then_smaller_model_then_gives_up() {
        let mut p = policy(0, true);
        let t = Instant::now();
        let cpu = mps(Some(ModelSize::Small)).cpu();
        match p.on_crash(t, &cpu, "killed (OOM?)") {
            Decision::FallBack { to, .. } => assert_eq!(to.size, Some(ModelSize::Tiny)),
            d => panic!("{d:?}"),
        }
        let tiny = Rung { size: Some(ModelSize::Tiny), ..cpu };
        assert!(matches!(p.on_crash(t, &tiny, "killed (OOM?)"), Decision::GiveUp { .. }));
    }
}
