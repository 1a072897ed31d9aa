//! `sam2-tui bench`: the measured version of the FPS table users pass around. Each row is
//! one model size on one device, run through the supervisor (so a worker crash is a row
//! entry, not the end of the bench) over a synthetic clip with one click on frame 0.
//!
//! * `clip`      — the synthetic clip (the reference benchmark's moving red box) as JPEGs.
//! * `machine`   — what the numbers were measured on (CPU model, cores, GPU, libtorch).
//! * `measure`   — one supervised run: FPS per propagation, per-stage ms, memory, crashes.
//! * `reference` — the official Python predictor on the same frames and checkpoint.
//! * `report`    — the rows as a terminal table and as JSON.
//! * `streams`   — `--streams N`: N videos at once in one worker against one alone.
pub mod clip;
pub mod machine;
pub mod measure;
pub mod reference;
pub mod report;
pub mod streams;

/// Median of a list (the mean of the middle two for an even count); None when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts_and_of_nothing() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
