//! Several videos propagated at once on one model, in lockstep (issue #18, "several
//! sessions on one GPU"; no reference counterpart: the reference's `propagate_in_video`
//! runs one session's frames one after another).
//!
//! Each video keeps its own session (`VideoPredictor`: its objects, prompts, memory bank
//! and journal); only the model and the calls are shared. A lockstep step takes the next
//! frame of every stream still running and
//!
//! 1. encodes those frames in one image-encoder batch (one frame per stream; a stream
//!    whose objects are all prompted on its frame needs no features and adds none);
//! 2. tracks every (stream, object) pair of the step together, the way `batched` tracks
//!    the objects of one frame: each pair's memories are chosen by its own session
//!    (`prepare_memory_conditioned_features`), the part of memory attention that reads
//!    only the frame (`track_begin`) runs once per stream's frame, and the pairs go
//!    through the rest of memory attention in groups of equal memory length and
//!    pointer-token count — across streams, each pair's queries coming from its own
//!    stream's frame (`Sam2Base::attend_memory_begun`) — then through one mask-decoder
//!    and one memory-encoder call for the whole step, each pair with its own frame's
//!    high-resolution features. Grouping rather than padding keeps every softmax over
//!    exactly the pair's own memory, so a stream's numbers differ from its run alone
//!    only by the rounding of larger matrix products;
//! 3. stages each pair's outputs in its own stream's bank and writes each stream's
//!    frames out through the same frame pipeline as one video (`pipeline`), to that
//!    stream's callback.
//!
//! The set of streams changes as the pass runs: before each step the caller may admit
//! new passes (`LockstepHost::admit`), and a pass that has ended leaves at once, its
//! session handed back (`LockstepHost::ended`), so a worker can start the next video in
//! the place of one that ended.
//!
//! Streams are independent in what can go wrong: a stream whose callback says stop
//! (cancel) or whose input fails (a frame that cannot be decoded, a bank write that
//! fails) ends there with its own result, and the others go on at their next frame.
use super::graphs::Graphs;
use super::memory_bank::{Entry, Slot};
use super::pipeline::{self, Tracked};
use super::video_predictor::ChosenMemories;
use super::{FrameOutput, VideoPredictor};
use crate::model::sam2_base::FrameFeatures;
use sam2_api::events::StageTimings;
use sam2_api::session::{ObjectId, Op};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Instant;
use tch::Tensor;

/// One video's part in a lockstep propagation: its session (held by the pass while it
/// runs and handed back at its end), its `Op::Propagate` and where its frames go (`Break`
/// ends this stream only). `stream` is the caller's name for it.
pub struct StreamPass<'f> {
    pub stream: u32,
    pub video: VideoPredictor,
    pub op: Op,
    pub on_frame: Box<dyn FnMut(FrameOutput) -> ControlFlow<()> + 'f>,
}

/// The caller of a lockstep propagation, asked between steps. Passes join a propagation
/// under way (`admit`) and leave it one by one as they end (`ended`), so the streams in
/// lockstep change while it runs: a worker admits a new video as soon as another ends,
/// instead of waiting for the longest of a fixed group.
pub trait LockstepHost<'f> {
    /// Before each step: passes to start now, beside those running (none: empty).
    fn admit(&mut self) -> Vec<StreamPass<'f>>;
    /// A pass has ended, its state saved and its op committed (`result` says how it
    /// ended): its session goes back to the caller.
    fn ended(&mut self, pass: StreamPass<'f>, result: anyhow::Result<()>);
}

/// A stream's state during the pass.
struct Lane<'f> {
    pass: StreamPass<'f>,
    ids: Vec<ObjectId>,
    order: Vec<usize>,
    reverse: bool,
    /// Index into `order` of the next frame to track.
    next: usize,
    pending: VecDeque<Tracked>,
    last_out: Instant,
    /// Set once the stream has ended (its last frame written out, a cancel, an error).
    result: Option<anyhow::Result<()>>,
}

impl Lane<'_> {
    fn running(&self) -> bool {
        self.result.is_none() && self.next < self.order.len()
    }
}

/// One (stream, object) pair tracked in a step.
#[derive(Clone)]
struct Pair {
    lane: usize,
    id: ObjectId,
    memory: ChosenMemories,
}

/// Propagates every pass in lockstep, and those `host` admits on the way, until none is
/// left running. Each pass runs as `apply_journaled` runs a propagation (an unlogged bank
/// op, the state saved after it) and ends on its own: `host.ended` hears it as soon as it
/// has, while the longer passes go on — so a short video's results need not wait for the
/// longest one's, and its place in the steps goes to the next video admitted.
pub fn propagate_in_lockstep<'f>(passes: Vec<StreamPass<'f>>, host: &mut dyn LockstepHost<'f>) {
    let _g = tch::no_grad_guard();
    let Some(first) = passes.first() else { return };
    let model = first.video.model.clone();
    let _a = first.video.autocast();
    // A lockstep pass is one propagation for the `trace` knob (the first stream's tuning).
    let tuning = first.video.opts.tuning.clone();
    let _trace = crate::trace::propagation(model.device, tuning.trace.as_deref(), tuning.trace_pass);
    // The image encoder's graphs (one per batch size) belong to the group, not a stream.
    let mut encoder = Graphs::new(&model, tuning.cuda_graphs);
    let mut lanes: Vec<Lane> = passes.into_iter().map(begin).collect();
    loop {
        lanes.extend(host.admit().into_iter().map(begin));
        // Lanes that have ended leave, in the order they were admitted.
        let mut l = 0;
        while l < lanes.len() {
            if lanes[l].running() {
                l += 1;
                continue;
            }
            let mut lane = lanes.remove(l);
            let result = lane.result.take().unwrap_or(Ok(()));
            let result = finish(&mut lane.pass.video, result);
            host.ended(lane.pass, result);
        }
        if lanes.is_empty() {
            break;
        }
        let tracked = step(&mut lanes, &model, &mut encoder);
        for (l, t) in tracked {
            let lane = &mut lanes[l];
            lane.pending.push_back(t);
            lane.next += 1;
            let pass = &mut lane.pass;
            let depth = if lane.next == lane.order.len() { 0 } else { pass.video.pipeline_depth };
            match pipeline::write_out_until(
                &mut pass.video,
                &mut lane.pending,
                depth,
                &mut lane.last_out,
                &mut *pass.on_frame,
            ) {
                Ok(ControlFlow::Continue(())) if lane.next == lane.order.len() => lane.result = Some(Ok(())),
                Ok(ControlFlow::Continue(())) => {}
                Ok(ControlFlow::Break(())) => lane.result = Some(Ok(())),
                Err(e) => lane.result = Some(Err(e)),
            }
        }
    }
}

/// The start of a pass: the op checked, an unlogged bank op opened, the frames planned.
/// A pass that cannot start ends here (the others still run).
fn begin(mut pass: StreamPass<'_>) -> Lane<'_> {
    let planned = (|| {
        let Op::Propagate { start, reverse, max_frames } = pass.op else {
            anyhow::bail!("only propagations run in lockstep, not {:?}", pass.op);
        };
        pass.op.validate().map_err(|e| anyhow::anyhow!(e))?;
        pass.video.bank.begin_unlogged_op()?;
        let (ids, order) = pass.video.plan_propagation(start, reverse, max_frames)?;
        Ok::<_, anyhow::Error>((ids, order, reverse))
    })();
    let mut lane = Lane {
        pass,
        ids: vec![],
        order: vec![],
        reverse: false,
        next: 0,
        pending: VecDeque::new(),
        last_out: Instant::now(),
        result: None,
    };
    match planned {
        Ok((ids, order, reverse)) => {
            lane.result = order.is_empty().then_some(Ok(()));
            (lane.ids, lane.order, lane.reverse) = (ids, order, reverse);
        }
        Err(e) => lane.result = Some(Err(e)),
    }
    lane
}

/// The end of a pass, as `apply_journaled` ends a propagation: the state saved and the
/// bank op committed, whatever the pass's result.
fn finish(video: &mut VideoPredictor, result: anyhow::Result<()>) -> anyhow::Result<()> {
    let saved = video.save_state().and_then(|_| video.bank.commit_op());
    result.and(saved)
}

/// One lockstep step over the lanes (every one running): their next frames encoded
/// together and every (stream, object) pair tracked together. Returns each lane's tracked
/// frame; a lane whose input failed gets its result instead (its finished frames written
/// out).
fn step(lanes: &mut [Lane<'_>], model: &Rc<crate::model::Sam2Base>, encoder: &mut Graphs) -> Vec<(usize, Tracked)> {
    let mut timings = StageTimings::default();
    // Which objects each lane tracks on its frame (the others are prompted there).
    let mut tracked: Vec<(usize, Tracked, Vec<ObjectId>)> = vec![];
    for (l, lane) in lanes.iter().enumerate() {
        let frame = lane.order[lane.next];
        let bank = &lane.pass.video.bank;
        let mut t = Tracked::new(frame, lane.reverse);
        let (prompted, to_track): (Vec<ObjectId>, Vec<ObjectId>) =
            lane.ids.iter().partition(|&&id| bank.contains(id, Slot::Cond, frame));
        t.prompted = prompted;
        tracked.push((l, t, to_track));
    }

    // 1. The frames that need features, decoded per stream and encoded in one batch.
    let t0 = Instant::now();
    let mut feats: Vec<Option<Rc<FrameFeatures>>> = vec![None; lanes.len()];
    let mut to_encode: Vec<(usize, usize, Tensor)> = vec![];
    let mut failed: Vec<(usize, anyhow::Error)> = vec![];
    for (l, t, to_track) in &tracked {
        if to_track.is_empty() {
            continue;
        }
        let video = &mut lanes[*l].pass.video;
        if let Some((_, f)) = video.features.iter().find(|(i, _)| *i == t.frame) {
            feats[*l] = Some(f.clone());
            continue;
        }
        match video.frames.get(t.frame) {
            Ok(f) => to_encode.push((*l, t.frame, f.pixels)),
            // The media layer names the frame (its file, for a folder).
            Err(e) => failed.push((*l, e)),
        }
    }
    timings.decode_ms = ms(t0);
    let t0 = Instant::now();
    if !to_encode.is_empty() {
        let pixels: Vec<Tensor> = to_encode.iter().map(|(_, _, p)| p.shallow_clone()).collect();
        for ((l, frame, _), f) in to_encode.into_iter().zip(encoder.encode(model, &pixels)) {
            let f = Rc::new(f);
            let video = &mut lanes[l].pass.video;
            video.features.insert(0, (frame, f.clone()));
            video.features.truncate(2);
            feats[l] = Some(f);
        }
    }
    lanes[0].pass.video.sync();
    timings.image_encoder_ms = ms(t0);

    // 2. Every pair's memories, chosen by its own session.
    let t0 = Instant::now();
    let mut pairs: Vec<Pair> = vec![];
    for (l, t, to_track) in &tracked {
        if failed.iter().any(|(f, _)| f == l) {
            continue;
        }
        let video = &mut lanes[*l].pass.video;
        let mut mine = vec![];
        for &id in to_track {
            match video.choose_memories(id, t.frame, t.reverse) {
                Ok(memory) => mine.push(Pair { lane: *l, id, memory }),
                Err(e) => {
                    failed.push((*l, e));
                    mine.clear();
                    break;
                }
            }
        }
        pairs.extend(mine);
    }
    let entries = track_pairs(model, encoder, &pairs, &feats, &mut timings, t0, || lanes[0].pass.video.sync());

    // 3. The outputs staged in each stream's bank, the host copies queued.
    let mut out = vec![];
    for (l, mut t, _) in tracked {
        let lane = &mut lanes[l];
        let video = &mut lane.pass.video;
        if let Some(i) = failed.iter().position(|(f, _)| *f == l) {
            let (_, e) = failed.swap_remove(i);
            // Still deliver the frames that were finished before the failure.
            let _ =
                pipeline::write_out_until(video, &mut lane.pending, 0, &mut lane.last_out, &mut *lane.pass.on_frame);
            lane.result = Some(Err(e));
            continue;
        }
        for (pair, entry) in pairs.iter().zip(&entries).filter(|(p, _)| p.lane == l) {
            t.staged.push(video.bank.stage(pair.id, Slot::NonCond, t.frame, entry.shallow(), Some(t.reverse)));
        }
        video.bank.advance(t.frame, t.reverse);
        t.copy_to_host(&video.bank, model.device);
        t.timings = timings;
        out.push((l, t));
    }
    out
}

/// Memory attention, the SAM heads and the memory encoder for every pair of a step (see
/// the module comment); each pair's outputs, in the order of `pairs`.
fn track_pairs(
    model: &Rc<crate::model::Sam2Base>,
    graphs: &mut Graphs,
    pairs: &[Pair],
    feats: &[Option<Rc<FrameFeatures>>],
    timings: &mut StageTimings,
    t0: Instant,
    sync: impl Fn(),
) -> Vec<Entry> {
    if pairs.is_empty() {
        return vec![];
    }
    let feat = |l: usize| feats[l].as_ref().expect("a tracked stream's frame is encoded");
    // Each pair's own frame's features, batched in the order of `pairs`.
    let per_pair = |f: &dyn Fn(&FrameFeatures) -> &Tensor| {
        Tensor::cat(&pairs.iter().map(|p| f(feat(p.lane)).shallow_clone()).collect::<Vec<_>>(), 0)
    };
    let frames = || FrameFeatures {
        high_res: [per_pair(&|f| &f.high_res[0]), per_pair(&|f| &f.high_res[1])],
        feat: per_pair(&|f| &f.feat),
        pos: per_pair(&|f| &f.pos),
    };
    let one = |x: &Tensor, i: usize| x.narrow(0, i as i64, 1).copy();
    let entries = |maskmem: &Tensor, low: &Tensor, ptr: &Tensor, score: &Tensor| {
        (0..pairs.len())
            .map(|i| Entry {
                maskmem: Some(one(maskmem, i)),
                pred_masks: one(low, i),
                obj_ptr: one(ptr, i),
                score: one(score, i),
            })
            .collect()
    };
    // The steady state of streams of one object each: every pair from another stream and
    // with as many memories and pointers as every other (all banks full). The whole step
    // is then `Sam2Base::track_step_batched` over the pairs' frames, which on CUDA is one
    // graph per (pairs, memory shape), captured on its second consecutive step, as for
    // the objects of one video (`batched`); eagerly it is the path below with the
    // frame-only start of memory attention batched over the streams too. Its stage times
    // are the whole step's, under memory attention.
    // One pair alone (one stream left running, or a single stream): the one-object step
    // of a video tracked alone, through the same graphs, so its numbers are exactly those
    // of that stream run by itself.
    if let [pair] = pairs {
        let memory = pair.memory.assemble(model);
        let [low, ptr, score, maskmem] = graphs.track_step(model, feat(pair.lane), &memory);
        sync();
        timings.memory_attention_ms = ms(t0);
        return vec![Entry { maskmem: Some(maskmem), pred_masks: low, obj_ptr: ptr, score }];
    }
    let distinct_lanes = pairs.iter().enumerate().all(|(i, p)| pairs[..i].iter().all(|q| q.lane != p.lane));
    let one_shape = pairs.iter().all(|p| p.memory.counts() == pairs[0].memory.counts());
    if distinct_lanes && !one_shape {
        let sync: &dyn Fn() = &sync;
        let mut track = |part: &[Pair]| track_pairs(model, graphs, part, feats, timings, t0, sync);
        if let Some(entries) = steady_apart(pairs, &mut track) {
            return entries;
        }
    }
    if distinct_lanes && one_shape && pairs.len() > 1 {
        let all: Vec<&ChosenMemories> = pairs.iter().map(|p| &p.memory).collect();
        let memory = ChosenMemories::assemble_group(model, &all);
        let [low, ptr, score, maskmem] =
            graphs.track_step_batched(model, &frames(), &memory.tokens, &memory.pos, memory.num_ptr_tokens);
        sync();
        timings.memory_attention_ms = ms(t0);
        return entries(&maskmem, &low, &ptr, &score);
    }
    // The frame-only start of memory attention, once per stream's frame.
    let mut begun: Vec<Option<(Tensor, Tensor)>> = (0..feats.len()).map(|_| None).collect();
    for p in pairs {
        if begun[p.lane].is_none() {
            begun[p.lane] = Some(model.track_begin(&feat(p.lane).feat, &feat(p.lane).pos));
        }
    }
    // Groups of one memory shape, in order of appearance, each assembled side by side.
    let groups = ChosenMemories::group_by_counts(pairs.iter().map(|p| &p.memory), pairs.len());
    let e = feat(pairs[0].lane).feat.size()[2];
    let mut pix: Vec<Option<Tensor>> = pairs.iter().map(|_| None).collect();
    for members in &groups {
        let cat =
            |f: &dyn Fn(&Pair) -> Tensor| Tensor::cat(&members.iter().map(|&i| f(&pairs[i])).collect::<Vec<_>>(), 0);
        let started = (
            cat(&|p| begun[p.lane].as_ref().unwrap().0.shallow_clone()),
            cat(&|p| begun[p.lane].as_ref().unwrap().1.shallow_clone()),
        );
        let all: Vec<&ChosenMemories> = members.iter().map(|&i| &pairs[i].memory).collect();
        let memory = ChosenMemories::assemble_group(model, &all);
        let out = model.attend_memory_begun(started, &memory.tokens, &memory.pos, memory.num_ptr_tokens, e);
        for (j, &i) in members.iter().enumerate() {
            pix[i] = Some(out.narrow(0, j as i64, 1));
        }
    }
    let pix = Tensor::cat(&pix.into_iter().map(|p| p.expect("every pair in a group")).collect::<Vec<_>>(), 0);
    sync();
    timings.memory_attention_ms = ms(t0);

    let frames = frames();
    let t = Instant::now();
    let sam = model.forward_sam_heads(&pix, None, None, &frames.high_res, true);
    sync();
    timings.mask_decoder_ms = ms(t);
    let t = Instant::now();
    let maskmem = model.encode_new_memory(&frames, &sam.high_res_masks, &sam.object_score_logits, false);
    sync();
    timings.memory_encoder_ms = ms(t);
    entries(&maskmem, &sam.low_res_masks, &sam.obj_ptr, &sam.object_score_logits)
}

/// While a stream that joined lately fills its memories and pointers (its first 16
/// steps), the streams whose banks agree step as the steady state does, through its graph,
/// and only the others go the eager way: `track_pairs` of each part, the outputs in the
/// order of `pairs`. Taken as one, a newcomer sent every stream the eager way for those
/// steps, and in a manifest of mixed lengths, where a video joins every second or two,
/// most steps (timed on an H100: ~80 ms a step of eight streams against the steady 34.5).
/// Each pair's outputs are what they are in any batch (the streams tests hold every
/// stream to its run alone). `track` is `track_pairs` of a part. None where no two pairs
/// agree, or all do.
fn steady_apart(pairs: &[Pair], track: &mut dyn FnMut(&[Pair]) -> Vec<Entry>) -> Option<Vec<Entry>> {
    let groups = ChosenMemories::group_by_counts(pairs.iter().map(|p| &p.memory), pairs.len());
    let steady = groups.into_iter().filter(|g| g.len() > 1 && g.len() < pairs.len()).max_by_key(Vec::len)?;
    let (inside, outside): (Vec<usize>, Vec<usize>) = (0..pairs.len()).partition(|i| steady.contains(i));
    let mut out: Vec<Option<Entry>> = pairs.iter().map(|_| None).collect();
    for part in [inside, outside] {
        let these: Vec<Pair> = part.iter().map(|&i| pairs[i].clone()).collect();
        for (i, entry) in part.into_iter().zip(track(&these)) {
            out[i] = Some(entry);
        }
    }
    out.into_iter().collect()
}

fn ms(t: Instant) -> f32 {
    t.elapsed().as_secs_f32() * 1000.0
}
