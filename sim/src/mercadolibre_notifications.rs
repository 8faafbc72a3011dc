//! MercadoLibre orders and notifications: `GET /orders/{id}`, `GET /missed_feeds`, and the
//! unsigned pointer notifications (`orders_v2`, `items`) sent to the app's callback, retried for
//! a while and kept in the missed feeds when never acknowledged.

use crate::mercadolibre::{authorize, error, Meli};
use crate::mercadolibre_catalog::Price;
use crate::state::{rfc3339_now, uuid, State};
use crate::webhooks::{self, Delivery};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Order {
    pub seller: u64,
    pub items: Vec<OrderLine>,
    pub cancelled: bool,
    pub created: String,
    pub updated: String,
}

/// One line of an order, with what the listing was at the time of the sale.
#[derive(Clone, Debug)]
pub struct OrderLine {
    pub item: String,
    pub variation: Option<i64>,
    pub quantity: i64,
    pub title: String,
    /// The variation's or item's SELLER_SKU (else `seller_custom_field`), as the order shows it.
    pub seller_sku: Option<String>,
    pub unit_price: Price,
    pub currency_id: String,
}

impl OrderLine {
    fn new(m: &Meli, item: &str, variation: Option<i64>, quantity: i64) -> OrderLine {
        let it = m.items.get(item);
        let var = it.and_then(|it| variation.and_then(|v| it.variations.iter().find(|x| x.id == v)));
        let seller_sku = match var {
            Some(v) => v.seller_sku.clone().or_else(|| v.seller_custom_field.clone()),
            None => it.and_then(|it| it.seller_sku.clone().or_else(|| it.seller_custom_field.clone())),
        };
        OrderLine {
            item: item.to_string(),
            variation,
            quantity,
            title: it.map_or_else(|| format!("Item {item}"), |it| it.title.clone()),
            seller_sku,
            unit_price: var
                .map(|v| v.price)
                .or(it.map(|it| it.price))
                .unwrap_or(Price::units(100)),
            currency_id: it.map_or_else(|| "MXN".to_string(), |it| it.currency_id.clone()),
        }
    }
}

pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/orders/{id}", get(get_order))
        .route("/missed_feeds", get(missed_feeds))
}

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/mercadolibre/orders", post(admin_order))
        .route("/mercadolibre/orders/{id}/cancel", post(admin_cancel))
        .route("/mercadolibre/orders/{id}/raw", post(admin_raw_order))
        .route("/mercadolibre/items/{id}/edit", post(admin_edit))
}

fn order_json(id: u64, o: &Order) -> Value {
    json!({"id": id, "status": if o.cancelled { "cancelled" } else { "paid" },
           "date_created": o.created, "last_updated": o.updated,
           "order_items": o.items.iter().map(|l| json!({
               "item": {"id": l.item, "title": l.title, "variation_id": l.variation, "seller_sku": l.seller_sku},
               "quantity": l.quantity, "unit_price": l.unit_price.to_json(), "currency_id": l.currency_id})).collect::<Vec<_>>(),
           "seller": {"id": o.seller}, "buyer": {"id": 1_000_001}})
}

async fn get_order(AxState(state): AxState<Arc<State>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    state.count("mercadolibre GET /orders/{id}");
    let seller = match authorize(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let m = state.meli.lock();
    if let Some((status, body)) = m.raw_orders.get(&id) {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
        return (status, [("content-type", "application/json")], body.clone()).into_response();
    }
    match id.parse::<u64>().ok().and_then(|n| m.orders.get(&n).map(|o| (n, o))) {
        None => error(StatusCode::NOT_FOUND, "not_found", &format!("Order {id} not found")),
        Some((_, o)) if o.seller != seller => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "caller.id does not match order seller",
        ),
        Some((n, o)) => Json(order_json(n, o)).into_response(),
    }
}

#[derive(Deserialize)]
struct Missed {
    app_id: String,
}

/// The notifications the app never acknowledged (MercadoLibre keeps about two days).
async fn missed_feeds(AxState(state): AxState<Arc<State>>, headers: HeaderMap, Query(q): Query<Missed>) -> Response {
    state.count("mercadolibre GET /missed_feeds");
    let seller = match authorize(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if state.meli.lock().sellers.get(&seller) != Some(&q.app_id) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token does not belong to this application",
        );
    }
    let messages = state.hooks.lock().missed.get(&q.app_id).cloned().unwrap_or_default();
    Json(json!({"messages": messages, "total": messages.len(), "offset": 0, "limit": messages.len()})).into_response()
}

/// `{"status"?: 200, "body": "<text>"}`: `GET /orders/{id}` answers exactly that from now on,
/// whoever asks; then sends the order's notification (`{"seller", "send"?}` as for orders).
async fn admin_raw_order(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
    Json(b): Json<Value>,
) -> Response {
    let (Some(body), Some(seller)) = (
        b.get("body").and_then(Value::as_str),
        b.get("seller").and_then(Value::as_u64),
    ) else {
        return bad("body (text) and seller are required");
    };
    let status = b.get("status").and_then(Value::as_u64).unwrap_or(200).clamp(100, 599) as u16;
    state
        .meli
        .lock()
        .raw_orders
        .insert(id.clone(), (status, body.to_string()));
    match notification(&state, seller, "orders_v2", &format!("/orders/{id}")) {
        Ok((d, app)) => webhooks::produced(&state, &b, json!({"order_id": id}), &d, Some(app)),
        Err(r) => r,
    }
}

/// A notification as MercadoLibre sends it (unsigned), and the application it is filed under.
fn notification(state: &State, seller: u64, topic: &str, resource: &str) -> Result<(Delivery, String), Response> {
    let Some(app) = state.meli.lock().sellers.get(&seller).cloned() else {
        return Err(bad("unknown seller"));
    };
    let app_id = app
        .parse::<u64>()
        .map(Value::from)
        .unwrap_or(Value::String(app.clone()));
    let now = rfc3339_now();
    let body = json!({"_id": uuid(), "resource": resource, "user_id": seller, "topic": topic,
                      "application_id": app_id, "attempts": 1, "sent": now, "received": now});
    let d = Delivery {
        marketplace: "mercadolibre",
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.to_string(),
        // notifications are configured per application in MercadoLibre's console
        targets: None,
    };
    Ok((d, app))
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

/// Takes (or with `sign` -1, gives back) each line's quantity from its item or variation.
fn move_stock(state: &State, items: &[OrderLine], sign: i64) {
    let mut m = state.meli.lock();
    for l in items {
        if let Some(it) = m.items.get_mut(&l.item) {
            match l.variation.and_then(|v| it.variations.iter_mut().find(|x| x.id == v)) {
                Some(v) => v.available_quantity -= sign * l.quantity,
                None => it.available_quantity -= sign * l.quantity,
            }
        }
    }
}

/// A sale: `{"seller", "items": [{"item_id", "variation_id"?, "quantity"}], "send"?, "lose"?}`.
/// Takes the stock and notifies `orders_v2`; `lose` files the notification as missed only.
async fn admin_order(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let Some(seller) = b.get("seller").and_then(Value::as_u64) else {
        return bad("seller is required");
    };
    let mut items = Vec::new();
    for l in b.get("items").and_then(Value::as_array).into_iter().flatten() {
        let (Some(item), Some(q)) = (
            l.get("item_id").and_then(Value::as_str),
            l.get("quantity").and_then(Value::as_i64).filter(|q| *q > 0),
        ) else {
            return bad("each item needs item_id and a positive quantity");
        };
        let variation = l.get("variation_id").and_then(Value::as_i64);
        items.push(OrderLine::new(&state.meli.lock(), item, variation, q));
    }
    if items.is_empty() {
        return bad("an order needs items");
    }
    move_stock(&state, &items, 1);
    let now = rfc3339_now();
    let id = {
        let mut m = state.meli.lock();
        let id = 2_000_003_508_419_000 + m.orders.len() as u64 + 1;
        m.orders.insert(
            id,
            Order {
                seller,
                items,
                cancelled: false,
                created: now.clone(),
                updated: now,
            },
        );
        id
    };
    match notification(&state, seller, "orders_v2", &format!("/orders/{id}")) {
        Ok((d, app)) => webhooks::produced(&state, &b, json!({"order_id": id}), &d, Some(app)),
        Err(r) => r,
    }
}

/// `{"send"?, "lose"?}`: the buyer cancels; the stock goes back and `orders_v2` is notified.
async fn admin_cancel(AxState(state): AxState<Arc<State>>, Path(id): Path<u64>, Json(b): Json<Value>) -> Response {
    let order = {
        let mut m = state.meli.lock();
        let Some(o) = m.orders.get_mut(&id) else {
            return bad("no such order");
        };
        let was = o.cancelled;
        o.cancelled = true;
        o.updated = rfc3339_now();
        (o.clone(), was)
    };
    if !order.1 {
        move_stock(&state, &order.0.items, -1);
    }
    match notification(&state, order.0.seller, "orders_v2", &format!("/orders/{id}")) {
        Ok((d, app)) => webhooks::produced(&state, &b, json!({"order_id": id}), &d, Some(app)),
        Err(r) => r,
    }
}

/// An edit in the seller's MercadoLibre account: `{"available_quantity", "variation_id"?,
/// "send"?, "lose"?}`; notifies `items`.
async fn admin_edit(AxState(state): AxState<Arc<State>>, Path(id): Path<String>, Json(b): Json<Value>) -> Response {
    let Some(q) = b.get("available_quantity").and_then(Value::as_i64) else {
        return bad("available_quantity is required");
    };
    let seller = {
        let mut m = state.meli.lock();
        let Some(it) = m.items.get_mut(&id) else {
            return bad("no such item");
        };
        match b
            .get("variation_id")
            .and_then(Value::as_i64)
            .and_then(|v| it.variations.iter_mut().find(|x| x.id == v))
        {
            Some(v) => v.available_quantity = q,
            None => it.available_quantity = q,
        }
        it.seller
    };
    match notification(&state, seller, "items", &format!("/items/{id}")) {
        Ok((d, app)) => webhooks::produced(&state, &b, json!({"ok": true}), &d, Some(app)),
        Err(r) => r,
    }
}
