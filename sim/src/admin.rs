//! The admin API under /_admin: set up sellers and listings, read stock, inject faults, read
//! counters. Never part of any real marketplace.

use crate::faults::Fault;
use crate::mercadolibre::{error, item_json, Item, UserProduct, Variation};
use crate::mercadolibre_catalog::{self as meli_catalog, ItemStatus, Price};
use crate::state::State;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/reset", post(reset))
        .merge(crate::mercadolibre_catalog::admin_router())
        .nest("/shein", crate::shein::admin_router())
        .nest("/shopify", crate::shopify::admin_router())
        .nest("/tiktok", crate::tiktok::admin_router())
        .nest("/webhooks", crate::webhooks::admin_router())
        .nest("/authorize", crate::authorize::admin_router())
        .route("/stats", get(stats))
        .route("/faults", post(set_faults).delete(clear_faults).get(get_faults))
        .route("/mercadolibre/apps", post(meli_app))
        .route("/mercadolibre/sellers", post(meli_seller))
        .route("/mercadolibre/sellers/{id}/revoke", post(meli_revoke))
        .route("/mercadolibre/sellers/{id}/fail", post(meli_fail).delete(meli_unfail))
        .route("/mercadolibre/items", post(meli_item))
        .route("/mercadolibre/items/bulk", post(meli_items_bulk))
        .route("/mercadolibre/items/{id}", get(meli_get_item))
        .route("/mercadolibre/user_products", post(meli_up))
        .route("/mercadolibre/user_products/{id}", get(meli_get_up))
        .route("/mercadolibre/user_products/{id}/bump", post(meli_bump_up))
        .route("/mercadolibre/config", post(meli_config))
        .route("/mercadolibre/expire_tokens", post(meli_expire))
        .route("/mercadolibre/issued_tokens", get(meli_issued))
        .merge(crate::mercadolibre_notifications::admin_router())
}

fn bad(msg: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg.to_string()}))).into_response()
}

fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, Response> {
    serde_json::from_value(body.clone()).map_err(bad)
}

async fn reset(AxState(state): AxState<Arc<State>>) -> Response {
    *state.meli.lock() = Default::default();
    *state.shein.lock() = Default::default();
    *state.shopify.lock() = Default::default();
    *state.tiktok.lock() = Default::default();
    *state.hooks.lock() = Default::default();
    *state.faults.lock() = Default::default();
    state.counters.lock().clear();
    Json(json!({"ok": true})).into_response()
}

async fn stats(AxState(state): AxState<Arc<State>>) -> Response {
    Json(json!({"counters": *state.counters.lock()})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    #[serde(default = "all")]
    marketplace: String,
    #[serde(flatten)]
    fault: Fault,
}

fn all() -> String {
    "*".into()
}

async fn set_faults(AxState(state): AxState<Arc<State>>, Json(body): Json<Value>) -> Response {
    let f: FaultBody = match parse(&body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut faults = state.faults.lock();
    // `error_every` counts from the moment its fault is set ("*" restarts every count)
    if f.marketplace == "*" {
        faults.seen.clear();
    } else {
        faults.seen.remove(&f.marketplace);
    }
    faults.by_marketplace.insert(f.marketplace.clone(), f.fault);
    Json(json!({"ok": true})).into_response()
}

async fn clear_faults(AxState(state): AxState<Arc<State>>) -> Response {
    *state.faults.lock() = Default::default();
    Json(json!({"ok": true})).into_response()
}

async fn get_faults(AxState(state): AxState<Arc<State>>) -> Response {
    Json(json!(state.faults.lock().by_marketplace)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct App {
    client_id: String,
    client_secret: String,
}

async fn meli_app(AxState(state): AxState<Arc<State>>, Json(body): Json<Value>) -> Response {
    let a: App = match parse(&body) {
        Ok(a) => a,
        Err(r) => return r,
    };
    state.meli.lock().apps.insert(a.client_id, a.client_secret);
    Json(json!({"ok": true})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seller {
    user_id: u64,
    client_id: String,
}

/// Creates a seller that authorized the app: returns a fresh token pair and an auth code.
async fn meli_seller(AxState(state): AxState<Arc<State>>, Json(body): Json<Value>) -> Response {
    let s: Seller = match parse(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut m = state.meli.lock();
    if !m.apps.contains_key(&s.client_id) {
        return bad("unknown client_id: create the app first");
    }
    m.sellers.insert(s.user_id, s.client_id.clone());
    let mut grant = m.grant(s.user_id, &s.client_id);
    let code = m.new_code(s.user_id, &s.client_id);
    grant["code"] = json!(code);
    Json(grant).into_response()
}

async fn meli_revoke(AxState(state): AxState<Arc<State>>, Path(id): Path<u64>) -> Response {
    let mut m = state.meli.lock();
    m.revoke_refresh_tokens(id);
    m.expire_access_tokens(Some(id));
    Json(json!({"ok": true})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    id: String,
    seller_id: u64,
    #[serde(default)]
    available_quantity: i64,
    #[serde(default)]
    variations: Vec<NewVariation>,
    #[serde(default)]
    title: Option<String>,
    /// decimal text ("199.90") or a number; default 100
    #[serde(default)]
    price: Option<Value>,
    #[serde(default)]
    currency_id: Option<String>,
    /// active (default), paused, closed
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    permalink: Option<String>,
    #[serde(default)]
    user_product_id: Option<String>,
    /// served as the SELLER_SKU attribute
    #[serde(default)]
    seller_sku: Option<String>,
    #[serde(default)]
    seller_custom_field: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewVariation {
    id: i64,
    #[serde(default)]
    available_quantity: i64,
    /// default: the item's price
    #[serde(default)]
    price: Option<Value>,
    #[serde(default)]
    seller_sku: Option<String>,
    #[serde(default)]
    seller_custom_field: Option<String>,
}

fn meli_price(v: Option<&Value>, default: Price, currency: &str) -> Result<Price, Response> {
    let Some(v) = v else { return Ok(default) };
    let p = Price::from_text_or_number(v).ok_or_else(|| bad("price must be decimal text such as \"199.90\""))?;
    meli_catalog::check_price(&p, currency).map_err(bad)?;
    Ok(p)
}

async fn meli_item(AxState(state): AxState<Arc<State>>, Json(body): Json<Value>) -> Response {
    let i: NewItem = match parse(&body) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let mut it = Item::new(i.seller_id, i.title.unwrap_or_else(|| format!("Item {}", i.id)));
    if let Some(c) = i.currency_id {
        it.currency_id = c;
    }
    it.price = match meli_price(i.price.as_ref(), it.price, &it.currency_id) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Some(s) = i.status {
        match ItemStatus::parse(&s) {
            Some(s) => it.status = s,
            None => return bad("status must be active, paused or closed"),
        }
    }
    it.available_quantity = i.available_quantity;
    it.permalink = i.permalink;
    it.user_product_id = i.user_product_id;
    it.seller_sku = i.seller_sku;
    it.seller_custom_field = i.seller_custom_field;
    for v in i.variations {
        let price = match meli_price(v.price.as_ref(), it.price, &it.currency_id) {
            Ok(p) => p,
            Err(r) => return r,
        };
        it.variations.push(Variation {
            id: v.id,
            available_quantity: v.available_quantity,
            price,
            seller_sku: v.seller_sku,
            seller_custom_field: v.seller_custom_field,
        });
    }
    let out = item_json(&i.id, &it);
    state.meli.lock().items.insert(i.id, it);
    Json(out).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItems {
    /// ids are prefix + from .. prefix + (from + count - 1)
    prefix: String,
    from: u64,
    count: u64,
    seller_id: u64,
}

/// Many plain items at once (benchmarks with 100,000 listings).
async fn meli_items_bulk(AxState(state): AxState<Arc<State>>, Json(body): Json<Value>) -> Response {
    let b: NewItems = match parse(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if b.count > 1_000_000 {
        return error(StatusCode::BAD_REQUEST, "bad_request", "count is at most 1,000,000");
    }
    let mut m = state.meli.lock();
    for n in b.from..b.from.saturating_add(b.count) {
        let id = format!("{}{n}", b.prefix);
        let item = Item::new(b.seller_id, format!("Item {id}"));
        m.items.insert(id, item);
    }
    Json(json!({"created": b.count})).into_response()
}

async fn meli_get_item(AxState(state): AxState<Arc<State>>, Path(id): Path<String>) -> Response {
    match state.meli.lock().items.get(&id) {
        Some(it) => {
            // everything, variations' attributes included
            let mut v = meli_catalog::item_body(&id, it, true);
            v["writes"] = json!(it.writes);
            v["price_writes"] = json!(it.price_writes);
            Json(v).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "not_found", "no such item"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUp {
    id: String,
    seller_id: u64,
    #[serde(default)]
    quantity: i64,
}

async fn meli_up(AxState(state): AxState<Arc<State>>, Json(body): Json<Value>) -> Response {
    let u: NewUp = match parse(&body) {
        Ok(u) => u,
        Err(r) => return r,
    };
    state.meli.lock().user_products.insert(
        u.id,
        UserProduct {
            seller: u.seller_id,
            quantity: u.quantity,
            version: 1,
            writes: 0,
        },
    );
    Json(json!({"ok": true})).into_response()
}

async fn meli_get_up(AxState(state): AxState<Arc<State>>, Path(id): Path<String>) -> Response {
    match state.meli.lock().user_products.get(&id) {
        Some(u) => {
            Json(json!({"id": id, "quantity": u.quantity, "version": u.version, "writes": u.writes})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "not_found", "no such user product"),
    }
}

/// Simulates another writer: the next PUT with the old x-version gets 409.
async fn meli_bump_up(AxState(state): AxState<Arc<State>>, Path(id): Path<String>) -> Response {
    match state.meli.lock().user_products.get_mut(&id) {
        Some(u) => {
            u.version += 1;
            Json(json!({"version": u.version})).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "not_found", "no such user product"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    token_lifetime_s: Option<u64>,
    /// null or absent: no limit (checked here, applied by RateLimit::configure)
    #[serde(default)]
    #[allow(dead_code)]
    rate_limit_per_minute: Option<usize>,
    /// the window the limit counts in (default 60 s)
    #[allow(dead_code)]
    rate_window_s: Option<f64>,
    /// Retry-After sent with 429s; null: none
    #[serde(default)]
    retry_after_s: Option<f64>,
}

async fn meli_config(AxState(state): AxState<Arc<State>>, Json(body): Json<Value>) -> Response {
    let c: Config = match parse(&body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut m = state.meli.lock();
    if let Some(s) = c.token_lifetime_s {
        m.token_lifetime = Duration::from_secs(s);
    }
    m.rate.configure(&body);
    if body.get("retry_after_s").is_some() {
        m.retry_after_s = c.retry_after_s;
    }
    Json(json!({"ok": true})).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expire {
    user_id: Option<u64>,
}

async fn meli_expire(AxState(state): AxState<Arc<State>>, body: Option<Json<Value>>) -> Response {
    let e: Expire = match body.map(|Json(b)| parse(&b)).transpose() {
        Ok(e) => e.unwrap_or_default(),
        Err(r) => return r,
    };
    let n = state.meli.lock().expire_access_tokens(e.user_id);
    Json(json!({"expired": n})).into_response()
}

async fn meli_issued(AxState(state): AxState<Arc<State>>) -> Response {
    Json(json!(state.meli.lock().issued)).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Fail {
    status: Option<u16>,
}

/// Every API call of this seller fails with `status` (default 503) until DELETE.
async fn meli_fail(AxState(state): AxState<Arc<State>>, Path(id): Path<u64>, body: Option<Json<Value>>) -> Response {
    let f: Fail = match body.map(|Json(b)| parse(&b)).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(r) => return r,
    };
    state.meli.lock().failing_sellers.insert(id, f.status.unwrap_or(503));
    Json(json!({"ok": true})).into_response()
}

async fn meli_unfail(AxState(state): AxState<Arc<State>>, Path(id): Path<u64>) -> Response {
    state.meli.lock().failing_sellers.remove(&id);
    Json(json!({"ok": true})).into_response()
}
