//! TikTok Shop prices (API 202309): `POST /product/202309/products/{product_id}/prices/update`
//! `{"skus":[{"id","price":{"amount":"1.32","currency":"USD"}}]}` → `{"code":0,"message":"Success",
//! "data":{}}`, signed and authorized like every shop call (`tiktok::verify`). The price written
//! is the SKU's `price.sale_price` that products/search and the product detail serve.
//!
//! Each shop has a region (US unless the admin said otherwise when creating the shop or a
//! catalog); its currency is the only one a price may be written in, and its limits apply.
//!
//! Checked, all or nothing (one refusal writes nothing), in this order:
//! - the body is JSON, else `36009001`; the product is the shop's, else `12052048`;
//! - `skus` lists 1 to [`MAX_SKUS_PER_CALL`] SKUs, each once, else `36009001`;
//! - per SKU, in order: `id` a string and `price` an object whose `amount` and `currency` are
//!   strings, else `36009001` (a JSON number amount included); a SKU of this product, else
//!   `12019022` (unknown ids and SKUs of other products alike); the shop's currency, else
//!   `12052073`; `amount` decimal text with at most the currency's decimals and within the
//!   region's limits (inclusive), else `12052073`; not in a promotion, else the lock's code
//!   (`12019045` unless the admin chose `12052038`).
//!
//! Decisions where TikTok publishes nothing [?]:
//! - limits other than US 0.01–7,600 and the fraction digits per currency are this sandbox's
//!   ([`REGIONS`]); an amount's fraction digits are counted as written ("1.320" has three);
//! - at most 100 SKUs per call (a product's SKU limit), a SKU named twice is refused;
//! - the stored `sale_price` is the amount at the currency's scale ("7" → "7.00");
//! - `tax_exclusive_price` keeps the SKU's previous ratio to `sale_price` (US prices are
//!   tax-exclusive, so they stay equal; a VAT-inclusive 120.00/100.00 written 60.00 becomes
//!   60.00/50.00), rounded half away from zero to the currency's decimals; equal to the new
//!   price when the old one was 0 or unreadable;
//! - the product's status is not checked (as for inventory updates).

use crate::catalog_rule;
use crate::state::State;
use crate::tiktok::{envelope, ok, verify, Price, TikTok};
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The most SKUs one prices/update call may name [?].
pub const MAX_SKUS_PER_CALL: usize = 100;

/// SKU invalid: unknown, or a SKU of another product.
pub const SKU_INVALID: i64 = 12019022;
/// Price locked by a promotion (the default lock code).
pub const PRICE_LOCKED: i64 = 12019045;
/// The other documented "price locked (promotion)" code.
pub const PRICE_LOCKED_PROMOTION: i64 = 12052038;
/// Price invalid: currency, format, decimals or range.
pub const PRICE_INVALID: i64 = 12052073;

/// A shop region: its currency, how many fraction digits a price may have, its price limits.
#[derive(Debug)]
pub struct Region {
    pub code: &'static str,
    pub currency: &'static str,
    pub decimals: u32,
    pub min: &'static str,
    pub max: &'static str,
}

const fn region(
    code: &'static str,
    currency: &'static str,
    decimals: u32,
    min: &'static str,
    max: &'static str,
) -> Region {
    Region {
        code,
        currency,
        decimals,
        min,
        max,
    }
}

/// The regions a shop may have; the first (US, documented) is the default. The others' limits
/// are this sandbox's decision [?]; the admin may override any (`/_admin/tiktok/price_limits`).
pub const REGIONS: &[Region] = &[
    region("US", "USD", 2, "0.01", "7600"),
    region("GB", "GBP", 2, "0.01", "5600"),
    region("MX", "MXN", 2, "1", "150000"),
    region("DE", "EUR", 2, "0.01", "7000"),
    region("ES", "EUR", 2, "0.01", "7000"),
    region("FR", "EUR", 2, "0.01", "7000"),
    region("IE", "EUR", 2, "0.01", "7000"),
    region("IT", "EUR", 2, "0.01", "7000"),
    region("BR", "BRL", 2, "0.01", "40000"),
    region("JP", "JPY", 0, "1", "1000000"),
    region("ID", "IDR", 0, "100", "250000000"),
    region("MY", "MYR", 2, "0.01", "33000"),
    region("PH", "PHP", 2, "1", "400000"),
    region("SG", "SGD", 2, "0.01", "10000"),
    region("TH", "THB", 2, "1", "250000"),
    region("VN", "VND", 0, "1000", "180000000"),
];

pub fn find_region(code: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.code == code)
}

/// An admin body's `"region"`: absent or null is `None`; an unknown code is refused.
pub fn region_field(b: &Value) -> Result<Option<&'static Region>, String> {
    match b.get("region") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(code)) => find_region(code).map(Some).ok_or_else(|| {
            let known: Vec<&str> = REGIONS.iter().map(|r| r.code).collect();
            format!("region must be one of {}", known.join(", "))
        }),
        Some(_) => Err("region must be a string such as \"US\"".into()),
    }
}

/// The prices' side of the TikTok state: shop regions, limit overrides, promotion locks, writes.
#[derive(Default)]
pub struct Prices {
    /// shop_cipher -> region (US when absent)
    regions: HashMap<String, &'static Region>,
    /// region code -> (min, max) set by the admin, in place of the table's
    limits: HashMap<&'static str, (Decimal, Decimal)>,
    /// SKU id -> the code its promotion lock answers with
    locks: HashMap<String, i64>,
    /// SKU id -> price writes it received
    writes: HashMap<String, u64>,
    total_writes: u64,
}

/// Exact decimal text of the table (always valid).
fn table_decimal(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap_or_default()
}

impl Prices {
    pub fn region_of(&self, shop: &str) -> &'static Region {
        self.regions.get(shop).copied().unwrap_or(&REGIONS[0])
    }

    pub fn set_region(&mut self, shop: &str, region: &'static Region) {
        self.regions.insert(shop.to_string(), region);
    }

    /// The region's (min, max), the admin's override if any.
    pub fn limits(&self, r: &Region) -> (Decimal, Decimal) {
        self.limits
            .get(r.code)
            .copied()
            .unwrap_or_else(|| (table_decimal(r.min), table_decimal(r.max)))
    }

    pub fn writes_of(&self, sku: &str) -> u64 {
        self.writes.get(sku).copied().unwrap_or(0)
    }
}

/// `amount` checked against the region: the price to store, or why it is invalid.
fn check_amount(amount: &str, r: &Region, (min, max): (Decimal, Decimal)) -> Result<Decimal, String> {
    let Some((_, frac)) = split_amount(amount) else {
        return Err(format!(
            "price.amount \"{amount}\" must be decimal text such as \"1.32\""
        ));
    };
    if frac.len() > r.decimals as usize {
        return Err(format!(
            "price.amount \"{amount}\" has more than {} decimal places for {}",
            r.decimals, r.currency
        ));
    }
    let value = Decimal::from_str_exact(amount).map_err(|_| format!("price.amount \"{amount}\" is out of range"))?;
    if value < min || value > max {
        return Err(format!(
            "price.amount must be between {min} and {max} {} in region {}",
            r.currency, r.code
        ));
    }
    Ok(value)
}

/// Decimal text as TikTok's amounts are written, at most 24 characters, split at its point.
fn split_amount(text: &str) -> Option<(&str, &str)> {
    (text.len() <= 24).then(|| catalog_rule::Decimal::split(text)).flatten()
}

/// `value` as text at the currency's scale.
fn at_scale(value: Decimal, decimals: u32) -> String {
    let mut v = value.round_dp_with_strategy(decimals, RoundingStrategy::MidpointAwayFromZero);
    v.rescale(decimals);
    v.to_string()
}

/// The new price: `sale_price` the amount, `tax_exclusive_price` at the old ratio (see the
/// module doc).
fn new_price(old: &Price, sale: Decimal, r: &Region) -> Price {
    let read = |s: &str| Decimal::from_str_exact(s).ok();
    let tax_exclusive = match (read(&old.sale_price), read(&old.tax_exclusive_price)) {
        (Some(old_sale), Some(old_te)) if !old_sale.is_zero() => sale
            .checked_mul(old_te)
            .and_then(|x| x.checked_div(old_sale))
            .unwrap_or(sale),
        _ => sale,
    };
    Price {
        currency: r.currency.to_string(),
        sale_price: at_scale(sale, r.decimals),
        tax_exclusive_price: at_scale(tax_exclusive, r.decimals),
    }
}

pub fn router() -> Router<Arc<State>> {
    Router::new().route("/product/202309/products/{id}/prices/update", post(prices_update))
}

fn invalid(message: &str) -> Response {
    envelope(StatusCode::OK, 36009001, message, Value::Null)
}

/// Every SKU's new price, or the refusal (see the module doc for the order of the checks).
fn validate(m: &TikTok, shop: &str, product_id: &str, body: &Value) -> Result<Vec<(String, Price)>, Response> {
    let Some(product) = m.products.get(product_id) else {
        return Err(envelope(
            StatusCode::OK,
            12052048,
            "Product does not exist.",
            Value::Null,
        ));
    };
    if product.shop_cipher != shop {
        return Err(envelope(
            StatusCode::OK,
            12052048,
            "You can't edit other sellers' products.",
            Value::Null,
        ));
    }
    let skus = match body.get("skus") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(invalid("skus is required.")),
    };
    if skus.len() > MAX_SKUS_PER_CALL {
        return Err(invalid(&format!(
            "skus may list at most {MAX_SKUS_PER_CALL} SKUs per call."
        )));
    }
    let region = m.prices.region_of(shop);
    let limits = m.prices.limits(region);
    let mut seen = HashSet::new();
    let mut changes = Vec::with_capacity(skus.len());
    for s in skus {
        let Some(id) = s.get("id").and_then(Value::as_str) else {
            return Err(invalid("skus[].id is required and must be a string."));
        };
        if !seen.insert(id) {
            return Err(invalid(&format!("SKU {id} is listed more than once.")));
        }
        let price = s.get("price").filter(|p| p.is_object());
        let (Some(amount), Some(currency)) = (
            price.and_then(|p| p.get("amount")).and_then(Value::as_str),
            price.and_then(|p| p.get("currency")).and_then(Value::as_str),
        ) else {
            return Err(invalid(
                "skus[].price.amount and skus[].price.currency are required and must be strings.",
            ));
        };
        let Some(current) = product.sku(id) else {
            return Err(envelope(
                StatusCode::OK,
                SKU_INVALID,
                &format!("sku ID is invalid: {id} is not a SKU of product {product_id}."),
                Value::Null,
            ));
        };
        let refuse = |why: &str| {
            envelope(
                StatusCode::OK,
                PRICE_INVALID,
                &format!("The product price is invalid: {why}"),
                Value::Null,
            )
        };
        if currency != region.currency {
            return Err(refuse(&format!(
                "currency must be {} (region {}), not {currency}.",
                region.currency, region.code
            )));
        }
        let sale = check_amount(amount, region, limits).map_err(|why| refuse(&why))?;
        if let Some(code) = m.prices.locks.get(id) {
            let message = if *code == PRICE_LOCKED {
                format!("price is locked: SKU {id} is in an ongoing promotion.")
            } else {
                "Product price locked due to ongoing promotion.".to_string()
            };
            return Err(envelope(StatusCode::OK, *code, &message, Value::Null));
        }
        changes.push((id.to_string(), new_price(&current.price, sale, region)));
    }
    Ok(changes)
}

/// `POST /product/202309/products/{product_id}/prices/update`
pub(crate) async fn prices_update(
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
    state.count("tiktok prices/update");
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return invalid("Invalid request body.");
    };
    let mut guard = state.tiktok.lock();
    let m = &mut *guard;
    let changes = match validate(m, &shop, &product_id, &v) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Some(product) = m.products.get_mut(&product_id) {
        for (id, price) in changes {
            if let Some(sku) = product.sku_mut(&id) {
                sku.price = price;
                *m.prices.writes.entry(id).or_insert(0) += 1;
                m.prices.total_writes += 1;
                state.count("tiktok price writes");
            }
        }
    }
    ok(json!({}))
}

// ---- admin (/_admin/tiktok/...) ---------------------------------------------------------------

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/prices/{sku_id}", get(admin_read))
        .route("/prices/{sku_id}/lock", post(admin_lock))
        .route("/prices/{sku_id}/unlock", post(admin_unlock))
        .route("/price_limits", get(admin_limits).post(admin_set_limits))
}

fn bad(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"error": msg}))).into_response()
}

fn no_such_sku() -> Response {
    bad(StatusCode::NOT_FOUND, "no such sku")
}

/// `GET /_admin/tiktok/prices/{sku_id}` → `{"product_id", "sku_id", "shop_cipher", "region",
/// "price": {"currency", "sale_price", "tax_exclusive_price"}, "price_writes" (this SKU's),
/// "total_price_writes" (all SKUs'), "locked", "lock_code" (null when not locked)}`.
async fn admin_read(AxState(state): AxState<Arc<State>>, Path(sku_id): Path<String>) -> Response {
    let m = state.tiktok.lock();
    let Some((pid, product, sku)) = m
        .products
        .iter()
        .find_map(|(pid, p)| p.sku(&sku_id).map(|s| (pid, p, s)))
    else {
        return no_such_sku();
    };
    let lock = m.prices.locks.get(&sku_id);
    Json(
        json!({"product_id": pid, "sku_id": sku_id, "shop_cipher": product.shop_cipher,
                "region": m.prices.region_of(&product.shop_cipher).code,
                "price": crate::tiktok_catalog::price_json(&sku.price),
                "price_writes": m.prices.writes_of(&sku_id), "total_price_writes": m.prices.total_writes,
                "locked": lock.is_some(), "lock_code": lock}),
    )
    .into_response()
}

fn sku_exists(m: &TikTok, sku_id: &str) -> bool {
    m.products.values().any(|p| p.sku(sku_id).is_some())
}

/// `POST /_admin/tiktok/prices/{sku_id}/lock` `{"code"?: 12019045 | 12052038}` (body optional):
/// the SKU is in a promotion; price writes naming it are refused with `code`.
async fn admin_lock(AxState(state): AxState<Arc<State>>, Path(sku_id): Path<String>, body: Bytes) -> Response {
    let b: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return bad(StatusCode::BAD_REQUEST, "the body must be JSON"),
        }
    };
    let code = match b.get("code") {
        None | Some(Value::Null) => PRICE_LOCKED,
        Some(c) if c.as_i64() == Some(PRICE_LOCKED) => PRICE_LOCKED,
        Some(c) if c.as_i64() == Some(PRICE_LOCKED_PROMOTION) => PRICE_LOCKED_PROMOTION,
        Some(_) => return bad(StatusCode::BAD_REQUEST, "code must be 12019045 or 12052038"),
    };
    let mut m = state.tiktok.lock();
    if !sku_exists(&m, &sku_id) {
        return no_such_sku();
    }
    m.prices.locks.insert(sku_id, code);
    Json(json!({"ok": true, "lock_code": code})).into_response()
}

/// `POST /_admin/tiktok/prices/{sku_id}/unlock`: the promotion is over.
async fn admin_unlock(AxState(state): AxState<Arc<State>>, Path(sku_id): Path<String>) -> Response {
    let mut m = state.tiktok.lock();
    if !sku_exists(&m, &sku_id) {
        return no_such_sku();
    }
    let was = m.prices.locks.remove(&sku_id).is_some();
    Json(json!({"ok": true, "was_locked": was})).into_response()
}

fn limits_json(p: &Prices, r: &Region) -> Value {
    let (min, max) = p.limits(r);
    json!({"region": r.code, "currency": r.currency, "decimals": r.decimals,
           "min": min.to_string(), "max": max.to_string()})
}

/// `GET /_admin/tiktok/price_limits` → every region's `{"region", "currency", "decimals", "min",
/// "max"}` as they apply now.
async fn admin_limits(AxState(state): AxState<Arc<State>>) -> Response {
    let m = state.tiktok.lock();
    Json(json!(REGIONS
        .iter()
        .map(|r| limits_json(&m.prices, r))
        .collect::<Vec<_>>()))
    .into_response()
}

/// `POST /_admin/tiktok/price_limits` `{"region", "min"?, "max"?}` (decimal text; a `null` or
/// absent bound is the table's) → the region's limits as they now apply. Sets the minimum (and
/// maximum) price a write must respect in that region.
async fn admin_set_limits(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let r = match region_field(&b) {
        Ok(Some(r)) => r,
        Ok(None) => return bad(StatusCode::BAD_REQUEST, "region is required"),
        Err(e) => return bad(StatusCode::BAD_REQUEST, &e),
    };
    let bound = |key: &str, default: &str| match b.get(key) {
        None | Some(Value::Null) => Ok(table_decimal(default)),
        Some(Value::String(s)) if split_amount(s).is_some() => {
            Decimal::from_str_exact(s).map_err(|_| format!("{key} is out of range"))
        }
        Some(_) => Err(format!("{key} must be decimal text such as \"0.01\"")),
    };
    let (min, max) = match (bound("min", r.min), bound("max", r.max)) {
        (Ok(min), Ok(max)) if min <= max => (min, max),
        (Ok(_), Ok(_)) => return bad(StatusCode::BAD_REQUEST, "min must not exceed max"),
        (Err(e), _) | (_, Err(e)) => return bad(StatusCode::BAD_REQUEST, &e),
    };
    let mut m = state.tiktok.lock();
    m.prices.limits.insert(r.code, (min, max));
    Json(limits_json(&m.prices, r)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiktok::tests::{body_json, signed_with, token};
    use crate::tiktok::{Product, Sku};

    const SECRET: &str = "secret1";

    /// App key1; shop CIPHER (US) with product P1 (SKUs A, B) and P2 (SKU C); shop OTHER with
    /// product P9 (SKU Z). Returns the state and both shops' access tokens.
    fn setup() -> (Arc<State>, String, String) {
        let state = Arc::new(State::default());
        let mut m = state.tiktok.lock();
        m.apps.insert("key1".into(), SECRET.into());
        let access = |m: &mut TikTok, shop: &str| {
            m.grant("key1", shop)["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let (a, b) = (access(&mut m, "CIPHER"), access(&mut m, "OTHER"));
        let product = |shop: &str, skus: &[&str]| Product {
            shop_cipher: shop.into(),
            skus: skus
                .iter()
                .map(|id| Sku {
                    id: (*id).into(),
                    seller_sku: format!("S-{id}"),
                    inventory: vec![("WH-1".into(), 5)],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        m.products.insert("P1".into(), product("CIPHER", &["A", "B"]));
        m.products.insert("P2".into(), product("CIPHER", &["C"]));
        m.products.insert("P9".into(), product("OTHER", &["Z"]));
        drop(m);
        (state, a, b)
    }

    async fn update_as(state: &Arc<State>, shop: &str, access: &str, product: &str, body: &str) -> Response {
        let path = format!("/product/202309/products/{product}/prices/update");
        let body = Bytes::from(body.to_string());
        prices_update(
            AxState(state.clone()),
            Path(product.into()),
            signed_with(&path, SECRET, shop, &[], &body),
            token(access),
            body,
        )
        .await
    }

    /// A signed update of CIPHER's `product`; the answer's JSON.
    async fn update(state: &Arc<State>, access: &str, product: &str, body: &str) -> Value {
        let r = update_as(state, "CIPHER", access, product, body).await;
        assert_eq!(r.status(), 200);
        body_json(r).await
    }

    fn one(id: &str, amount: &str, currency: &str) -> String {
        json!({"skus": [{"id": id, "price": {"amount": amount, "currency": currency}}]}).to_string()
    }

    fn sale_price(state: &State, product: &str, sku: &str) -> String {
        let m = state.tiktok.lock();
        m.products[product]
            .sku(sku)
            .map(|s| s.price.sale_price.clone())
            .unwrap_or_default()
    }

    async fn admin(state: &Arc<State>, sku: &str) -> Value {
        body_json(admin_read(AxState(state.clone()), Path(sku.into())).await).await
    }

    #[tokio::test]
    async fn a_write_is_stored_and_read_back_by_search_and_admin() {
        let (state, access, _) = setup();
        let body = r#"{"skus":[{"id":"A","price":{"amount":"1.32","currency":"USD"}},{"id":"B","price":{"amount":"7","currency":"USD"}}]}"#;
        let r = update(&state, &access, "P1", body).await;
        assert_eq!(r["code"], 0, "{r}");
        assert_eq!(r["message"], "Success");
        assert_eq!(r["data"], json!({}));
        assert!(r["request_id"].is_string());
        // products/search serves what was written ("7" at the currency's scale)
        let uri = signed_with(
            "/product/202309/products/search",
            SECRET,
            "CIPHER",
            &[("page_size", "10")],
            b"",
        );
        let found =
            body_json(crate::tiktok_catalog::search(AxState(state.clone()), uri, token(&access), Bytes::new()).await)
                .await;
        let skus = &found["data"]["products"][0]["skus"];
        assert_eq!(
            skus[0]["price"],
            json!({"currency": "USD", "sale_price": "1.32", "tax_exclusive_price": "1.32"})
        );
        assert_eq!(skus[1]["price"]["sale_price"], "7.00");
        // the admin read: price, writes, lock
        let a = admin(&state, "A").await;
        assert_eq!(a["product_id"], "P1");
        assert_eq!(a["region"], "US");
        assert_eq!(a["price"]["sale_price"], "1.32");
        assert_eq!(a["price_writes"], 1);
        assert_eq!(a["total_price_writes"], 2);
        assert_eq!(a["locked"], false);
        assert_eq!(admin(&state, "C").await["price_writes"], 0);
        let counters = state.counters.lock().clone();
        assert_eq!(counters["tiktok prices/update"], 1);
        assert_eq!(counters["tiktok price writes"], 2);
        // the limits are inclusive
        assert_eq!(update(&state, &access, "P1", &one("A", "0.01", "USD")).await["code"], 0);
        assert_eq!(
            update(&state, &access, "P1", &one("A", "7600.00", "USD")).await["code"],
            0
        );
        assert_eq!(sale_price(&state, "P1", "A"), "7600.00");
        assert_eq!(admin(&state, "A").await["price_writes"], 3);
    }

    #[tokio::test]
    async fn tax_exclusive_price_keeps_its_ratio() {
        let (state, access, _) = setup();
        if let Some(sku) = state.tiktok.lock().products.get_mut("P1").and_then(|p| p.sku_mut("A")) {
            sku.price.sale_price = "121.11".into();
            sku.price.tax_exclusive_price = "111.01".into();
        }
        assert_eq!(
            update(&state, &access, "P1", &one("A", "60.00", "USD")).await["code"],
            0
        );
        let m = state.tiktok.lock();
        let price = &m.products["P1"].skus[0].price;
        // 60 * 111.01 / 121.11 = 54.996...
        assert_eq!(
            (price.sale_price.as_str(), price.tax_exclusive_price.as_str()),
            ("60.00", "55.00")
        );
    }

    #[tokio::test]
    async fn each_refusal_has_its_code_and_writes_nothing() {
        let (state, access, _) = setup();
        let cases: Vec<(String, i64, &str)> = vec![
            // a SKU of another product of the shop, an unknown SKU
            (one("C", "5.00", "USD"), SKU_INVALID, "sku ID is invalid"),
            (one("nope", "5.00", "USD"), SKU_INVALID, "sku ID is invalid"),
            // the amount as a JSON number, missing, or without currency
            (
                r#"{"skus":[{"id":"A","price":{"amount":5.00,"currency":"USD"}}]}"#.into(),
                36009001,
                "must be strings",
            ),
            (
                r#"{"skus":[{"id":"A","price":{"currency":"USD"}}]}"#.into(),
                36009001,
                "required",
            ),
            (
                r#"{"skus":[{"id":"A","price":{"amount":"5.00"}}]}"#.into(),
                36009001,
                "required",
            ),
            (r#"{"skus":[{"id":"A","price":"5.00"}]}"#.into(), 36009001, "required"),
            (
                r#"{"skus":[{"price":{"amount":"5.00","currency":"USD"}}]}"#.into(),
                36009001,
                "id",
            ),
            // another currency than the shop's
            (one("A", "5.00", "MXN"), PRICE_INVALID, "currency must be USD"),
            // format, decimals, range
            (one("A", "5.001", "USD"), PRICE_INVALID, "decimal places"),
            (one("A", "5.000", "USD"), PRICE_INVALID, "decimal places"),
            (one("A", "0.00", "USD"), PRICE_INVALID, "between 0.01 and 7600"),
            (one("A", "7600.01", "USD"), PRICE_INVALID, "between"),
            (one("A", "99999999999999999999", "USD"), PRICE_INVALID, "between"),
            (
                one("A", "1234567890123456789012345", "USD"),
                PRICE_INVALID,
                "decimal text",
            ),
        ];
        let mut bad_formats: Vec<(String, i64, &str)> = ["", "-1.00", "1e3", "1,50", " 5", "5.", ".5", "abc", "NaN"]
            .iter()
            .map(|a| (one("A", a, "USD"), PRICE_INVALID, "decimal text"))
            .collect();
        for (body, code, words) in cases.into_iter().chain(bad_formats.drain(..)) {
            // a valid SKU first: one refusal writes nothing
            let mut v: Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(skus) = v["skus"].as_array_mut() {
                skus.insert(0, json!({"id": "B", "price": {"amount": "9.99", "currency": "USD"}}));
            }
            let r = update(&state, &access, "P1", &v.to_string()).await;
            assert_eq!(r["code"], code, "{body}: {r}");
            assert!(r["message"].as_str().unwrap_or_default().contains(words), "{body}: {r}");
            assert_eq!(r["data"], Value::Null);
        }
        assert_eq!(sale_price(&state, "P1", "B"), "100.00");
        assert_eq!(admin(&state, "B").await["total_price_writes"], 0);
        // not JSON; another shop's product; no such product
        assert_eq!(update(&state, &access, "P1", "{").await["code"], 36009001);
        let r = update(&state, &access, "P9", &one("Z", "5.00", "USD")).await;
        assert_eq!(r["code"], 12052048);
        assert_eq!(
            update(&state, &access, "P404", &one("A", "5.00", "USD")).await["code"],
            12052048
        );
        assert_eq!(sale_price(&state, "P9", "Z"), "100.00");
    }

    #[tokio::test]
    async fn a_promotion_locks_the_price_until_unlocked() {
        let (state, access, _) = setup();
        let lock = |sku: &str, body: &'static str| {
            admin_lock(
                AxState(state.clone()),
                Path(sku.into()),
                Bytes::from_static(body.as_bytes()),
            )
        };
        assert_eq!(lock("A", "").await.status(), 200);
        let r = update(&state, &access, "P1", &one("A", "5.00", "USD")).await;
        assert_eq!(r["code"], PRICE_LOCKED);
        assert!(r["message"].as_str().unwrap_or_default().contains("price is locked"));
        assert_eq!(admin(&state, "A").await["lock_code"], PRICE_LOCKED);
        // the other documented code, when the admin asks for it
        assert_eq!(lock("A", r#"{"code":12052038}"#).await.status(), 200);
        let r = update(&state, &access, "P1", &one("A", "5.00", "USD")).await;
        assert_eq!(r["code"], PRICE_LOCKED_PROMOTION);
        // B of the same product is not locked; a call naming both writes neither
        let both = r#"{"skus":[{"id":"B","price":{"amount":"3.00","currency":"USD"}},{"id":"A","price":{"amount":"3.00","currency":"USD"}}]}"#;
        assert_eq!(
            update(&state, &access, "P1", both).await["code"],
            PRICE_LOCKED_PROMOTION
        );
        assert_eq!(sale_price(&state, "P1", "B"), "100.00");
        assert_eq!(update(&state, &access, "P1", &one("B", "3.00", "USD")).await["code"], 0);
        // unlocked: writable again
        assert_eq!(
            admin_unlock(AxState(state.clone()), Path("A".into())).await.status(),
            200
        );
        assert_eq!(update(&state, &access, "P1", &one("A", "5.00", "USD")).await["code"], 0);
        assert_eq!(admin(&state, "A").await["locked"], false);
        // bad admin calls
        assert_eq!(lock("nope", "").await.status(), 404);
        assert_eq!(lock("A", r#"{"code":1}"#).await.status(), 400);
        assert_eq!(
            admin_unlock(AxState(state.clone()), Path("nope".into())).await.status(),
            404
        );
        assert_eq!(
            admin_read(AxState(state.clone()), Path("nope".into())).await.status(),
            404
        );
    }

    #[tokio::test]
    async fn batches_are_one_product_up_to_100_skus_each_once() {
        let (state, access, _) = setup();
        let ids: Vec<String> = (0..101).map(|i| format!("M{i}")).collect();
        {
            let mut m = state.tiktok.lock();
            let skus = ids
                .iter()
                .map(|id| Sku {
                    id: id.clone(),
                    ..Default::default()
                })
                .collect();
            m.products.insert(
                "PM".into(),
                Product {
                    shop_cipher: "CIPHER".into(),
                    skus,
                    ..Default::default()
                },
            );
        }
        let batch = |n: usize| {
            let skus: Vec<Value> = ids[..n]
                .iter()
                .map(|id| json!({"id": id, "price": {"amount": "2.50", "currency": "USD"}}))
                .collect();
            json!({ "skus": skus }).to_string()
        };
        let r = update(&state, &access, "PM", &batch(101)).await;
        assert_eq!(r["code"], 36009001);
        assert!(r["message"].as_str().unwrap_or_default().contains("at most 100"));
        assert_eq!(sale_price(&state, "PM", "M0"), "100.00");
        assert_eq!(update(&state, &access, "PM", &batch(100)).await["code"], 0);
        assert_eq!(sale_price(&state, "PM", "M99"), "2.50");
        assert_eq!(sale_price(&state, "PM", "M100"), "100.00");
        // empty, missing, not a list, a SKU twice
        for body in [r#"{"skus":[]}"#, "{}", r#"{"skus":{}}"#] {
            assert_eq!(update(&state, &access, "PM", body).await["code"], 36009001, "{body}");
        }
        let twice = r#"{"skus":[{"id":"M0","price":{"amount":"1.00","currency":"USD"}},{"id":"M0","price":{"amount":"2.00","currency":"USD"}}]}"#;
        let r = update(&state, &access, "PM", twice).await;
        assert_eq!(r["code"], 36009001);
        assert_eq!(sale_price(&state, "PM", "M0"), "2.50");
    }

    #[tokio::test]
    async fn calls_are_signed_and_authorized() {
        let (state, access, other) = setup();
        let path = "/product/202309/products/P1/prices/update";
        let body = one("A", "5.00", "USD");
        let call = |uri: Uri, tok: &str, b: &str| {
            prices_update(
                AxState(state.clone()),
                Path("P1".into()),
                uri,
                token(tok),
                Bytes::from(b.to_string()),
            )
        };
        // signed with another secret; the body is signed byte for byte
        let r = call(
            signed_with(path, "wrong", "CIPHER", &[], body.as_bytes()),
            &access,
            &body,
        )
        .await;
        assert_eq!(r.status(), 401);
        assert_eq!(body_json(r).await["code"], 106001);
        let r = call(
            signed_with(path, SECRET, "CIPHER", &[], body.as_bytes()),
            &access,
            &one("A", "6.00", "USD"),
        )
        .await;
        assert_eq!(body_json(r).await["code"], 106001);
        // an unknown token; another shop's cipher
        let r = call(signed_with(path, SECRET, "CIPHER", &[], body.as_bytes()), "nope", &body).await;
        assert_eq!(r.status(), 401);
        assert_eq!(body_json(r).await["code"], 105001);
        let r = call(signed_with(path, SECRET, "OTHER", &[], body.as_bytes()), &access, &body).await;
        assert_eq!(body_json(r).await["code"], 106011);
        // OTHER's own token does not reach CIPHER's product
        let r = body_json(update_as(&state, "OTHER", &other, "P1", &body).await).await;
        assert_eq!(r["code"], 12052048);
        assert!(!state.counters.lock().contains_key("tiktok price writes"));
        assert_eq!(sale_price(&state, "P1", "A"), "100.00");
        // the shop's rate limit applies
        state.tiktok.lock().rate.limit = Some(1);
        assert_eq!(update(&state, &access, "P1", &body).await["code"], 0);
        let r = update_as(&state, "CIPHER", &access, "P1", &body).await;
        assert_eq!(r.status(), 429);
        assert_eq!(body_json(r).await["code"], 36009004);
        // an expired token
        state.tiktok.lock().rate.limit = None;
        state.tiktok.lock().expire_access_tokens();
        let r = update_as(&state, "CIPHER", &access, "P1", &body).await;
        assert_eq!(body_json(r).await["code"], 105002);
    }

    #[tokio::test]
    async fn the_shop_region_sets_currency_decimals_and_limits() {
        let (state, access, _) = setup();
        {
            let mut m = state.tiktok.lock();
            m.prices.set_region("CIPHER", find_region("GB").unwrap_or(&REGIONS[0]));
        }
        assert_eq!(
            update(&state, &access, "P1", &one("A", "5.00", "USD")).await["code"],
            PRICE_INVALID
        );
        assert_eq!(update(&state, &access, "P1", &one("A", "5.00", "GBP")).await["code"], 0);
        assert_eq!(admin(&state, "A").await["price"]["currency"], "GBP");
        // JPY has no fraction digits
        state
            .tiktok
            .lock()
            .prices
            .set_region("CIPHER", find_region("JP").unwrap_or(&REGIONS[0]));
        assert_eq!(
            update(&state, &access, "P1", &one("A", "500.5", "JPY")).await["code"],
            PRICE_INVALID
        );
        assert_eq!(
            update(&state, &access, "P1", &one("A", "0", "JPY")).await["code"],
            PRICE_INVALID
        );
        assert_eq!(update(&state, &access, "P1", &one("A", "500", "JPY")).await["code"], 0);
        assert_eq!(sale_price(&state, "P1", "A"), "500");
    }

    #[tokio::test]
    async fn the_admin_sets_a_region_s_limits() {
        let (state, access, _) = setup();
        let set = |b: Value| admin_set_limits(AxState(state.clone()), Json(b));
        let r = set(json!({"region": "US", "min": "5.00"})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            body_json(r).await,
            json!({"region": "US", "currency": "USD", "decimals": 2, "min": "5.00", "max": "7600"})
        );
        let r = update(&state, &access, "P1", &one("A", "4.99", "USD")).await;
        assert_eq!(r["code"], PRICE_INVALID);
        assert!(r["message"]
            .as_str()
            .unwrap_or_default()
            .contains("between 5.00 and 7600"));
        assert_eq!(update(&state, &access, "P1", &one("A", "5.00", "USD")).await["code"], 0);
        // back to the table's
        assert_eq!(set(json!({"region": "US", "min": null})).await.status(), 200);
        assert_eq!(update(&state, &access, "P1", &one("A", "4.99", "USD")).await["code"], 0);
        let all = body_json(admin_limits(AxState(state.clone())).await).await;
        assert_eq!(
            all[0],
            json!({"region": "US", "currency": "USD", "decimals": 2, "min": "0.01", "max": "7600"})
        );
        for b in [
            json!({"min": "1"}),
            json!({"region": "XX"}),
            json!({"region": "US", "min": 1}),
            json!({"region": "US", "min": "-1"}),
            json!({"region": "US", "min": "10", "max": "5"}),
        ] {
            assert_eq!(set(b.clone()).await.status(), 400, "{b}");
        }
    }

    #[test]
    fn every_region_s_table_limits_are_exact_and_ordered() {
        for r in REGIONS {
            let (min, max) = (Decimal::from_str_exact(r.min), Decimal::from_str_exact(r.max));
            assert!(
                matches!((min, max), (Ok(a), Ok(b)) if a > Decimal::ZERO && a < b),
                "{}",
                r.code
            );
            assert_eq!(REGIONS.iter().filter(|x| x.code == r.code).count(), 1);
        }
    }
}
