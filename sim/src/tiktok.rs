//! TikTok Shop (API 202309): token get/refresh (GET, absolute expiry times, single-use rotating
//! refresh tokens), every shop call verified as TikTok does (`sign` over the sorted query without
//! `sign`/`access_token`, the path and the raw body, wrapped in the app secret; a bad one is the
//! real 401 `106001`), `x-tts-access-token`, `shop_cipher`, inventory update per SKU and
//! warehouse, inventory search. Envelope: `{"code", "message", "data", "request_id"}`.

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
    /// product id -> product
    pub products: HashMap<String, Product>,
    pub token_lifetime_s: i64,
    pub rate: crate::state::RateLimit,
    pub issued: Vec<String>,
    /// shop_cipher -> app_key, and -> shop_id (what webhooks name the shop by)
    pub shop_apps: HashMap<String, String>,
    pub shop_ids: HashMap<String, String>,
    pub orders: HashMap<String, crate::tiktok_orders::Order>,
}

#[derive(Clone, Debug, Default)]
pub struct Product {
    pub shop_cipher: String,
    /// sku id -> (warehouse id -> quantity)
    pub skus: BTreeMap<String, BTreeMap<String, i64>>,
    pub writes: u64,
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
        self.access.insert(access.clone(), (shop_cipher.to_string(), expires));
        self.refresh
            .insert(refresh.clone(), (app_key.to_string(), shop_cipher.to_string()));
        self.issued.push(access.clone());
        self.issued.push(refresh.clone());
        json!({"access_token": access, "access_token_expire_in": expires, "refresh_token": refresh,
               "refresh_token_expire_in": unix_now() + 365 * 24 * 3600, "open_id": random_token("open-"),
               "seller_name": "Sandbox shop", "seller_base_region": "MX", "user_type": 0})
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
}

/// The shops the token was granted for (the app learns `shop_cipher` here).
async fn authorized_shops(AxState(state): AxState<Arc<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let shop = match verify_call(&state, &uri, &headers, &body, false) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let id = state.tiktok.lock().shop_ids.get(&shop).cloned().unwrap_or_default();
    ok(json!({"shops": [{"id": id, "cipher": shop, "name": "Sandbox shop", "region": "MX", "seller_type": "LOCAL"}]}))
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

async fn inventory_update(
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
        let Some(current) = product.skus.get(id) else {
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
            if !current.contains_key(wh) {
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
        if let Some(w) = product.skus.get_mut(&id) {
            w.insert(wh, q);
        }
        state.count("tiktok stock writes");
    }
    product.writes += 1;
    ok(Value::Null)
}

async fn inventory_search(AxState(state): AxState<Arc<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
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
                .filter(|(id, _)| wanted.contains(id))
                .map(move |(id, whs)| {
                    json!({"product_id": pid, "skus": [{"id": id, "total_available_quantity": whs.values().sum::<i64>(),
                        "warehouse_inventory": whs.iter().map(|(w, q)| json!({"warehouse_id": w, "available_quantity": q})).collect::<Vec<_>>()}]})
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

/// `{"app_key", "shop_cipher"}` -> the token grant plus an authorization `code`
async fn admin_shop(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(k), Some(shop)) = (s(&b, "app_key"), s(&b, "shop_cipher")) else {
        return bad("app_key and shop_cipher are required");
    };
    let mut m = state.tiktok.lock();
    if !m.apps.contains_key(k) {
        return bad("unknown app_key");
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

/// `{"shop_cipher", "product_id", "skus": [{"id", "warehouse_id", "quantity"?}]}`
async fn admin_product(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(shop), Some(pid)) = (s(&b, "shop_cipher"), s(&b, "product_id")) else {
        return bad("shop_cipher and product_id are required");
    };
    let mut p = Product {
        shop_cipher: shop.to_string(),
        ..Default::default()
    };
    for sku in b.get("skus").and_then(Value::as_array).into_iter().flatten() {
        let (Some(id), Some(wh)) = (s(sku, "id"), s(sku, "warehouse_id")) else {
            return bad("each sku needs id and warehouse_id");
        };
        let q = sku.get("quantity").and_then(Value::as_i64).unwrap_or(0);
        p.skus.entry(id.to_string()).or_default().insert(wh.to_string(), q);
    }
    state.tiktok.lock().products.insert(pid.to_string(), p);
    Json(json!({"ok": true})).into_response()
}

async fn admin_sku(AxState(state): AxState<Arc<State>>, Path(id): Path<String>) -> Response {
    let m = state.tiktok.lock();
    let found = m
        .products
        .iter()
        .find_map(|(pid, p)| p.skus.get(&id).map(|w| (pid.clone(), w.clone(), p.writes)));
    match found {
        Some((pid, whs, writes)) => Json(json!({"product_id": pid, "quantity": whs.values().sum::<i64>(),
                                                "warehouses": whs, "product_writes": writes}))
        .into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "no such sku"}))).into_response(),
    }
}

async fn admin_expire(AxState(state): AxState<Arc<State>>) -> Response {
    let n = state.tiktok.lock().expire_access_tokens();
    Json(json!({"expired": n})).into_response()
}

/// `{"token_lifetime_s"?, "rate_limit_per_minute"?: n|null, "rate_window_s"?}`
async fn admin_config(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let mut m = state.tiktok.lock();
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
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn setup() -> (Arc<State>, String) {
        let state = Arc::new(State::default());
        let mut m = state.tiktok.lock();
        m.apps.insert("key1".into(), "secret1".into());
        let g = m.grant("key1", "CIPHER");
        let mut p = Product {
            shop_cipher: "CIPHER".into(),
            ..Default::default()
        };
        p.skus.entry("SKU1".into()).or_default().insert("WH1".into(), 0);
        m.products.insert("P1".into(), p);
        drop(m);
        (state, g["access_token"].as_str().unwrap_or_default().to_string())
    }

    fn signed_uri(path: &str, secret: &str, body: &[u8], shop: &str) -> Uri {
        let mut q: BTreeMap<String, String> = BTreeMap::new();
        q.insert("app_key".into(), "key1".into());
        q.insert("timestamp".into(), unix_now().to_string());
        q.insert("shop_cipher".into(), shop.into());
        let sign = signing::tiktok_request(secret, path, &q, body);
        let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{path}?{}&sign={sign}", qs.join("&")).parse().unwrap()
    }

    fn token(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-tts-access-token", HeaderValue::from_str(t).unwrap());
        h
    }

    async fn body_json(r: Response) -> Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
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
        assert_eq!(state.tiktok.lock().products["P1"].skus["SKU1"]["WH1"], 12);
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

    #[test]
    fn query_parsing_decodes() {
        let q = parse_query(Some("a=1&b=x%2Fy&c=&d"));
        assert_eq!(q["b"], "x/y");
        assert_eq!(q["c"], "");
        assert_eq!(q["d"], "");
    }
}
