//! Several jobs in one worker (`batch --streams K`, issue #18): each job one stream of
//! `supervisor::streams`, the model loaded once, their propagations in lockstep (one
//! image-encoder batch and one tracking step for the frames of all of them).
//!
//! Each job keeps the guarantees of the one-video path (`execute`): it was judged before
//! (`prepare`); its outputs are staged and published whole, on their own, as soon as its
//! last op has ended, so an interrupt or a later failure in the group leaves a published
//! job as it is and the others absent; a worker crash is replayed with no mask changed
//! (`supervisor::streams` restores every stream from its memory bank); a stream that fails
//! (its media, its op) fails its job alone.
//!
//! Jobs share a worker only when they would start the same one (`Prepared::worker_key`).
//! Up to `width` run at once; as one ends, the source's next job is opened in its place
//! and joins the others' propagation under way (`supervisor::streams::run_admitting`), so
//! videos of mixed lengths keep the worker's batch full instead of waiting for the
//! longest of a fixed group.
use super::{one_shot_session_dir, publish, write_outputs, Outcome, Prepared};
use crate::cli::interrupt;
use crate::device::{DeviceChoice, Precision};
use crate::media::output_dir::Staging;
use crate::supervisor::session_dirs;
use crate::supervisor::store::MaskStore;
use crate::supervisor::streams::{self, StreamJob, StreamNews};
use crate::util::Interrupted;
use anyhow::anyhow;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// One job while it runs.
struct Running {
    /// The caller's name for the job.
    tag: usize,
    job: Arc<Prepared>,
    /// None once published or failed.
    staging: Option<Staging>,
    masks: MaskStore,
    ops_done: usize,
    frames_done: usize,
    /// Worker deaths while this job was still running.
    restarts: u32,
    ended: bool,
}

/// Jobs that had not ended when no worker could run at all, with why.
pub struct Unfinished {
    pub error: anyhow::Error,
    pub jobs: Vec<(usize, Arc<Prepared>)>,
}

/// Runs jobs as streams of one worker, `width` at once: `next()` gives the next job and
/// its tag (`None`: no more), each one for the same worker as the first. `on_frame(tag,
/// done, total)` hears each job's frames; `on_outcome(tag, frames, result)` hears each
/// job's end once, as it happens, with its video's frame count (its outputs published,
/// or why not). Returns how many times the worker died and was replaced, or, when no
/// worker could run at all (it would not start or load, or died more often than the
/// restart policy allows), the jobs taken that had not ended by then (they have heard
/// nothing: the caller may run them another way).
pub fn execute_streams(
    width: usize,
    next: &mut dyn FnMut() -> Option<(usize, Prepared)>,
    on_frame: &mut dyn FnMut(usize, usize, usize),
    on_outcome: &mut dyn FnMut(usize, usize, anyhow::Result<Outcome>),
) -> Result<u32, Unfinished> {
    let Some((tag, first)) = next() else { return Ok(0) };
    let first = Arc::new(first);
    let key = first.worker_key();
    let started = Instant::now();
    let fail_all = |error: anyhow::Error| Unfinished { error, jobs: vec![(tag, first.clone())] };
    let mut opts = first.worker_options(None, vec![]).map_err(fail_all)?;
    one_shot_session_dir(&mut opts).map_err(fail_all)?;
    let session_dir = opts.session_dir.clone();
    // Every stream's logits land in this run's session folder (`<stream>/<object>/…`) and
    // move into the job's staged output when it ends: the worker has one logits folder.
    let logits_root = session_dir.join("logits");
    let logits = first.spec.logits;
    opts.tuning.logits_dir = logits.then(|| logits_root.clone());
    let logits_env = if logits { logits_root.to_string_lossy().into_owned() } else { String::new() };
    opts.set_env("SAM2_TUI_LOGITS_DIR", &logits_env);

    // Indexed by stream (the order `run_admitting` took them in).
    let running: RefCell<Vec<Running>> = RefCell::new(vec![]);
    let on_outcome = RefCell::new(on_outcome);
    let mut queued = Some((tag, first));
    // The next job that can be staged, as a stream; one that cannot fails here.
    let mut next_job = || loop {
        let (tag, job) = match queued.take() {
            Some(q) => q,
            None => {
                let (tag, job) = next()?;
                debug_assert_eq!(job.worker_key(), key, "the jobs of one worker");
                (tag, Arc::new(job))
            }
        };
        let media = match super::absolute(&job.spec.input) {
            Ok(m) => m,
            Err(e) => {
                (on_outcome.borrow_mut())(tag, job.frames(), Err(e));
                continue;
            }
        };
        match job.target.stage() {
            Ok(staging) => {
                let ops = job.journal.ops.clone();
                running.borrow_mut().push(Running::new(tag, job, Some(staging)));
                return Some(StreamJob { media, ops });
            }
            Err(e) => (on_outcome.borrow_mut())(tag, job.frames(), Err(e)),
        }
    };

    let mut ran_on: Option<(DeviceChoice, Precision)> = None;
    let mut deaths = 0u32;
    let stop = || interrupt::requested();
    // A job's outputs are written on a thread of their own, so that the others' frames go
    // on meanwhile and jobs that end together are written together.
    let (published, outcomes) = std::sync::mpsc::channel::<(usize, usize, anyhow::Result<Outcome>)>();
    let heard = |tag: usize, frames: usize, out: anyhow::Result<Outcome>| (on_outcome.borrow_mut())(tag, frames, out);
    let result = std::thread::scope(|scope| {
        streams::run_admitting(&opts, width, &mut next_job, &stop, &mut |news| {
            for (tag, frames, out) in outcomes.try_iter() {
                heard(tag, frames, out);
            }
            let mut running = running.borrow_mut();
            match news {
                StreamNews::WorkerStarted { device, precision, .. } => ran_on = Some((device, precision)),
                StreamNews::WorkerDied { reason } => {
                    deaths += 1;
                    let unfinished = running.iter().filter(|r| !r.ended).count();
                    if !interrupt::requested() {
                        eprintln!(
                            "\nbatch: the worker of {unfinished} stream(s) died: {reason}; restarting and resuming"
                        );
                    }
                    for r in running.iter_mut().filter(|r| !r.ended) {
                        r.restarts += 1;
                    }
                }
                StreamNews::Frame { stream, objects, frame, .. } => {
                    let r = &mut running[stream];
                    r.masks.insert(frame, objects);
                    r.frames_done += 1;
                    on_frame(r.tag, r.frames_done, r.job.frames());
                }
                StreamNews::OpDone { stream, op, .. } => {
                    let r = &mut running[stream];
                    r.masks.apply_completed(&r.job.journal.ops[op]);
                    r.ops_done = op + 1;
                    if r.ops_done == r.job.journal.ops.len() && !r.ended {
                        let p = r.end();
                        let (tx, logits, ran_on) = (published.clone(), logits_root.join(stream.to_string()), ran_on);
                        scope.spawn(move || {
                            let _ = tx.send((p.tag, p.job.frames(), p.publish(ran_on, &logits, started)));
                        });
                    }
                }
                StreamNews::Failed { stream, message } => {
                    let r = &mut running[stream];
                    if !r.ended {
                        r.ended = true;
                        r.staging = None;
                        heard(r.tag, r.job.frames(), Err(stream_error(&r.job, &message)));
                    }
                }
                // A job's streams are not interactive: their op failures are `Failed`,
                // and they end with their last op, not by a close.
                StreamNews::Opened { .. }
                | StreamNews::OpFailed { .. }
                | StreamNews::Closed { .. }
                | StreamNews::Stats(_) => {}
            }
            None
        })
    });
    for (tag, frames, out) in outcomes.try_iter() {
        heard(tag, frames, out);
    }
    let mut running = running.into_inner();
    let outcome = match result {
        Ok(results) => {
            // A job with no op (its stream ends at once) and one stopped by the interrupt
            // have not heard yet.
            for (i, (r, res)) in running.iter_mut().zip(results).enumerate() {
                if !r.ended {
                    let out = match res {
                        Ok(()) => r.end().publish(ran_on, &logits_root.join(i.to_string()), started),
                        Err(m) => {
                            r.ended = true;
                            Err(stream_error(&r.job, &m))
                        }
                    };
                    heard(r.tag, r.job.frames(), out);
                }
            }
            Ok(deaths)
        }
        Err(error) => {
            let jobs = running.into_iter().filter(|r| !r.ended).map(|r| (r.tag, r.job)).collect();
            Err(Unfinished { error, jobs })
        }
    };
    session_dirs::remove_one_shot(&session_dir);
    outcome
}

/// Why a stream ended early, as its job's error (the interrupt's own kind when stopped).
fn stream_error(job: &Prepared, message: &str) -> anyhow::Error {
    if message == streams::STOPPED {
        anyhow::Error::new(Interrupted)
    } else {
        anyhow!("{}: {message}", job.spec.input.display())
    }
}

impl Running {
    fn new(tag: usize, job: Arc<Prepared>, staging: Option<Staging>) -> Self {
        Running {
            tag,
            job,
            staging,
            masks: MaskStore::default(),
            ops_done: 0,
            frames_done: 0,
            restarts: 0,
            ended: false,
        }
    }

    /// The job has run all its ops: what its outputs are made of.
    fn end(&mut self) -> Publication {
        self.ended = true;
        Publication {
            tag: self.tag,
            job: self.job.clone(),
            staging: self.staging.take(),
            masks: std::mem::take(&mut self.masks),
            restarts: self.restarts,
            frames_done: self.frames_done,
        }
    }
}

/// A job that has run all its ops, and what its outputs are made of.
struct Publication {
    tag: usize,
    job: Arc<Prepared>,
    staging: Option<Staging>,
    masks: MaskStore,
    restarts: u32,
    frames_done: usize,
}

impl Publication {
    /// Writes this job's outputs into its staging folder and swaps them in, unless the
    /// run is being interrupted (then nothing of it is left).
    fn publish(
        self,
        ran_on: Option<(DeviceChoice, Precision)>,
        stream_logits: &Path,
        started: Instant,
    ) -> anyhow::Result<Outcome> {
        let staging = self.staging.ok_or_else(|| anyhow!("no staging folder"))?;
        if interrupt::requested() {
            return Err(anyhow::Error::new(Interrupted));
        }
        let p = &*self.job;
        let logits_dir = staging.path().join("logits");
        if p.spec.logits {
            move_dir(stream_logits, &logits_dir)?;
        }
        let (masks, model_label) = write_outputs(p, &staging, &self.masks, ran_on, self.restarts, &logits_dir)?;
        publish(p, staging, Outcome::new(p, masks, self.frames_done, self.restarts, model_label, started))
    }
}

/// Moves the folder `from` (this run's own) to `to`: a rename, or a copy where they lie
/// on different file systems (the session folder and the output's).
fn move_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    if !from.exists() {
        // No mask of this job had logits (every object removed): an empty folder.
        return std::fs::create_dir_all(to).map_err(|e| anyhow!("{}: {e}", to.display()));
    }
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    let mut stack: Vec<(PathBuf, PathBuf)> = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src, dst)) = stack.pop() {
        std::fs::create_dir_all(&dst).map_err(|e| anyhow!("{}: {e}", dst.display()))?;
        for entry in std::fs::read_dir(&src).map_err(|e| anyhow!("{}: {e}", src.display()))? {
            let entry = entry?;
            let target = dst.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push((entry.path(), target));
            } else {
                std::fs::copy(entry.path(), &target).map_err(|e| anyhow!("{}: {e}", target.display()))?;
            }
        }
    }
    Ok(())
}
