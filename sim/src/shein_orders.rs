//! SHEIN order events: POSTed to the app's callback as form field `eventData`, AES-128-CBC
//! encrypted with the app's appSecretKey, with `x-lt-*` headers signed like a request but with
//! the appid and appSecretKey over the callback's own path. SHEIN publishes no schema for the
//! decrypted event; this sandbox sends
//! `{"eventCode":"ORDER_STATUS","supplierId","orderNo","orderStatus":"TO_BE_SHIPPED"|"CANCELLED",
//!   "updateTime","orderGoodsInfoList":[{"orderGoodsId","skuCode","quantity"}]}`.

use crate::state::{uuid, State};
use crate::webhooks::{self, Delivery};
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use marketplace_signing as signing;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Order {
    pub open_key_id: String,
    pub cancelled: bool,
    /// (order goods id, sku code, quantity)
    pub lines: Vec<(String, String, i64)>,
}

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/orders", post(admin_order))
        .route("/orders/{id}/cancel", post(admin_cancel))
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

fn now_ms() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
        .to_string()
}

fn form_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The encrypted, signed callback for an order's status.
fn event(state: &State, no: &str, o: &Order) -> Result<Delivery, Response> {
    let m = state.shein.lock();
    let supplier = m.suppliers.get(&o.open_key_id).ok_or_else(|| bad("unknown supplier"))?;
    let appid = supplier.appid.clone();
    let secret = m.apps.get(&appid).ok_or_else(|| bad("unknown app"))?;
    let plain = json!({"eventCode": "ORDER_STATUS", "eventId": uuid(), "supplierId": supplier.supplier_id, "orderNo": no,
                       "orderStatus": if o.cancelled { "CANCELLED" } else { "TO_BE_SHIPPED" }, "updateTime": now_ms(),
                       "orderGoodsInfoList": o.lines.iter().map(|(gid, sku, q)| json!({"orderGoodsId": gid, "skuCode": sku,
                           "quantity": q})).collect::<Vec<_>>()});
    let encrypted = signing::shein_encrypt(secret, &plain.to_string()).map_err(|e| bad(&e))?;
    let path = webhooks::callback_path(state, "shein");
    let ts = now_ms();
    let random_key = signing::shein_random_key(&mut rand::thread_rng());
    let signature = signing::shein(&appid, secret, &path, &ts, &random_key);
    Ok(Delivery {
        marketplace: "shein",
        headers: vec![
            ("Content-Type".into(), "application/x-www-form-urlencoded".into()),
            ("x-lt-appid".into(), appid),
            ("x-lt-timestamp".into(), ts),
            ("x-lt-signature".into(), signature),
        ],
        body: format!("eventData={}", form_escape(&encrypted)),
        // SHEIN's callback is set per application in its console
        targets: None,
    })
}

fn move_stock(state: &State, o: &Order, sign: i64) {
    let mut m = state.shein.lock();
    for (_, sku, q) in &o.lines {
        if let Some(s) = m.skus.get_mut(sku) {
            s.quantity -= sign * q;
        }
    }
}

/// A sale: `{"open_key_id", "lines": [{"sku_code", "quantity"}], "send"?}`.
async fn admin_order(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let Some(key) = b.get("open_key_id").and_then(Value::as_str) else {
        return bad("open_key_id is required");
    };
    let mut lines = Vec::new();
    for l in b.get("lines").and_then(Value::as_array).into_iter().flatten() {
        let (Some(sku), Some(q)) = (
            l.get("sku_code").and_then(Value::as_str),
            l.get("quantity").and_then(Value::as_i64).filter(|q| *q > 0),
        ) else {
            return bad("each line needs sku_code and a positive quantity");
        };
        lines.push((format!("{}", rand::random::<u32>()), sku.to_string(), q));
    }
    if lines.is_empty() {
        return bad("an order needs lines");
    }
    let no = format!("GSH{}", rand::random::<u32>());
    let o = Order {
        open_key_id: key.to_string(),
        cancelled: false,
        lines,
    };
    move_stock(&state, &o, 1);
    state.shein.lock().orders.insert(no.clone(), o.clone());
    match event(&state, &no, &o) {
        Ok(d) => webhooks::produced(&state, &b, json!({"order_id": no}), &d, None),
        Err(r) => r,
    }
}

/// `{"send"?}`: cancels the order (stock back) and notifies.
async fn admin_cancel(AxState(state): AxState<Arc<State>>, Path(no): Path<String>, Json(b): Json<Value>) -> Response {
    let (o, was) = {
        let mut m = state.shein.lock();
        let Some(o) = m.orders.get_mut(&no) else {
            return bad("no such order");
        };
        let was = o.cancelled;
        o.cancelled = true;
        (o.clone(), was)
    };
    if !was {
        move_stock(&state, &o, -1);
    }
    match event(&state, &no, &o) {
        Ok(d) => webhooks::produced(&state, &b, json!({"order_id": no}), &d, None),
        Err(r) => r,
    }
}
