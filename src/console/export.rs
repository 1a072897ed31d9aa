//! `e`: writes the masks the console holds in the same layout as `segment --out DIR`
//! (masks.json, annotation PNGs), through the media layer's `OutputWriter`.
use super::app::App;
use crate::media::outputs::{OutputWriter, VideoInfo};
use crate::supervisor::events::ObjectMask;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct Job {
    dir: PathBuf,
    video: VideoInfo,
    model: String,
    masks: BTreeMap<usize, Vec<ObjectMask>>,
}

impl Job {
    pub fn from_app(app: &App, dir: PathBuf) -> Result<Job, String> {
        let m = app.media.ok_or("no video open")?;
        if app.masks.is_empty() {
            return Err("no masks yet: add a prompt or propagate first".into());
        }
        let model = app.engine.model.as_ref().map(|l| format!("SAM {} {}", l.version, l.size)).unwrap_or_default();
        Ok(Job {
            dir,
            video: VideoInfo {
                width: m.width,
                height: m.height,
                frames: m.frames,
                fps: m.fps,
                source: app.input.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            },
            model,
            masks: app.masks.clone(),
        })
    }

    /// Returns the path of the written masks.json.
    pub fn run(self) -> anyhow::Result<PathBuf> {
        let mut w = OutputWriter::new(&self.dir, self.video, &self.model, false)?;
        w.defer_annotations();
        for (frame, objects) in &self.masks {
            for om in objects {
                let bits = om.rle.decode().map_err(|e| anyhow::anyhow!("frame {frame}, object {}: {e}", om.object))?;
                // The writer thresholds logits at 0; ±1 reproduces the engine's mask exactly.
                let logits: Vec<f32> = bits.iter().map(|&b| if b != 0 { 1.0 } else { -1.0 }).collect();
                w.add_logits(*frame, om.object, &logits, om.score)?;
            }
        }
        w.finish()
    }
}
