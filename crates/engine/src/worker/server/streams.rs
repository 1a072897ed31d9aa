//! The worker's streams: several videos held at once, each its own session on the one
//! loaded model (`Request::OpenStream` …, issue #18). Prompts and other ops run on one
//! stream at a time; `PropagateStreams` runs several streams' propagations in lockstep
//! (`predictor::streams`). Every answer names its stream; a stream's failure is that
//! stream's `StreamError` and the worker goes on.
use super::{frame_response, send, write_logits, Engine, Response};
use super::{FaultPoint, Request};
use crate::predictor::streams::{propagate_in_lockstep, StreamPass};
use crate::predictor::{FrameOutput, VideoOptions, VideoPredictor};
use sam2_api::protocol::StreamOp;
use std::cell::{Cell, RefCell};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

impl Engine {
    /// Handles a streams request; any other request is handed back.
    pub(super) fn handle_streams(&mut self, req: Request, cancelled: &dyn Fn(u32) -> bool) -> Option<Request> {
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
            Request::ApplyStream(op) => self.apply_stream(op, cancelled),
            Request::PropagateStreams { passes } => self.propagate_streams(passes, cancelled),
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
    fn apply_stream(&mut self, StreamOp { stream, seq, op }: StreamOp, cancelled: &dyn Fn(u32) -> bool) {
        self.faults.check(FaultPoint::Op(seq));
        let sink = FrameSink::new(self, stream, seq, self.stream_logits_dir(stream));
        let Some(video) = self.streams.get_mut(&stream) else {
            return sink.fail(anyhow::anyhow!("stream {stream} is not open"));
        };
        let result = video.apply_journaled(seq, &op, &mut |f| sink.deliver(f, cancelled));
        sink.finish(result);
    }

    /// Several streams' propagations in lockstep; each stream answers for itself.
    fn propagate_streams(&mut self, passes: Vec<StreamOp>, cancelled: &dyn Fn(u32) -> bool) {
        let sinks: Vec<FrameSink> =
            passes.iter().map(|p| FrameSink::new(self, p.stream, p.seq, self.stream_logits_dir(p.stream))).collect();
        type OnFrame<'s> = Box<dyn FnMut(FrameOutput) -> ControlFlow<()> + 's>;
        let mut on_frames: Vec<OnFrame> =
            sinks.iter().map(|s| -> OnFrame { Box::new(move |f| s.deliver(f, cancelled)) }).collect();
        // Each stream once, in the order asked; one not open (or named twice) fails alone.
        let mut videos: Vec<Option<&mut VideoPredictor>> = passes.iter().map(|_| None).collect();
        for (stream, video) in self.streams.iter_mut() {
            if let Some(i) = passes.iter().position(|p| p.stream == *stream) {
                videos[i] = Some(video);
            }
        }
        let mut lockstep = vec![];
        let mut which = vec![];
        for ((i, video), on_frame) in videos.into_iter().enumerate().zip(on_frames.iter_mut()) {
            match video {
                Some(video) => {
                    lockstep.push(StreamPass { video, op: passes[i].op.clone(), on_frame: &mut **on_frame });
                    which.push(i);
                }
                None => sinks[i].fail(anyhow::anyhow!("stream {} is not open", passes[i].stream)),
            }
        }
        // Each stream's end is answered as it comes: the supervisor publishes a short
        // video while the longer ones go on.
        propagate_in_lockstep(&mut lockstep, &mut |l, result| sinks[which[l]].finish(result));
    }

    /// `segment --logits` for a stream: `<logits_dir>/<stream>/<object>/<frame>.npy`.
    fn stream_logits_dir(&self, stream: u32) -> Option<PathBuf> {
        self.tuning.logits_dir.as_ref().map(|d| d.join(stream.to_string()))
    }
}

/// Where one stream's frames of one op go: faults, logits, the pipe, cancel.
struct FrameSink {
    out: super::Out,
    faults: super::FaultPlan,
    stream: u32,
    seq: u64,
    logits: Option<PathBuf>,
    cancelled: Cell<bool>,
    write_error: RefCell<Option<anyhow::Error>>,
}

impl FrameSink {
    fn new(engine: &Engine, stream: u32, seq: u64, logits: Option<PathBuf>) -> Self {
        FrameSink {
            out: engine.out.clone(),
            faults: engine.faults.clone(),
            stream,
            seq,
            logits,
            cancelled: Cell::new(false),
            write_error: RefCell::new(None),
        }
    }

    fn deliver(&self, f: FrameOutput, cancelled: &dyn Fn(u32) -> bool) -> ControlFlow<()> {
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
        if cancelled(self.stream) {
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
