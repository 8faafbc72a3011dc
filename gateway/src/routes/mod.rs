//! The router, its shared state, the per-request log line, and the answers every route shares.

pub mod dashboard;
pub mod health;
pub mod oauth;
pub mod webhooks;

use crate::config::Config;
use crate::db::DbError;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use deadpool_postgres::Pool;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// The marketplaces the extension knows; any other name in a path is a 404 without SQL.
pub const MARKETPLACES: [&str; 4] = ["mercadolibre", "shopify", "tiktok", "shein"];

pub fn known_marketplace(m: &str) -> bool {
    MARKETPLACES.contains(&m)
}

pub struct AppState {
    pub config: Config,
    pub pool: Pool,
    pub receiver: crate::receiving::Receiver,
    pub templates: minijinja::Environment<'static>,
    pub webhook_limit: webhooks::BodyLimit,
}

pub type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/webhooks/{marketplace}", post(webhooks::receive))
        .route("/connect/{marketplace}", get(oauth::connect))
        .route("/oauth/{marketplace}/callback", get(oauth::callback))
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/", get(dashboard::page))
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(log_request))
}

/// Why a request was not served normally: a fixed code for the log line (never data).
#[derive(Clone, Copy)]
pub struct Reason(pub &'static str);

/// A short plain-text answer with a reason for the log.
pub fn plain(status: StatusCode, reason: &'static str, body: &'static str) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    r.extensions_mut().insert(Reason(reason));
    r
}

pub async fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not_found", "not found\n")
}

/// The answer to a failed database call outside the webhook and OAuth routes' own handling.
pub fn db_failure(e: &DbError) -> Response {
    match e {
        DbError::Unavailable(code) => plain(StatusCode::SERVICE_UNAVAILABLE, code, "database unavailable\n"),
        DbError::Refused { .. } => plain(StatusCode::BAD_REQUEST, "refused", "refused\n"),
        DbError::Internal(code) => plain(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error\n"),
    }
}

/// No cache may keep what the gateway answers (tokens, authorization redirects, the dashboard).
pub fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// One line per request: method, path (never the query string: it may hold an OAuth code),
/// status, milliseconds, and a fixed reason code when there is one. No headers, no bodies.
async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path: String = req.uri().path().chars().take(200).collect();
    let response = next.run(req).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let reason = response
        .extensions()
        .get::<Reason>()
        .map(|r| format!(" reason={}", r.0))
        .unwrap_or_default();
    // one write per line: eprintln! writes each piece of the format with a syscall of its own
    let line = format!(
        "{} {method} {path} {} {ms:.1}ms{reason}\n",
        crate::now_rfc3339(),
        response.status().as_u16()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    response
}
