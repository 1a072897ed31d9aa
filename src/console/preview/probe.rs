//! Asking the terminal which graphics it draws, without eating the user's keys.
//!
//! ratatui-image's `Picker::from_query_stdio` reads the answers on a thread that outlives
//! its 2 s timeout. Inside tmux the query travels (wrapped) to the outer terminal, whose
//! answer never comes back to the pane, so the timeout fires and the orphaned thread is
//! still blocked in `read`: it swallows the first key the user types. Here the queries go
//! unwrapped (inside tmux, tmux answers for itself: it is the terminal that draws), the
//! read happens on this thread with `poll` and a deadline, one byte at a time, and stops
//! at the device-status answer every terminal gives, so nothing typed after it is taken.
//! The answers are parsed by ratatui-image's own parser.
use ratatui_image::picker::cap_parser::{Parser, QueryStdioOptions, Response};
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::FontSize;
use std::io::Write;
use std::time::{Duration, Instant};

/// What the terminal said: a protocol it can draw (if any) and its cell size in pixels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub protocol: Option<ProtocolType>,
    pub cell: Option<(u16, u16)>,
    /// The device-status answer came: the terminal heard the whole query.
    pub complete: bool,
}

/// Interprets parsed answers: kitty over sixel, as ratatui-image does.
pub fn interpret(responses: &[Response]) -> Answer {
    let mut a = Answer::default();
    for r in responses {
        match r {
            Response::Kitty => a.protocol = Some(ProtocolType::Kitty),
            Response::Sixel if a.protocol.is_none() => a.protocol = Some(ProtocolType::Sixel),
            Response::CellSize(Some((w, h))) if *w > 0 && *h > 0 => a.cell = Some((*w, *h)),
            Response::Status => a.complete = true,
            _ => {}
        }
    }
    a
}

/// Writes the query to stdout and reads the answers from stdin until the status answer or
/// `timeout`. The terminal must be in raw mode.
pub fn query(timeout: Duration) -> std::io::Result<Answer> {
    let q = Parser::query(false, QueryStdioOptions::default());
    let mut out = std::io::stdout();
    out.write_all(q.as_bytes())?;
    out.flush()?;
    let deadline = Instant::now() + timeout;
    let mut parser = Parser::new();
    let mut responses = vec![];
    while let Some(b) = read_byte_before(deadline)? {
        let got = parser.push(char::from(b));
        let done = got.contains(&Response::Status);
        responses.extend(got);
        if done {
            break;
        }
    }
    Ok(interpret(&responses))
}

/// One byte from stdin, or None once `deadline` passes with nothing to read.
fn read_byte_before(deadline: Instant) -> std::io::Result<Option<u8>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let mut fds = libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut fds, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(None);
        }
        let mut b = 0u8;
        // SAFETY: reads at most one byte into a live local.
        let r = unsafe { libc::read(libc::STDIN_FILENO, (&mut b as *mut u8).cast(), 1) };
        match r {
            1 => return Ok(Some(b)),
            0 => return Ok(None),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted && e.kind() != std::io::ErrorKind::WouldBlock {
                    return Err(e);
                }
            }
        }
    }
}

/// The picker for an answer: the terminal's protocol, else ratatui-image's guess from the
/// environment (kitty or iTerm2 outside tmux), else halfblocks; the cell size from the
/// answer, else the window-size ioctl, else 10×20.
pub fn picker(answer: &Answer) -> Picker {
    let cell = answer.cell.or_else(cell_from_ioctl).unwrap_or((10, 20));
    #[allow(deprecated)] // the non-querying constructor: the query happened above
    let mut p = Picker::from_fontsize(FontSize::new(cell.0, cell.1));
    if let Some(proto) = answer.protocol {
        p.set_protocol_type(proto);
    }
    p
}

fn cell_from_ioctl() -> Option<(u16, u16)> {
    let w = crossterm::terminal::window_size().ok()?;
    (w.width > 0 && w.height > 0 && w.columns > 0 && w.rows > 0).then(|| (w.width / w.columns, w.height / w.rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &str) -> Vec<Response> {
        let mut p = Parser::new();
        bytes.chars().flat_map(|c| p.push(c)).collect()
    }

    #[test]
    fn an_xterm_vt340_answer_means_sixel_with_its_cell_size() {
        let a = interpret(&parse("\x1b[?63;1;2;4;6;9;15;16;22;28c\x1b[6;20;10t\x1b[0n"));
        assert_eq!(a, Answer { protocol: Some(ProtocolType::Sixel), cell: Some((10, 20)), complete: true });
    }

    #[test]
    fn tmux_answering_for_itself_means_no_pixel_protocol() {
        let a = interpret(&parse("\x1b[?1;2c\x1b[0n"));
        assert_eq!(a, Answer { protocol: None, cell: None, complete: true });
    }
}
