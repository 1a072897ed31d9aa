//! Routes, and what flask-cors would add to each response: CORS headers
//! (`supports_credentials=True`: the request's origin echoed, credentials allowed,
//! `Vary: Origin`; preflights answered with every method and the requested headers);
//! one log line per request.
use crate::operator::Level;
use crate::pages::{flask_error, html, LogNote, NoCors};
use crate::schema::DemoSchema;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Instant;

pub fn router(state: Arc<AppState>) -> Router {
    let schema = crate::schema::build(state.clone());
    Router::new()
        .route("/graphql", post(graphql).get(graphql_get))
        .route("/propagate_in_video", post(crate::stream::propagate))
        .route("/healthy", get(healthy))
        .route("/gallery/{*path}", get(gallery))
        .route("/posters/{*path}", get(posters))
        .route("/uploads/{*path}", get(uploads))
        .fallback(not_found)
        .layer(axum::Extension(schema))
        .layer(middleware::from_fn(cors))
        .layer(middleware::from_fn_with_state(state.clone(), request_log))
        .with_state(state)
}

async fn healthy() -> Response {
    html(StatusCode::OK, "OK".into())
}

async fn not_found() -> Response {
    flask_error(
        StatusCode::NOT_FOUND,
        "Not Found",
        "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.",
    )
}

// --- GraphQL ------------------------------------------------------------------------

async fn graphql_get() -> Response {
    // As the official (allow_queries_via_get=False).
    let mut r = (StatusCode::BAD_REQUEST, "queries are not allowed when using GET").into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A GraphQL error answer (`{"data": null, "errors": [{"message": …}]}`) for a request
/// that could not be read at all.
fn request_error(message: &str) -> Response {
    let body = serde_json::json!({"data": null, "errors": [{"message": message}]}).to_string();
    let mut r = json_response(StatusCode::BAD_REQUEST, body);
    r.extensions_mut().insert(LogNote(message.to_string()));
    r
}

async fn graphql(
    State(app): State<Arc<AppState>>,
    axum::Extension(schema): axum::Extension<DemoSchema>,
    req: Request,
) -> Response {
    use futures::TryStreamExt;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = req.into_body().into_data_stream().map_err(std::io::Error::other);
    let body = tokio_util_compat(body);
    let limit = app.opts.max_upload_bytes as usize;
    let opts = async_graphql::http::MultipartOptions::default().max_file_size(limit).max_num_files(1);
    let request = match async_graphql::http::receive_batch_body(content_type, body, opts).await {
        Ok(b) => match b.into_single() {
            Ok(r) => r,
            Err(e) => return request_error(&format!("bad GraphQL request: {e}")),
        },
        Err(async_graphql::ParseRequestError::PayloadTooLarge) => {
            let message = format!("upload refused: {}", crate::upload::too_large(0, app.opts.max_upload_bytes));
            let body = serde_json::json!({"data": null, "errors": [{"message": message}]}).to_string();
            let mut r = json_response(StatusCode::OK, body);
            r.extensions_mut().insert(LogNote(message));
            return r;
        }
        Err(e) => return request_error(&format!("bad GraphQL request: {e}")),
    };
    let name = operation_name(&request);
    let response = schema.execute(request).await;
    let errors: Vec<String> = response.errors.iter().map(|e| e.message.clone()).collect();
    let body = serde_json::to_string(&response).unwrap_or_else(|_| "{}".into());
    let mut r = json_response(StatusCode::OK, body);
    let note = if errors.is_empty() { name } else { format!("{name} error: {}", errors.join("; ")) };
    r.extensions_mut().insert(LogNote(note));
    r
}

/// The operation's name, or its first field, for the log.
fn operation_name(r: &async_graphql::Request) -> String {
    if let Some(n) = &r.operation_name {
        return n.clone();
    }
    let q = r.query.trim_start();
    let head: String = q.chars().take(120).collect();
    let words: Vec<&str> = head.split(|c: char| !c.is_alphanumeric() && c != '_').filter(|w| !w.is_empty()).collect();
    match words.as_slice() {
        ["query" | "mutation", name, ..] => name.to_string(),
        [first, ..] => first.to_string(),
        [] => "?".into(),
    }
}

/// A byte stream as the `futures::io::AsyncRead` async-graphql reads.
fn tokio_util_compat(
    body: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
) -> impl futures::io::AsyncRead + Send {
    use futures::TryStreamExt;
    body.into_async_read()
}

// --- static files -------------------------------------------------------------------

async fn gallery(State(app): State<Arc<AppState>>, UrlPath(path): UrlPath<String>, req: Request) -> Response {
    static_file(&app, crate::data::GALLERY, &path, req).await
}

async fn posters(State(app): State<Arc<AppState>>, UrlPath(path): UrlPath<String>, req: Request) -> Response {
    static_file(&app, crate::data::POSTERS, &path, req).await
}

async fn uploads(State(app): State<Arc<AppState>>, UrlPath(path): UrlPath<String>, req: Request) -> Response {
    static_file(&app, crate::data::UPLOADS, &path, req).await
}

/// A file under one of the served folders (ranges and conditional requests through
/// tower-http's `ServeFile`). Anything else is the official's answer to a missing file:
/// 500 (its handler turns Flask's 404 into a ValueError).
async fn static_file(app: &AppState, base: &str, path: &str, req: Request) -> Response {
    let resolved =
        app.data.resolve(base, path).and_then(|p| if p.is_file() { Ok(p) } else { Err(format!("{path}: not a file")) });
    let file = match resolved {
        Ok(f) => f,
        Err(why) => {
            let mut r = flask_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal Server Error",
                "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.",
            );
            r.extensions_mut().insert(LogNote(format!("resource not found: {why}")));
            return r;
        }
    };
    use tower::ServiceExt;
    match tower_http::services::ServeFile::new(file).oneshot(req).await {
        Ok(r) => r.map(Body::new),
        Err(e) => flask_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", &e.to_string()),
    }
}

// --- CORS and the log ---------------------------------------------------------------

async fn cors(req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let requested_headers = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    let mut resp = if req.method() == Method::OPTIONS {
        // Flask answers OPTIONS itself for every route (empty body); flask-cors decorates it.
        html(StatusCode::OK, String::new())
    } else {
        next.run(req).await
    };
    if resp.extensions().get::<NoCors>().is_some() {
        return resp;
    }
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"),
            );
            if let Some(rh) = requested_headers {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, rh);
            }
        }
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

async fn request_log(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let note = resp.extensions().get::<LogNote>().map(|n| format!(" {}", n.0)).unwrap_or_default();
    // A GraphQL error is answered with 200: its note says so.
    let level = match resp.status().as_u16() {
        500.. => Level::Error,
        400.. => Level::Warn,
        _ if note.contains(" error: ") || note.starts_with(" upload refused") => Level::Warn,
        _ => Level::Info,
    };
    let streaming = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/x-savi-stream"));
    app.board.log(
        level,
        format!(
            "{method} {path} {}{}{note} ({:.3} s)",
            resp.status().as_u16(),
            if streaming { " stream started" } else { "" },
            t0.elapsed().as_secs_f64()
        ),
    );
    resp
}
