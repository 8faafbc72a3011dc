//! TikTok Shop's event API (`GET`/`PUT`/`DELETE /event/202309/webhooks`, signed and shop-scoped
//! like every shop call): a shop's address per event type, and where a TikTok delivery goes. A
//! delivery of event type N goes to the shop's address for N when one is set, else to the
//! app-level URL (`/_admin/webhooks`, standing for Partner Center's app setting) when its `topics`
//! are absent (every type) or name N.
//!
//! Decisions where TikTok publishes nothing exact ([?]): parameter errors are code 36009003
//! `Invalid parameter: <field>` (an unparsable body 36009001, as elsewhere); the numbers of
//! RECIPIENT_ADDRESS_UPDATE (3), PACKAGE_UPDATE (4) and CANCELLATION_STATUS_CHANGE (11).

use crate::state::{unix_now, State};
use crate::tiktok::{envelope, ok, verify, TikTok};
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Event types: the number webhooks carry in `type`, and the name the event API uses.
pub const EVENT_TYPES: &[(u8, &str)] = &[
    (1, "ORDER_STATUS_CHANGE"),
    (2, "REVERSE_STATUS_UPDATE"),
    (3, "RECIPIENT_ADDRESS_UPDATE"),
    (4, "PACKAGE_UPDATE"),
    (5, "PRODUCT_STATUS_CHANGE"),
    (6, "SELLER_DEAUTHORIZATION"),
    (7, "UPCOMING_AUTHORIZATION_EXPIRATION"),
    (11, "CANCELLATION_STATUS_CHANGE"),
    (12, "RETURN_STATUS_CHANGE"),
];

#[derive(Clone, Debug)]
pub struct Hook {
    pub address: String,
    pub create_time: i64,
    pub update_time: i64,
}

#[derive(Default)]
pub struct Webhooks {
    /// shop_cipher -> event type number -> address
    pub by_shop: HashMap<String, BTreeMap<u8, Hook>>,
    /// accept http:// addresses (loopback tests); TikTok takes https only
    pub allow_http: bool,
}

fn number_of(name: &str) -> Option<u8> {
    EVENT_TYPES.iter().find(|(_, n)| *n == name).map(|(t, _)| *t)
}

fn name_of(t: u8) -> &'static str {
    EVENT_TYPES.iter().find(|(n, _)| *n == t).map(|(_, n)| *n).unwrap_or("")
}

impl Webhooks {
    fn list(&self, shop: &str) -> Vec<Value> {
        self.by_shop
            .get(shop)
            .into_iter()
            .flatten()
            .map(|(t, h)| {
                json!({"event_type": name_of(*t), "address": h.address, "create_time": h.create_time,
                       "update_time": h.update_time})
            })
            .collect()
    }
}

/// Where a delivery of `event_type` for `shop` goes: see the module comment.
pub fn targets(state: &State, m: &TikTok, shop: &str, event_type: u8) -> Vec<String> {
    if let Some(h) = m.webhooks.by_shop.get(shop).and_then(|s| s.get(&event_type)) {
        return vec![h.address.clone()];
    }
    let hooks = state.hooks.lock();
    match hooks.app_level("tiktok") {
        Some((url, topics)) if topics.is_none_or(|t| t.iter().any(|x| x == name_of(event_type))) => vec![url],
        _ => Vec::new(),
    }
}

pub fn router() -> Router<Arc<State>> {
    Router::new().route("/event/202309/webhooks", get(list).put(put).delete(remove))
}

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/shops/{cipher}/webhooks", get(admin_list))
        .route("/shops/{cipher}/webhooks/{event_type}", delete(admin_delete))
}

fn invalid(field: &str) -> Response {
    envelope(
        StatusCode::OK,
        36009003,
        &format!("Invalid parameter: {field}"),
        Value::Null,
    )
}

/// The body's JSON and its `event_type` number, or the error answer.
fn event_type(body: &[u8]) -> Result<(Value, u8), Response> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Err(envelope(StatusCode::OK, 36009001, "Invalid request body.", Value::Null));
    };
    match v.get("event_type").and_then(Value::as_str).and_then(number_of) {
        Some(t) => Ok((v, t)),
        None => Err(invalid("event_type")),
    }
}

async fn list(AxState(state): AxState<Arc<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let shop = match verify(&state, &uri, &headers, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let hooks = state.tiktok.lock().webhooks.list(&shop);
    ok(json!({"total_count": hooks.len(), "webhooks": hooks}))
}

/// `{"address", "event_type"}`: sets (or replaces) the shop's address for that event type.
async fn put(AxState(state): AxState<Arc<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let shop = match verify(&state, &uri, &headers, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (v, t) = match event_type(&body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let address = v.get("address").and_then(Value::as_str).unwrap_or("").trim();
    let mut m = state.tiktok.lock();
    let scheme_ok = address.starts_with("https://") || (m.webhooks.allow_http && address.starts_with("http://"));
    if address.len() <= "https://".len() || !scheme_ok {
        return invalid("address");
    }
    let now = unix_now();
    let hook = m.webhooks.by_shop.entry(shop).or_default().entry(t).or_insert(Hook {
        address: String::new(),
        create_time: now,
        update_time: now,
    });
    hook.address = address.to_string();
    hook.update_time = now;
    drop(m);
    state.count("tiktok event webhooks put");
    ok(json!({}))
}

/// `{"event_type"}`: removes the shop's address for it (success even when none was set).
async fn remove(AxState(state): AxState<Arc<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let shop = match verify(&state, &uri, &headers, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let t = match event_type(&body) {
        Ok((_, t)) => t,
        Err(r) => return r,
    };
    if let Some(s) = state.tiktok.lock().webhooks.by_shop.get_mut(&shop) {
        s.remove(&t);
    }
    ok(json!({}))
}

async fn admin_list(AxState(state): AxState<Arc<State>>, Path(cipher): Path<String>) -> Response {
    let hooks = state.tiktok.lock().webhooks.list(&cipher);
    Json(json!({"webhooks": hooks})).into_response()
}

async fn admin_delete(AxState(state): AxState<Arc<State>>, Path((cipher, name)): Path<(String, String)>) -> Response {
    let Some(t) = number_of(&name) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "unknown event_type"}))).into_response();
    };
    let removed = state
        .tiktok
        .lock()
        .webhooks
        .by_shop
        .get_mut(&cipher)
        .and_then(|s| s.remove(&t))
        .is_some();
    if removed {
        Json(json!({"deleted": name})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no address for that event type"})),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiktok::tests::{body_json, signed_with, token};

    const PATH: &str = "/event/202309/webhooks";

    fn setup() -> (Arc<State>, String) {
        let state = Arc::new(State::default());
        let mut m = state.tiktok.lock();
        m.apps.insert("key1".into(), "secret1".into());
        m.shop_apps.insert("CIPHER".into(), "key1".into());
        let access = m.grant("key1", "CIPHER")["access_token"].as_str().unwrap().to_string();
        drop(m);
        (state, access)
    }

    /// A signed call of the event API with `method`'s handler.
    async fn event(state: &Arc<State>, access: &str, method: &str, secret: &str, body: &'static [u8]) -> (u16, Value) {
        let uri = signed_with(PATH, secret, "CIPHER", &[], body);
        let (st, h, b) = (AxState(state.clone()), token(access), Bytes::from_static(body));
        let r = match method {
            "GET" => list(st, uri, h, b).await,
            "PUT" => put(st, uri, h, b).await,
            _ => remove(st, uri, h, b).await,
        };
        (r.status().as_u16(), body_json(r).await)
    }

    #[tokio::test]
    async fn the_event_api_lists_sets_and_removes_addresses() {
        let (state, access) = setup();
        let (_, v) = event(&state, &access, "GET", "secret1", b"").await;
        assert_eq!(v["code"], 0);
        assert_eq!(v["data"], json!({"total_count": 0, "webhooks": []}));
        let set = br#"{"address":"https://app.example/tts","event_type":"ORDER_STATUS_CHANGE"}"#;
        let (status, v) = event(&state, &access, "PUT", "secret1", set).await;
        assert_eq!(
            (status, v["code"].clone(), v["data"].clone()),
            (200, json!(0), json!({}))
        );
        let (_, v) = event(&state, &access, "GET", "secret1", b"").await;
        let hook = &v["data"]["webhooks"][0];
        assert_eq!(hook["event_type"], "ORDER_STATUS_CHANGE");
        assert_eq!(hook["address"], "https://app.example/tts");
        assert!(hook["create_time"].as_i64().unwrap_or(0) > 0);
        assert_eq!(v["data"]["total_count"], 1);
        // replaced, not added
        let again = br#"{"address":"https://app.example/v2","event_type":"ORDER_STATUS_CHANGE"}"#;
        event(&state, &access, "PUT", "secret1", again).await;
        let (_, v) = event(&state, &access, "GET", "secret1", b"").await;
        assert_eq!(v["data"]["webhooks"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["data"]["webhooks"][0]["address"], "https://app.example/v2");
        // refused with a code: unknown type, no address, plain http
        for bad in [
            &br#"{"address":"https://x.example","event_type":"ORDER_CREATED"}"#[..],
            br#"{"event_type":"PACKAGE_UPDATE"}"#,
            br#"{"address":"http://127.0.0.1:9/h","event_type":"PACKAGE_UPDATE"}"#,
        ] {
            let uri = signed_with(PATH, "secret1", "CIPHER", &[], bad);
            let r = put(AxState(state.clone()), uri, token(&access), Bytes::copy_from_slice(bad)).await;
            assert_eq!(r.status(), 200);
            assert_eq!(body_json(r).await["code"], 36009003);
        }
        // http once the admin allows it
        state.tiktok.lock().webhooks.allow_http = true;
        let http = br#"{"address":"http://127.0.0.1:9/h","event_type":"PACKAGE_UPDATE"}"#;
        assert_eq!(event(&state, &access, "PUT", "secret1", http).await.1["code"], 0);
        // delete: success even when nothing was set
        let del = br#"{"event_type":"ORDER_STATUS_CHANGE"}"#;
        assert_eq!(event(&state, &access, "DELETE", "secret1", del).await.1["code"], 0);
        assert_eq!(event(&state, &access, "DELETE", "secret1", del).await.1["code"], 0);
        let (_, v) = event(&state, &access, "GET", "secret1", b"").await;
        assert_eq!(v["data"]["webhooks"][0]["event_type"], "PACKAGE_UPDATE");
        // the admin sees and removes them
        let admin = body_json(admin_list(AxState(state.clone()), Path("CIPHER".into())).await).await;
        assert_eq!(admin["webhooks"][0]["address"], "http://127.0.0.1:9/h");
        let gone = |name: &str| admin_delete(AxState(state.clone()), Path(("CIPHER".into(), name.into())));
        assert_eq!(gone("PACKAGE_UPDATE").await.status(), 200);
        assert_eq!(gone("PACKAGE_UPDATE").await.status(), 404);
        assert_eq!(gone("NOPE").await.status(), 400);
    }

    #[tokio::test]
    async fn unsigned_or_foreign_calls_are_refused() {
        let (state, access) = setup();
        let set = br#"{"address":"https://app.example/tts","event_type":"ORDER_STATUS_CHANGE"}"#;
        let (status, v) = event(&state, &access, "PUT", "wrong", set).await;
        assert_eq!((status, v["code"].clone()), (401, json!(106001)));
        let (status, v) = event(&state, "nope", "GET", "secret1", b"").await;
        assert_eq!((status, v["code"].clone()), (401, json!(105001)));
        // another shop's cipher
        let uri = signed_with(PATH, "secret1", "OTHER", &[], b"");
        let r = list(AxState(state.clone()), uri, token(&access), Bytes::new()).await;
        assert_eq!(body_json(r).await["code"], 106011);
        assert!(state.tiktok.lock().webhooks.by_shop.is_empty());
    }

    #[tokio::test]
    async fn deliveries_follow_the_shop_s_address_else_the_app_s() {
        let (state, access) = setup();
        let to = |t: u8| targets(&state, &state.tiktok.lock(), "CIPHER", t);
        assert!(to(1).is_empty());
        // the app-level URL without topics takes every type
        state
            .hooks
            .lock()
            .urls
            .insert("tiktok".into(), "https://app.example/partner".into());
        assert_eq!(to(1), vec!["https://app.example/partner"]);
        assert_eq!(to(12), vec!["https://app.example/partner"]);
        // with topics, only those
        state
            .hooks
            .lock()
            .topics
            .insert("tiktok".into(), vec!["RETURN_STATUS_CHANGE".into()]);
        assert!(to(1).is_empty());
        assert_eq!(to(12), vec!["https://app.example/partner"]);
        // the shop's own address wins for its type
        let set = br#"{"address":"https://shop.example/orders","event_type":"ORDER_STATUS_CHANGE"}"#;
        event(&state, &access, "PUT", "secret1", set).await;
        assert_eq!(to(1), vec!["https://shop.example/orders"]);
        assert_eq!(to(12), vec!["https://app.example/partner"]);
        assert!(to(6).is_empty());
    }
}
