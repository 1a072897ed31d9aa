//! The restart policy as a pure state machine: crashes in, decisions out. Retry with
//! exponential backoff while the crash count within the window allows it; then go down
//! the fallback ladder rung by rung (the devices of `RestartPolicy::fallback` in order,
//! then optionally smaller models); then give up.
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
    /// The rung's name: its label if it has one, else its device's. The ladder compares
    /// rungs by it, so a CPU labelled "accelerator" is not the "cpu" rung.
    pub fn label(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.device.to_string())
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
    /// The next entry of `policy.fallback` to try.
    next_device: usize,
    /// The rungs (by label) given up on so far: the ladder never goes back to one.
    abandoned: Vec<String>,
}

impl CrashPolicy {
    pub fn new(policy: RestartPolicy) -> Self {
        CrashPolicy { policy, crashes: VecDeque::new(), next_device: 0, abandoned: vec![] }
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

    /// The next rung down, for a crash loop or an unrecoverable error on this one: the
    /// next device of the ladder not given up on yet (`auto` names no other device: it
    /// is skipped), same model; when the devices are exhausted, the next smaller model on
    /// this rung; then nothing.
    pub fn next_rung(&mut self, rung: &Rung, reason: &str) -> Decision {
        self.crashes.clear();
        self.abandoned.push(rung.label());
        while let Some(&device) = self.policy.fallback.get(self.next_device) {
            self.next_device += 1;
            if device == DeviceChoice::Auto || self.abandoned.contains(&device.to_string()) {
                continue;
            }
            return Decision::FallBack {
                to: Rung { device, label: None, size: rung.size },
                reason: reason.to_string(),
            };
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

    fn policy(max_retries: u32, fallback: &[DeviceChoice], smaller: bool) -> CrashPolicy {
        CrashPolicy::new(RestartPolicy {
            max_retries,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            fallback: fallback.to_vec(),
            smaller_model: smaller,
        })
    }

    fn on(device: DeviceChoice, size: Option<ModelSize>) -> Rung {
        Rung { device, label: None, size }
    }

    fn mps(size: Option<ModelSize>) -> Rung {
        on(DeviceChoice::Mps, size)
    }

    /// Where a crash loop on `rung` leads (retries 0, so every crash abandons the rung).
    fn fall(p: &mut CrashPolicy, rung: &Rung) -> Option<Rung> {
        match p.on_crash(Instant::now(), rung, "SIGABRT") {
            Decision::FallBack { to, .. } => Some(to),
            Decision::GiveUp { .. } => None,
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn retries_with_exponential_backoff_capped_at_the_maximum() {
        let mut p = policy(4, &[DeviceChoice::Cpu], false);
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
        let mut p = policy(2, &[DeviceChoice::Cpu], false);
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
        assert!(matches!(p.on_crash(t, &on(DeviceChoice::Cpu, None), "SIGSEGV"), Decision::Retry { attempt: 1, .. }));
    }

    #[test]
    fn crashes_outside_the_window_are_forgotten() {
        let mut p = policy(1, &[DeviceChoice::Cpu], false);
        let t = Instant::now();
        assert!(matches!(p.on_crash(t, &mps(None), "x"), Decision::Retry { attempt: 1, .. }));
        assert!(matches!(p.on_crash(t + Duration::from_secs(61), &mps(None), "x"), Decision::Retry { attempt: 1, .. }));
    }

    #[test]
    fn a_labelled_cpu_counts_as_its_own_rung_so_the_cpu_rung_follows_it() {
        let mut p = policy(0, &[DeviceChoice::Cpu], false);
        let acc = Rung { device: DeviceChoice::Cpu, label: Some("accelerator".into()), size: None };
        assert_eq!(fall(&mut p, &acc), Some(on(DeviceChoice::Cpu, None)));
    }

    #[test]
    fn the_ladder_is_walked_in_its_order_one_rung_per_exhausted_device() {
        let mut p = policy(0, &[DeviceChoice::Mps, DeviceChoice::Cpu], false);
        let cuda = on(DeviceChoice::Cuda, Some(ModelSize::Small));
        let next = fall(&mut p, &cuda).unwrap();
        assert_eq!(next, mps(Some(ModelSize::Small)), "the first rung, same model");
        let next = fall(&mut p, &next).unwrap();
        assert_eq!(next, on(DeviceChoice::Cpu, Some(ModelSize::Small)));
        assert_eq!(fall(&mut p, &next), None, "the ladder is exhausted and smaller models are off");
    }

    #[test]
    fn the_ladder_skips_the_device_it_starts_on_devices_given_up_on_and_auto() {
        // Starting on the CPU, `["cpu"]` offers nothing: the CPU is what just failed.
        let mut p = policy(0, &[DeviceChoice::Cpu], false);
        assert_eq!(fall(&mut p, &on(DeviceChoice::Cpu, None)), None);
        // cpu → mps, then not back to the CPU that already failed; auto is no device.
        let mut p = policy(0, &[DeviceChoice::Auto, DeviceChoice::Mps, DeviceChoice::Cpu], false);
        assert_eq!(fall(&mut p, &on(DeviceChoice::Cpu, None)), Some(mps(None)));
        assert_eq!(fall(&mut p, &mps(None)), None);
    }

    #[test]
    fn an_empty_ladder_never_changes_device() {
        let mut p = policy(0, &[], false);
        assert_eq!(fall(&mut p, &mps(None)), None);
    }

    #[test]
    fn cpu_then_smaller_model_then_gives_up() {
        let mut p = policy(0, &[DeviceChoice::Cpu], true);
        let small = mps(Some(ModelSize::Small));
        let cpu = fall(&mut p, &small).unwrap();
        assert_eq!(cpu, on(DeviceChoice::Cpu, Some(ModelSize::Small)));
        let tiny = fall(&mut p, &cpu).unwrap();
        assert_eq!(tiny, on(DeviceChoice::Cpu, Some(ModelSize::Tiny)), "the devices are exhausted: a smaller model");
        assert_eq!(fall(&mut p, &tiny), None, "nothing is smaller than tiny");
    }
}
