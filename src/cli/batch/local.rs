//! Runs the items of one shard of a manifest on this machine: one worker thread per GPU
//! (or one on the CPU), each item one `job` (the same checks, staging, publishing and
//! crash replay as `segment`), a failed item reported without stopping the others.
use super::manifest::{self, Item, Ops, Shard};
use super::report::{ItemReport, Report, Status};
use super::Args;
use crate::cli::interrupt;
use crate::cli::job::{self, JobSpec, OpsFile};
use crate::device::DeviceChoice;
use crate::util::{bad_input, Interrupted};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Where one worker thread runs its items.
#[derive(Clone, Debug)]
struct Lane {
    device: DeviceChoice,
    env: Vec<(String, String)>,
    name: String,
}

pub fn run(a: &Args, manifest_path: &Path, out: &Path, shard: Shard) -> anyhow::Result<()> {
    let items = manifest::load(manifest_path)?;
    match std::fs::symlink_metadata(out) {
        Ok(m) if !m.is_dir() => return Err(bad_input(format!("{}: --out exists and is not a folder", out.display()))),
        _ => std::fs::create_dir_all(out)
            .map_err(|e| bad_input(format!("{}: cannot create --out: {e}", out.display())))?,
    }
    let mine: Vec<Item> = items.into_iter().filter(|it| shard.owns(it.index)).collect();
    let config = a.job.engine.effective_config()?;
    let lanes = lanes(a, config.engine.device)?;
    interrupt::install();
    let report_path = out.join(shard.report_name());
    let report = Mutex::new(Report {
        manifest: manifest_path.display().to_string(),
        shard: format!("{}/{}", shard.index, shard.count),
        items: mine.iter().map(pending).collect(),
        finished: false,
    });
    report.lock().unwrap().write(&report_path)?;
    let next = AtomicUsize::new(0);
    let ended = AtomicUsize::new(0);
    let n = mine.len();
    let streams = if a.streams > 1 { format!(", {} video(s) at once each", a.streams) } else { String::new() };
    eprintln!(
        "batch: {n} item(s) in shard {}/{} on {} worker(s){streams}: {}",
        shard.index,
        shard.count,
        lanes.len(),
        lanes.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let deaths = AtomicUsize::new(0);
    let ctx = Shared {
        a,
        config: &config,
        mine: &mine,
        out,
        report: &report,
        report_path: &report_path,
        ended: &ended,
        deaths: &deaths,
    };
    std::thread::scope(|s| {
        for lane in &lanes {
            let (ctx, next) = (&ctx, &next);
            s.spawn(move || {
                // One supervisor per lane, kept across its items: the model loads once.
                let mut engine: Option<job::Engine> = None;
                // An item taken for a group that needs another worker than the group's.
                let mut parked: Option<(usize, job::Prepared)> = None;
                while let Some(first) = parked.take().or_else(|| ctx.take(next, lane)) {
                    // Two videos at least share a worker; one alone takes the one-video
                    // path (its own faster graphs, and the fallback ladder).
                    let second = if a.streams > 1 { ctx.take(next, lane) } else { None };
                    match second {
                        Some(second) if second.1.worker_key() == first.1.worker_key() => {
                            // The lane's single-video worker would hold the GPU beside the group's.
                            if let Some(e) = engine.take() {
                                e.shutdown();
                            }
                            ctx.run_streams(vec![first, second], next, lane, &mut parked, &mut engine);
                        }
                        second => {
                            parked = second;
                            ctx.run_alone(first.0, &first.1, &mut engine);
                        }
                    }
                }
                if let Some(e) = engine {
                    e.shutdown();
                }
            });
        }
    });
    let mut rep = report.into_inner().unwrap_or_else(|p| p.into_inner());
    rep.finished = !interrupt::requested();
    rep.write(&report_path)?;
    let (done, skipped, failed) = (rep.count(Status::Done), rep.count(Status::Skipped), rep.count(Status::Failed));
    let secs: f32 = rep.items.iter().map(|i| i.seconds).sum();
    let frames: usize = rep.items.iter().filter(|i| i.status == Status::Done).map(|i| i.frames).sum();
    let restarts = deaths.load(Ordering::SeqCst);
    eprintln!(
        "batch: {done} done, {skipped} skipped (already complete), {failed} failed, {} not run; {frames} frames in {secs:.1}s item time; {restarts} worker restart(s); report {}",
        rep.count(Status::Pending),
        report_path.display()
    );
    for i in rep.items.iter().filter(|i| i.status == Status::Failed) {
        eprintln!("batch: failed {}: {}", i.out, i.error.as_deref().unwrap_or("?"));
    }
    if interrupt::requested() {
        return Err(anyhow::Error::new(Interrupted));
    }
    anyhow::ensure!(failed == 0, "{failed} of {n} item(s) failed; see {}", report_path.display());
    Ok(())
}

fn pending(it: &Item) -> ItemReport {
    ItemReport {
        index: it.index,
        out: it.out.clone(),
        input: it.input.display().to_string(),
        status: Status::Pending,
        frames: 0,
        seconds: 0.0,
        restarts: 0,
        error: None,
    }
}

/// What every lane's thread shares.
struct Shared<'a> {
    a: &'a Args,
    config: &'a crate::config::Config,
    mine: &'a [Item],
    out: &'a Path,
    report: &'a Mutex<Report>,
    report_path: &'a Path,
    /// Items ended so far.
    ended: &'a AtomicUsize,
    /// Worker deaths so far (a group's worker serves several items: its deaths count once).
    deaths: &'a AtomicUsize,
}

impl Shared<'_> {
    /// The lane's next item to run, judged (`job::prepare`): items already complete and
    /// items that fail their checks are reported here and passed over.
    fn take(&self, next: &AtomicUsize, lane: &Lane) -> Option<(usize, job::Prepared)> {
        while !interrupt::requested() {
            let k = next.fetch_add(1, Ordering::SeqCst);
            let it = self.mine.get(k)?;
            let mut r = pending(it);
            let dest = self.out.join(&it.out);
            if crate::media::output_dir::is_complete(&dest) {
                r.status = Status::Skipped;
                self.finish(k, r);
                continue;
            }
            match job::prepare(self.spec(lane, it, dest)) {
                Ok(p) => return Some((k, p)),
                Err(e) => self.finish(k, ended(r, Instant::now(), Err(e))),
            }
        }
        None
    }

    fn spec(&self, lane: &Lane, it: &Item, dest: std::path::PathBuf) -> JobSpec {
        let a = self.a;
        JobSpec {
            input: it.input.clone(),
            ops: match &it.ops {
                Ops::Prompts(p) => OpsFile::Prompts(p.clone()),
                Ops::Session(s) => OpsFile::Session(s.clone()),
            },
            out: dest,
            config: {
                let mut c = self.config.clone();
                c.engine.device = lane.device;
                c
            },
            checkpoint: it.checkpoint.clone(),
            model: it.model.or(a.job.engine.model),
            logits: a.job.logits,
            overlay: None,
            fill_holes: !a.job.no_postprocess,
            session_dir: None,
            env: lane.env.clone(),
        }
    }

    /// Item `k` on the one-video path.
    fn run_alone(&self, k: usize, p: &job::Prepared, engine: &mut Option<job::Engine>) {
        let it = &self.mine[k];
        let started = Instant::now();
        let (name, n, tty) = (it.out.clone(), self.mine.len(), job::atty_stderr());
        let mut on_frame = |done: usize, total: usize, fps: f32| {
            let items_done = self.ended.load(Ordering::SeqCst);
            let line = format!("batch: [{items_done}/{n} items] {name}: {done}/{total} frames  {fps:.2} FPS");
            if tty {
                eprint!("\r{line}   ");
            } else if done == total || done.is_multiple_of(50) {
                eprintln!("{line}");
            }
        };
        let result = job::execute(p, engine, &mut on_frame);
        if tty {
            eprintln!();
        }
        let mut r = pending(it);
        r.frames = p.frames();
        let r = ended(r, started, result);
        self.deaths.fetch_add(r.restarts as usize, Ordering::SeqCst);
        self.finish(k, r);
    }

    /// Items tracked at once in one worker (`--streams`), `first` and then the lane's
    /// next items as streams end, while they need the same worker (the first that does
    /// not is `parked` for the lane's next turn). Should no worker run at all, the items
    /// not yet ended go the one-video path, which has the fallback ladder (MPS to CPU).
    fn run_streams(
        &self,
        first: Vec<(usize, job::Prepared)>,
        next: &AtomicUsize,
        lane: &Lane,
        parked: &mut Option<(usize, job::Prepared)>,
        engine: &mut Option<job::Engine>,
    ) {
        let key = first[0].1.worker_key();
        // When each item joined: its time is its own, not the group's.
        let joined = std::cell::RefCell::new(std::collections::BTreeMap::<usize, Instant>::new());
        let mut first = first.into_iter();
        let mut closed = false;
        let mut source = || {
            let item = first.next().or_else(|| {
                if closed {
                    return None;
                }
                match self.take(next, lane) {
                    Some(item) if item.1.worker_key() == key => Some(item),
                    other => {
                        // No more, or another worker's: this group takes no one else.
                        closed = true;
                        *parked = other;
                        None
                    }
                }
            })?;
            joined.borrow_mut().insert(item.0, Instant::now());
            Some(item)
        };
        let started = Instant::now();
        let (n, tty) = (self.mine.len(), job::atty_stderr());
        let mut all = 0usize;
        let mut on_frame = |k: usize, done: usize, total: usize| {
            all += 1;
            let fps = all as f32 / started.elapsed().as_secs_f32().max(1e-3);
            let items_done = self.ended.load(Ordering::SeqCst);
            let line = format!("batch: [{items_done}/{n} items] videos at once: {all} frames  {fps:.2} FPS together");
            if tty {
                eprint!("\r{line}   ");
            } else if done == total || done.is_multiple_of(50) {
                eprintln!("batch: {}: {done}/{total} frames ({line})", self.mine[k].out);
            }
        };
        let mut on_outcome = |k: usize, total: usize, result: anyhow::Result<job::Outcome>| {
            if tty {
                eprintln!();
            }
            let mut r = pending(&self.mine[k]);
            r.frames = total;
            let since = joined.borrow().get(&k).copied().unwrap_or(started);
            self.finish(k, ended(r, since, result));
        };
        let width = self.a.streams as usize;
        let result = job::streams::execute_streams(width, &mut source, &mut on_frame, &mut on_outcome);
        // Items handed over but never taken (the worker's options failed before the
        // second was asked for) run the one-video way: none is left pending unsaid.
        let untaken: Vec<(usize, job::Prepared)> = first.collect();
        match result {
            Ok(d) => {
                self.deaths.fetch_add(d as usize, Ordering::SeqCst);
            }
            Err(u) => {
                eprintln!(
                    "batch: {} videos could not share a worker ({:#}); running them one after another",
                    u.jobs.len(),
                    u.error
                );
                for (k, p) in u.jobs {
                    if interrupt::requested() {
                        break;
                    }
                    self.run_alone(k, &p, engine);
                }
            }
        }
        for (k, p) in untaken {
            if !interrupt::requested() {
                self.run_alone(k, &p, engine);
            }
        }
    }

    /// Item `k` has ended: one line, and the report rewritten.
    fn finish(&self, k: usize, r: ItemReport) {
        let n = self.mine.len();
        let done = self.ended.fetch_add(1, Ordering::SeqCst) + 1;
        let line = match (&r.status, &r.error) {
            (Status::Failed, Some(e)) => format!("FAILED: {e}"),
            (Status::Pending, _) => "interrupted; its output was not written".into(),
            (st, _) => format!("{st:?}, {} frames in {:.1}s", r.frames, r.seconds).to_lowercase(),
        };
        eprintln!("batch: [{done}/{n}] {}: {line}", self.mine[k].out);
        let mut rep = self.report.lock().unwrap_or_else(|p| p.into_inner());
        rep.items[k] = r;
        if let Err(e) = rep.write(self.report_path) {
            eprintln!("batch: {e:#}");
        }
    }
}

/// An item's report once its job has ended (an interrupted one stays pending).
fn ended(mut r: ItemReport, started: Instant, result: anyhow::Result<job::Outcome>) -> ItemReport {
    r.seconds = started.elapsed().as_secs_f32();
    match result {
        Ok(o) => {
            r.status = Status::Done;
            r.restarts = o.restarts;
        }
        Err(e) if e.chain().any(|c| c.is::<Interrupted>()) => {}
        Err(e) => {
            r.status = Status::Failed;
            r.error = Some(format!("{e:#}").replace('\n', " "));
        }
    }
    r
}

/// One lane per GPU chosen (`--devices`), else one per visible GPU, else one on the CPU.
fn lanes(a: &Args, device: DeviceChoice) -> anyhow::Result<Vec<Lane>> {
    // Inside a scheduler's allocation CUDA_VISIBLE_DEVICES already names the cards; the
    // k-th lane gets the k-th of them.
    let visible: Option<Vec<String>> = std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    let gpu = |k: usize| {
        let id = visible.as_ref().and_then(|v| v.get(k).cloned()).unwrap_or_else(|| k.to_string());
        Lane {
            device: DeviceChoice::Cuda,
            env: vec![("CUDA_VISIBLE_DEVICES".into(), id.clone())],
            name: format!("cuda:{id}"),
        }
    };
    if let Some(list) = &a.devices {
        return Ok(list.iter().map(|&k| gpu(k)).collect());
    }
    let n_gpus = match device {
        DeviceChoice::Auto | DeviceChoice::Cuda => tch::Cuda::device_count().max(0) as usize,
        _ => 0,
    };
    if n_gpus > 1 {
        return Ok((0..n_gpus).map(gpu).collect());
    }
    Ok(vec![Lane { device, env: vec![], name: format!("{device:?}").to_lowercase() }])
}
