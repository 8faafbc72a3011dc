//! Connecting a seller: `GET /connect/{marketplace}?tenant=..&token=..` sends the browser to the
//! marketplace (`integ.authorize_url`), and `GET /oauth/{marketplace}/callback` hands what the
//! marketplace sent back to `integ.complete_authorization`, then sends the browser to EGDC's
//! success or failure page. No URL the gateway builds carries a secret or the code.

use super::{known_marketplace, no_store, plain, Reason, Shared};
use crate::connect_token::{self, TokenError};
use crate::db::{self, DbError};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bounds on what a callback may carry (the marketplaces send a handful of short parameters).
const MAX_PARAMS: usize = 32;
const MAX_VALUE_LEN: usize = 4_096;

/// Everything but RFC 3986's unreserved characters is percent-encoded in a query value.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn redirect(to: &str, reason: &'static str) -> Response {
    let Ok(location) = HeaderValue::from_str(to) else {
        return plain(
            StatusCode::BAD_GATEWAY,
            "bad_redirect",
            "the redirect is not a valid URL\n",
        );
    };
    let mut r = (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
    r.extensions_mut().insert(Reason(reason));
    no_store(r)
}

/// `base` with `key=value` added to its query.
fn with_param(base: &str, key: &str, value: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{key}={}", utf8_percent_encode(value, QUERY_VALUE))
}

#[derive(Deserialize)]
pub struct ConnectQuery {
    tenant: String,
    token: String,
    /// Shopify: the shop the seller installs the app in (*.myshopify.com).
    shop: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub async fn connect(
    State(state): State<Shared>,
    Path(marketplace): Path<String>,
    query: Result<Query<ConnectQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(secret) = &state.config.connect_secret else {
        return plain(StatusCode::NOT_FOUND, "connect_disabled", "not found\n");
    };
    if !known_marketplace(&marketplace) {
        return plain(StatusCode::NOT_FOUND, "unknown_marketplace", "unknown marketplace\n");
    }
    let Ok(Query(q)) = query else {
        return plain(StatusCode::BAD_REQUEST, "bad_query", "tenant and token are required\n");
    };
    match connect_token::verify(secret.as_bytes(), &q.tenant, &marketplace, &q.token, unix_now()) {
        Ok(()) => {}
        Err(TokenError::Expired) => return plain(StatusCode::FORBIDDEN, "token_expired", "this link has expired\n"),
        Err(TokenError::TooFarAhead) => {
            return plain(StatusCode::FORBIDDEN, "token_too_long", "this link is not valid\n")
        }
        Err(TokenError::Malformed | TokenError::Forged) => {
            return plain(StatusCode::FORBIDDEN, "token_invalid", "this link is not valid\n")
        }
    }
    let config = &state.config;
    let redirect_uri = format!("{}/oauth/{marketplace}/callback", config.public_url);
    let mut options = Map::new();
    if let Some(shop) = q.shop.filter(|s| !s.is_empty()) {
        options.insert("shop".into(), Value::String(shop));
    }
    if marketplace == "shein" {
        // SHEIN signs its event callbacks over the callback's own path: this gateway's
        options.insert(
            "settings".into(),
            json!({"webhook_path": format!("{}/webhooks/shein", config.public_path())}),
        );
    }
    let options = Value::Object(options);
    let url: Result<String, DbError> = db::one(
        &state.pool,
        db::AUTHORIZE_URL,
        &[&q.tenant, &marketplace, &redirect_uri, &options],
    )
    .await;
    match url {
        Ok(url) => redirect(&url, "to_marketplace"),
        Err(DbError::Refused { .. }) => plain(
            StatusCode::BAD_REQUEST,
            "refused",
            "this connection cannot be started (is the marketplace's app registered? a shop given for Shopify?)\n",
        ),
        Err(e) => super::db_failure(&e),
    }
}

/// The reason code a refused completion is reported with (the failure page shows its own text).
fn refusal_reason(code: &str, message: &str) -> &'static str {
    if code != "28000" {
        return "invalid_request";
    }
    if message.contains("expired") {
        "expired"
    } else if message.contains("already used") {
        "already_used"
    } else if message.contains("code exchange failed") {
        "exchange_failed"
    } else {
        // no state, an unknown one, a callback signature that does not verify
        "invalid_state"
    }
}

pub async fn callback(
    State(state): State<Shared>,
    Path(marketplace): Path<String>,
    uri: Uri,
    query: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !known_marketplace(&marketplace) {
        return plain(StatusCode::NOT_FOUND, "unknown_marketplace", "unknown marketplace\n");
    }
    // the query parser replaces bytes that are not UTF-8; such a callback is malformed
    let utf8 = percent_decode_str(uri.query().unwrap_or("")).decode_utf8().is_ok();
    let (true, Ok(Query(params))) = (utf8, query) else {
        return plain(StatusCode::BAD_REQUEST, "bad_query", "malformed callback\n");
    };
    if params.len() > MAX_PARAMS || params.iter().any(|(k, v)| k.len() > 200 || v.len() > MAX_VALUE_LEN) {
        return plain(StatusCode::BAD_REQUEST, "bad_query", "malformed callback\n");
    }
    let failure = &state.config.failure_url;
    // the seller said no (MercadoLibre, TikTok: error=access_denied)
    if params.contains_key("error") {
        return redirect(&with_param(failure, "reason", "denied"), "denied");
    }
    let callback = Value::Object(params.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
    let id: Result<i64, DbError> = db::one(&state.pool, db::COMPLETE_AUTHORIZATION, &[&marketplace, &callback]).await;
    match id {
        Ok(id) => redirect(
            &with_param(&state.config.success_url, "connection", &id.to_string()),
            "connected",
        ),
        Err(DbError::Refused { code, message }) => {
            let reason = refusal_reason(&code, &message);
            redirect(&with_param(failure, "reason", reason), reason)
        }
        Err(DbError::Unavailable(_)) => redirect(&with_param(failure, "reason", "unavailable"), "unavailable"),
        Err(DbError::Internal(code)) => redirect(&with_param(failure, "reason", "error"), code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_added_to_the_query() {
        assert_eq!(
            with_param("https://e.example/ok", "connection", "7"),
            "https://e.example/ok?connection=7"
        );
        assert_eq!(
            with_param("https://e.example/ok?x=1", "reason", "a_b c"),
            "https://e.example/ok?x=1&reason=a_b%20c"
        );
    }

    #[test]
    fn refusals_map_to_short_codes() {
        assert_eq!(
            refusal_reason("28000", "this authorization state has expired (10 minutes)"),
            "expired"
        );
        assert_eq!(
            refusal_reason("28000", "this authorization state was already used"),
            "already_used"
        );
        assert_eq!(
            refusal_reason("28000", "unknown authorization state: start again"),
            "invalid_state"
        );
        assert_eq!(
            refusal_reason("28000", "the shopify code exchange failed: 400"),
            "exchange_failed"
        );
        assert_eq!(
            refusal_reason("22023", "callback parameter must be text"),
            "invalid_request"
        );
    }
}
