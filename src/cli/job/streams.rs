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
use super::{one_shot_session_dir, publish, write_outputs, Outcome, Prepared};
use crate::cli::interrupt;
use crate::device::{DeviceChoice, Precision};
use crate::media::output_dir::Staging;
use crate::supervisor::session_dirs;
use crate::supervisor::store::MaskStore;
use crate::supervisor::streams::{self, StreamJob, StreamNews};
use crate::util::Interrupted;
use anyhow::anyhow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One job of the group while it runs.
struct Running<'p> {
    job: &'p Prepared,
    /// None once published or failed.
    staging: Option<Staging>,
    masks: MaskStore,
    ops_done: usize,
    frames_done: usize,
    /// Worker deaths while this job was still running.
    restarts: u32,
    ended: bool,
}

/// Runs `jobs` as streams of one worker. `on_frame(job, done, total, fps)` hears each
/// job's frames; `on_outcome(job, result)` hears each job's end once, as it happens (its
/// outputs published, or why not). Errors when no worker could run at all (it would not
/// start or load, or died more often than the restart policy allows): the jobs that had
/// not ended by then have heard nothing, and the caller may run them another way. Returns
/// how many times the group's worker died and was replaced.
pub fn execute_group(
    jobs: &[Prepared],
    on_frame: &mut dyn FnMut(usize, usize, usize, f32),
    on_outcome: &mut dyn FnMut(usize, anyhow::Result<Outcome>),
) -> anyhow::Result<u32> {
    let Some(first) = jobs.first() else { return Ok(0) };
    debug_assert!(jobs.iter().all(|j| j.worker_key() == first.worker_key()), "a group shares one worker");
    let started = Instant::now();
    let mut opts = first.worker_options(None, vec![])?;
    one_shot_session_dir(&mut opts)?;
    let session_dir = opts.session_dir.clone();
    // Every stream's logits land in this run's session folder (`<stream>/<object>/…`) and
    // move into the job's staged output when it ends: the worker has one logits folder.
    let logits_root = session_dir.join("logits");
    let logits = first.spec.logits;
    opts.tuning.logits_dir = logits.then(|| logits_root.clone());
    let logits_env = if logits { logits_root.to_string_lossy().into_owned() } else { String::new() };
    opts.set_env("SAM2_TUI_LOGITS_DIR", &logits_env);

    let mut running = Vec::with_capacity(jobs.len());
    let mut stream_jobs = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        match job.target.stage() {
            Ok(staging) => {
                running.push(Running::new(job, Some(staging)));
                stream_jobs.push(StreamJob { media: super::absolute(&job.spec.input)?, ops: job.journal.ops.clone() });
            }
            Err(e) => {
                // Its stream still runs (the streams are numbered by job), with no output.
                let mut r = Running::new(job, None);
                r.ended = true;
                running.push(r);
                stream_jobs.push(StreamJob { media: super::absolute(&job.spec.input)?, ops: vec![] });
                on_outcome(i, Err(e));
            }
        }
    }

    let mut ran_on: Option<(DeviceChoice, Precision)> = None;
    let mut deaths = 0u32;
    let stop = || interrupt::requested();
    // A job's outputs are written on a thread of their own, so that the others' frames go
    // on meanwhile and jobs that end together are written together.
    let (published, outcomes) = std::sync::mpsc::channel::<(usize, anyhow::Result<Outcome>)>();
    let result = std::thread::scope(|scope| {
        streams::run(&opts, &stream_jobs, &stop, &mut |news| {
            for (i, out) in outcomes.try_iter() {
                on_outcome(i, out);
            }
            match news {
                StreamNews::WorkerStarted { device, precision } => ran_on = Some((device, precision)),
                StreamNews::WorkerDied { reason } => {
                    deaths += 1;
                    if !interrupt::requested() {
                        eprintln!(
                            "\nbatch: the worker of {} stream(s) died: {reason}; restarting and resuming",
                            jobs.len()
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
                    let fps = r.frames_done as f32 / started.elapsed().as_secs_f32().max(1e-3);
                    on_frame(stream, r.frames_done, r.job.frames(), fps);
                }
                StreamNews::OpDone { stream, op, .. } => {
                    let r = &mut running[stream];
                    r.masks.apply_completed(&r.job.journal.ops[op]);
                    r.ops_done = op + 1;
                    if r.ops_done == r.job.journal.ops.len() && !r.ended {
                        let p = r.end();
                        let (tx, logits, ran_on) = (published.clone(), logits_root.join(stream.to_string()), ran_on);
                        scope.spawn(move || {
                            let _ = tx.send((stream, p.publish(ran_on, &logits, started)));
                        });
                    }
                }
                StreamNews::Failed { stream, message } => {
                    let r = &mut running[stream];
                    if !r.ended {
                        r.ended = true;
                        r.staging = None;
                        let e = if message == streams::STOPPED {
                            anyhow::Error::new(Interrupted)
                        } else {
                            anyhow!("{}: {message}", r.job.spec.input.display())
                        };
                        on_outcome(stream, Err(e));
                    }
                }
            }
            None
        })
    });
    for (i, out) in outcomes.try_iter() {
        on_outcome(i, out);
    }
    let outcome = match result {
        Ok(results) => {
            // A job with no op (its stream ends at once) and one stopped by the interrupt
            // have not heard yet.
            for (i, (r, res)) in running.iter_mut().zip(results).enumerate() {
                if !r.ended {
                    match res {
                        Ok(()) => on_outcome(i, r.end().publish(ran_on, &logits_root.join(i.to_string()), started)),
                        Err(m) if m == streams::STOPPED => {
                            r.ended = true;
                            on_outcome(i, Err(anyhow::Error::new(Interrupted)))
                        }
                        Err(m) => {
                            r.ended = true;
                            on_outcome(i, Err(anyhow!("{}: {m}", r.job.spec.input.display())))
                        }
                    }
                }
            }
            Ok(deaths)
        }
        Err(e) => Err(e),
    };
    session_dirs::remove_one_shot(&session_dir);
    outcome
}

impl<'p> Running<'p> {
    fn new(job: &'p Prepared, staging: Option<Staging>) -> Self {
        Running { job, staging, masks: MaskStore::default(), ops_done: 0, frames_done: 0, restarts: 0, ended: false }
    }

    /// The job has run all its ops: what its outputs are made of.
    fn end(&mut self) -> Publication<'p> {
        self.ended = true;
        Publication {
            job: self.job,
            staging: self.staging.take(),
            masks: std::mem::take(&mut self.masks),
            restarts: self.restarts,
            frames_done: self.frames_done,
        }
    }
}

/// A job that has run all its ops, and what its outputs are made of.
struct Publication<'p> {
    job: &'p Prepared,
    staging: Option<Staging>,
    masks: MaskStore,
    restarts: u32,
    frames_done: usize,
}

impl Publication<'_> {
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
        let p = self.job;
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
