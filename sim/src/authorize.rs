//! The seller's side of each authorization flow, as an admin call standing in for the browser:
//! `POST /_admin/authorize/{marketplace}` with the authorize URL the app produced (and who
//! approves) answers the query parameters the marketplace redirects back with. The URL is checked
//! as the marketplace would: a known app, the parameters it requires.

use crate::state::State;
use crate::tiktok::parse_query;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn admin_router() -> Router<Arc<State>> {
    Router::new().route("/{marketplace}", post(approve))
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

/// The query of an authorize URL (SHEIN's sits in the fragment: `#/empower?...`).
fn query_of(url: &str) -> BTreeMap<String, String> {
    parse_query(url.split_once('?').map(|(_, q)| q))
}

fn need<'a>(q: &'a BTreeMap<String, String>, k: &str) -> Result<&'a str, Response> {
    q.get(k)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad(&format!("the authorize URL has no {k}")))
}

/// `{"url", ...}`: mercadolibre `"seller"`; shopify `"shop"`; tiktok `"shop_cipher", "shop_id"?`;
/// shein `"supplier_id"`.
async fn approve(AxState(state): AxState<Arc<State>>, Path(m): Path<String>, Json(b): Json<Value>) -> Response {
    let Some(url) = b.get("url").and_then(Value::as_str) else {
        return bad("url is required");
    };
    let q = query_of(url);
    let result = match m.as_str() {
        "mercadolibre" => mercadolibre(&state, &q, &b),
        "shopify" => shopify(&state, &q, &b),
        "tiktok" => tiktok(&state, &q, &b),
        "shein" => shein(&state, &q, &b),
        _ => Err(bad("unknown marketplace")),
    };
    match result {
        Ok(callback) => Json(callback).into_response(),
        Err(r) => r,
    }
}

fn mercadolibre(state: &State, q: &BTreeMap<String, String>, b: &Value) -> Result<Value, Response> {
    let client_id = need(q, "client_id")?;
    let redirect = need(q, "redirect_uri")?;
    let st = need(q, "state")?;
    if q.get("response_type").map(String::as_str) != Some("code") {
        return Err(bad("response_type must be code"));
    }
    let challenge = match (
        q.get("code_challenge"),
        q.get("code_challenge_method").map(String::as_str),
    ) {
        (Some(c), Some("S256")) => Some(c.clone()),
        (None, _) => None,
        _ => return Err(bad("code_challenge_method must be S256")),
    };
    let seller = b
        .get("seller")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("seller is required"))?;
    let mut m = state.meli.lock();
    if !m.apps.contains_key(client_id) {
        return Err(bad("unknown client_id"));
    }
    let code = m.approve(seller, client_id, Some(redirect.to_string()), challenge);
    Ok(json!({"code": code, "state": st}))
}

fn shopify(state: &State, q: &BTreeMap<String, String>, b: &Value) -> Result<Value, Response> {
    let client_id = need(q, "client_id")?;
    let st = need(q, "state")?;
    need(q, "redirect_uri")?;
    need(q, "scope")?;
    let shop = b
        .get("shop")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("shop is required"))?;
    state
        .shopify
        .lock()
        .install_callback(shop, client_id, st)
        .map(|cb| json!(cb))
        .map_err(|e| bad(&e))
}

fn tiktok(state: &State, q: &BTreeMap<String, String>, b: &Value) -> Result<Value, Response> {
    let st = need(q, "state")?;
    let cipher = b
        .get("shop_cipher")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("shop_cipher is required"))?;
    let mut m = state.tiktok.lock();
    // the current page names the app by service_id (here: its app key), the legacy one by app_key
    let app = q
        .get("service_id")
        .or_else(|| q.get("app_key"))
        .cloned()
        .unwrap_or_default();
    if !m.apps.contains_key(&app) {
        return Err(bad("unknown app"));
    }
    let shop_id = b
        .get("shop_id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("749{:016}", rand::random::<u64>() % 10_000_000_000_000_000));
    m.shop_apps.insert(cipher.to_string(), app.clone());
    m.shop_ids.insert(cipher.to_string(), shop_id);
    let code = m.new_code(&app, cipher);
    Ok(json!({"code": code, "state": st}))
}

fn shein(state: &State, q: &BTreeMap<String, String>, b: &Value) -> Result<Value, Response> {
    let appid = need(q, "appid")?;
    let st = need(q, "state")?;
    let redirect = need(q, "redirectUrl")?;
    use base64_check::decodes;
    if !decodes(redirect) {
        return Err(bad("redirectUrl must be base64"));
    }
    let supplier = b
        .get("supplier_id")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("supplier_id is required"))?;
    let mut m = state.shein.lock();
    if !m.apps.contains_key(appid) {
        return Err(bad("unknown appid"));
    }
    let made = m.add_supplier(appid, supplier, st);
    Ok(json!({"appid": appid, "tempToken": made["temp_token"], "state": st}))
}

mod base64_check {
    /// Whether `s` is standard base64 (what SHEIN's page expects of redirectUrl).
    pub fn decodes(s: &str) -> bool {
        !s.is_empty()
            && s.len().is_multiple_of(4)
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    }
}
