//! Choosing and building the terminal graphics protocol. Detection is `probe` (the query
//! and parser of ratatui-image, read without a leftover thread); `--graphics`/config can
//! force one. Protocols are built here
//! rather than by `Picker::new_protocol` so the kitty image keeps one id across frames (the
//! terminal replaces it instead of piling up images).
use crate::config::Graphics;
use image::DynamicImage;
use ratatui::layout::Size;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::{halfblocks::Halfblocks, iterm2::Iterm2, kitty::Kitty, sixel::Sixel, Protocol};

/// The kitty image id used for every preview frame.
pub const KITTY_IMAGE_ID: u32 = 0x5a_2d_01;

#[derive(Clone, Debug)]
pub struct Encoder {
    pub picker: Picker,
    pub tmux: bool,
}

impl Encoder {
    /// Applies the override to a detected (or halfblocks) picker. Without a font size from
    /// the terminal only halfblocks can be placed correctly, so an override to a pixel
    /// protocol then keeps ratatui-image's guess of 10×20.
    pub fn new(mut picker: Picker, graphics: Graphics, tmux_passthrough: Option<bool>) -> Encoder {
        match graphics {
            Graphics::Auto => {}
            Graphics::Kitty => picker.set_protocol_type(ProtocolType::Kitty),
            Graphics::Sixel => picker.set_protocol_type(ProtocolType::Sixel),
            Graphics::Iterm2 => picker.set_protocol_type(ProtocolType::Iterm2),
            Graphics::Halfblocks => picker.set_protocol_type(ProtocolType::Halfblocks),
        }
        let tmux = tmux_passthrough.unwrap_or(picker.tmux_detected());
        Encoder { picker, tmux }
    }

    /// Halfblocks only: for tests and for terminals that answer nothing.
    pub fn halfblocks() -> Encoder {
        Encoder { picker: Picker::halfblocks(), tmux: false }
    }

    pub fn protocol_type(&self) -> ProtocolType {
        self.picker.protocol_type()
    }

    /// Terminal cell size in pixels.
    pub fn font(&self) -> (u16, u16) {
        let f = self.picker.font_size();
        (f.width, f.height)
    }

    /// The image size in pixels that exactly fills `cells` (halfblocks: 1×2 per cell).
    pub fn pixels_for(&self, cells: Size) -> (u32, u32) {
        match self.protocol_type() {
            ProtocolType::Halfblocks => (cells.width as u32, cells.height as u32 * 2),
            _ => {
                let (fw, fh) = self.font();
                (cells.width as u32 * fw as u32, cells.height as u32 * fh as u32)
            }
        }
    }

    pub fn encode(&self, img: DynamicImage, cells: Size) -> anyhow::Result<Protocol> {
        let e = |e: ratatui_image::errors::Errors| anyhow::anyhow!("preview encoding failed: {e}");
        Ok(match self.protocol_type() {
            ProtocolType::Halfblocks => Protocol::Halfblocks(Halfblocks::new(img, cells).map_err(e)?),
            ProtocolType::Sixel => Protocol::Sixel(Sixel::new(img, cells, self.tmux).map_err(e)?),
            ProtocolType::Kitty => {
                Protocol::Kitty(Kitty::new(img, cells, KITTY_IMAGE_ID, self.tmux, false).map_err(e)?)
            }
            ProtocolType::Iterm2 => Protocol::ITerm2(Iterm2::new(img, cells, self.tmux).map_err(e)?),
        })
    }
}
