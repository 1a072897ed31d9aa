//! `POST /propagate_in_video`: the masks of every frame as they are computed, as a
//! `multipart/x-savi-stream; boundary=frame` response, byte for byte as the official's
//! `MultipartResponseBuilder` writes it (docs/serve-api.md): forward from the start
//! frame to the end, then backward to frame 0 (skipped from frame 0), one part per frame.
//! No closing boundary: the front end's parser would throw on one.
//!
//! A worker that dies mid-stream is restarted by the session's supervisor, which resumes
//! the propagation after the last frame delivered: the browser sees a pause, not an error.
use crate::pages::{flask_error, gunicorn_error};
use crate::sessions::{Ended, FrameResult};
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sam2_api::session::Op;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub const BOUNDARY: &str = "frame";

/// One part: the official's headers in its order, then exactly Content-Length bytes.
pub fn part(r: &FrameResult) -> Bytes {
    let body = part_body(r);
    let mut out = Vec::with_capacity(body.len() + 160);
    out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
    out.extend_from_slice(b"Content-Type: application/json; charset=utf-8\r\n");
    out.extend_from_slice(b"Frame-Current: -1\r\n");
    out.extend_from_slice(b"Frame-Total: -1\r\n");
    out.extend_from_slice(b"Mask-Type: RLE[]\r\n");
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body.as_bytes());
    Bytes::from(out)
}

/// The part's JSON as Python's `json.dumps` writes the official's dataclass: snake_case,
/// `", "` and `": "` separators, keys in declaration order.
pub fn part_body(r: &FrameResult) -> String {
    let results: Vec<String> = r
        .objects
        .iter()
        .map(|(id, rle)| {
            format!(
                "{{\"object_id\": {id}, \"mask\": {{\"size\": [{}, {}], \"counts\": {}}}}}",
                rle.size[0],
                rle.size[1],
                serde_json::to_string(&rle.counts).expect("a string serialises")
            )
        })
        .collect();
    format!("{{\"frame_index\": {}, \"results\": [{}]}}", r.frame, results.join(", "))
}

enum Item {
    Part(Bytes),
    /// The propagation failed: before the first part this is the answer (500); after, the
    /// connection is cut, as gunicorn does when a streaming generator raises.
    Failed(String),
}

pub async fn propagate(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return flask_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.",
        );
    }
    let req: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return flask_error(StatusCode::BAD_REQUEST, "Bad Request", &format!("Failed to decode JSON object: {e}"))
        }
    };
    let Some(session_id) = req.get("session_id").and_then(|v| v.as_str()).map(str::to_string) else {
        return flask_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "the request body needs \"session_id\" (a string)",
        );
    };
    let start = match req.get("start_frame_index") {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => match v.as_i64() {
            Some(n) => n,
            None => {
                return gunicorn_error(&format!("start_frame_index must be an integer, got {v}"));
            }
        },
    };
    let session = match app.sessions.get(&session_id) {
        Ok(s) => s,
        Err(e) => return gunicorn_error(&e),
    };
    let busy = session.use_it();
    // One op at a time per session, as the official's lock (but per session).
    let mut core = session.lock().await;
    let start = match session.check_propagation(&core, start) {
        Ok(s) => s,
        Err(e) => return gunicorn_error(&e),
    };
    session.cancel.store(false, Ordering::SeqCst);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Item>();
    let s = session.clone();
    let board = app.board.clone();
    board.stream_started(&s.id, start);
    tokio::spawn(async move {
        let _busy = busy;
        let t0 = Instant::now();
        let objects = core.objects.clone();
        let gone = AtomicBool::new(false);
        let sent = AtomicUsize::new(0);
        let mut outcome = "done";
        let passes: &[bool] = if start == 0 { &[false] } else { &[false, true] };
        for &reverse in passes {
            if s.cancel.load(Ordering::SeqCst) || gone.load(Ordering::SeqCst) {
                break;
            }
            let op = Op::Propagate { start: Some(start), reverse, max_frames: None };
            let mut on_masks = |m: sam2_api::events::FrameMasks| {
                // The official checks its cancel flag after each frame, before sending it.
                if s.cancel.load(Ordering::SeqCst) || gone.load(Ordering::SeqCst) {
                    return;
                }
                if tx.send(Item::Part(part(&s.result(&objects, &m)))).is_err() {
                    gone.store(true, Ordering::SeqCst);
                } else {
                    sent.fetch_add(1, Ordering::SeqCst);
                    board.part_sent(&s.id);
                }
            };
            let mut cancel_now = || s.cancel.load(Ordering::SeqCst) || gone.load(Ordering::SeqCst);
            match core.run_with(&s, op, &mut on_masks, &mut cancel_now).await {
                Ok(Ended::Done) => {}
                Ok(Ended::Cancelled) => {
                    outcome = "cancelled";
                    break;
                }
                Err(e) => {
                    outcome = "failed";
                    board.error(format!("session {}: propagation failed: {e}", s.short()));
                    let _ = tx.send(Item::Failed(e));
                    break;
                }
            }
        }
        if gone.load(Ordering::SeqCst) && outcome == "done" {
            outcome = "stopped: the client went away";
        } else if s.cancel.load(Ordering::SeqCst) && outcome == "done" {
            outcome = "cancelled";
        }
        let n = sent.load(Ordering::SeqCst);
        let secs = t0.elapsed().as_secs_f32();
        board.stream_ended(&s.id);
        board.info(format!(
            "session {}: propagation from frame {start} {outcome}: {n} frames in {secs:.2} s ({:.2} frames/s)",
            s.short(),
            n as f32 / secs.max(1e-3)
        ));
        drop(core);
    });
    // The first news decides the status: a failure before any part is a 500, as the
    // official's (gunicorn answers it when the generator raises before its first chunk).
    let first = match rx.recv().await {
        Some(Item::Failed(e)) => return gunicorn_error(&e),
        other => other,
    };
    let stream = async_stream(first, rx);
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/x-savi-stream; boundary={BOUNDARY}")).expect("ascii"),
    );
    resp
}

fn async_stream(
    first: Option<Item>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Item>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    use futures::StreamExt;
    let head = futures::stream::iter(first);
    let rest = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    head.chain(rest).map(|item| match item {
        Item::Part(b) => Ok(b),
        Item::Failed(e) => Err(std::io::Error::other(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sam2_api::rle::Rle;

    #[test]
    fn a_part_is_byte_for_byte_the_official_one() {
        let rle = Rle { size: [240, 320], counts: "PPY1a0\\2".into() };
        let r = FrameResult { frame: 3, objects: vec![(0, rle.clone()), (1, rle)] };
        let body = part_body(&r);
        assert_eq!(
            body,
            "{\"frame_index\": 3, \"results\": [{\"object_id\": 0, \"mask\": {\"size\": [240, 320], \"counts\": \"PPY1a0\\\\2\"}}, {\"object_id\": 1, \"mask\": {\"size\": [240, 320], \"counts\": \"PPY1a0\\\\2\"}}]}"
        );
        let p = part(&r);
        let head = format!(
            "--frame\r\nContent-Type: application/json; charset=utf-8\r\nFrame-Current: -1\r\nFrame-Total: -1\r\nMask-Type: RLE[]\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        assert_eq!(&p[..], format!("{head}{body}").as_bytes());
        let empty = FrameResult { frame: 0, objects: vec![] };
        assert_eq!(part_body(&empty), "{\"frame_index\": 0, \"results\": []}");
    }
}
