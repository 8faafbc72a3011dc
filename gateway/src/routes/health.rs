//! `/healthz` (the process is up), `/readyz` (the database answers, the extension's workers run,
//! capture keeps up) and `/metrics` (`integ.metrics()`, behind a bearer token).

use super::{db_failure, plain, Reason, Shared};
use crate::auth;
use crate::db::{self, DbError};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub async fn healthz() -> Response {
    plain(StatusCode::OK, "ok", "ok\n")
}

fn ready(ok: bool, reason: &'static str, detail: serde_json::Value) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({"ready": ok, "reason": reason});
    if let (Some(b), Some(d)) = (body.as_object_mut(), detail.as_object()) {
        b.extend(d.clone());
    }
    let mut r = (status, axum::Json(body)).into_response();
    r.extensions_mut().insert(Reason(reason));
    super::no_store(r)
}

pub async fn readyz(State(state): State<Shared>) -> Response {
    let client = match db::client(&state.pool).await {
        Ok(c) => c,
        Err(e) => return ready(false, e.code(), json!({})),
    };
    let row = match client.prepare_cached(db::READINESS).await {
        Ok(s) => client.query_one(&s, &[]).await,
        Err(e) => Err(e),
    };
    let row = match row {
        Ok(r) => r,
        Err(e) => return ready(false, DbError::from(e).code(), json!({})),
    };
    let workers: i32 = row.try_get(0).unwrap_or(0);
    let capture: bool = row.try_get(1).unwrap_or(false);
    let lag: Option<i64> = row.try_get(2).unwrap_or(None);
    let detail = json!({"workers": workers, "capture_running": capture, "capture_unread_bytes": lag});
    if workers == 0 {
        return ready(false, "no_workers", detail);
    }
    if !capture {
        return ready(false, "no_capture_worker", detail);
    }
    if lag.is_some_and(|l| l > state.config.max_capture_lag_bytes) {
        return ready(false, "capture_lagging", detail);
    }
    ready(true, "ready", detail)
}

pub async fn metrics(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let Some(token) = &state.config.metrics_token else {
        return plain(StatusCode::NOT_FOUND, "metrics_disabled", "not found\n");
    };
    if !auth::bearer_ok(&headers, token) {
        let mut r = plain(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"integ-gateway\""),
        );
        return r;
    }
    match db::one::<String>(&state.pool, db::METRICS, &[]).await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => db_failure(&e),
    }
}
