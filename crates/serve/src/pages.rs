//! The non-JSON answers as Flask and gunicorn write them (HTML pages), and the marks a
//! handler leaves on a response for the CORS layer and the request log.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Marks a response that must go out without CORS headers: the errors gunicorn itself
/// answers when the stream fails before its first part.
#[derive(Clone, Copy)]
pub struct NoCors;

/// What the request log says about a request beyond its method and path.
#[derive(Clone)]
pub struct LogNote(pub String);

pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An error page as Flask writes one (CORS headers are added to it).
pub fn flask_error(status: StatusCode, title: &str, message: &str) -> Response {
    let mut r = html(
        status,
        format!(
            "<!doctype html>\n<html lang=en>\n<title>{status_n} {title}</title>\n<h1>{title}</h1>\n<p>{msg}</p>\n",
            status_n = status.as_u16(),
            msg = escape(message)
        ),
    );
    r.extensions_mut().insert(LogNote(message.to_string()));
    r
}

/// The 500 page gunicorn sends when a streaming response fails before its first chunk:
/// `text/html`, no CORS headers. The reason is in the body (the official's is empty).
pub fn gunicorn_error(message: &str) -> Response {
    let body = format!(
        "<html>\n  <head>\n    <title>Internal Server Error</title>\n  </head>\n  <body>\n    <h1><p>Internal Server Error</p></h1>\n    {}\n  </body>\n</html>\n",
        escape(message)
    );
    let mut r = (StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r.extensions_mut().insert(NoCors);
    r.extensions_mut().insert(LogNote(message.to_string()));
    r
}
