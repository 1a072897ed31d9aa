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

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent labelling: classic two-pass union-find over 8-neighbours.
    fn union_find_areas(mask: &[bool], h: usize, w: usize) -> Vec<u32> {
        fn find(p: &mut Vec<usize>, mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        let mut parent: Vec<usize> = (0..h * w).collect();
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if !mask[i] {
                    continue;
                }
                let prev = [(-1i64, -1i64), (-1, 0), (-1, 1), (0, -1)];
                for (dy, dx) in prev {
                    let (ny, nx) = (y as i64 + dy, x as i64 + dx);
                    if ny >= 0 && nx >= 0 && nx < w as i64 {
                        let j = ny as usize * w + nx as usize;
                        if mask[j] {
                            let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                            parent[a.max(b)] = a.min(b);
                        }
                    }
                }
            }
        }
        let mut size = vec![0u32; h * w];
        for i in 0..h * w {
            if mask[i] {
                let r = find(&mut parent, i);
                size[r] += 1;
            }
        }
        (0..h * w).map(|i| if mask[i] { size[find(&mut parent, i)] } else { 0 }).collect()
    }

    #[test]
    fn component_areas_match_an_independent_union_find() {
        let (h, w) = (37, 53);
        let mut state = 12345u64;
        for density in [0.2, 0.45, 0.6, 0.8] {
            let mask: Vec<bool> = (0..h * w)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 33) as f64 / (1u64 << 31) as f64) < density
                })
                .collect();
            let (labels, areas) = connected_components(&mask, h, w);
            let ours: Vec<u32> = labels.iter().map(|&l| if l > 0 { areas[l as usize] } else { 0 }).collect();
            assert_eq!(ours, union_find_areas(&mask, h, w), "density {density}");
        }
    }

    #[test]
    fn fills_background_holes_up_to_eight_pixels_and_no_larger() {
        // Foreground everywhere, with a 2x4 hole (8 px, filled), a 3x3 hole (9 px, kept)
        // and a diagonal pair (8-connected: one component of 2, filled).
        let (h, w) = (16, 16);
        let mut v = vec![5.0f32; h * w];
        for y in 2..4 {
            for x in 2..6 {
                v[y * w + x] = -1.0;
            }
        }
        for y in 8..11 {
            for x in 8..11 {
                v[y * w + x] = -1.0;
            }
        }
        v[13 * w + 2] = 0.0;
        v[14 * w + 3] = -2.0;
        let t = Tensor::from_slice(&v).reshape([1, 1, h as i64, w as i64]);
        let out: Vec<f32> = Vec::try_from(fill_holes(&t, 8).flatten(0, -1)).unwrap();
        assert!((out[2 * w + 2] - 0.1).abs() < 1e-6, "8-pixel hole filled with 0.1");
        assert_eq!(out[9 * w + 9], -1.0, "9-pixel hole kept");
        assert!((out[13 * w + 2] - 0.1).abs() < 1e-6 && (out[14 * w + 3] - 0.1).abs() < 1e-6, "diagonal pair is one small component");
        assert_eq!(out[0], 5.0, "foreground untouched");
    }
}
