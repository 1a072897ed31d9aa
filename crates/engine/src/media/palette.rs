//! DAVIS-style annotation PNGs: 8-bit indexed images whose index is the object id and
//! whose palette is the one the DAVIS / PASCAL VOC annotations use.
use std::path::Path;

/// The colours objects are drawn in, everywhere a person looks at them: the console (its
/// default theme, `themes/dark.toml`, lists the same), the `preview` command and the
/// overlay video. Object 1 gets the first; more objects cycle. (Annotation PNGs keep the
/// DAVIS palette below: that is a file format, not a look.)
pub const OBJECT_COLORS: [[u8; 3]; 8] = [
    [0xff, 0x6b, 0x6b],
    [0x4d, 0xab, 0xf7],
    [0x51, 0xcf, 0x66],
    [0xfc, 0xc4, 0x19],
    [0xcc, 0x5d, 0xe8],
    [0xff, 0x92, 0x2b],
    [0x22, 0xb8, 0xcf],
    [0xf0, 0x65, 0x95],
];

/// The drawing colour of object `id` (ids start at 1).
pub fn object_color(id: u32) -> [u8; 3] {
    OBJECT_COLORS[(id.max(1) as usize - 1) % OBJECT_COLORS.len()]
}

/// The DAVIS (PASCAL VOC) palette entry for `index`: each of the index's bits, three at a
/// time, lights the high bits of red, green and blue in turn.
pub fn davis_color(index: u8) -> [u8; 3] {
    let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
    let mut c = index;
    for shift in (0..8).rev() {
        r |= (c & 1) << shift;
        g |= ((c >> 1) & 1) << shift;
        b |= ((c >> 2) & 1) << shift;
        c >>= 3;
    }
    [r, g, b]
}

/// The 256-entry palette as PNG's PLTE wants it (RGB triples).
pub fn davis_palette() -> Vec<u8> {
    (0..=255u8).flat_map(davis_color).collect()
}

/// Encodes a row-major index image as an 8-bit palette PNG.
pub fn encode_indexed_png(indices: &[u8], width: u32, height: u32) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        indices.len() == width as usize * height as usize,
        "index image size does not match {width}x{height}"
    );
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(davis_palette());
        let mut w = enc.write_header()?;
        w.write_image_data(indices)?;
        w.finish()?;
    }
    Ok(out)
}

/// Writes an index image atomically.
pub fn write_indexed_png(path: &Path, indices: &[u8], width: u32, height: u32) -> anyhow::Result<()> {
    let bytes = encode_indexed_png(indices, width, height).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    sam2_api::util::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::davis_color;

    #[test]
    fn palette_starts_like_davis() {
        assert_eq!(davis_color(0), [0, 0, 0]);
        assert_eq!(davis_color(1), [128, 0, 0]);
        assert_eq!(davis_color(2), [0, 128, 0]);
        assert_eq!(davis_color(3), [128, 128, 0]);
        assert_eq!(davis_color(4), [0, 0, 128]);
        assert_eq!(davis_color(8), [64, 0, 0]);
        assert_eq!(davis_color(255), [224, 224, 192]); // VOC's "void" colour
    }
}
