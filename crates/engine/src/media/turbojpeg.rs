//! The few TurboJPEG calls we need, declared by hand. JPEG frames must decode exactly as
//! the reference's Pillow decodes them (Pillow uses libjpeg-turbo with the default
//! accurate integer IDCT and fancy upsampling, which is also TurboJPEG's default). The
//! `turbojpeg` crate needs libjpeg-turbo >= 3.0 (its TJ3 API); Debian 12 ships 2.1.5, so we
//! call the TJ2 API, which every libjpeg-turbo from 1.4 to 3.x provides.
use std::os::raw::{c_char, c_int, c_uchar, c_ulong, c_void};

type TjHandle = *mut c_void;

const TJPF_RGB: c_int = 0;
const TJERR_WARNING: c_int = 0;
pub const TJCS_CMYK: c_int = 3;
pub const TJCS_YCCK: c_int = 4;

#[link(name = "turbojpeg")]
extern "C" {
    fn tjInitDecompress() -> TjHandle;
    fn tjDecompressHeader3(
        handle: TjHandle,
        jpeg_buf: *const c_uchar,
        jpeg_size: c_ulong,
        width: *mut c_int,
        height: *mut c_int,
        jpeg_subsamp: *mut c_int,
        jpeg_colorspace: *mut c_int,
    ) -> c_int;
    fn tjDecompress2(
        handle: TjHandle,
        jpeg_buf: *const c_uchar,
        jpeg_size: c_ulong,
        dst_buf: *mut c_uchar,
        width: c_int,
        pitch: c_int,
        height: c_int,
        pixel_format: c_int,
        flags: c_int,
    ) -> c_int;
    fn tjDestroy(handle: TjHandle) -> c_int;
    fn tjGetErrorStr2(handle: TjHandle) -> *mut c_char;
    fn tjGetErrorCode(handle: TjHandle) -> c_int;
}

/// A decompressor handle, destroyed on drop.
struct Decompressor(TjHandle);

impl Decompressor {
    fn new() -> Result<Self, String> {
        // SAFETY: plain constructor; null means failure.
        let h = unsafe { tjInitDecompress() };
        if h.is_null() {
            return Err("cannot create a TurboJPEG decompressor".into());
        }
        Ok(Decompressor(h))
    }

    fn error(&self) -> String {
        // SAFETY: the handle is live; the string is owned by TurboJPEG and copied here.
        unsafe {
            let p = tjGetErrorStr2(self.0);
            if p.is_null() {
                "unknown TurboJPEG error".into()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().trim().to_string()
            }
        }
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: created by tjInitDecompress, destroyed once.
        unsafe { tjDestroy(self.0) };
    }
}

/// The header of a JPEG: (width, height, colourspace).
pub fn header(jpeg: &[u8]) -> Result<(u32, u32, c_int), String> {
    let d = Decompressor::new()?;
    let (mut w, mut h, mut sub, mut cs) = (0, 0, 0, 0);
    // SAFETY: buffer and length describe a live slice; out-pointers are to locals.
    let rc =
        unsafe { tjDecompressHeader3(d.0, jpeg.as_ptr(), jpeg.len() as c_ulong, &mut w, &mut h, &mut sub, &mut cs) };
    if rc != 0 {
        return Err(d.error());
    }
    Ok((w as u32, h as u32, cs))
}

/// Decodes a JPEG to packed RGB8, returning (width, height, pixels). Warnings (extraneous
/// bytes and the like) are tolerated as libjpeg's default error manager (and so Pillow)
/// tolerates them; only fatal errors fail.
pub fn decode_rgb(jpeg: &[u8]) -> Result<(u32, u32, Vec<u8>), String> {
    let d = Decompressor::new()?;
    let (mut w, mut h, mut sub, mut cs) = (0, 0, 0, 0);
    // SAFETY: as in `header`.
    let rc =
        unsafe { tjDecompressHeader3(d.0, jpeg.as_ptr(), jpeg.len() as c_ulong, &mut w, &mut h, &mut sub, &mut cs) };
    if rc != 0 {
        return Err(d.error());
    }
    if w <= 0 || h <= 0 {
        return Err(format!("bad JPEG size {w}x{h}"));
    }
    let mut out = vec![0u8; w as usize * h as usize * 3];
    // SAFETY: `out` holds exactly pitch*height bytes for the size the header reported.
    let rc =
        unsafe { tjDecompress2(d.0, jpeg.as_ptr(), jpeg.len() as c_ulong, out.as_mut_ptr(), w, w * 3, h, TJPF_RGB, 0) };
    // SAFETY: handle is live.
    if rc != 0 && unsafe { tjGetErrorCode(d.0) } != TJERR_WARNING {
        return Err(d.error());
    }
    Ok((w as u32, h as u32, out))
}
