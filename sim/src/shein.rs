//! SHEIN Open Platform: empower (`get-by-token` answering the AES-encrypted `secretKey`),
//! `x-lt-*` request signatures (a wrong one is the real HTTP 200 `openapi00001`), inventory
//! overwrite with per-item `idempotencyKey` and a per-SKU `failedList`, stock query, and a
//! per-supplier rate limit answered as HTTP 429 or business code `832213`. The catalog (SPU →
//! SKC → SKU, `product/query`, `spu-info`) is in `shein_catalog.rs`, prices (`price/save`,
//! `update-cost`) in `shein_prices.rs`.
//! Envelope: `{"code": "<string>", "msg", "info", "traceId"}`, `"0"` is success.

use crate::state::{random_token, State};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use marketplace_signing as signing;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Shein {
    /// appid -> appSecretKey
    pub apps: HashMap<String, String>,
    /// openKeyId -> supplier
    pub suppliers: HashMap<String, Supplier>,
    /// tempToken -> (openKeyId, state, issued)
    temp_tokens: HashMap<String, (String, String, Instant)>,
    /// skuCode -> stock
    pub skus: HashMap<String, Sku>,
    /// idempotency keys already applied, with the answer given
    applied_keys: HashSet<String>,
    pub rate: crate::state::RateLimit,
    /// Answer over-limit calls with business code 832213 (HTTP 200) instead of HTTP 429.
    pub throttle_with_code: bool,
    /// Everything secret ever issued, so tests can prove none leaks.
    pub issued: Vec<String>,
    pub orders: HashMap<String, crate::shein_orders::Order>,
    /// SPU → SKC → SKU listings (`product/query`, `spu-info`).
    pub catalog: crate::shein_catalog::Catalog,
    /// `price/save` refuses prices below it (`POST /_admin/shein/prices/config`); none by default.
    pub min_price: Option<rust_decimal::Decimal>,
}

pub struct Supplier {
    pub appid: String,
    pub secret_key: String,
    pub supplier_id: u64,
    /// Its shop's mode, site and currency (prices).
    pub shop: crate::shein_prices::ShopSettings,
}

#[derive(Clone, Debug, Default)]
pub struct Sku {
    pub open_key_id: String,
    pub warehouse_code: String,
    pub quantity: i64,
    pub locked: i64,
    pub writes: u64,
    /// Its place in the catalog (empty for SKUs made outside it, as in unit tests).
    pub spu_name: String,
    pub skc_name: String,
    /// The seller's SKU (`supplierSku`); may be empty.
    pub supplier_sku: String,
    pub prices: Vec<crate::shein_catalog::PriceInfo>,
    /// `price/save` entries applied.
    pub price_writes: u64,
    /// The supply cost of a managed shop (`update-cost`), and how many were applied.
    pub cost: Option<crate::shein_prices::Cost>,
    pub cost_writes: u64,
}

pub(crate) fn envelope(code: &str, msg: &str, info: Value) -> Response {
    Json(json!({"code": code, "msg": msg, "info": info, "traceId": random_token("")})).into_response()
}

impl Shein {
    /// A new supplier of `appid`: its openKeyId, plain secretKey and a tempToken for empower.
    pub fn add_supplier(&mut self, appid: &str, supplier_id: u64, state: &str) -> Value {
        let open_key_id = random_token("").to_uppercase();
        let secret_key = random_token("").to_uppercase();
        let temp = random_token("tmp-");
        self.issued.push(secret_key.clone());
        self.issued.push(temp.clone());
        self.suppliers.insert(
            open_key_id.clone(),
            Supplier {
                appid: appid.to_string(),
                secret_key: secret_key.clone(),
                supplier_id,
                shop: Default::default(),
            },
        );
        self.temp_tokens
            .insert(temp.clone(), (open_key_id.clone(), state.to_string(), Instant::now()));
        json!({"open_key_id": open_key_id, "secret_key": secret_key, "temp_token": temp})
    }
}

pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/open-api/auth/get-by-token", post(get_by_token))
        .route("/open-api/stock/change-inventory/v2", post(change_inventory))
        .route("/open-api/stock/stock-query", post(stock_query))
        .merge(crate::shein_catalog::router())
        .merge(crate::shein_prices::router())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Checks `x-lt-*` against the supplier's keys over this request's path, then the supplier's
/// rate limit; the openKeyId.
pub(crate) fn verify(state: &State, headers: &HeaderMap, path: &str) -> Result<String, Response> {
    let bad = || {
        state.count("shein bad signature");
        envelope("openapi00001", "签名错误:生成的签名不正确", Value::Null)
    };
    let (Some(key_id), Some(ts), Some(sig)) = (
        header(headers, "x-lt-openKeyId"),
        header(headers, "x-lt-timestamp"),
        header(headers, "x-lt-signature"),
    ) else {
        return Err(bad());
    };
    let mut m = state.shein.lock();
    let Some(supplier) = m.suppliers.get(key_id) else {
        return Err(bad());
    };
    if sig.len() <= signing::SHEIN_RANDOM_KEY_LEN || !sig.is_char_boundary(signing::SHEIN_RANDOM_KEY_LEN) {
        return Err(bad());
    }
    let random_key = &sig[..signing::SHEIN_RANDOM_KEY_LEN];
    let want = signing::shein(key_id, &supplier.secret_key, path, ts, random_key);
    if !signing::constant_time_eq(want.as_bytes(), sig.as_bytes()) {
        drop(m);
        return Err(bad());
    }
    if m.rate.over(key_id) {
        return Err(throttled(state, &m));
    }
    Ok(key_id.to_string())
}

fn throttled(state: &State, m: &Shein) -> Response {
    state.count("shein 429");
    if m.throttle_with_code {
        envelope("832213", "请求过于频繁,请稍后再试", Value::Null)
    } else {
        (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"code": "429", "msg": "Too Many Requests", "info": null})),
        )
            .into_response()
    }
}

async fn get_by_token(AxState(state): AxState<Arc<State>>, Json(body): Json<Value>) -> Response {
    let Some(temp) = body.get("tempToken").and_then(Value::as_str) else {
        return envelope("400", "tempToken is required", Value::Null);
    };
    let mut m = state.shein.lock();
    let Some((key_id, st, issued)) = m.temp_tokens.remove(temp) else {
        return envelope("20003", "tempToken无效或已过期", Value::Null);
    };
    if issued.elapsed() > Duration::from_secs(600) {
        return envelope("20003", "tempToken无效或已过期", Value::Null);
    }
    let Some(s) = m.suppliers.get(&key_id) else {
        return envelope("20003", "tempToken无效或已过期", Value::Null);
    };
    let Some(app_secret) = m.apps.get(&s.appid) else {
        return envelope("20004", "应用不存在", Value::Null);
    };
    let encrypted = match signing::shein_encrypt(app_secret, &s.secret_key) {
        Ok(e) => e,
        Err(e) => return envelope("500", &e, Value::Null),
    };
    envelope(
        "0",
        "OK",
        json!({"secretKey": encrypted, "openKeyId": key_id, "appid": s.appid, "state": st, "supplierId": s.supplier_id}),
    )
}

pub(crate) async fn change_inventory(
    AxState(state): AxState<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let key_id = match verify(&state, &headers, uri.path()) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let mut m = state.shein.lock();
    let Some(items) = body.get("updateSkuInventoryQuantityRequests").and_then(Value::as_array) else {
        return envelope("400", "updateSkuInventoryQuantityRequests不能为空", Value::Null);
    };
    if items.is_empty() || items.len() > 100 {
        return envelope("400", "每次最多更新100个SKU", Value::Null);
    }
    state.count("shein change-inventory calls");
    let mut failed = Vec::new();
    for it in items {
        let sku = it.get("skuCode").and_then(Value::as_str).unwrap_or("");
        let key = it.get("idempotencyKey").and_then(Value::as_str).unwrap_or("");
        let qty = it.get("changeQuantity").and_then(Value::as_i64);
        let change = it.get("changeType").and_then(Value::as_str).unwrap_or("");
        let fail = |reason: &str| json!({"skuCode": sku, "reason": reason});
        if key.is_empty() {
            failed.push(fail("idempotencyKey不能为空"));
            continue;
        }
        if m.applied_keys.contains(key) {
            state.count("shein idempotent replays");
            continue;
        }
        let Some(qty) = qty.filter(|q| *q >= 0) else {
            failed.push(fail("库存数量不合法"));
            continue;
        };
        let Some(current) = m.skus.get_mut(sku).filter(|s| s.open_key_id == key_id) else {
            failed.push(fail("SKU不存在或不属于该供应商"));
            continue;
        };
        let new = match change {
            "OVERWRITE" => qty,
            "ADD" => current.quantity + qty,
            "SUB" if current.quantity >= qty => current.quantity - qty,
            "SUB" => {
                failed.push(fail("库存不足"));
                continue;
            }
            _ => {
                failed.push(fail("changeType不合法"));
                continue;
            }
        };
        current.quantity = new;
        current.writes += 1;
        m.applied_keys.insert(key.to_string());
        state.count("shein stock writes");
    }
    envelope("0", "OK", json!({"failedList": failed}))
}

pub(crate) async fn stock_query(
    AxState(state): AxState<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let key_id = match verify(&state, &headers, uri.path()) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let m = state.shein.lock();
    let Some(codes) = body.get("skuCodeList").and_then(Value::as_array) else {
        return envelope("400", "skuCodeList不能为空", Value::Null);
    };
    if codes.len() > 100 {
        return envelope("400", "每次最多查询100个SKU", Value::Null);
    }
    let list: Vec<Value> = codes
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|c| m.skus.get(c).filter(|s| s.open_key_id == key_id).map(|s| (c, s)))
        .map(|(c, s)| {
            json!({"skuCode": c, "totalUsableInventory": s.quantity, "totalLockedQuantity": s.locked,
                   "warehouseInventoryList": [{"warehouseCode": s.warehouse_code, "usableInventory": s.quantity}]})
        })
        .collect();
    envelope("0", "OK", json!([{"goodsInventory": [{"skuList": list}]}]))
}

// ---- admin (/_admin/shein/...) ----------------------------------------------------------------

pub fn admin_router() -> Router<Arc<State>> {
    use axum::routing::get;
    Router::new()
        .route("/apps", post(admin_app))
        .route("/suppliers", post(admin_supplier))
        .route("/skus", post(admin_sku))
        .route("/skus/{code}", get(admin_get_sku))
        .route("/config", post(admin_config))
        .route("/issued_tokens", get(admin_issued))
        .merge(crate::shein_orders::admin_router())
        .merge(crate::shein_catalog::admin_router())
        .merge(crate::shein_prices::admin_router())
}

fn bad(msg: &str) -> Response {
    (axum::http::StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

fn str_field<'a>(b: &'a Value, k: &str) -> Option<&'a str> {
    b.get(k).and_then(Value::as_str)
}

/// `{"appid", "app_secret_key"}`
async fn admin_app(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(appid), Some(secret)) = (str_field(&b, "appid"), str_field(&b, "app_secret_key")) else {
        return bad("appid and app_secret_key are required");
    };
    if secret.len() < 16 {
        return bad("app_secret_key must be at least 16 characters");
    }
    let mut m = state.shein.lock();
    m.issued.push(secret.to_string());
    m.apps.insert(appid.to_string(), secret.to_string());
    Json(json!({"ok": true})).into_response()
}

/// `{"appid", "supplier_id", "state"?, "mode"?, "site"?, "currency"?}` -> `{"open_key_id",
/// "secret_key", "temp_token", "mode", "site", "currency"}` (shop defaults: `self_operated`,
/// `shein-mx`, `MXN`).
async fn admin_supplier(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(appid), Some(supplier)) = (str_field(&b, "appid"), b.get("supplier_id").and_then(Value::as_u64)) else {
        return bad("appid and supplier_id are required");
    };
    let shop = match crate::shein_prices::ShopSettings::default().with_admin_fields(&b) {
        Ok(s) => s,
        Err(e) => return bad(&e),
    };
    let mut m = state.shein.lock();
    if !m.apps.contains_key(appid) {
        return bad("unknown appid");
    }
    let mut out = m.add_supplier(appid, supplier, str_field(&b, "state").unwrap_or(""));
    if let Some(s) = out["open_key_id"].as_str().and_then(|k| m.suppliers.get_mut(k)) {
        s.shop = shop.clone();
    }
    if let (Some(o), Value::Object(settings)) = (out.as_object_mut(), shop.to_json()) {
        o.extend(settings);
    }
    Json(out).into_response()
}

/// `{"open_key_id", "sku_code", "warehouse_code"?, "quantity"?}` plus the catalog fields
/// `spu_name`, `skc_name`, `supplier_sku`, `title`, `price`, `special_price`, `currency`, `site`
/// (defaults in [`crate::shein_catalog::admin_sku_listing`]; site and currency the supplier's).
async fn admin_sku(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(key_id), Some(code)) = (str_field(&b, "open_key_id"), str_field(&b, "sku_code")) else {
        return bad("open_key_id and sku_code are required");
    };
    let shop = state
        .shein
        .lock()
        .suppliers
        .get(key_id)
        .map(|s| s.shop.clone())
        .unwrap_or_default();
    let (supplier_sku, prices, place) = match crate::shein_catalog::admin_sku_listing(&b, code, &shop) {
        Ok(l) => l,
        Err(e) => return bad(&e),
    };
    let sku = Sku {
        open_key_id: key_id.to_string(),
        warehouse_code: str_field(&b, "warehouse_code").unwrap_or("WH-1").to_string(),
        quantity: b.get("quantity").and_then(Value::as_i64).unwrap_or(0),
        supplier_sku,
        prices,
        ..Default::default()
    };
    let mut m = state.shein.lock();
    match crate::shein_catalog::put_sku(&mut m, code, sku, place) {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => bad(&e),
    }
}

async fn admin_get_sku(
    AxState(state): AxState<Arc<State>>,
    axum::extract::Path(code): axum::extract::Path<String>,
) -> Response {
    match state.shein.lock().skus.get(&code) {
        Some(s) => Json(json!({"sku_code": code, "quantity": s.quantity, "writes": s.writes,
                               "warehouse_code": s.warehouse_code, "spu_name": s.spu_name,
                               "skc_name": s.skc_name, "supplier_sku": s.supplier_sku}))
        .into_response(),
        None => (axum::http::StatusCode::NOT_FOUND, Json(json!({"error": "no such sku"}))).into_response(),
    }
}

/// `{"rate_limit_per_minute"?: n|null, "rate_window_s"?, "throttle_with_code"?}`
async fn admin_config(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let mut m = state.shein.lock();
    m.rate.configure(&b);
    if let Some(t) = b.get("throttle_with_code").and_then(Value::as_bool) {
        m.throttle_with_code = t;
    }
    Json(json!({"ok": true})).into_response()
}

async fn admin_issued(AxState(state): AxState<Arc<State>>) -> Response {
    Json(json!(state.shein.lock().issued)).into_response()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const APP_SECRET: &str = "698E4F20DFBA4B85B2291C2BCB7381C5";

    fn setup() -> (Arc<State>, String, String, String) {
        let state = Arc::new(State::default());
        let mut m = state.shein.lock();
        m.apps.insert("app1".into(), APP_SECRET.into());
        let s = m.add_supplier("app1", 77, "st");
        let key_id = s["open_key_id"].as_str().unwrap_or_default().to_string();
        m.skus.insert(
            "SKU-1".into(),
            Sku {
                open_key_id: key_id.clone(),
                warehouse_code: "WH-1".into(),
                ..Default::default()
            },
        );
        drop(m);
        let secret = s["secret_key"].as_str().unwrap_or_default().to_string();
        let temp = s["temp_token"].as_str().unwrap_or_default().to_string();
        (state, key_id, secret, temp)
    }

    /// SHEIN's signature headers for `path` (a fixed timestamp and random key).
    pub(crate) fn signed(key_id: &str, secret: &str, path: &str) -> HeaderMap {
        let ts = "1740709414000";
        let mut h = HeaderMap::new();
        h.insert("x-lt-openKeyId", HeaderValue::from_str(key_id).unwrap());
        h.insert("x-lt-timestamp", HeaderValue::from_static(ts));
        let sig = signing::shein(key_id, secret, path, ts, "abcde");
        h.insert("x-lt-signature", HeaderValue::from_str(&sig).unwrap());
        h
    }

    async fn body_json(r: Response) -> Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    fn change(items: Value) -> Json<Value> {
        Json(json!({ "updateSkuInventoryQuantityRequests": items }))
    }

    #[tokio::test]
    async fn empower_returns_the_encrypted_secret_once() {
        let (state, key_id, secret, temp) = setup();
        let r = body_json(get_by_token(AxState(state.clone()), Json(json!({"tempToken": temp}))).await).await;
        assert_eq!(r["code"], "0");
        assert_eq!(r["info"]["openKeyId"], key_id.as_str());
        let enc = r["info"]["secretKey"].as_str().unwrap();
        assert_eq!(signing::shein_decrypt(APP_SECRET, enc).unwrap(), secret);
        let again = body_json(get_by_token(AxState(state), Json(json!({"tempToken": temp}))).await).await;
        assert_eq!(again["code"], "20003");
    }

    #[tokio::test]
    async fn signatures_idempotency_and_failed_list() {
        let (state, key_id, secret, _) = setup();
        let path = "/open-api/stock/change-inventory/v2";
        let uri: Uri = path.parse().unwrap();
        // a wrong signature is the real HTTP 200 openapi00001
        let wrong = signed(&key_id, "not-the-secret", path);
        let r = change_inventory(AxState(state.clone()), uri.clone(), wrong, change(json!([]))).await;
        assert_eq!(r.status(), 200);
        assert_eq!(body_json(r).await["code"], "openapi00001");
        // signed over another path: refused too
        let other = signed(&key_id, &secret, "/open-api/stock/stock-query");
        let r = change_inventory(AxState(state.clone()), uri.clone(), other, change(json!([]))).await;
        assert_eq!(body_json(r).await["code"], "openapi00001");

        let items = json!([
            {"idempotencyKey": "k1", "skuCode": "SKU-1", "invType": "VI", "changeType": "OVERWRITE", "changeQuantity": 7, "warehouseCode": "WH-1"},
            {"idempotencyKey": "k2", "skuCode": "NOPE", "invType": "VI", "changeType": "OVERWRITE", "changeQuantity": 1, "warehouseCode": "WH-1"}
        ]);
        let h = signed(&key_id, &secret, path);
        let r =
            body_json(change_inventory(AxState(state.clone()), uri.clone(), h.clone(), change(items.clone())).await)
                .await;
        assert_eq!(r["code"], "0");
        assert_eq!(r["info"]["failedList"][0]["skuCode"], "NOPE");
        assert_eq!(state.shein.lock().skus["SKU-1"].quantity, 7);
        // the same key again is not applied twice, even with another quantity
        let replay = json!([{"idempotencyKey": "k1", "skuCode": "SKU-1", "invType": "VI", "changeType": "OVERWRITE", "changeQuantity": 9}]);
        body_json(change_inventory(AxState(state.clone()), uri.clone(), h.clone(), change(replay)).await).await;
        assert_eq!(state.shein.lock().skus["SKU-1"].writes, 1);
        // more than 100 SKUs in one call is refused
        let many: Vec<Value> = (0..101).map(|i| json!({"idempotencyKey": format!("m{i}"), "skuCode": "SKU-1", "changeType": "OVERWRITE", "changeQuantity": 1})).collect();
        let r = body_json(change_inventory(AxState(state.clone()), uri, h, change(Value::Array(many))).await).await;
        assert_eq!(r["code"], "400");
        // stock query reads it back
        let qpath = "/open-api/stock/stock-query";
        let q = body_json(
            stock_query(
                AxState(state),
                qpath.parse().unwrap(),
                signed(&key_id, &secret, qpath),
                Json(json!({"skuCodeList": ["SKU-1"], "invType": "VI"})),
            )
            .await,
        )
        .await;
        assert_eq!(
            q["info"][0]["goodsInventory"][0]["skuList"][0]["totalUsableInventory"],
            7
        );
    }

    #[tokio::test]
    async fn admin_suppliers_get_a_shop_mode_site_and_currency() {
        let (state, _, _, _) = setup();
        let add = |b: Value| admin_supplier(AxState(state.clone()), Json(b));
        let r = body_json(add(json!({"appid": "app1", "supplier_id": 8})).await).await;
        assert_eq!(
            (r["mode"].as_str(), r["site"].as_str(), r["currency"].as_str()),
            (Some("self_operated"), Some("shein-mx"), Some("MXN"))
        );
        let r = body_json(add(json!({"appid": "app1", "supplier_id": 9, "mode": "semi_managed", "site": "shein-us", "currency": "USD"})).await).await;
        let key = r["open_key_id"].as_str().unwrap();
        let shop = state.shein.lock().suppliers[key].shop.clone();
        assert_eq!(
            (shop.mode.as_str(), shop.site.as_str(), shop.currency.as_str()),
            ("semi_managed", "shein-us", "USD")
        );
        let before = state.shein.lock().suppliers.len();
        assert_eq!(
            add(json!({"appid": "app1", "supplier_id": 10, "mode": "managed"}))
                .await
                .status(),
            400
        );
        assert_eq!(state.shein.lock().suppliers.len(), before);
    }

    #[tokio::test]
    async fn over_the_limit_is_429_or_832213() {
        let (state, key_id, secret, _) = setup();
        state.shein.lock().rate.limit = Some(1);
        let path = "/open-api/stock/stock-query";
        let call = || {
            stock_query(
                AxState(state.clone()),
                path.parse().unwrap(),
                signed(&key_id, &secret, path),
                Json(json!({"skuCodeList": []})),
            )
        };
        assert_eq!(call().await.status(), 200);
        assert_eq!(call().await.status(), 429);
        state.shein.lock().throttle_with_code = true;
        let r = call().await;
        assert_eq!(r.status(), 200);
        assert_eq!(body_json(r).await["code"], "832213");
    }
}
