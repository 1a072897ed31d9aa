//! `serve --streams K`: sessions share engine workers, up to K to a worker (issue #18).
//! Each session is a stream of its worker (`sam2_supervisor::shared`): its clicks run
//! between two steps of whatever the others propagate, and the propagations of all run
//! in lockstep, one image-encoder batch and one tracking step a frame for all of them,
//! instead of K processes time-slicing the GPU. A session starts on the newest worker
//! with room, else on a new one; one worker without sessions is kept, started and loaded,
//! for the next session, and the others are stopped once their last session has closed.
//! Workers started before a switch of model, device or precision take no new session;
//! their open sessions move to workers of their own and are replayed on the new settings
//! (`sam2_supervisor::shared`), as are the sessions of a shared worker that gives up.
use crate::operator::Settings;
use sam2_supervisor::shared::{SharedSession, SharedWorker};
use sam2_supervisor::SupervisorOptions;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

pub struct SharedWorkers {
    /// Sessions a worker takes at most.
    per_worker: usize,
    /// Where each worker's own folder goes (the sessions' root).
    root: PathBuf,
    workers: Mutex<Vec<Shared>>,
}

/// One shared worker and the settings it was started with.
struct Shared {
    worker: Arc<SharedWorker>,
    /// The sessions' settings generation it runs (`Sessions::generation`).
    generation: u64,
    settings: Settings,
    /// Its own folder (what it writes beside the sessions' banks), removed once stopped.
    dir: PathBuf,
}

/// A session started on a shared worker, and what that worker runs.
pub struct Attached {
    pub session: SharedSession,
    pub settings: Settings,
}

impl SharedWorkers {
    pub fn new(per_worker: usize, root: PathBuf) -> Self {
        SharedWorkers { per_worker: per_worker.max(1), root, workers: Mutex::new(vec![]) }
    }

    fn workers(&self) -> MutexGuard<'_, Vec<Shared>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session on `media`, in its folder `session_dir`: on a worker of the settings of
    /// this `generation` with room, else on a new one started with `opts` (called only
    /// then), which are those `settings`.
    pub fn attach(
        &self,
        media: PathBuf,
        session_dir: PathBuf,
        (generation, settings): (u64, Settings),
        opts: impl FnOnce() -> SupervisorOptions,
    ) -> Result<Attached, String> {
        // Under the lock from the choice to the attach: two sessions starting at once
        // cannot both take a worker's last place.
        let mut workers = self.workers();
        let room = workers.iter().rposition(|w| {
            w.generation == generation && !w.worker.has_ended() && w.worker.sessions() < self.per_worker
        });
        let i = match room {
            Some(i) => i,
            None => {
                workers.push(self.start(opts(), generation, settings)?);
                workers.len() - 1
            }
        };
        let w = &workers[i];
        Ok(Attached { session: w.worker.attach(media, session_dir), settings: w.settings })
    }

    /// Keeps one worker of `generation` started and loaded for the next session (none
    /// has room: one is started with `opts`), and stops in the background the workers
    /// no session uses that are of an older generation, have ended, or are more than that
    /// one.
    pub fn tidy(&self, (generation, settings): (u64, Settings), opts: impl FnOnce() -> SupervisorOptions) {
        let mut workers = self.workers();
        let mut kept_idle = false;
        let stopping = take_out(&mut workers, |w| {
            if w.worker.sessions() > 0 {
                return false;
            }
            // The first idle one of these settings stays, for the next session.
            let current = w.generation == generation && !w.worker.has_ended();
            let spare = current && !std::mem::replace(&mut kept_idle, true);
            !spare
        });
        let has_room = workers
            .iter()
            .any(|w| w.generation == generation && !w.worker.has_ended() && w.worker.sessions() < self.per_worker);
        if !has_room {
            if let Ok(w) = self.start(opts(), generation, settings) {
                workers.push(w);
            }
        }
        drop(workers);
        stop_in_background(stopping);
    }

    /// Stops, in the background, the workers no session uses (a draining server).
    pub fn stop_idle(&self) {
        let stopping = take_out(&mut self.workers(), |w| w.worker.sessions() == 0);
        stop_in_background(stopping);
    }

    /// Stops every worker (their sessions let go) and waits for them.
    pub async fn shutdown(&self) {
        let all: Vec<Shared> = self.workers().drain(..).collect();
        let _ = tokio::task::spawn_blocking(move || stop(all)).await;
    }

    /// Workers started, and how many of them no session uses.
    pub fn counts(&self) -> (usize, usize) {
        let workers = self.workers();
        (workers.len(), workers.iter().filter(|w| w.worker.sessions() == 0).count())
    }
}

impl SharedWorkers {
    /// A new worker, in a folder of its own (its fault-injection state, say).
    fn start(&self, mut opts: SupervisorOptions, generation: u64, settings: Settings) -> Result<Shared, String> {
        let dir = self.root.join(format!("serve-shared-{}", uuid::Uuid::new_v4()));
        sam2_supervisor::session_dirs::mark_one_shot(&dir).map_err(|e| format!("{e:#}"))?;
        opts.session_dir = dir.clone();
        let worker = SharedWorker::start(opts).map_err(|e| {
            sam2_supervisor::session_dirs::remove_one_shot(&dir);
            format!("cannot start a shared engine worker: {e}")
        })?;
        Ok(Shared { worker: Arc::new(worker), generation, settings, dir })
    }
}

/// The workers `out` picks, taken out of `workers`.
fn take_out(workers: &mut Vec<Shared>, mut out: impl FnMut(&Shared) -> bool) -> Vec<Shared> {
    let (taken, kept) = std::mem::take(workers).into_iter().partition(|w| out(w));
    *workers = kept;
    taken
}

fn stop_in_background(workers: Vec<Shared>) {
    if !workers.is_empty() {
        std::thread::spawn(move || stop(workers));
    }
}

/// Stops workers (blocking) and removes their folders.
fn stop(workers: Vec<Shared>) {
    for w in workers {
        w.worker.shutdown();
        sam2_supervisor::session_dirs::remove_one_shot(&w.dir);
    }
}
