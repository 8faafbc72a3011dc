//! TikTok Shop orders: `GET /order/202309/orders?ids=...` (signed like every call), and the
//! order status webhook (type 1) signed with `Authorization` = hex HMAC(app_secret, app_key + body).
//! As in the real API, an order line is one unit; its `seller_sku` is the SKU's when sold.

use crate::state::{unix_now, uuid, State};
use crate::tiktok::{envelope, ok, parse_query, verify};
use crate::webhooks::{self, Delivery};
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Order {
    pub shop_cipher: String,
    pub status: &'static str,
    /// one per unit
    pub lines: Vec<Line>,
    pub update_time: i64,
}

/// An order line: one unit of a SKU, taken from one warehouse. `seller_sku` as it was when sold
/// (empty when the SKU has none).
#[derive(Clone, Debug)]
pub struct Line {
    pub id: String,
    pub product_id: String,
    pub sku_id: String,
    pub seller_sku: String,
    pub warehouse_id: String,
}

pub fn router() -> Router<Arc<State>> {
    Router::new().route("/order/202309/orders", get(get_orders))
}

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/orders", post(admin_order))
        .route("/orders/{id}/cancel", post(admin_cancel))
}

fn order_json(id: &str, o: &Order) -> Value {
    json!({"id": id, "status": o.status, "update_time": o.update_time, "create_time": o.update_time,
           "line_items": o.lines.iter().map(|l| json!({"id": l.id, "product_id": l.product_id, "sku_id": l.sku_id,
               "seller_sku": l.seller_sku, "display_status": o.status, "is_gift": false})).collect::<Vec<_>>()})
}

async fn get_orders(AxState(state): AxState<Arc<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let shop = match verify(&state, &uri, &headers, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    state.count("tiktok GET orders");
    let q = parse_query(uri.query());
    let ids: Vec<String> = q
        .get("ids")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > 50 {
        return envelope(StatusCode::OK, 36009001, "ids must list 1 to 50 orders.", Value::Null);
    }
    let m = state.tiktok.lock();
    let orders: Vec<Value> = ids
        .iter()
        .filter_map(|id| {
            m.orders
                .get(id)
                .filter(|o| o.shop_cipher == shop)
                .map(|o| order_json(id, o))
        })
        .collect();
    ok(json!({"orders": orders}))
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

/// The type-1 webhook for an order's new status, signed with the shop's app and routed to the
/// shop's ORDER_STATUS_CHANGE address (else the app-level URL).
fn status_webhook(state: &State, id: &str, o: &Order) -> Result<Delivery, Response> {
    let m = state.tiktok.lock();
    let app = m
        .shop_apps
        .get(&o.shop_cipher)
        .ok_or_else(|| bad("the shop has no app"))?;
    let secret = m.apps.get(app).ok_or_else(|| bad("unknown app"))?;
    let shop_id = m.shop_ids.get(&o.shop_cipher).cloned().unwrap_or_default();
    let body = json!({"type": 1, "tts_notification_id": uuid(), "shop_id": shop_id, "timestamp": unix_now(),
                      "data": {"order_id": id, "order_status": o.status, "update_time": o.update_time}})
    .to_string();
    Ok(Delivery {
        marketplace: "tiktok",
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            (
                "Authorization".into(),
                marketplace_signing::tiktok_webhook(app, secret, body.as_bytes()),
            ),
        ],
        body,
        targets: Some(crate::tiktok_webhooks::targets(state, &m, &o.shop_cipher, 1)),
    })
}

/// Takes (sign 1) or gives back (-1) one unit per line.
fn move_stock(state: &State, o: &Order, sign: i64) {
    let mut m = state.tiktok.lock();
    for l in &o.lines {
        if let Some(q) = m
            .products
            .get_mut(&l.product_id)
            .and_then(|p| p.sku_mut(&l.sku_id))
            .and_then(|s| s.quantity_mut(&l.warehouse_id))
        {
            *q -= sign;
        }
    }
}

/// A sale: `{"shop_cipher", "lines": [{"sku_id", "quantity"}], "send"?}`; notifies type 1
/// (AWAITING_SHIPMENT).
async fn admin_order(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let Some(shop) = b.get("shop_cipher").and_then(Value::as_str) else {
        return bad("shop_cipher is required");
    };
    let mut lines = Vec::new();
    {
        let m = state.tiktok.lock();
        for l in b.get("lines").and_then(Value::as_array).into_iter().flatten() {
            let (Some(sku), Some(q)) = (
                l.get("sku_id").and_then(Value::as_str),
                l.get("quantity")
                    .and_then(Value::as_i64)
                    .filter(|q| (1..=1_000).contains(q)),
            ) else {
                return bad("each line needs sku_id and a quantity of 1 to 1000");
            };
            let Some((pid, seller_sku, wh)) = m.products.iter().find_map(|(pid, p)| {
                p.sku(sku).filter(|_| p.shop_cipher == shop).and_then(|s| {
                    s.inventory
                        .first()
                        .map(|(wh, _)| (pid.clone(), s.seller_sku.clone(), wh.clone()))
                })
            }) else {
                return bad("unknown sku_id for this shop");
            };
            for _ in 0..q {
                lines.push(Line {
                    id: format!("5{:017}", rand::random::<u64>() % 100_000_000_000_000_000),
                    product_id: pid.clone(),
                    sku_id: sku.to_string(),
                    seller_sku: seller_sku.clone(),
                    warehouse_id: wh.clone(),
                });
            }
        }
    }
    if lines.is_empty() {
        return bad("an order needs lines");
    }
    let id = format!("57{:016}", rand::random::<u64>() % 10_000_000_000_000_000);
    let o = Order {
        shop_cipher: shop.to_string(),
        status: "AWAITING_SHIPMENT",
        lines,
        update_time: unix_now(),
    };
    move_stock(&state, &o, 1);
    state.tiktok.lock().orders.insert(id.clone(), o.clone());
    match status_webhook(&state, &id, &o) {
        Ok(d) => webhooks::produced(&state, &b, json!({"order_id": id}), &d, None),
        Err(r) => r,
    }
}

/// `{"send"?}`: cancels the order (stock back) and notifies type 1 (CANCELLED).
async fn admin_cancel(AxState(state): AxState<Arc<State>>, Path(id): Path<String>, Json(b): Json<Value>) -> Response {
    let (o, was) = {
        let mut m = state.tiktok.lock();
        let Some(o) = m.orders.get_mut(&id) else {
            return bad("no such order");
        };
        let was = o.status == "CANCELLED";
        o.status = "CANCELLED";
        o.update_time = unix_now();
        (o.clone(), was)
    };
    if !was {
        move_stock(&state, &o, -1);
    }
    match status_webhook(&state, &id, &o) {
        Ok(d) => webhooks::produced(&state, &b, json!({"order_id": id}), &d, None),
        Err(r) => r,
    }
}
