//! The driver (the machine's I/O edge) with real processes and real time, but no engine:
//! the "workers" are shell one-liners that die or hang. The recovery logic itself is
//! specified in `machine`'s unit tests; these check that the edge carries it out —
//! spawning, the stderr tail, a SIGKILL at the machine's deadline, a clean shutdown.
use sam2_api::device::DeviceChoice;
use sam2_api::events::{EngineEvent, EngineState};
use sam2_supervisor::{start, RestartPolicy, SupervisorHandle, SupervisorOptions, Watchdog};
use std::time::{Duration, Instant};

fn options(dir: &std::path::Path, script: &str) -> SupervisorOptions {
    let mut o = SupervisorOptions::new(dir.join("model.pt"), None).unwrap();
    o.worker_command = vec!["sh".into(), "-c".into(), script.into()];
    o.session_dir = dir.join("session");
    o.device = DeviceChoice::Cpu;
    o.restart = RestartPolicy {
        max_retries: 1,
        window: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        fallback: vec![],
        smaller_model: false,
    };
    o
}

/// Events until `done` (panics after 20 s, listing them).
fn until(h: &mut SupervisorHandle, mut done: impl FnMut(&EngineEvent) -> bool) -> Vec<EngineEvent> {
    let t = Instant::now();
    let mut seen = vec![];
    while t.elapsed() < Duration::from_secs(20) {
        if let Some(e) = h.recv_timeout(Duration::from_millis(200)) {
            let stop = done(&e);
            seen.push(e);
            if stop {
                return seen;
            }
        }
    }
    panic!("timed out; events: {seen:#?}");
}

#[test]
fn a_worker_that_aborts_is_reported_with_its_last_words_retried_and_then_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start(options(dir.path(), "echo 'about to abort' >&2; kill -ABRT $$")).unwrap();
    let events = until(&mut h, |e| matches!(e, EngineEvent::State(EngineState::Stopped)));
    h.shutdown();
    let deaths: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::WorkerDied { reason, stderr_tail } => Some((reason.clone(), stderr_tail.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(deaths.len(), 2, "the first death and its one retry: {events:#?}");
    for (reason, tail) in deaths {
        assert!(reason.starts_with("SIGABRT"), "{reason}");
        assert_eq!(tail, ["about to abort"], "every line is in before the exit is reported");
    }
}

#[test]
fn a_worker_that_never_answers_is_killed_at_the_load_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path(), "exec sleep 60");
    o.watchdog = Watchdog {
        heartbeat_timeout: Duration::from_millis(100),
        progress_timeout: Duration::from_secs(60),
        load_timeout: Duration::from_millis(700),
    };
    let t = Instant::now();
    let mut h = start(o).unwrap();
    let events = until(&mut h, |e| matches!(e, EngineEvent::WorkerDied { .. }));
    let took = t.elapsed();
    h.shutdown();
    let Some(EngineEvent::WorkerDied { reason, .. }) = events.last() else { unreachable!() };
    assert!(reason.contains("watchdog") && reason.contains("no answer while starting"), "{reason}");
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(5), "killed at the deadline: {took:?}");
}

#[test]
fn shutdown_ends_a_worker_that_ignores_its_stdin_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(options(dir.path(), "exec sleep 60")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    h.shutdown(); // asked, then killed after the grace
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
