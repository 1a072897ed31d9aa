//! The screen, as pure functions of `&App`: nothing here changes state or does I/O, so a
//! `TestBackend` snapshot shows exactly what a user sees.
pub mod device;
pub mod header;
pub mod help;
pub mod hints;
pub mod log;
pub mod objects;
pub mod performance;
pub mod preview;
pub mod timeline;

use super::app::{App, Modal};
use ratatui::style::Style;
use ratatui::widgets::Block;
use ratatui::Frame;

/// Below this the panels cannot show a frame, the hints or the log readably.
pub const MIN_SIZE: (u16, u16) = (80, 24);

pub fn draw(f: &mut Frame, app: &App) {
    let t = &app.theme.ui;
    f.render_widget(
        Block::default().style(Style::default().bg(t.background.color()).fg(t.foreground.color())),
        f.area(),
    );
    let area = f.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let quit = app.keymap.label(super::action::Command::Quit);
        let text = format!(
            "terminal too small: {}×{}\nthe console needs at least {}×{}\nenlarge the window ({quit} quits)",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        let y = area.height.saturating_sub(3) / 2;
        let r = ratatui::layout::Rect::new(area.x, area.y + y, area.width, area.height.saturating_sub(y).min(3));
        f.render_widget(ratatui::widgets::Paragraph::new(text).alignment(ratatui::layout::Alignment::Center), r);
        return;
    }
    let a = app.screen_areas(f.area());
    header::draw(f, a.header, app);
    preview::draw(f, a.preview, app);
    device::draw(f, a.device, app);
    performance::draw(f, a.performance, app);
    objects::draw(f, a.objects, app);
    timeline::draw(f, a.timeline, app);
    log::draw(f, a.log, app);
    hints::draw(f, a.hints, app);
    match &app.modal {
        Modal::Help => help::draw(f, f.area(), app),
        Modal::ConfirmQuit => help::draw_confirm_quit(f, f.area(), app),
        Modal::Watermark(_)
        | Modal::ConfirmDelete(_)
        | Modal::OfferSession { .. }
        | Modal::OfferDownload(_)
        | Modal::None => {}
    }
}

/// A bordered block in the theme's colours.
pub fn panel(title: &str, app: &App) -> Block<'static> {
    panel_in(title, &app.theme.ui)
}

/// `panel` for a screen other than the console's own (`serve`'s operator view).
pub fn panel_in(title: &str, t: &crate::config::theme::UiColors) -> Block<'static> {
    Block::bordered()
        .title(format!(" {title} "))
        .border_style(Style::default().fg(t.border.color()))
        .title_style(Style::default().fg(t.accent.color()))
}

/// "1.2 GiB", "340 MiB".
pub fn bytes(n: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let n = n as f64;
    if n >= GIB {
        format!("{:.1} GiB", n / GIB)
    } else {
        format!("{:.0} MiB", n / MIB)
    }
}
