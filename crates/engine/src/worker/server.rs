//! The worker's request loop. Threads: the main thread owns the model (tch tensors and
//! the `Rc` model are not Send, and MPS must only ever be driven from one thread); a
//! stdin reader turns `Cancel` into an atomic the frame callback checks; a heartbeat
//! thread writes `WorkerStats` every 500 ms. All stdout writes go through one mutex so
//! frames never interleave. Logs go to stderr only.
use super::fault::{FaultPlan, FaultPoint, HANGING};
use super::protocol::{self, Request, Response, PROTOCOL_VERSION};
use super::stats::{self, DeviceInfo};
use crate::device::DeviceChoice;
use crate::model::{LoadOptions, Sam2Base};
use crate::predictor::warm_up::{warm_up, WarmGraphs};
use crate::predictor::{FrameOutput, VideoOptions, VideoPredictor};
use sam2_api::events::{ModelLabel, ObjectMask};
use sam2_api::rle::Rle;
use sam2_api::tuning::Tuning;
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod streams;

pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(500);

type Out = Arc<Mutex<std::io::Stdout>>;

fn send(out: &Out, msg: &Response) {
    let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
    // A closed stdout means the supervisor is gone; stdin EOF will end us shortly.
    let _ = protocol::write_frame(&mut *w, msg);
}

/// Requests numbered in arrival order, so a `Cancel` cancels exactly the ops that had
/// arrived before it (also one still queued behind the current op).
struct Inbox {
    rx: mpsc::Receiver<(u64, Request)>,
    cancels: Cancels,
    /// Requests read during a lockstep propagation that must wait for its end (see
    /// `streams::Admission`), in arrival order; they go before the channel's.
    deferred: std::cell::RefCell<std::collections::VecDeque<(u64, Request)>>,
}

impl Inbox {
    /// The next request to handle: a deferred one first.
    fn next(&self) -> Option<(u64, Request)> {
        let deferred = self.deferred.borrow_mut().pop_front();
        deferred.or_else(|| self.rx.recv().ok())
    }
}

/// What the reader has been told to cancel.
#[derive(Clone)]
struct Cancels {
    /// `Cancel`: every request numbered up to this.
    upto: Arc<AtomicU64>,
    /// `CancelStream`s: per stream, the requests it cancels (those numbered up to this).
    streams: StreamCancels,
}

impl Cancels {
    fn request(&self, n: u64) -> bool {
        self.upto.load(Ordering::SeqCst) >= n
    }

    fn stream(&self, n: u64, stream: u32) -> bool {
        self.request(n) || self.streams.lock().unwrap_or_else(|p| p.into_inner()).get(&stream).is_some_and(|&c| c >= n)
    }
}

type StreamCancels = Arc<Mutex<BTreeMap<u32, u64>>>;

fn spawn_reader(out: Out) -> Inbox {
    let (tx, rx) = mpsc::channel();
    let cancel_upto = Arc::new(AtomicU64::new(0));
    let cancel = cancel_upto.clone();
    let stream_cancels = StreamCancels::default();
    let cancels = stream_cancels.clone();
    std::thread::Builder::new()
        .name("stdin-reader".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut n = 0u64;
            loop {
                match protocol::read_frame::<Request>(&mut stdin) {
                    Ok(Some(Request::Cancel)) => cancel.store(n, Ordering::SeqCst),
                    Ok(Some(Request::CancelStream { stream })) => {
                        cancels.lock().unwrap_or_else(|p| p.into_inner()).insert(stream, n);
                    }
                    Ok(Some(req)) => {
                        n += 1;
                        if tx.send((n, req)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // A bad frame desynchronises the stream: say so and stop reading.
                        send(&out, &Response::Error { seq: None, message: format!("protocol: {e}") });
                        break;
                    }
                }
            }
            cancel.store(u64::MAX, Ordering::SeqCst);
            let _ = tx.send((u64::MAX, Request::Shutdown));
        })
        .expect("spawn stdin reader");
    Inbox { rx, cancels: Cancels { upto: cancel_upto, streams: stream_cancels }, deferred: Default::default() }
}

fn spawn_heartbeat(out: Out, device: Arc<Mutex<DeviceInfo>>, stop: Arc<AtomicBool>) {
    let version = stats::torch_version();
    std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if !HANGING.load(Ordering::SeqCst) {
                    let dev = device.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let msg = Response::Heartbeat { stats: stats::collect(&dev, &version) };
                    let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
                    // Checked under the stdout lock: nothing may follow `Bye`.
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let _ = protocol::write_frame(&mut *w, &msg);
                }
                std::thread::sleep(HEARTBEAT_PERIOD);
            }
        })
        .expect("spawn heartbeat");
}

struct Engine {
    out: Out,
    faults: FaultPlan,
    device: Arc<Mutex<DeviceInfo>>,
    model: Option<Rc<Sam2Base>>,
    video: Option<VideoPredictor>,
    /// The sessions of several videos held at once (`OpenStream`), by stream.
    streams: BTreeMap<u32, VideoPredictor>,
    /// What `LoadModel` brought, with this process's environment on top.
    tuning: Tuning,
    /// The graphs a warm-up captured after loading, for the first session opened.
    warm: Option<WarmGraphs>,
}

/// Runs the worker until `Shutdown` or stdin closes.
pub fn serve() -> anyhow::Result<()> {
    // Before any thread starts, so from the environment alone (`Tuning::process_env`).
    super::host_memory::keep_freed_memory(Tuning::from_env().keep_freed);
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    let faults = FaultPlan::from_env()?;
    let inbox = spawn_reader(out.clone());
    let device = Arc::new(Mutex::new(DeviceInfo { kind: "none".into(), ..Default::default() }));
    let stop = Arc::new(AtomicBool::new(false));
    spawn_heartbeat(out.clone(), device.clone(), stop.clone());
    let mut engine = Engine {
        out: out.clone(),
        faults,
        device,
        model: None,
        video: None,
        streams: BTreeMap::new(),
        tuning: Tuning::default(),
        warm: None,
    };
    while let Some((n, req)) = inbox.next() {
        if matches!(req, Request::Shutdown) {
            break;
        }
        if let Some(req) = engine.handle_streams(req, n, &inbox) {
            engine.handle(req, &|| inbox.cancels.request(n));
        }
    }
    let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
    stop.store(true, Ordering::SeqCst);
    let _ = protocol::write_frame(&mut *w, &Response::Bye);
    let _ = w.flush();
    Ok(())
}

impl Engine {
    fn handle(&mut self, req: Request, cancelled: &dyn Fn() -> bool) {
        let reply = match req {
            Request::Hello { version } if version != PROTOCOL_VERSION => Response::Error {
                seq: None,
                message: format!("protocol version {version} not supported (worker speaks {PROTOCOL_VERSION})"),
            },
            Request::Hello { .. } => Response::Hello {
                version: PROTOCOL_VERSION,
                pid: std::process::id(),
                torch_version: stats::torch_version(),
            },
            Request::LoadModel { checkpoint, size, version, device, precision, image_size, device_label, tuning } => {
                self.load(checkpoint, size, version, device, precision, image_size, device_label, tuning)
            }
            Request::OpenMedia { path, bank_dir, fill_holes } => self.open(&path, bank_dir, fill_holes),
            Request::Restore { ops } => match self.video.as_mut() {
                None => Err(anyhow::anyhow!("restore before open_media")),
                Some(v) => v.restore(&ops).map(|_| Response::Restored { ops: ops.len() }),
            }
            .unwrap_or_else(|e| Response::Error { seq: None, message: format!("restore: {e:#}") }),
            Request::Apply { seq, op } => self.apply(seq, &op, cancelled),
            Request::Prefetch { frame } => match self.video.as_mut() {
                None => Response::Error { seq: None, message: "prefetch before open_media".into() },
                Some(v) => match v.prefetch(frame) {
                    Ok(()) => Response::Prefetched { frame },
                    Err(e) => Response::Error { seq: None, message: format!("prefetch {frame}: {e:#}") },
                },
            },
            Request::Stats => {
                let dev = self.device.lock().unwrap_or_else(|p| p.into_inner()).clone();
                Response::Heartbeat { stats: stats::collect(&dev, &stats::torch_version()) }
            }
            Request::Cancel | Request::Shutdown | Request::CancelStream { .. } => return,
            Request::OpenStream { .. }
            | Request::RestoreStream { .. }
            | Request::ApplyStream(_)
            | Request::PropagateStreams { .. }
            | Request::CloseStream { .. } => unreachable!("handled by handle_streams"),
        };
        send(&self.out, &reply);
    }

    #[allow(clippy::too_many_arguments)]
    fn load(
        &mut self,
        checkpoint: std::path::PathBuf,
        size: Option<crate::model::ModelSize>,
        version: Option<crate::model::ModelVersion>,
        device: DeviceChoice,
        precision: crate::device::PrecisionChoice,
        image_size: i64,
        device_label: Option<String>,
        mut tuning: Tuning,
    ) -> Response {
        use crate::device::{DeviceChoiceExt, PrecisionChoiceExt};
        // The environment wins, here too: a variable set for one run reaches this worker
        // whoever started it.
        for ignored in tuning.apply_env() {
            eprintln!("sam2-tui: warning: {ignored}");
        }
        self.tuning = tuning;
        let resolved = match device.resolve() {
            Ok(d) => d,
            Err(e) => return Response::Error { seq: None, message: format!("load: {e:#}") },
        };
        let choice = crate::device::choice_of(resolved);
        let precision = precision.resolve(choice);
        let label = device_label.unwrap_or_else(|| choice.to_string());
        self.faults.device_label = label.clone();
        self.faults.check(FaultPoint::Load);
        {
            let mut d = self.device.lock().unwrap_or_else(|p| p.into_inner());
            d.kind = choice.to_string();
            d.mps = matches!(resolved, tch::Device::Mps);
            d.cuda_index = if let tch::Device::Cuda(i) = resolved { Some(i as i32) } else { None };
            d.name = match resolved {
                tch::Device::Cuda(i) => stats::cuda_device_name(i as i32).unwrap_or_else(|| format!("cuda:{i}")),
                tch::Device::Mps => "Apple GPU (MPS)".into(),
                _ => crate::device::cpu_label(tch::get_num_threads()),
            };
        }
        let opts = LoadOptions {
            checkpoint: checkpoint.clone(),
            size,
            version,
            device: resolved,
            precision,
            image_size,
            tuning: self.tuning.clone(),
        };
        if resolved == tch::Device::Cpu
            && precision == crate::device::Precision::Bf16
            && !crate::device::cpu_native_bf16()
        {
            eprintln!("sam2-tui: warning: this CPU has no native bf16 arithmetic (no avx512_bf16/amx_bf16); bf16 will be slower than fp32 here");
        }
        match Sam2Base::load(&opts) {
            Ok(model) => {
                let label_model = ModelLabel {
                    size: model.config.size,
                    version: model.config.version,
                    random_init: crate::model::random_init::is_random_init(&checkpoint),
                };
                let model = Rc::new(model);
                self.video = None;
                // Before the answer: a worker that says it is loaded is also warm.
                self.warm = match warm_up(&model, &self.tuning) {
                    Ok(warm) => warm,
                    Err(e) => {
                        eprintln!("sam2-tui: warm-up skipped: {e:#}");
                        None
                    }
                };
                self.model = Some(model);
                Response::Loaded { model: label_model, device: choice, precision, device_label: label }
            }
            Err(e) => Response::Error { seq: None, message: format!("load {}: {e:#}", checkpoint.display()) },
        }
    }

    fn open(&mut self, path: &std::path::Path, bank_dir: Option<std::path::PathBuf>, fill_holes: bool) -> Response {
        let result = (|| {
            let model = self.model.clone().ok_or_else(|| anyhow::anyhow!("open_media before load_model"))?;
            let frames = crate::media::open(path)?;
            let fps = frames.fps();
            let mut v =
                VideoPredictor::new(model, frames, VideoOptions { fill_holes, bank_dir, tuning: self.tuning.clone() })?;
            if let Some(warm) = self.warm.take() {
                v.adopt(warm);
            }
            let (width, height) = v.video_size();
            let frames = v.num_frames();
            self.video = Some(v);
            Ok::<_, anyhow::Error>(Response::MediaInfo { width, height, frames, fps })
        })();
        result.unwrap_or_else(|e| Response::Error { seq: None, message: format!("open {}: {e:#}", path.display()) })
    }

    fn apply(&mut self, seq: u64, op: &sam2_api::session::Op, cancelled: &dyn Fn() -> bool) -> Response {
        self.faults.check(FaultPoint::Op(seq));
        let Some(video) = self.video.as_mut() else {
            return Response::Error { seq: Some(seq), message: "op before open_media".into() };
        };
        if let Err(e) = op.validate() {
            return Response::Error { seq: Some(seq), message: e };
        }
        let out = self.out.clone();
        let faults = &self.faults;
        let logits_dir = self.tuning.logits_dir.as_deref();
        let mut was_cancelled = false;
        let mut write_error: Option<anyhow::Error> = None;
        let mut on_frame = |f: FrameOutput| {
            // Faults fire before the frame is delivered: the supervisor never sees it,
            // exactly like a crash inside that frame's compute.
            faults.check(FaultPoint::Frame(f.frame));
            if let Err(e) = write_logits(&f, logits_dir) {
                // An output the run promised is missing: the op fails (and `segment`
                // with it) rather than finish with a silent gap.
                write_error = Some(e);
                return ControlFlow::Break(());
            }
            send(&out, &frame_response(seq, f));
            if cancelled() {
                was_cancelled = true;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        if faults.watches_bank_writes_of(seq) {
            let plan = faults.clone();
            let writes = std::cell::Cell::new(0u32);
            crate::predictor::memory_bank::set_before_change(Some(Box::new(move || {
                writes.set(writes.get() + 1);
                plan.check(FaultPoint::BankWrite { op: seq, write: writes.get() });
            })));
        }
        let result = video.apply_journaled(seq, op, &mut on_frame);
        crate::predictor::memory_bank::set_before_change(None);
        if let Some(e) = write_error {
            return Response::Error { seq: Some(seq), message: format!("{e:#}") };
        }
        if result.is_ok() {
            self.faults.check(FaultPoint::OpDone(seq));
        }
        match result {
            Ok(()) => Response::OpDone { seq, cancelled: was_cancelled },
            Err(e) => Response::Error { seq: Some(seq), message: format!("{e:#}") },
        }
    }
}

/// With the `logits_dir` knob set (`segment --logits`), writes each object's float
/// logits there as `<object>/<frame:05>.npy` — they are too large to send through the
/// pipe — before the frame is delivered, so a delivered frame has its logits on disk.
fn write_logits(f: &FrameOutput, dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    let Some(dir) = dir else {
        return Ok(());
    };
    for o in &f.objects {
        let (h, w) = (o.logits.size()[0] as usize, o.logits.size()[1] as usize);
        let data = Vec::<f32>::try_from(o.logits.contiguous().flatten(0, -1))?;
        let path = dir.join(o.object.to_string()).join(format!("{:05}.npy", f.frame));
        sam2_api::util::atomic_write(&path, &crate::media::npy::f32_array(&[h, w], &data))
            .map_err(|e| anyhow::anyhow!("--logits: {e:#}"))?;
    }
    Ok(())
}

/// Thresholds each object's logits at 0 and RLE-encodes the mask, the objects on up to 8
/// threads (plain Rust over the logits' memory: about 0.1 ms a 960×540 mask, so 16
/// objects one after another were a millisecond or two of the host's frame).
fn frame_response(seq: u64, f: FrameOutput) -> Response {
    let logits: Vec<(tch::Tensor, usize, usize)> = f
        .objects
        .iter()
        .map(|o| {
            let (h, w) = (o.logits.size()[0] as usize, o.logits.size()[1] as usize);
            (o.logits.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous(), h, w)
        })
        .collect();
    // SAFETY: each tensor is a contiguous fp32 CPU tensor of h·w elements, alive (and not
    // written) while its slice is in use, which ends before `logits` is dropped.
    let values: Vec<(&[f32], usize, usize)> = logits
        .iter()
        .map(|(t, h, w)| (unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, h * w) }, *h, *w))
        .collect();
    let rles = crate::host_threads::map(values, crate::host_threads::cores().min(8), |(v, h, w)| {
        Rle::encode_positive(v, h, w)
    });
    let objects =
        f.objects.iter().zip(rles).map(|(o, rle)| ObjectMask { object: o.object, rle, score: o.score }).collect();
    Response::Frame { seq, frame: f.frame, objects, timings: f.timings }
}
