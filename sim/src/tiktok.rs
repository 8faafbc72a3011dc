//! TikTok Shop (API 202309): token get/refresh (GET, absolute expiry times, single-use rotating
//! refresh tokens), every shop call verified as TikTok does (`sign` over the sorted query without
//! `sign`/`access_token`, the path and the raw body, wrapped in the app secret; a bad one is the
//! real 401 `106001`), `x-tts-access-token`, `shop_cipher`, inventory update per SKU and
//! warehouse, inventory search. Envelope: `{"code", "message", "data", "request_id"}`.
//! The catalog (products search and detail, the catalog generator) is in `tiktok_catalog`,
//! prices (prices/update, shop regions and their currencies, promotion locks) in `tiktok_prices`,
//! the event API (webhook addresses per shop) in `tiktok_webhooks`.

use crate::state::{random_token, State};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use marketplace_signing as signing;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Default)]
pub struct TikTok {
    /// app_key -> app_secret
    pub apps: HashMap<String, String>,
    /// access token -> (shop_cipher, absolute expiry, unix s)
    access: HashMap<String, (String, i64)>,
    /// refresh token -> (app_key, shop_cipher); removed on first use
    refresh: HashMap<String, (String, String)>,
    /// auth code -> (app_key, shop_cipher)
    codes: HashMap<String, (String, String)>,
    /// product id -> product; ordered by id (byte order), the order products/search pages in
    pub products: Products,
    /// products/search's total_count per (shop, filter fingerprint), as of a `products` version
    pub search_counts: HashMap<(String, String), (u64, usize)>,
    pub token_lifetime_s: i64,
    pub rate: crate::state::RateLimit,
    pub issued: Vec<String>,
    /// shop_cipher -> app_key, and -> shop_id (what webhooks name the shop by)
    pub shop_apps: HashMap<String, String>,
    pub shop_ids: HashMap<String, String>,
    pub orders: HashMap<String, crate::tiktok_orders::Order>,
    /// shop regions, price limits, promotion locks and price write counts
    pub prices: crate::tiktok_prices::Prices,
    /// webhook addresses set through the event API
    pub webhooks: crate::tiktok_webhooks::Webhooks,
}

/// The products by id. Reads go through `Deref`; every mutable access (`DerefMut`) moves the
/// version on, so what is derived from the catalog (search counts) can be cached safely.
#[derive(Default)]
pub struct Products {
    map: BTreeMap<String, Product>,
    version: u64,
}

impl Products {
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl std::ops::Deref for Products {
    type Target = BTreeMap<String, Product>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for Products {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.version += 1;
        &mut self.map
    }
}

/// A listing with its catalog fields. Products made by the older admin call get defaults: title
/// `Product {id}`, status `ACTIVATE`, each SKU's seller SKU its id, price 100.00 in the shop
/// region's currency (USD by default).
#[derive(Clone, Debug)]
pub struct Product {
    pub shop_cipher: String,
    pub title: String,
    /// ACTIVATE, SELLER_DEACTIVATED, ... (see `tiktok_catalog::STATUSES`)
    pub status: String,
    /// in the order they were created
    pub skus: Vec<Sku>,
    pub writes: u64,
}

impl Default for Product {
    fn default() -> Self {
        Product {
            shop_cipher: String::new(),
            title: String::new(),
            status: "ACTIVATE".into(),
            skus: Vec::new(),
            writes: 0,
        }
    }
}

impl Product {
    pub fn sku(&self, id: &str) -> Option<&Sku> {
        self.skus.iter().find(|s| s.id == id)
    }

    pub fn sku_mut(&mut self, id: &str) -> Option<&mut Sku> {
        self.skus.iter_mut().find(|s| s.id == id)
    }
}

/// A SKU: its seller SKU ("" when the seller gave none), price (decimal text, kept exactly as
/// given) and stock per warehouse.
#[derive(Clone, Debug, Default)]
pub struct Sku {
    pub id: String,
    pub seller_sku: String,
    pub price: Price,
    /// (warehouse id, quantity), in the order the warehouses were added
    pub inventory: Vec<(String, i64)>,
}

impl Sku {
    pub fn quantity_mut(&mut self, warehouse: &str) -> Option<&mut i64> {
        self.inventory.iter_mut().find(|(w, _)| w == warehouse).map(|(_, q)| q)
    }

    pub fn total(&self) -> i64 {
        self.inventory.iter().map(|(_, q)| q).sum()
    }
}

/// TikTok's price object; amounts are decimal strings, never floats.
#[derive(Clone, Debug)]
pub struct Price {
    pub currency: String,
    pub sale_price: String,
    pub tax_exclusive_price: String,
}

impl Default for Price {
    fn default() -> Self {
        Price {
            currency: "USD".into(),
            sale_price: "100.00".into(),
            tax_exclusive_price: "100.00".into(),
        }
    }
}

use crate::state::unix_now;

pub fn envelope(status: StatusCode, code: i64, message: &str, data: Value) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message, "data": data, "request_id": random_token("")})),
    )
        .into_response()
}

pub fn ok(data: Value) -> Response {
    envelope(StatusCode::OK, 0, "Success", data)
}

impl TikTok {
    fn lifetime(&self) -> i64 {
        if self.token_lifetime_s > 0 {
            self.token_lifetime_s
        } else {
            7 * 24 * 3600
        }
    }

    /// A new token pair for a shop, as token/get and token/refresh answer it.
    pub fn grant(&mut self, app_key: &str, shop_cipher: &str) -> Value {
        let access = random_token("ROW_");
        let refresh = random_token("RT_");
        let expires = unix_now() + self.lifetime();
        let region = self.prices.region_of(shop_cipher).code;
        self.access.insert(access.clone(), (shop_cipher.to_string(), expires));
        self.refresh
            .insert(refresh.clone(), (app_key.to_string(), shop_cipher.to_string()));
        self.issued.push(access.clone());
        self.issued.push(refresh.clone());
        json!({"access_token": access, "access_token_expire_in": expires, "refresh_token": refresh,
               "refresh_token_expire_in": unix_now() + 365 * 24 * 3600, "open_id": random_token("open-"),
               "seller_name": "Sandbox shop", "seller_base_region": region, "user_type": 0})
    }

    pub fn new_code(&mut self, app_key: &str, shop_cipher: &str) -> String {
        let code = random_token("code-");
        self.codes
            .insert(code.clone(), (app_key.to_string(), shop_cipher.to_string()));
        self.issued.push(code.clone());
        code
    }

    pub fn expire_access_tokens(&mut self) -> usize {
        let now = unix_now();
        self.access.values_mut().for_each(|(_, exp)| *exp = now - 1);
        self.access.len()
    }
}

pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/api/v2/token/get", get(token_get))
        .route("/api/v2/token/refresh", get(token_refresh))
        .route("/product/202309/products/{id}/inventory/update", post(inventory_update))
        .route("/product/202309/inventory/search", post(inventory_search))
        .merge(crate::tiktok_orders::router())
        .route("/authorization/202309/shops", get(authorized_shops))
        .merge(crate::tiktok_catalog::router())
        .merge(crate::tiktok_prices::router())
        .merge(crate::tiktok_webhooks::router())
}

/// The shops the token was granted for (the app learns `shop_cipher` here).
async fn authorized_shops(AxState(state): AxState<Arc<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let shop = match verify_call(&state, &uri, &headers, &body, false) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let m = state.tiktok.lock();
    let id = m.shop_ids.get(&shop).cloned().unwrap_or_default();
    let region = m.prices.region_of(&shop).code;
    ok(json!({"shops": [{"id": id, "cipher": shop, "name": "Sandbox shop", "region": region, "seller_type": "LOCAL"}]}))
}

/// Query parameters, percent-decoded.
pub fn parse_query(raw: Option<&str>) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                if let Ok(b) = u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    raw.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The token endpoints take the app's key and secret in the query.
fn check_app(m: &TikTok, q: &BTreeMap<String, String>) -> Result<(), Response> {
    let known = q
        .get("app_key")
        .and_then(|k| m.apps.get(k))
        .is_some_and(|s| Some(s) == q.get("app_secret"));
    if known {
        Ok(())
    } else {
        Err(envelope(
            StatusCode::OK,
            36004003,
            "app_key or app_secret is invalid",
            Value::Null,
        ))
    }
}

async fn token_get(AxState(state): AxState<Arc<State>>, RawQuery(q): RawQuery) -> Response {
    let q = parse_query(q.as_deref());
    let mut m = state.tiktok.lock();
    if let Err(r) = check_app(&m, &q) {
        return r;
    }
    let Some((app, shop)) = q.get("auth_code").and_then(|c| m.codes.remove(c)) else {
        return envelope(StatusCode::OK, 36004004, "auth_code is invalid or used", Value::Null);
    };
    state.count("tiktok token get");
    let g = m.grant(&app, &shop);
    ok(g)
}

async fn token_refresh(AxState(state): AxState<Arc<State>>, RawQuery(q): RawQuery) -> Response {
    let q = parse_query(q.as_deref());
    let mut m = state.tiktok.lock();
    if let Err(r) = check_app(&m, &q) {
        return r;
    }
    if q.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return envelope(StatusCode::OK, 36004002, "grant_type is invalid", Value::Null);
    }
    let Some((app, shop)) = q.get("refresh_token").and_then(|r| m.refresh.remove(r)) else {
        state.count("tiktok token refresh invalid");
        return envelope(
            StatusCode::OK,
            36004005,
            "refresh_token is invalid or expired",
            Value::Null,
        );
    };
    state.count("tiktok token refresh ok");
    let g = m.grant(&app, &shop);
    ok(g)
}

/// Checks app_key, timestamp, sign, the access token, shop_cipher and the shop's rate limit;
/// the shop_cipher.
pub fn verify(state: &State, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<String, Response> {
    verify_call(state, uri, headers, body, true)
}

/// The same checks; `shop_scoped` calls must also name the token's shop_cipher.
fn verify_call(
    state: &State,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    shop_scoped: bool,
) -> Result<String, Response> {
    let q = parse_query(uri.query());
    let mut m = state.tiktok.lock();
    let Some(secret) = q.get("app_key").and_then(|k| m.apps.get(k)) else {
        return Err(envelope(
            StatusCode::UNAUTHORIZED,
            106002,
            "app_key is invalid",
            Value::Null,
        ));
    };
    let ts_ok = q
        .get("timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|t| (unix_now() - t).abs() <= 300);
    if !ts_ok {
        return Err(envelope(
            StatusCode::UNAUTHORIZED,
            106003,
            "Invalid timestamp. The 'timestamp' query parameter is missing or expired.",
            Value::Null,
        ));
    }
    let want = signing::tiktok_request(secret, uri.path(), &q, body);
    let given = q.get("sign").map(String::as_str).unwrap_or("");
    if !signing::constant_time_eq(want.as_bytes(), given.as_bytes()) {
        state.count("tiktok bad sign");
        return Err(envelope(
            StatusCode::UNAUTHORIZED,
            106001,
            "Invalid credentials. The 'sign' query parameter is invalid. Please check your signature algorithm.",
            Value::Null,
        ));
    }
    let token = headers
        .get("x-tts-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some((shop, expires)) = m.access.get(token) else {
        return Err(envelope(
            StatusCode::UNAUTHORIZED,
            105001,
            "Access token is invalid.",
            Value::Null,
        ));
    };
    if *expires <= unix_now() {
        state.count("tiktok 401 expired");
        return Err(envelope(
            StatusCode::UNAUTHORIZED,
            105002,
            "Access token is expired.",
            Value::Null,
        ));
    }
    if shop_scoped && q.get("shop_cipher") != Some(shop) {
        return Err(envelope(StatusCode::OK, 106011, "shop_cipher is invalid.", Value::Null));
    }
    let shop = shop.clone();
    if m.rate.over(&shop) {
        state.count("tiktok 429");
        return Err(envelope(
            StatusCode::TOO_MANY_REQUESTS,
            36009004,
            "Too many requests.",
            Value::Null,
        ));
    }
    Ok(shop)
}

pub(crate) async fn inventory_update(
    AxState(state): AxState<Arc<State>>,
    Path(product_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shop = match verify(&state, &uri, &headers, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut m = state.tiktok.lock();
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return envelope(StatusCode::OK, 36009001, "Invalid request body.", Value::Null);
    };
    let Some(product) = m.products.get_mut(&product_id).filter(|p| p.shop_cipher == shop) else {
        return envelope(StatusCode::OK, 12052048, "Product does not exist.", Value::Null);
    };
    let skus = v.get("skus").and_then(Value::as_array).cloned().unwrap_or_default();
    if skus.is_empty() {
        return envelope(StatusCode::OK, 36009001, "skus is required.", Value::Null);
    }
    // validate everything first: the real API applies all or nothing
    let mut changes = Vec::new();
    for s in &skus {
        let id = s.get("id").and_then(Value::as_str).unwrap_or("");
        let Some(current) = product.sku(id) else {
            return envelope(
                StatusCode::OK,
                12052230,
                &format!("SKU {id} does not exist."),
                Value::Null,
            );
        };
        for inv in s.get("inventory").and_then(Value::as_array).into_iter().flatten() {
            let wh = inv.get("warehouse_id").and_then(Value::as_str).unwrap_or("");
            let q = inv.get("quantity").and_then(Value::as_i64).unwrap_or(-1);
            if !current.inventory.iter().any(|(w, _)| w == wh) {
                return envelope(
                    StatusCode::OK,
                    12052231,
                    &format!("Warehouse {wh} is invalid."),
                    Value::Null,
                );
            }
            if !(0..99_999).contains(&q) {
                return envelope(
                    StatusCode::OK,
                    12019011,
                    "quantity must be between 0 and 99999.",
                    Value::Null,
                );
            }
            changes.push((id.to_string(), wh.to_string(), q));
        }
    }
    for (id, wh, q) in changes {
        if let Some(slot) = product.sku_mut(&id).and_then(|s| s.quantity_mut(&wh)) {
            *slot = q;
        }
        state.count("tiktok stock writes");
    }
    product.writes += 1;
    ok(Value::Null)
}

pub(crate) async fn inventory_search(
    AxState(state): AxState<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shop = match verify(&state, &uri, &headers, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let m = state.tiktok.lock();
    let wanted: Vec<String> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("sku_ids").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    let inventory: Vec<Value> = m
        .products
        .iter()
        .filter(|(_, p)| p.shop_cipher == shop)
        .flat_map(|(pid, p)| {
            p.skus
                .iter()
                .filter(|s| wanted.contains(&s.id))
                .map(move |s| {
                    json!({"product_id": pid, "skus": [{"id": s.id, "total_available_quantity": s.total(),
                        "warehouse_inventory": s.inventory.iter().map(|(w, q)| json!({"warehouse_id": w, "available_quantity": q})).collect::<Vec<_>>()}]})
                })
        })
        .collect();
    ok(json!({"inventory": inventory}))
}

// ---- admin (/_admin/tiktok/...) ---------------------------------------------------------------

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/apps", post(admin_app))
        .route("/shops", post(admin_shop))
        .route("/products", post(admin_product))
        .route("/skus/{id}", get(admin_sku))
        .route("/expire_tokens", post(admin_expire))
        .route("/config", post(admin_config))
        .route("/issued_tokens", get(admin_issued))
        .merge(crate::tiktok_orders::admin_router())
        .merge(crate::tiktok_catalog::admin_router())
        .merge(crate::tiktok_prices::admin_router())
        .merge(crate::tiktok_webhooks::admin_router())
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

fn s<'a>(b: &'a Value, k: &str) -> Option<&'a str> {
    b.get(k).and_then(Value::as_str)
}

/// `{"app_key", "app_secret"}`
async fn admin_app(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(k), Some(sec)) = (s(&b, "app_key"), s(&b, "app_secret")) else {
        return bad("app_key and app_secret are required");
    };
    let mut m = state.tiktok.lock();
    m.issued.push(sec.to_string());
    m.apps.insert(k.to_string(), sec.to_string());
    Json(json!({"ok": true})).into_response()
}

/// `{"app_key", "shop_cipher", "shop_id"?, "region"?}` -> the token grant plus an authorization
/// `code`. `region` (US, GB, MX, ... see `tiktok_prices::REGIONS`) sets the shop's currency and
/// price limits; without it the shop keeps its region (US at first).
async fn admin_shop(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(k), Some(shop)) = (s(&b, "app_key"), s(&b, "shop_cipher")) else {
        return bad("app_key and shop_cipher are required");
    };
    let region = match crate::tiktok_prices::region_field(&b) {
        Ok(r) => r,
        Err(e) => return bad(&e),
    };
    let mut m = state.tiktok.lock();
    if !m.apps.contains_key(k) {
        return bad("unknown app_key");
    }
    if let Some(r) = region {
        m.prices.set_region(shop, r);
    }
    let mut g = m.grant(k, shop);
    g["code"] = Value::String(m.new_code(k, shop));
    let shop_id = s(&b, "shop_id")
        .map(str::to_string)
        .unwrap_or_else(|| format!("749{:016}", rand::random::<u64>() % 10_000_000_000_000_000));
    m.shop_apps.insert(shop.to_string(), k.to_string());
    m.shop_ids.insert(shop.to_string(), shop_id.clone());
    g["shop_id"] = Value::String(shop_id);
    Json(g).into_response()
}

/// `{"shop_cipher", "product_id", "title"?, "status"?, "skus": [{"id", "warehouse_id", "quantity"?,
/// "seller_sku"?, "price"?, "currency"?}]}`: creates (or replaces) a product. A SKU listed again
/// with another warehouse gets that warehouse too. Defaults: see [`Product`]; a `currency` other
/// than the shop region's is refused.
async fn admin_product(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(shop), Some(pid)) = (s(&b, "shop_cipher"), s(&b, "product_id")) else {
        return bad("shop_cipher and product_id are required");
    };
    let currency = state.tiktok.lock().prices.region_of(shop).currency;
    let mut p = Product {
        shop_cipher: shop.to_string(),
        title: s(&b, "title").map_or_else(|| format!("Product {pid}"), str::to_string),
        ..Default::default()
    };
    if let Some(status) = s(&b, "status") {
        if !crate::tiktok_catalog::STATUSES.contains(&status) {
            return bad("status must be a TikTok product status (ACTIVATE, SELLER_DEACTIVATED, ...)");
        }
        p.status = status.to_string();
    }
    for sku in b.get("skus").and_then(Value::as_array).into_iter().flatten() {
        let (Some(id), Some(wh)) = (s(sku, "id"), s(sku, "warehouse_id")) else {
            return bad("each sku needs id and warehouse_id");
        };
        let q = sku.get("quantity").and_then(Value::as_i64).unwrap_or(0);
        if p.sku(id).is_none() {
            let mut price = Price {
                currency: currency.to_string(),
                ..Price::default()
            };
            if let Some(amount) = s(sku, "price") {
                if !crate::tiktok_catalog::is_decimal(amount) {
                    return bad("price must be decimal text such as \"19.99\"");
                }
                price.sale_price = amount.to_string();
                price.tax_exclusive_price = amount.to_string();
            }
            if s(sku, "currency").is_some_and(|c| c != currency) {
                return bad(&format!("currency must be the shop region's, {currency}"));
            }
            p.skus.push(Sku {
                id: id.to_string(),
                seller_sku: s(sku, "seller_sku").unwrap_or(id).to_string(),
                price,
                inventory: Vec::new(),
            });
        }
        if let Some(entry) = p.sku_mut(id) {
            match entry.quantity_mut(wh) {
                Some(slot) => *slot = q,
                None => entry.inventory.push((wh.to_string(), q)),
            }
        }
    }
    state.tiktok.lock().products.insert(pid.to_string(), p);
    Json(json!({"ok": true})).into_response()
}

/// A SKU's stock (`quantity` over all warehouses, `warehouses` {id: quantity}), the writes its
/// product received, its catalog fields and its `price_writes`.
async fn admin_sku(AxState(state): AxState<Arc<State>>, Path(id): Path<String>) -> Response {
    let m = state.tiktok.lock();
    let found = m
        .products
        .iter()
        .find_map(|(pid, p)| p.sku(&id).map(|sku| (pid, sku, p.writes)));
    match found {
        Some((pid, sku, writes)) => {
            let warehouses: serde_json::Map<String, Value> =
                sku.inventory.iter().map(|(w, q)| (w.clone(), json!(q))).collect();
            Json(
                json!({"product_id": pid, "quantity": sku.total(), "warehouses": warehouses,
                        "product_writes": writes, "seller_sku": sku.seller_sku,
                        "price": crate::tiktok_catalog::price_json(&sku.price),
                        "price_writes": m.prices.writes_of(&id)}),
            )
            .into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "no such sku"}))).into_response(),
    }
}

async fn admin_expire(AxState(state): AxState<Arc<State>>) -> Response {
    let n = state.tiktok.lock().expire_access_tokens();
    Json(json!({"expired": n})).into_response()
}

/// `{"token_lifetime_s"?, "rate_limit_per_minute"?: n|null, "rate_window_s"?, "allow_http_webhooks"?}`
async fn admin_config(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let mut m = state.tiktok.lock();
    if let Some(v) = b.get("allow_http_webhooks").and_then(Value::as_bool) {
        // loopback tests set http:// addresses; TikTok takes https only
        m.webhooks.allow_http = v;
    }
    if let Some(t) = b.get("token_lifetime_s").and_then(Value::as_i64) {
        m.token_lifetime_s = t;
    }
    m.rate.configure(&b);
    Json(json!({"ok": true})).into_response()
}

async fn admin_issued(AxState(state): AxState<Arc<State>>) -> Response {
    Json(json!(state.tiktok.lock().issued)).into_response()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn setup() -> (Arc<State>, String) {
        let state = Arc::new(State::default());
        let mut m = state.tiktok.lock();
        m.apps.insert("key1".into(), "secret1".into());
        let g = m.grant("key1", "CIPHER");
        let p = Product {
            shop_cipher: "CIPHER".into(),
            skus: vec![Sku {
                id: "SKU1".into(),
                inventory: vec![("WH1".into(), 0)],
                ..Default::default()
            }],
            ..Default::default()
        };
        m.products.insert("P1".into(), p);
        drop(m);
        (state, g["access_token"].as_str().unwrap_or_default().to_string())
    }

    fn signed_uri(path: &str, secret: &str, body: &[u8], shop: &str) -> Uri {
        signed_with(path, secret, shop, &[], body)
    }

    /// A request of app `key1` for `shop`, signed over `extra` query parameters and `body`.
    pub(crate) fn signed_with(path: &str, secret: &str, shop: &str, extra: &[(&str, &str)], body: &[u8]) -> Uri {
        let mut q: BTreeMap<String, String> = BTreeMap::new();
        q.insert("app_key".into(), "key1".into());
        q.insert("timestamp".into(), unix_now().to_string());
        q.insert("shop_cipher".into(), shop.into());
        for (k, v) in extra {
            q.insert((*k).into(), (*v).into());
        }
        let sign = signing::tiktok_request(secret, path, &q, body);
        let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{path}?{}&sign={sign}", qs.join("&")).parse().unwrap()
    }

    pub(crate) fn token(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-tts-access-token", HeaderValue::from_str(t).unwrap());
        h
    }

    pub(crate) async fn body_json(r: Response) -> Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn sign_token_and_quantity_are_checked() {
        let (state, access) = setup();
        let path = "/product/202309/products/P1/inventory/update";
        let body = br#"{"skus":[{"id":"SKU1","inventory":[{"warehouse_id":"WH1","quantity":12}]}]}"#;
        let call = |uri: Uri, tok: &str, b: &'static [u8]| {
            inventory_update(
                AxState(state.clone()),
                Path("P1".into()),
                uri,
                token(tok),
                Bytes::from_static(b),
            )
        };
        // signed with the wrong secret: 401 106001
        let r = call(signed_uri(path, "wrong", body, "CIPHER"), &access, body).await;
        assert_eq!(r.status(), 401);
        assert_eq!(body_json(r).await["code"], 106001);
        // the body is signed byte for byte: a different body than the one signed is refused
        let r = call(signed_uri(path, "secret1", body, "CIPHER"), &access, br#"{"skus":[]}"#).await;
        assert_eq!(body_json(r).await["code"], 106001);
        // a good call lands
        let r = body_json(call(signed_uri(path, "secret1", body, "CIPHER"), &access, body).await).await;
        assert_eq!(r["code"], 0);
        assert_eq!(
            state.tiktok.lock().products["P1"].skus[0].inventory,
            vec![("WH1".to_string(), 12)]
        );
        // out of range
        let big = br#"{"skus":[{"id":"SKU1","inventory":[{"warehouse_id":"WH1","quantity":99999}]}]}"#;
        let r = body_json(call(signed_uri(path, "secret1", big, "CIPHER"), &access, big).await).await;
        assert_eq!(r["code"], 12019011);
        // an expired token: 105002
        state.tiktok.lock().expire_access_tokens();
        let r = call(signed_uri(path, "secret1", body, "CIPHER"), &access, body).await;
        assert_eq!(body_json(r).await["code"], 105002);
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_and_die_after_use() {
        let (state, _) = setup();
        let rt = state.tiktok.lock().grant("key1", "CIPHER")["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let q = format!("app_key=key1&app_secret=secret1&refresh_token={rt}&grant_type=refresh_token");
        let r = body_json(token_refresh(AxState(state.clone()), RawQuery(Some(q.clone()))).await).await;
        assert_eq!(r["code"], 0);
        assert!(r["data"]["access_token_expire_in"].as_i64().unwrap_or(0) > unix_now());
        let again = body_json(token_refresh(AxState(state), RawQuery(Some(q))).await).await;
        assert_eq!(again["code"], 36004005);
    }

    #[tokio::test]
    async fn a_shop_s_region_is_set_by_the_admin_and_reported() {
        let state = Arc::new(State::default());
        state.tiktok.lock().apps.insert("key1".into(), "secret1".into());
        let shop = |b: Value| admin_shop(AxState(state.clone()), Json(b));
        let g = body_json(shop(json!({"app_key": "key1", "shop_cipher": "UK1", "region": "GB"})).await).await;
        assert_eq!(g["seller_base_region"], "GB");
        let g = body_json(shop(json!({"app_key": "key1", "shop_cipher": "US1"})).await).await;
        assert_eq!(g["seller_base_region"], "US");
        assert_eq!(
            shop(json!({"app_key": "key1", "shop_cipher": "X", "region": "XX"}))
                .await
                .status(),
            400
        );
        // authorized shops name it
        let access = g["access_token"].as_str().unwrap_or_default().to_string();
        let uri: Uri = {
            let mut q: BTreeMap<String, String> = BTreeMap::new();
            q.insert("app_key".into(), "key1".into());
            q.insert("timestamp".into(), unix_now().to_string());
            let sign = signing::tiktok_request("secret1", "/authorization/202309/shops", &q, b"");
            format!(
                "/authorization/202309/shops?app_key=key1&timestamp={}&sign={sign}",
                q["timestamp"]
            )
            .parse()
            .unwrap()
        };
        let r = body_json(authorized_shops(AxState(state.clone()), uri, token(&access), Bytes::new()).await).await;
        assert_eq!(r["data"]["shops"][0]["region"], "US");
        // products take the shop's currency; another is refused
        let product = |shop: &str, currency: Option<&str>| {
            let mut sku = json!({"id": format!("{shop}-S"), "warehouse_id": "WH-1"});
            if let Some(c) = currency {
                sku["currency"] = json!(c);
            }
            admin_product(
                AxState(state.clone()),
                Json(json!({"shop_cipher": shop, "product_id": format!("{shop}-P"), "skus": [sku]})),
            )
        };
        assert_eq!(product("UK1", None).await.status(), 200);
        assert_eq!(state.tiktok.lock().products["UK1-P"].skus[0].price.currency, "GBP");
        assert_eq!(product("US1", Some("GBP")).await.status(), 400);
        assert_eq!(product("US1", Some("USD")).await.status(), 200);
    }

    #[test]
    fn query_parsing_decodes() {
        let q = parse_query(Some("a=1&b=x%2Fy&c=&d"));
        assert_eq!(q["b"], "x/y");
        assert_eq!(q["c"], "");
        assert_eq!(q["d"], "");
    }
}
