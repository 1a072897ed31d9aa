//! Colour themes: the UI's colours plus the palette objects are painted with. Built-in
//! themes are the files in `themes/` (compiled in); a path to another file works too.
use ratatui::style::Color;
use serde::Deserialize;
use std::path::Path;

/// An RGB colour, written `"#rrggbb"` in theme files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub [u8; 3]);

/// `NO_COLOR` (no-color.org): the interface drops its colours (the terminal's own fg/bg
/// everywhere; emphasis stays as bold/reverse). The preview image keeps its pixels: it is
/// content, not decoration.
static MONOCHROME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the interface's colours off (or on) for the whole process.
pub fn set_monochrome(on: bool) {
    MONOCHROME.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `NO_COLOR` asks for no colour (set and not empty, as the convention says).
pub fn no_color_requested() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Rgb {
    pub fn color(self) -> Color {
        if MONOCHROME.load(std::sync::atomic::Ordering::Relaxed) {
            return Color::Reset;
        }
        Color::Rgb(self.0[0], self.0[1], self.0[2])
    }
}

impl<'de> Deserialize<'de> for Rgb {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_hex(&s).ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not a colour (expected \"#rrggbb\")")))
    }
}

fn parse_hex(s: &str) -> Option<Rgb> {
    let h = s.strip_prefix('#')?;
    if h.len() != 6 || !h.is_ascii() {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&h[i..i + 2], 16).ok();
    Some(Rgb([byte(0)?, byte(2)?, byte(4)?]))
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Theme {
    pub name: String,
    pub ui: UiColors,
    /// Object colours in order (object 1 gets the first); cycled when there are more objects.
    pub objects: Vec<Rgb>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiColors {
    pub background: Rgb,
    pub foreground: Rgb,
    pub dim: Rgb,
    pub border: Rgb,
    pub accent: Rgb,
    pub selection: Rgb,
    pub ok: Rgb,
    pub warn: Rgb,
    pub error: Rgb,
    pub banner_fg: Rgb,
    pub banner_bg: Rgb,
    /// Preview marks.
    pub crosshair: Rgb,
    pub positive: Rgb,
    pub negative: Rgb,
    #[serde(rename = "box")]
    pub bbox: Rgb,
    /// Timeline.
    pub prompted: Rgb,
    pub tracked: Rgb,
    pub current: Rgb,
}

pub const BUILT_IN: [(&str, &str); 3] = [
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    ("high-contrast", include_str!("../../themes/high-contrast.toml")),
];

impl Theme {
    /// A built-in theme by name, or a theme file by path.
    pub fn load(name_or_path: &str) -> anyhow::Result<Theme> {
        if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text, Path::new(&format!("themes/{name_or_path}.toml")));
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            anyhow::bail!("{name_or_path}: no such theme (built-in: {}; or a path to a .toml file)", names.join(", "));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: cannot read theme: {e}", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Theme> {
        let t: Theme = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            anyhow::anyhow!("{}{at}: {}", path.display(), e.message().replace('\n', " ").trim())
        })?;
        anyhow::ensure!(!t.objects.is_empty(), "{}: a theme needs at least one object colour", path.display());
        Ok(t)
    }

    pub fn dark() -> Theme {
        Self::load("dark").expect("the built-in dark theme parses")
    }

    /// The colour of object `id` (ids start at 1 in the console).
    pub fn object(&self, id: u32) -> Rgb {
        self.objects[(id.max(1) as usize - 1) % self.objects.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_theme_draws_objects_in_the_one_palette() {
        let dark: Vec<[u8; 3]> = Theme::dark().objects.iter().map(|c| c.0).collect();
        assert_eq!(dark, crate::media::palette::OBJECT_COLORS.to_vec());
    }

    #[test]
    fn every_built_in_theme_parses() {
        for (name, _) in BUILT_IN {
            let t = Theme::load(name).unwrap();
            assert_eq!(t.name, name);
            assert!(t.objects.len() >= 6, "{name} has too few object colours");
        }
    }

    #[test]
    fn a_bad_colour_names_the_line() {
        let text = Theme::dark_text().replace("\"#", "\"#zz");
        let e = Theme::parse(&text, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.starts_with("t.toml:"), "{e}");
        assert!(e.contains("not a colour"), "{e}");
    }

    impl Theme {
        fn dark_text() -> String {
            BUILT_IN[0].1.to_string()
        }
    }
}
