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
}

impl Report {
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        crate::util::atomic_write(path, &text)
    }
}

const HEADER: [&str; 16] = [
    "model",
    "device",
    "prec",
    "status",
    "frames",
    "FPS",
    "1st mask",
    "click ms",
    "enc ms",
    "attn ms",
    "dec ms",
    "memenc ms",
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
            if r.frames > 0 { r.frames.to_string() } else { "-".into() },
            r.fps.map(|f| format!("{f:.2}")).unwrap_or_else(|| "-".into()),
            r.time_to_first_mask_s.map(|t| format!("{t:.1}s")).unwrap_or_else(|| "-".into()),
            ms(r.click_ms),
            ms(s.map(|s| s.image_encoder)),
            ms(s.map(|s| s.memory_attention)),
            ms(s.map(|s| s.mask_decoder)),
            ms(s.map(|s| s.memory_encoder)),
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
}
