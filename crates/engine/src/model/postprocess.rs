//! Hole filling of low-res mask logits (`fill_holes_in_mask_scores`). The reference
//! relies on a CUDA-only connected-components kernel and silently skips the step
//! elsewhere; this is the same rule on every device: background components (logit ≤ 0,
//! 8-connectivity) of area ≤ `max_area` are set to 0.1.
use tch::{Device, Kind, Tensor};

/// A horizontal run of mask pixels: row `y`, columns `x0..x1`.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub y: usize,
    pub x0: usize,
    pub x1: usize,
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// The 8-connected components of `mask` (row-major, `h`×`w`) as runs, each with the area
/// of its component. Union-find over runs rather than pixels: a mask has a few runs per
/// row, so this is one pass over the pixels plus a few hundred unions (a pixel flood fill
/// of the background took 1.5 ms a frame, on the host thread that feeds the GPU).
pub fn component_runs(mask: &[bool], h: usize, w: usize) -> Vec<(Run, u32)> {
    let mut runs = Vec::new();
    let mut row_start = Vec::with_capacity(h + 1);
    for y in 0..h {
        row_start.push(runs.len());
        let row = &mask[y * w..(y + 1) * w];
        let mut x = 0;
        while x < w {
            if row[x] {
                let x0 = x;
                while x < w && row[x] {
                    x += 1;
                }
                runs.push(Run { y, x0, x1: x });
            } else {
                x += 1;
            }
        }
    }
    row_start.push(runs.len());
    let mut parent: Vec<usize> = (0..runs.len()).collect();
    for y in 1..h {
        let (mut i, mut j) = (row_start[y], row_start[y - 1]);
        while i < row_start[y + 1] && j < row_start[y] {
            let (a, b) = (runs[i], runs[j]);
            // 8-connected: the columns of `a`, widened by one on each side, meet `b`'s.
            if b.x0 <= a.x1 && a.x0 <= b.x1 {
                let (ra, rb) = (find(&mut parent, i), find(&mut parent, j));
                parent[ra.max(rb)] = ra.min(rb);
            }
            // The run that ends first cannot touch anything further along the other row.
            if a.x1 < b.x1 {
                i += 1;
            } else {
                j += 1;
            }
        }
    }
    let mut area = vec![0u32; runs.len()];
    for (i, r) in runs.iter().enumerate() {
        let root = find(&mut parent, i);
        area[root] += (r.x1 - r.x0) as u32;
    }
    (0..runs.len()).map(|i| (runs[i], area[find(&mut parent, i)])).collect()
}

/// Fills holes of area ≤ `max_area` in `[1,1,h,w]` logits, on any device (the 256×256
/// map goes through the CPU: a few hundred KB, negligible next to the model).
pub fn fill_holes(logits: &Tensor, max_area: u32) -> Tensor {
    fill_holes_many(std::slice::from_ref(logits), max_area).pop().expect("one mask in, one out")
}

/// `fill_holes` for the masks of several objects: the labelling (plain Rust, about 0.1 ms
/// a mask) runs on up to 8 threads, the tensor copies on the calling thread (a thread
/// running libtorch ops starts an OpenMP team of its own, see `VideoPredictor::write_out`).
/// At 16 objects one after another it was 1.8 ms of an H100 host's write-out a frame.
pub fn fill_holes_many(logits: &[Tensor], max_area: u32) -> Vec<Tensor> {
    let maps: Vec<(Vec<f32>, usize, usize)> = logits
        .iter()
        .map(|l| {
            let (_, _, h, w) = l.size4().unwrap();
            let cpu = l.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
            (Vec::<f32>::try_from(cpu.flatten(0, -1)).unwrap(), h as usize, w as usize)
        })
        .collect();
    let maps = crate::host_threads::map(maps, crate::host_threads::cores().min(8), |(mut v, h, w)| {
        let changed = fill_map(&mut v, h, w, max_area);
        (v, h, w, changed)
    });
    logits
        .iter()
        .zip(maps)
        .map(|(l, (v, h, w, changed))| {
            if !changed {
                return l.shallow_clone();
            }
            Tensor::from_slice(&v).reshape([1, 1, h as i64, w as i64]).to_device(l.device()).to_kind(l.kind())
        })
        .collect()
}

/// The rule on one row-major `h`×`w` map of logits, in place; whether anything changed.
fn fill_map(v: &mut [f32], h: usize, w: usize, max_area: u32) -> bool {
    let bg: Vec<bool> = v.iter().map(|&x| x <= 0.0).collect();
    let mut changed = false;
    for (r, area) in component_runs(&bg, h, w) {
        if area <= max_area {
            v[r.y * w + r.x0..r.y * w + r.x1].fill(0.1);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An independent labelling: classic two-pass union-find over 8-neighbours.
    fn union_find_areas(mask: &[bool], h: usize, w: usize) -> Vec<u32> {
        fn find(p: &mut [usize], mut x: usize) -> usize {
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
        for (i, _) in mask.iter().enumerate().filter(|(_, &on)| on) {
            let r = find(&mut parent, i);
            size[r] += 1;
        }
        (0..h * w).map(|i| if mask[i] { size[find(&mut parent, i)] } else { 0 }).collect()
    }

    #[test]
    fn component_areas_match_an_independent_union_find() {
        let mut state = 12345u64;
        for (h, w) in [(37, 53), (1, 40), (40, 1), (64, 64)] {
            for density in [0.05, 0.2, 0.45, 0.6, 0.8, 0.95] {
                let mask: Vec<bool> = (0..h * w)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ((state >> 33) as f64 / (1u64 << 31) as f64) < density
                    })
                    .collect();
                let mut ours = vec![0u32; h * w];
                for (r, area) in component_runs(&mask, h, w) {
                    ours[r.y * w + r.x0..r.y * w + r.x1].fill(area);
                }
                assert_eq!(ours, union_find_areas(&mask, h, w), "{h}x{w}, density {density}");
            }
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
        assert!(
            (out[13 * w + 2] - 0.1).abs() < 1e-6 && (out[14 * w + 3] - 0.1).abs() < 1e-6,
            "diagonal pair is one small component"
        );
        assert_eq!(out[0], 5.0, "foreground untouched");
    }
}
