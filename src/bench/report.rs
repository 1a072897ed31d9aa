//! The bench's outputs: a terminal table (one line per row) and a JSON document with the
//! machine and settings, written atomically.
use super::machine::Machine;
use super::measure::{RowResult, RowStatus};
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub resolution: (u32, u32),
    pub image_size: i64,
    pub precision: String,
    pub threads: Option<usize>,
    pub click: String,
    pub frames_dir_cpu: Option<String>,
    pub frames_dir_accelerator: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub rows: Vec<RowResult>,
    /// Between rows that differ only in their object count.
    pub marginal: Vec<MarginalCost>,
}

/// What one more object costs per frame, from two rows of one model, device and
/// precision with different object counts: the difference of their frame times
/// (1000 / FPS) divided by the difference of their object counts; the same for the
/// reference where both rows carry its figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MarginalCost {
    pub size: crate::model::config::ModelSize,
    pub device: crate::device::DeviceChoice,
    pub precision: crate::device::Precision,
    pub from_objects: usize,
    pub to_objects: usize,
    pub ms_per_object: f64,
    pub reference_ms_per_object: Option<f64>,
}

impl MarginalCost {
    pub fn line(&self) -> String {
        let reference = match self.reference_ms_per_object {
            Some(r) => format!("; reference {r:.1} ms, ours/reference {:.2}x", self.ms_per_object / r),
            None => String::new(),
        };
        format!(
            "marginal cost {} {} {}, {} -> {} objects: {:.1} ms per extra object per frame{reference}",
            self.size, self.device, self.precision, self.from_objects, self.to_objects, self.ms_per_object
        )
    }
}

/// The marginal cost between consecutive object counts of every (model, device,
/// precision) measured at more than one count (rows that have an FPS).
pub fn marginal_costs(rows: &[RowResult]) -> Vec<MarginalCost> {
    let mut out = vec![];
    let mut seen: Vec<(String, String, String)> = vec![];
    for r in rows {
        let key = (r.size.to_string(), r.device.to_string(), r.precision.to_string());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key.clone());
        let mut same: Vec<&RowResult> = rows
            .iter()
            .filter(|o| (o.size.to_string(), o.device.to_string(), o.precision.to_string()) == key)
            .filter(|o| o.fps.is_some_and(|f| f > 0.0))
            .collect();
        same.sort_by_key(|o| o.objects);
        same.dedup_by_key(|o| o.objects);
        for w in same.windows(2) {
            let (a, b) = (w[0], w[1]);
            let n = (b.objects - a.objects) as f64;
            let per = |fa: f64, fb: f64| (1000.0 / fb - 1000.0 / fa) / n;
            let reference = match (&a.reference, &b.reference) {
                (Some(ra), Some(rb)) if ra.fps > 0.0 && rb.fps > 0.0 => Some(per(ra.fps, rb.fps)),
                _ => None,
            };
            out.push(MarginalCost {
                size: a.size,
                device: a.device,
                precision: a.precision,
                from_objects: a.objects,
                to_objects: b.objects,
                ms_per_object: per(a.fps.unwrap(), b.fps.unwrap()),
                reference_ms_per_object: reference,
            });
        }
    }
    out
}

impl Report {
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        crate::util::atomic_write(path, &text)
    }
}

const HEADER: [&str; 18] = [
    "model",
    "device",
    "prec",
    "status",
    "objs",
    "frames",
    "FPS",
    "1st mask",
    "click ms",
    "enc ms",
    "attn ms",
    "dec ms",
    "memenc ms",
    "out ms",
    "frame ms",
    "peak RSS",
    "CUDA peak",
    "crashes",
];

/// One string per table line: a header, then one line per row (plus a reference line
/// under rows that have one). Failed and unavailable rows say why.
pub fn table(rows: &[RowResult]) -> Vec<String> {
    let mut cells: Vec<Vec<String>> = vec![HEADER.iter().map(|s| s.to_string()).collect()];
    let mut notes: Vec<(usize, String)> = vec![];
    for r in rows {
        let model = format!("{}{}", r.size, if r.random_init { " (random-init)" } else { "" });
        let status = match r.status {
            RowStatus::Ok => "ok",
            RowStatus::Unavailable => "unavailable",
            RowStatus::Failed => "FAILED",
        };
        let s = r.stages_ms;
        let ms = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
        cells.push(vec![
            model,
            r.device.to_string(),
            r.precision.to_string(),
            status.into(),
            r.objects.to_string(),
            if r.frames > 0 { r.frames.to_string() } else { "-".into() },
            r.fps.map(|f| format!("{f:.2}")).unwrap_or_else(|| "-".into()),
            r.time_to_first_mask_s.map(|t| format!("{t:.1}s")).unwrap_or_else(|| "-".into()),
            ms(r.click_ms),
            ms(s.map(|s| s.image_encoder)),
            ms(s.map(|s| s.memory_attention)),
            ms(s.map(|s| s.mask_decoder)),
            ms(s.map(|s| s.memory_encoder)),
            ms(s.map(|s| s.write_out)),
            ms(s.map(|s| s.total)),
            r.peak_rss_bytes.map(gib).unwrap_or_else(|| "-".into()),
            r.cuda_peak_allocated_bytes.map(gib).unwrap_or_else(|| "-".into()),
            r.crashes.len().to_string(),
        ]);
        let line = cells.len() - 1;
        if let Some(e) = &r.error {
            notes.push((
                line,
                format!("  {}: {e}", if r.status == RowStatus::Unavailable { "unavailable" } else { "error" }),
            ));
        }
        if !r.crashes.is_empty() {
            notes.push((line, format!("  crashes: {}", r.crashes.join("; "))));
        }
        // Where the host's write-out goes, once it is large enough to bound the frame.
        if let Some(s) = s.filter(|s| s.write_out >= 2.0) {
            notes.push((
                line,
                format!(
                    "  write-out {:.1} ms: hole filling {:.1}, memory bank {:.1}, masks to video size {:.1}",
                    s.write_out, s.fill_holes, s.bank_write, s.to_video
                ),
            ));
        }
        if let Some(rf) = &r.reference {
            let ratio = r.fps.map(|f| format!("{:.2}x", f / rf.fps)).unwrap_or_else(|| "-".into());
            notes.push((
                line,
                format!(
                    "  reference ({}): {:.2} FPS, first mask {:.1}s, whole run {:.1}s; ours/reference FPS {ratio}",
                    rf.mode, rf.fps, rf.first_mask_s, rf.whole_s
                ),
            ));
        }
    }
    let widths: Vec<usize> =
        (0..HEADER.len()).map(|c| cells.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = vec![];
    for (i, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            // Names left-aligned, numbers right-aligned.
            .map(|(c, v)| if c < 4 { format!("{v:<w$}", w = widths[c]) } else { format!("{v:>w$}", w = widths[c]) })
            .collect();
        out.push(line.join("  ").trim_end().to_string());
        out.extend(notes.iter().filter(|(l, _)| *l == i).map(|(_, n)| n.clone()));
    }
    out
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceChoice, Precision};
    use crate::model::config::ModelSize;

    #[test]
    fn an_unavailable_row_is_a_line_that_says_why() {
        let rows =
            vec![RowResult::unavailable(ModelSize::Tiny, DeviceChoice::Cuda, Precision::Fp32, "CUDA is not available")];
        let lines = table(&rows);
        assert!(lines[0].starts_with("model"));
        assert!(
            lines[1].contains("tiny") && lines[1].contains("cuda") && lines[1].contains("unavailable"),
            "{lines:?}"
        );
        assert!(lines[2].contains("CUDA is not available"));
    }

    #[test]
    fn the_marginal_cost_is_the_frame_time_difference_per_extra_object() {
        let row = |objects, fps, reference_fps: Option<f64>| {
            let mut r = RowResult::empty(ModelSize::Tiny, DeviceChoice::Cpu, Precision::Fp32, RowStatus::Ok);
            r.objects = objects;
            r.fps = Some(fps);
            r.reference = reference_fps.map(|fps| crate::bench::reference::ReferenceResult {
                mode: "cpu".into(),
                objects,
                frames: 8,
                fps,
                build_s: 0.0,
                init_state_s: 0.0,
                first_mask_s: 0.0,
                whole_s: 0.0,
                peak_rss_bytes: None,
                cuda_peak_allocated_bytes: None,
                checkpoint: None,
            });
            r
        };
        // 10 FPS = 100 ms a frame, 5 FPS = 200 ms: 100 ms for 3 more objects.
        let rows = vec![row(4, 5.0, Some(2.0)), row(1, 10.0, Some(4.0)), row(16, 2.0, None)];
        let m = marginal_costs(&rows);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].from_objects, m[0].to_objects), (1, 4));
        assert!((m[0].ms_per_object - 100.0 / 3.0).abs() < 1e-9);
        assert!((m[0].reference_ms_per_object.unwrap() - 250.0 / 3.0).abs() < 1e-9);
        assert_eq!((m[1].from_objects, m[1].to_objects, m[1].reference_ms_per_object), (4, 16, None));
        assert!((m[1].ms_per_object - 300.0 / 12.0).abs() < 1e-9);
        assert!(m[0].line().contains("1 -> 4 objects: 33.3 ms per extra object per frame; reference 83.3 ms"));
        let mut other = row(4, 1.0, None);
        other.size = ModelSize::Small;
        assert!(marginal_costs(&[row(1, 10.0, None), other]).is_empty(), "one count per model: nothing to compare");
    }
}
