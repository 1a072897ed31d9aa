//! The video parity journals (two objects, a click and a box, propagation, corrections,
//! an object added after tracking, a reverse pass, a cleared frame, a partial
//! re-propagation) run through the native engine on the CPU and compared with the
//! reference's outputs: shared by `parity_video` and `parity_mps` (the same journals with
//! the CPU taking the MPS branches).
use sam2_tui::device::Precision;
use sam2_tui::model::{ModelSize, ModelVersion, Sam2Base, Sam2Config};
use sam2_tui::predictor::{VideoOptions, VideoPredictor};
use sam2_tui::session::{Journal, Op};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

pub struct Figures {
    pub max_logit_diff: f64,
    pub mask_agreement: f64,
    pub results: usize,
}

pub fn run_case(size: ModelSize, version: ModelVersion, image_size: i64, frames: usize, postprocess: bool) -> Figures {
    run_case_in(size, version, image_size, frames, postprocess, Precision::Fp32)
}

pub fn run_case_in(
    size: ModelSize,
    version: ModelVersion,
    image_size: i64,
    frames: usize,
    postprocess: bool,
    precision: Precision,
) -> Figures {
    run_case_on(size, version, image_size, frames, postprocess, precision, false)
}

/// The journal on the same frames encoded as an `.mp4`, which the reference reads with
/// decord and the engine with its `decord_video` knob on.
pub fn run_case_mp4(size: ModelSize, version: ModelVersion, image_size: i64, frames: usize) -> Figures {
    run_case_on(size, version, image_size, frames, false, Precision::Fp32, true)
}

fn run_case_on(
    size: ModelSize,
    version: ModelVersion,
    image_size: i64,
    frames: usize,
    postprocess: bool,
    precision: Precision,
    mp4: bool,
) -> Figures {
    let name = format!(
        "video-{size}-{version}-{image_size}-{frames}{}{}-{}",
        if postprocess { "" } else { "-nopp" },
        if mp4 { "-mp4" } else { "" },
        super::fixtures_version()
    );
    let (s, v, i, n) = (size.to_string(), version.to_string(), image_size.to_string(), frames.to_string());
    let mut args = vec![s.as_str(), v.as_str(), i.as_str(), n.as_str()];
    if !postprocess {
        args.push("--no-postprocess");
    }
    if mp4 {
        args.push("--mp4");
    }
    let dir = reference_fixture(&name, "make_video_parity.py", &args);
    let mut tuning = super::tuning();
    tuning.decord_video = mp4;
    let run = Case { size, version, image_size, postprocess, precision, tuning }.run(&dir, &name);
    let f = compare(&run, &dir);
    println!("video parity{} {size} {version} {precision} @{image_size} {frames} frames postprocess={postprocess}: {} results, max |Δlogit| {:.3e}, binary agreement {:.5}%", if sam2_tui::device::emulating_mps() { " (CPU taking the MPS branches)" } else { "" }, f.results, f.max_logit_diff, f.mask_agreement * 100.0);
    f
}

/// The fixture `name` under target/fixtures, made by `script ARGS` (into the folder as
/// its first argument) unless a previous run left its `reference.npz` there.
pub fn reference_fixture(name: &str, script: &str, args: &[&str]) -> std::path::PathBuf {
    let dir = super::fixture_cache(name);
    if !dir.join("reference.npz").exists() {
        let mut all = vec![dir.to_str().unwrap()];
        all.extend_from_slice(args);
        super::run_fixture(script, &all);
    }
    dir
}

/// How the engine runs a fixture's journal.
pub struct Case {
    pub size: ModelSize,
    pub version: ModelVersion,
    pub image_size: i64,
    pub postprocess: bool,
    pub precision: Precision,
    pub tuning: sam2_tui::tuning::Tuning,
}

/// What a journal gave, keyed as the reference's `reference.npz` is: `f{frame}_o{object}`
/// the latest (logits, score) of every (frame, object) still in the session,
/// `op{k}_f{frame}_o{object}` the logits op k emitted (prompt ops, clears, removals).
pub struct Run {
    pub latest: HashMap<String, (Tensor, f32)>,
    pub per_op: HashMap<String, Tensor>,
}

impl Case {
    /// Runs `dir/session.json` on `dir/png` (on `dir/clip.mp4` where the fixture has one)
    /// with `dir/checkpoint.pt`, in process on the CPU, with a fresh memory bank named
    /// after `name`.
    pub fn run(&self, dir: &std::path::Path, name: &str) -> Run {
        tch::set_num_threads(2);
        let journal = Journal::load(&dir.join("session.json")).unwrap();
        let ckpt = sam2_tui::weights::load(&dir.join("checkpoint.pt")).unwrap();
        let config = Sam2Config::new(self.size, self.version).with_image_size(self.image_size);
        let model =
            Rc::new(Sam2Base::from_tensors(config, ckpt.tensors, Device::Cpu, self.precision, &self.tuning).unwrap());
        let clip = dir.join("clip.mp4");
        let source = sam2_tui::media::open(&if clip.exists() { clip } else { dir.join("png") }).unwrap();
        let mps = if sam2_tui::device::emulating_mps() { "-mps" } else { "" };
        let bank = super::scratch(&format!("bank-{name}-{}{mps}", self.precision));
        let mut predictor = VideoPredictor::new(
            model,
            source,
            VideoOptions { fill_holes: self.postprocess, bank_dir: Some(bank), tuning: self.tuning.clone() },
        )
        .unwrap();

        let mut latest: HashMap<String, (Tensor, f32)> = HashMap::new();
        let mut per_op: HashMap<String, Tensor> = HashMap::new();
        for (k, op) in journal.ops.iter().enumerate() {
            let is_prompt_op = matches!(op, Op::AddPrompt { .. } | Op::ClearFrame { .. } | Op::RemoveObject { .. });
            if let Op::RemoveObject { object } = op {
                // A removed object no longer exists: nothing of it is "latest".
                latest.retain(|key, _| !key.ends_with(&format!("_o{object}")));
            }
            predictor
                .apply(op, &mut |out| {
                    for o in out.objects {
                        let key = format!("f{}_o{}", out.frame, o.object);
                        if is_prompt_op {
                            per_op.insert(format!("op{k}_{key}"), o.logits.shallow_clone());
                        }
                        latest.insert(key, (o.logits, o.score));
                    }
                    ControlFlow::Continue(())
                })
                .unwrap_or_else(|e| panic!("op {k} {op:?}: {e:#}"));
        }
        Run { latest, per_op }
    }
}

/// Every result of `run` against `dir/reference.npz`: the same (frame, object) pairs,
/// the same per-op outputs, object presence, max |Δlogit| and binary agreement.
pub fn compare(run: &Run, dir: &std::path::Path) -> Figures {
    let reference = super::read_npz(&dir.join("reference.npz"));
    let mut max_diff: f64 = 0.0;
    let (mut same, mut total) = (0i64, 0i64);
    let mut compared = 0;
    for (key, r) in &reference {
        let ours = if key.starts_with("op") {
            run.per_op.get(key).unwrap_or_else(|| panic!("no result for {key}")).shallow_clone()
        } else {
            run.latest.get(key).unwrap_or_else(|| panic!("no result for {key}")).0.shallow_clone()
        };
        let d = super::max_abs_diff(&ours, r);
        max_diff = max_diff.max(d);
        let a = ours.gt(0.0);
        let b = r.gt(0.0);
        same += a.eq_tensor(&b).sum(Kind::Int64).int64_value(&[]);
        total += a.numel() as i64;
        // Object present or absent: the sign of the logits at the mask level agrees
        // (an absent object is −1024 everywhere on both sides).
        let ours_absent = ours.max().double_value(&[]) < -100.0;
        let ref_absent = r.max().double_value(&[]) < -100.0;
        assert_eq!(ours_absent, ref_absent, "{key}: object presence differs");
        compared += 1;
    }
    assert_eq!(
        run.latest.len(),
        reference.keys().filter(|k| !k.starts_with("op")).count(),
        "same (frame, object) pairs"
    );
    assert_eq!(
        run.per_op.len(),
        reference.keys().filter(|k| k.starts_with("op")).count(),
        "same outputs of the prompt ops"
    );
    Figures { max_logit_diff: max_diff, mask_agreement: same as f64 / total as f64, results: compared }
}

/// Two runs of one journal against each other (e.g. the batched path against one object
/// after another): the same results, max |Δlogit| and binary agreement, as `compare`
/// holds a run to the reference.
pub fn compare_runs(a: &Run, b: &Run) -> Figures {
    assert_eq!(a.latest.len(), b.latest.len(), "same (frame, object) pairs");
    assert_eq!(a.per_op.len(), b.per_op.len(), "same outputs of the prompt ops");
    let mut max_diff: f64 = 0.0;
    let (mut same, mut total) = (0i64, 0i64);
    let pairs = a
        .latest
        .iter()
        .map(|(k, (t, _))| (k, t, &b.latest.get(k).unwrap_or_else(|| panic!("no result for {k}")).0))
        .chain(a.per_op.iter().map(|(k, t)| (k, t, b.per_op.get(k).unwrap_or_else(|| panic!("no result for {k}")))));
    let mut compared = 0;
    for (key, x, y) in pairs {
        max_diff = max_diff.max(super::max_abs_diff(x, y));
        same += x.gt(0.0).eq_tensor(&y.gt(0.0)).sum(Kind::Int64).int64_value(&[]);
        total += x.numel() as i64;
        let absent = |t: &Tensor| t.max().double_value(&[]) < -100.0;
        assert_eq!(absent(x), absent(y), "{key}: object presence differs");
        compared += 1;
    }
    Figures { max_logit_diff: max_diff, mask_agreement: same as f64 / total as f64, results: compared }
}

pub fn assert_parity(f: Figures) {
    assert!(f.results > 20);
    assert!(f.max_logit_diff <= 1e-3, "logits differ by {:e}", f.max_logit_diff);
    assert!(f.mask_agreement >= 0.9999, "binary masks agree on only {:.4}%", f.mask_agreement * 100.0);
}
