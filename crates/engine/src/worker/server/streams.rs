//! The worker's streams: several videos held at once, each its own session on the one
//! loaded model (`Request::OpenStream` …, issue #18). Prompts and other ops run on one
//! stream at a time; `PropagateStreams` runs several streams' propagations in lockstep
//! (`predictor::streams`). Every answer names its stream; a stream's failure is that
//! stream's `StreamError` and the worker goes on.
//!
//! A lockstep propagation does not hold the other streams up: between its steps the
//! worker reads what has arrived (`Admission`). Another stream's open, restore or single
//! op runs there and then, and its propagation joins the steps; so a caller can start a
//! new video as soon as one ends, without waiting for the longest of the group. What
//! cannot run mid-propagation waits for its end, in arrival order: a request on a stream
//! still propagating, everything after a request that is not a stream's (`LoadModel`,
//! `Shutdown`, …), and everything after a stream's request that already waits.
use super::{frame_response, send, write_logits, Cancels, Engine, Inbox, Response};
use super::{FaultPoint, Request};
use crate::predictor::streams::{propagate_in_lockstep, LockstepHost, StreamPass};
use crate::predictor::{FrameOutput, VideoOptions, VideoPredictor};
use sam2_api::protocol::StreamOp;
use sam2_api::session::Op;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::rc::Rc;

impl Engine {
    /// Handles a streams request (number `n` in arrival order); any other request is
    /// handed back.
    pub(super) fn handle_streams(&mut self, req: Request, n: u64, inbox: &Inbox) -> Option<Request> {
        match req {
            Request::PropagateStreams { passes } => self.propagate_streams(passes, n, inbox),
            Request::ApplyStream(op) if matches!(op.op, Op::Propagate { .. }) => {
                self.propagate_streams(vec![op], n, inbox)
            }
            other => return self.handle_stream_op(other, n, &inbox.cancels),
        }
        None
    }

    /// A stream's request other than a propagation; any other request is handed back.
    fn handle_stream_op(&mut self, req: Request, n: u64, cancels: &Cancels) -> Option<Request> {
        match req {
            Request::OpenStream { stream, path, bank_dir, fill_holes } => {
                let reply = self.open_stream(stream, &path, bank_dir, fill_holes).unwrap_or_else(|e| Response::Error {
                    seq: None,
                    message: format!("open {}: {e:#}", path.display()),
                });
                send(&self.out, &reply);
            }
            Request::RestoreStream { stream, ops } => {
                let reply = match self.streams.get_mut(&stream) {
                    None => Err(anyhow::anyhow!("stream {stream} is not open")),
                    Some(v) => v.restore(&ops).map(|_| Response::Restored { ops: ops.len() }),
                }
                .unwrap_or_else(|e| Response::Error { seq: None, message: format!("restore stream {stream}: {e:#}") });
                send(&self.out, &reply);
            }
            Request::ApplyStream(op) => self.apply_stream(op, n, cancels),
            Request::CloseStream { stream } => {
                // Dropped here, between requests: a propagation of it has ended (a close
                // waits for that, `Admission::must_wait`).
                self.streams.remove(&stream);
                send(&self.out, &Response::StreamClosed { stream });
            }
            other => return Some(other),
        }
        None
    }

    fn open_stream(
        &mut self,
        stream: u32,
        path: &Path,
        bank_dir: PathBuf,
        fill_holes: bool,
    ) -> anyhow::Result<Response> {
        let model = self.model.clone().ok_or_else(|| anyhow::anyhow!("open_stream before load_model"))?;
        let frames = crate::media::open(path)?;
        let fps = frames.fps();
        let opts = VideoOptions { fill_holes, bank_dir: Some(bank_dir), tuning: self.tuning.clone() };
        let v = VideoPredictor::new(model, frames, opts)?;
        let (width, height) = v.video_size();
        let frames = v.num_frames();
        self.streams.insert(stream, v);
        Ok(Response::MediaInfo { width, height, frames, fps })
    }

    /// One op of one stream (`apply` of the single session, answered per stream).
    fn apply_stream(&mut self, StreamOp { stream, seq, op }: StreamOp, n: u64, cancels: &Cancels) {
        self.faults.check(FaultPoint::Op(seq));
        let sink = FrameSink::new(self, stream, seq, n, cancels);
        let Some(video) = self.streams.get_mut(&stream) else {
            return sink.fail(anyhow::anyhow!("stream {stream} is not open"));
        };
        let result = video.apply_journaled(seq, &op, &mut |f| sink.deliver(f));
        sink.finish(result);
    }

    /// Several streams' propagations in lockstep, and those that arrive while it runs;
    /// each stream answers for itself.
    fn propagate_streams(&mut self, passes: Vec<StreamOp>, n: u64, inbox: &Inbox) {
        let mut admission = Admission { engine: self, inbox, sinks: BTreeMap::new(), waiting: BTreeSet::new() };
        let lockstep = admission.take_passes(passes, n);
        // Each stream's end is answered as it comes: the supervisor publishes a short
        // video, and starts the next, while the longer ones go on.
        propagate_in_lockstep(lockstep, &mut admission);
    }

    /// `segment --logits` for a stream: `<logits_dir>/<stream>/<object>/<frame>.npy`.
    fn stream_logits_dir(&self, stream: u32) -> Option<PathBuf> {
        self.tuning.logits_dir.as_ref().map(|d| d.join(stream.to_string()))
    }
}

/// The worker's side of a lockstep propagation: the streams in it (their sessions taken
/// out of `Engine::streams` while they propagate, and put back as each ends), and the
/// requests read between its steps.
struct Admission<'e> {
    engine: &'e mut Engine,
    inbox: &'e Inbox,
    /// Where each propagating stream's frames and end go.
    sinks: BTreeMap<u32, Rc<FrameSink>>,
    /// Streams with a request deferred to the propagation's end: their later requests
    /// wait too, so that each stream's requests run in the order they came.
    waiting: BTreeSet<u32>,
}

impl Admission<'_> {
    /// The sessions of `passes` as lockstep passes; a stream not open, already
    /// propagating or named twice fails alone.
    fn take_passes(&mut self, passes: Vec<StreamOp>, n: u64) -> Vec<StreamPass<'static>> {
        let mut lockstep = vec![];
        for StreamOp { stream, seq, op } in passes {
            let sink = Rc::new(FrameSink::new(self.engine, stream, seq, n, &self.inbox.cancels));
            let video = match self.engine.streams.remove(&stream) {
                Some(v) if !self.sinks.contains_key(&stream) => v,
                Some(v) => {
                    self.engine.streams.insert(stream, v);
                    sink.fail(anyhow::anyhow!("stream {stream} is propagating already"));
                    continue;
                }
                None if self.sinks.contains_key(&stream) => {
                    sink.fail(anyhow::anyhow!("stream {stream} is propagating already"));
                    continue;
                }
                None => {
                    sink.fail(anyhow::anyhow!("stream {stream} is not open"));
                    continue;
                }
            };
            self.sinks.insert(stream, sink.clone());
            let on_frame = Box::new(move |f| sink.deliver(f));
            lockstep.push(StreamPass { stream, video, op, on_frame });
        }
        lockstep
    }

    /// Whether a request must wait for the propagation's end (and so holds up the
    /// requests after it that it should go before).
    fn must_wait(&mut self, req: &Request) -> bool {
        const EVERYTHING: u32 = u32::MAX;
        let streams: Vec<u32> = match req {
            Request::OpenStream { stream, .. }
            | Request::RestoreStream { stream, .. }
            | Request::CloseStream { stream } => vec![*stream],
            Request::ApplyStream(op) => vec![op.stream],
            Request::PropagateStreams { passes } => passes.iter().map(|p| p.stream).collect(),
            // A request that is not a stream's holds up everything after it.
            _ => vec![EVERYTHING],
        };
        let held = |s: &u32| *s == EVERYTHING || self.sinks.contains_key(s) || self.waiting.contains(s);
        if self.waiting.contains(&EVERYTHING) || streams.iter().any(held) {
            self.waiting.extend(streams);
            return true;
        }
        false
    }
}

impl LockstepHost<'static> for Admission<'_> {
    fn admit(&mut self) -> Vec<StreamPass<'static>> {
        let mut joining = vec![];
        // What waited before is looked at again, first: its stream may have ended since.
        self.waiting.clear();
        let waited: Vec<(u64, Request)> = self.inbox.deferred.borrow_mut().drain(..).collect();
        let arrived = std::iter::from_fn(|| self.inbox.rx.try_recv().ok()).collect::<Vec<_>>();
        for (n, req) in waited.into_iter().chain(arrived) {
            if self.must_wait(&req) {
                self.inbox.deferred.borrow_mut().push_back((n, req));
                continue;
            }
            match req {
                Request::PropagateStreams { passes } => joining.extend(self.take_passes(passes, n)),
                Request::ApplyStream(op) if matches!(op.op, Op::Propagate { .. }) => {
                    joining.extend(self.take_passes(vec![op], n))
                }
                other => {
                    let unhandled = self.engine.handle_stream_op(other, n, &self.inbox.cancels);
                    debug_assert!(unhandled.is_none(), "must_wait keeps other requests back");
                }
            }
        }
        joining
    }

    fn ended(&mut self, pass: StreamPass<'static>, result: anyhow::Result<()>) {
        let StreamPass { stream, video, on_frame, .. } = pass;
        drop(on_frame);
        self.engine.streams.insert(stream, video);
        if let Some(sink) = self.sinks.remove(&stream) {
            sink.finish(result);
        }
    }
}

/// Where one stream's frames of one op go: faults, logits, the pipe, cancel.
struct FrameSink {
    out: super::Out,
    faults: super::FaultPlan,
    stream: u32,
    seq: u64,
    /// The request's number, for its cancel.
    request: u64,
    cancels: Cancels,
    logits: Option<PathBuf>,
    cancelled: Cell<bool>,
    write_error: RefCell<Option<anyhow::Error>>,
}

impl FrameSink {
    fn new(engine: &Engine, stream: u32, seq: u64, request: u64, cancels: &Cancels) -> Self {
        FrameSink {
            out: engine.out.clone(),
            faults: engine.faults.clone(),
            stream,
            seq,
            request,
            cancels: cancels.clone(),
            logits: engine.stream_logits_dir(stream),
            cancelled: Cell::new(false),
            write_error: RefCell::new(None),
        }
    }

    fn deliver(&self, f: FrameOutput) -> ControlFlow<()> {
        // As for the single session: a fault fires before the frame is delivered.
        self.faults.check(FaultPoint::Frame(f.frame));
        if let Err(e) = write_logits(&f, self.logits.as_deref()) {
            *self.write_error.borrow_mut() = Some(e);
            return ControlFlow::Break(());
        }
        let Response::Frame { seq, frame, objects, timings } = frame_response(self.seq, f) else {
            unreachable!("frame_response gives a frame")
        };
        send(&self.out, &Response::StreamFrame { stream: self.stream, seq, frame, objects, timings });
        if self.cancels.stream(self.request, self.stream) {
            self.cancelled.set(true);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn fail(&self, e: anyhow::Error) {
        send(&self.out, &Response::StreamError { stream: self.stream, seq: self.seq, message: format!("{e:#}") });
    }

    fn finish(&self, result: anyhow::Result<()>) {
        let (stream, seq) = (self.stream, self.seq);
        match (self.write_error.borrow_mut().take(), result) {
            (Some(e), _) | (None, Err(e)) => self.fail(e),
            (None, Ok(())) => send(&self.out, &Response::StreamDone { stream, seq, cancelled: self.cancelled.get() }),
        }
    }
}
