//! `POST /webhooks/{marketplace}`: the exact body bytes and every header go to
//! `integ.receive_webhook`, whose `http_status` is the answer. The body limit is the extension's
//! own (`integ.webhook_max_bytes`), enforced before the body is read in full.

use super::{known_marketplace, plain, Reason, Shared};
use crate::db::{self, DbError};
use crate::receiving::Delivery;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use deadpool_postgres::Pool;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The extension's default when the setting cannot be read (no row: not preloaded).
const DEFAULT_MAX_BYTES: usize = 1_048_576;
/// How long the setting read is reused: a reload of postgresql.conf reaches the gateway within it.
const LIMIT_TTL: Duration = Duration::from_secs(10);
/// A sender that trickles its body is cut off (the marketplaces send in milliseconds).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `integ.webhook_max_bytes`, read at most every LIMIT_TTL.
#[derive(Default)]
pub struct BodyLimit {
    cached: Mutex<Option<(Instant, usize)>>,
}

impl BodyLimit {
    async fn get(&self, pool: &Pool) -> Result<usize, DbError> {
        if let Ok(guard) = self.cached.lock() {
            if let Some((at, max)) = *guard {
                if at.elapsed() < LIMIT_TTL {
                    return Ok(max);
                }
            }
        }
        let client = db::client(pool).await?;
        let statement = client.prepare_cached(db::WEBHOOK_MAX_BYTES).await?;
        let row = client.query_opt(&statement, &[]).await?;
        let max = row
            .and_then(|r| r.try_get::<_, i64>(0).ok())
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(DEFAULT_MAX_BYTES);
        if let Ok(mut guard) = self.cached.lock() {
            *guard = Some((Instant::now(), max));
        }
        Ok(max)
    }
}

/// Every header as a JSON object of strings, as the marketplace sent them (values that are not
/// UTF-8 are kept lossily; a repeated header's values are joined with ", " as HTTP allows).
fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match out.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&v);
            }
            _ => {
                out.insert(name.as_str().to_string(), Value::String(v));
            }
        }
    }
    Value::Object(out)
}

fn status_body(status: StatusCode, word: &'static str) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"status\":\"{word}\"}}\n"),
    )
        .into_response();
    r.extensions_mut().insert(Reason(word));
    r
}

pub async fn receive(
    State(state): State<Shared>,
    Path(marketplace): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !known_marketplace(&marketplace) {
        return plain(StatusCode::NOT_FOUND, "unknown_marketplace", "unknown marketplace\n");
    }
    let max = match state.webhook_limit.get(&state.pool).await {
        Ok(m) => m,
        Err(e) => return unavailable_or_error(&e),
    };
    // refused from the declared length alone, before a byte of the body is read
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large\n");
    }
    let bytes = match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large\n")
        }
        Ok(Err(_)) => return plain(StatusCode::BAD_REQUEST, "body_unreadable", "body unreadable\n"),
        Err(_) => return plain(StatusCode::REQUEST_TIMEOUT, "body_timeout", "body too slow\n"),
    };
    let delivery = Delivery {
        marketplace,
        headers: headers_json(&headers),
        body: bytes,
    };
    let answer: Result<Value, DbError> = state.receiver.receive(delivery).await;
    match answer {
        Ok(a) => {
            let status = a
                .get("http_status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .and_then(|s| StatusCode::from_u16(s).ok());
            let word = match a.get("status").and_then(Value::as_str) {
                Some("accepted") => "accepted",
                Some("duplicate") => "duplicate",
                _ => "rejected",
            };
            match status {
                Some(s) => status_body(s, word),
                None => plain(StatusCode::INTERNAL_SERVER_ERROR, "bad_answer", "internal error\n"),
            }
        }
        Err(e) => unavailable_or_error(&e),
    }
}

/// A database that cannot answer is a 503 (the marketplace retries); input the extension
/// refused is a 400; anything else a 500.
fn unavailable_or_error(e: &DbError) -> Response {
    match e {
        DbError::Unavailable(code) => plain(StatusCode::SERVICE_UNAVAILABLE, code, "try again later\n"),
        DbError::Refused { .. } => plain(StatusCode::BAD_REQUEST, "refused", "refused\n"),
        DbError::Internal(code) => plain(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn headers_become_a_json_object_and_repeats_are_joined() {
        let mut h = HeaderMap::new();
        h.insert("x-shopify-topic", HeaderValue::from_static("orders/create"));
        h.append("x-repeat", HeaderValue::from_static("a"));
        h.append("x-repeat", HeaderValue::from_static("b"));
        h.insert("x-binary", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let j = headers_json(&h);
        assert_eq!(j["x-shopify-topic"], "orders/create");
        assert_eq!(j["x-repeat"], "a, b");
        assert_eq!(j["x-binary"], "caf\u{fffd}");
    }
}
