//! Hole filling of low-res mask logits (`fill_holes_in_mask_scores`). The reference
//! relies on a CUDA-only connected-components kernel and silently skips the step
//! elsewhere; this is the same rule on every device: background components (logit ≤ 0,
//! 8-connectivity) of area ≤ `max_area` are set to 0.1.
use tch::{Device, Kind, Tensor};

/// Labels the 8-connected components of `mask` (row-major, `h`×`w`): returns per-pixel
/// labels (0 = not in mask, else 1-based component id) and each component's area.
pub fn connected_components(mask: &[bool], h: usize, w: usize) -> (Vec<u32>, Vec<u32>) {
    let mut labels = vec![0u32; h * w];
    let mut areas = vec![0u32]; // index 0 unused
    let mut stack = Vec::new();
    for start in 0..h * w {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        let id = areas.len() as u32;
        let mut area = 0u32;
        labels[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            area += 1;
            let (y, x) = ((i / w) as isize, (i % w) as isize);
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let (ny, nx) = (y + dy, x + dx);
                    if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if mask[j] && labels[j] == 0 {
                        labels[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        areas.push(area);
    }
    (labels, areas)
}

/// Fills holes of area ≤ `max_area` in `[1,1,h,w]` logits, on any device (the 256×256
/// map goes through the CPU: a few hundred KB, negligible next to the model).
pub fn fill_holes(logits: &Tensor, max_area: u32) -> Tensor {
    let (_, _, h, w) = logits.size4().unwrap();
    let (h, w) = (h as usize, w as usize);
    let cpu = logits.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let mut v: Vec<f32> = Vec::<f32>::try_from(cpu.flatten(0, -1)).unwrap();
    let bg: Vec<bool> = v.iter().map(|&x| x <= 0.0).collect();
    let (labels, areas) = connected_components(&bg, h, w);
    let mut changed = false;
    for (i, &l) in labels.iter().enumerate() {
        if l > 0 && areas[l as usize] <= max_area {
            v[i] = 0.1;
            changed = true;
        }
    }
    if !changed {
        return logits.shallow_clone();
    }
    Tensor::from_slice(&v).reshape([1, 1, h as i64, w as i64]).to_device(logits.device()).to_kind(logits.kind())
}
