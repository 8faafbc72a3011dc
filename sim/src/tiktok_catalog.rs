//! The TikTok Shop catalog: `POST /product/202309/products/search` (token paging, filters
//! `status` and `seller_skus`), `GET /product/202309/products/{id}`, both signed and authorized
//! like every shop call (`tiktok::verify`: sign, `x-tts-access-token`, `shop_cipher`, the per-shop
//! rate limit; faults come from the middleware), and `POST /_admin/tiktok/catalog`, which builds
//! a large catalog by the generation rule every marketplace's sandbox shares. The SKU prices
//! served here are the ones `tiktok_prices` writes.
//!
//! Paging is strict where TikTok publishes nothing:
//! - products come in ascending product id order (byte order; generated ids all have as many
//!   digits, so that is numeric order), each matching product exactly once;
//! - `page_size` is required, 1 to 100;
//! - a page token is base64url (no padding) of `{"v":1,"shop","filter","after"}`: the shop it
//!   was issued to, a fingerprint of the body's filters and the last product id of the page; a
//!   token that does not decode, names another shop or other filters is refused (`36009001`);
//!   products added or removed while paging neither repeat nor shift the pages;
//! - the last page carries `"next_page_token": ""`, and only the last page: a page is never empty
//!   unless nothing matches at all (`total_count` 0).

use crate::catalog_rule::{self, Common, Counts};
use crate::state::State;
use crate::tiktok::{envelope, ok, parse_query, verify, Price, Product, Sku};
use crate::tiktok_prices::{region_field, Region};
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

/// Product statuses of API 202309; a search may also ask for `ALL`.
pub const STATUSES: &[&str] = &[
    "DRAFT",
    "PENDING",
    "FAILED",
    "ACTIVATE",
    "SELLER_DEACTIVATED",
    "PLATFORM_DEACTIVATED",
    "FREEZE",
    "DELETED",
];

/// The most units one `/_admin/tiktok/catalog` call builds.
pub const MAX_UNITS: u64 = 1_000_000;

/// Catalog endpoints, merged into the tiktok router.
pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/product/202309/products/search", post(search))
        .route("/product/202309/products/{id}", get(detail))
}

/// Admin endpoints (under /_admin/tiktok) that build catalogs.
pub fn admin_router() -> Router<Arc<State>> {
    Router::new().route("/catalog", post(admin_catalog))
}

/// Decimal text as prices are written (digits, optionally a point and more digits), at most 24
/// characters; kept as given.
pub fn is_decimal(s: &str) -> bool {
    s.len() <= 24 && catalog_rule::is_decimal(s)
}

pub fn price_json(p: &Price) -> Value {
    json!({"currency": p.currency, "sale_price": p.sale_price, "tax_exclusive_price": p.tax_exclusive_price})
}

fn sku_json(s: &Sku) -> Value {
    json!({"id": s.id, "seller_sku": s.seller_sku, "price": price_json(&s.price),
           "inventory": s.inventory.iter().map(|(w, q)| json!({"warehouse_id": w, "quantity": q})).collect::<Vec<_>>()})
}

pub fn product_json(id: &str, p: &Product) -> Value {
    json!({"id": id, "title": p.title, "status": p.status,
           "skus": p.skus.iter().map(sku_json).collect::<Vec<_>>()})
}

fn invalid(message: &str) -> Response {
    envelope(StatusCode::OK, 36009001, message, Value::Null)
}

// ---- page tokens ------------------------------------------------------------------------------

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (query-safe: no `+`, `/` or `=`).
fn b64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(B64URL[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn unb64url(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = B64URL.iter().position(|x| x == c)?;
            n |= (v as u32) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

fn encode_token(shop: &str, filter: &str, after: &str) -> String {
    b64url(
        json!({"v": 1, "shop": shop, "filter": filter, "after": after})
            .to_string()
            .as_bytes(),
    )
}

/// The product id a token continues after, if it decodes and was issued for this shop and filter.
fn decode_token(token: &str, shop: &str, filter: &str) -> Result<String, &'static str> {
    let v: Value = unb64url(token)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("page_token is invalid.")?;
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    let (Some(1), Some(t_shop), Some(t_filter), Some(after)) = (
        v.get("v").and_then(Value::as_u64),
        field("shop"),
        field("filter"),
        field("after"),
    ) else {
        return Err("page_token is invalid.");
    };
    if t_shop != shop {
        return Err("page_token is invalid: it was issued to another shop.");
    }
    if t_filter != filter {
        return Err("page_token is invalid: it was issued for other search filters.");
    }
    Ok(after.to_string())
}

// ---- search -----------------------------------------------------------------------------------

/// The body's filters; `fingerprint` ties page tokens to them.
struct Filter {
    status: Option<String>,
    seller_skus: Option<HashSet<String>>,
    fingerprint: String,
}

impl Filter {
    /// `{"status"?, "seller_skus"?}`; an empty body is no filter. Other fields are ignored.
    fn parse(body: &[u8]) -> Result<Filter, &'static str> {
        let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|_| "Invalid request body.")?
        };
        if !v.is_object() {
            return Err("Invalid request body.");
        }
        let status = match v.get("status") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s == "ALL" => None,
            Some(Value::String(s)) if STATUSES.contains(&s.as_str()) => Some(s.clone()),
            Some(_) => return Err("status is invalid."),
        };
        let seller_skus = match v.get("seller_skus") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => {
                let set = a
                    .iter()
                    .map(|s| s.as_str().map(str::to_string))
                    .collect::<Option<HashSet<String>>>()
                    .ok_or("seller_skus must be a list of strings.")?;
                Some(set).filter(|s| !s.is_empty())
            }
            Some(_) => return Err("seller_skus must be a list of strings."),
        };
        let mut skus: Vec<&String> = seller_skus.iter().flatten().collect();
        skus.sort();
        let canonical = json!([status, skus]).to_string();
        let fingerprint = marketplace_signing::sha256_hex(canonical.as_bytes())[..16].to_string();
        Ok(Filter {
            status,
            seller_skus,
            fingerprint,
        })
    }

    fn matches(&self, p: &Product) -> bool {
        self.status.as_ref().is_none_or(|s| *s == p.status)
            && self.seller_skus.as_ref().is_none_or(|set| {
                p.skus
                    .iter()
                    .any(|s| !s.seller_sku.is_empty() && set.contains(&s.seller_sku))
            })
    }
}

/// `POST /product/202309/products/search?page_size=N&page_token=T` with `{"status"?,
/// "seller_skus"?}`: the shop's products, whole (all their SKUs, even when `seller_skus` matched
/// one), a page at a time.
pub(crate) async fn search(AxState(state): AxState<Arc<State>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let shop = match verify(&state, &uri, &headers, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    state.count("tiktok products/search");
    let q = parse_query(uri.query());
    let Some(size) = q
        .get("page_size")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| (1..=100).contains(n))
    else {
        return invalid("page_size is invalid: it must be between 1 and 100.");
    };
    let filter = match Filter::parse(&body) {
        Ok(f) => f,
        Err(msg) => return invalid(msg),
    };
    let after = match q.get("page_token").filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => match decode_token(t, &shop, &filter.fingerprint) {
            Ok(after) => Some(after),
            Err(msg) => return invalid(msg),
        },
    };
    let mut guard = state.tiktok.lock();
    let m = &mut *guard;
    let wanted = |p: &Product| p.shop_cipher == shop && filter.matches(p);
    let version = m.products.version();
    let key = (shop.clone(), filter.fingerprint.clone());
    let total = match m.search_counts.get(&key) {
        Some((v, n)) if *v == version => *n,
        _ => {
            let n = m.products.values().filter(|p| wanted(p)).count();
            if m.search_counts.len() >= 1024 {
                m.search_counts.clear();
            }
            m.search_counts.insert(key, (version, n));
            n
        }
    };
    let start = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let mut rest = m
        .products
        .range::<str, _>((start, Bound::Unbounded))
        .filter(|(_, p)| wanted(p));
    let page: Vec<(&String, &Product)> = rest.by_ref().take(size).collect();
    let next = match (rest.next(), page.last()) {
        (Some(_), Some((last, _))) => encode_token(&shop, &filter.fingerprint, last),
        _ => String::new(),
    };
    let products: Vec<Value> = page.iter().map(|(id, p)| product_json(id, p)).collect();
    ok(json!({"total_count": total, "next_page_token": next, "products": products}))
}

/// `GET /product/202309/products/{id}`: one product of the shop (`12052048` otherwise).
async fn detail(
    AxState(state): AxState<Arc<State>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shop = match verify(&state, &uri, &headers, &body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    state.count("tiktok GET product");
    let m = state.tiktok.lock();
    match m.products.get(&id).filter(|p| p.shop_cipher == shop) {
        Some(p) => ok(product_json(&id, p)),
        None => envelope(StatusCode::OK, 12052048, "Product does not exist.", Value::Null),
    }
}

// ---- admin: the catalog generator ---------------------------------------------------------------

fn bad(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"error": msg}))).into_response()
}

fn text<'a>(b: &'a Value, key: &str, default: &'a str) -> Result<&'a str, Response> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(StatusCode::BAD_REQUEST, &format!("{key} must be a string"))),
    }
}

/// `first_id` when the body has none.
const DEFAULT_FIRST_ID: u64 = 1_729_000_000_000_000;

/// The generator's options (see `admin_catalog`): the fields every marketplace's generator takes
/// ([`Common`]) and TikTok Shop's own.
#[derive(Clone, Debug)]
pub struct CatalogSpec {
    pub shop_cipher: String,
    pub common: Common,
    pub first_id: u64,
    pub price: Price,
    /// `region`, when given: it becomes the shop's
    pub region: Option<&'static Region>,
    pub status: String,
    pub warehouse_id: String,
}

impl CatalogSpec {
    /// The body, read as TikTok Shop reads input: a null is an absent field; unknown fields are
    /// ignored. `shop_region` is the shop's region before this call.
    fn parse(b: &Value, shop_region: &'static Region) -> Result<CatalogSpec, Response> {
        let bad_req = |m: &str| bad(StatusCode::BAD_REQUEST, m);
        if !b.is_object() {
            return Err(bad_req("the body must be a JSON object"));
        }
        let shop_cipher = text(b, "shop_cipher", "")?;
        if shop_cipher.is_empty() {
            return Err(bad_req("shop_cipher is required"));
        }
        if b.get("products").is_none_or(Value::is_null) {
            return Err(bad_req("products is required"));
        }
        let common = Common::from_lenient(b).map_err(|field| match field {
            "sku_prefix" => bad_req("sku_prefix must be a string"),
            _ => bad_req(&format!("{field} must be a whole number of at least 0")),
        })?;
        let price = common.price_text().map_err(|e| bad_req(&e))?;
        let tax_exclusive = text(b, "tax_exclusive_price", price)?;
        if !is_decimal(price) || !is_decimal(tax_exclusive) {
            return Err(bad_req("price must be decimal text such as \"19.99\""));
        }
        let region = region_field(b).map_err(|e| bad_req(&e))?;
        let effective = region.unwrap_or(shop_region);
        let currency = text(b, "currency", effective.currency)?;
        if currency != effective.currency {
            return Err(bad_req(&format!(
                "currency must be the region's: {} for {}",
                effective.currency, effective.code
            )));
        }
        let status = text(b, "status", "ACTIVATE")?;
        if !STATUSES.contains(&status) {
            return Err(bad_req(
                "status must be a TikTok product status (ACTIVATE, SELLER_DEACTIVATED, ...)",
            ));
        }
        let warehouse_id = text(b, "warehouse_id", "WH-1")?;
        if warehouse_id.is_empty() {
            return Err(bad_req("warehouse_id must not be empty"));
        }
        if common.stock < 0 {
            return Err(bad_req("stock must be a whole number of at least 0"));
        }
        if common.stock >= 99_999 {
            return Err(bad_req("stock must be between 0 and 99998"));
        }
        Ok(CatalogSpec {
            shop_cipher: shop_cipher.to_string(),
            first_id: common.first_id_or(DEFAULT_FIRST_ID),
            price: Price {
                currency: currency.to_string(),
                sale_price: price.to_string(),
                tax_exclusive_price: tax_exclusive.to_string(),
            },
            region,
            status: status.to_string(),
            warehouse_id: warehouse_id.to_string(),
            common,
        })
    }
}

/// What the generator built: the products (id, product) and its counts.
pub struct Generated {
    pub products: Vec<(String, Product)>,
    pub counts: Counts,
}

/// Builds the catalog by the shared rule ([`crate::catalog_rule`]). Ids: product i is
/// `first_id + i`, unit n is `first_id + products + n - 1`.
pub fn generate(spec: &CatalogSpec) -> Generated {
    let c = &spec.common;
    let mut products = Vec::with_capacity(c.products as usize);
    let first_unit_id = spec.first_id + c.products;
    let mut plan = c.plan();
    for p in plan.by_ref() {
        let skus = p
            .units
            .into_iter()
            .map(|u| Sku {
                id: (first_unit_id + u.n - 1).to_string(),
                seller_sku: u.sku.unwrap_or_default(),
                price: spec.price.clone(),
                inventory: vec![(spec.warehouse_id.clone(), c.stock)],
            })
            .collect();
        products.push((
            (spec.first_id + p.i).to_string(),
            Product {
                shop_cipher: spec.shop_cipher.clone(),
                title: format!("Product {}", p.i),
                status: spec.status.clone(),
                skus,
                writes: 0,
            },
        ));
    }
    Generated {
        products,
        counts: plan.counts(),
    }
}

/// `POST /_admin/tiktok/catalog` `{"shop_cipher", "products", "first_id"?, "variations"?,
/// "variations_every"?, "sku_prefix"?, "missing_sku_every"?, "duplicate_sku_every"?, "price"?,
/// "tax_exclusive_price"?, "region"?, "currency"?, "stock"?, "status"?, "warehouse_id"?}` →
/// `{"products", "units", "without_sku", "duplicated"}`. Adds to the shop's catalog; an id already
/// in use (any shop's product or SKU) is 409 and nothing is created. `region` becomes the shop's
/// (see `tiktok_prices::REGIONS`); `currency` defaults to, and must be, the region's. Prices are
/// not held to the region's limits, so a test can build a catalog the price API would refuse.
async fn admin_catalog(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let shop_region = {
        let shop = b.get("shop_cipher").and_then(Value::as_str).unwrap_or("");
        state.tiktok.lock().prices.region_of(shop)
    };
    let spec = match CatalogSpec::parse(&b, shop_region) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(units) = spec.common.units().filter(|u| *u <= MAX_UNITS) else {
        return bad(StatusCode::BAD_REQUEST, &format!("at most {MAX_UNITS} units per call"));
    };
    // ids first_id .. first_id + products + units - 1
    let Some(end) = spec.first_id.checked_add(spec.common.products + units) else {
        return bad(StatusCode::BAD_REQUEST, "the ids would overflow u64");
    };
    let generated = generate(&spec);
    let mut m = state.tiktok.lock();
    let in_range = |id: &str| {
        id.parse::<u64>()
            .is_ok_and(|n| (spec.first_id..end).contains(&n) && n.to_string() == id)
    };
    let taken = m
        .products
        .iter()
        .find(|(pid, p)| in_range(pid) || p.skus.iter().any(|s| in_range(&s.id)));
    if let Some((pid, _)) = taken {
        return bad(
            StatusCode::CONFLICT,
            &format!("ids {}..{end} overlap product {pid} (or its SKUs)", spec.first_id),
        );
    }
    m.products.extend(generated.products);
    if let Some(r) = spec.region {
        m.prices.set_region(&spec.shop_cipher, r);
    }
    Json(generated.counts.to_json()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::unix_now;

    const SECRET: &str = "secret1";

    /// An app, the shop CIPHER with a token, and another shop OTHER with a token.
    fn setup() -> (Arc<State>, String, String) {
        let state = Arc::new(State::default());
        let mut m = state.tiktok.lock();
        m.apps.insert("key1".into(), SECRET.into());
        let a = m.grant("key1", "CIPHER")["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let b = m.grant("key1", "OTHER")["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        drop(m);
        (state, a, b)
    }

    use crate::tiktok::tests::{body_json, signed_with as signed, token};

    const SEARCH: &str = "/product/202309/products/search";

    /// One signed search call as CIPHER.
    async fn page(state: &Arc<State>, access: &str, size: &str, page_token: &str, body: &'static [u8]) -> Value {
        let mut extra = vec![("page_size", size)];
        if !page_token.is_empty() {
            extra.push(("page_token", page_token));
        }
        let uri = signed(SEARCH, SECRET, "CIPHER", &extra, body);
        body_json(search(AxState(state.clone()), uri, token(access), Bytes::from_static(body)).await).await
    }

    async fn catalog(state: &Arc<State>, b: Value) -> (StatusCode, Value) {
        let r = admin_catalog(AxState(state.clone()), Json(b)).await;
        (r.status(), body_json(r).await)
    }

    #[test]
    fn routes_fit_with_the_other_tiktok_routes() {
        // axum panics on conflicting routes when a router is built
        let _ = crate::tiktok::router();
        let _ = crate::tiktok::admin_router();
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 200) as u8).collect();
            let enc = b64url(&bytes);
            assert!(enc.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            assert_eq!(unb64url(&enc), Some(bytes));
        }
        assert_eq!(b64url(b"foob"), "Zm9vYg");
        assert_eq!(unb64url("Zm9v*g"), None);
        assert_eq!(unb64url("Zm9vY"), None);
    }

    #[test]
    fn decimals() {
        for ok in ["0", "19.99", "100.00", "7600"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", ".5", "5.", "1e3", "-1", "1,00", "NaN", "1.2.3"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn generator_counts_with_every_option() {
        let (state, _, _) = setup();
        // 10 products, every 3rd (0, 3, 6, 9) with 4 SKUs: 4*4 + 6 = 22 units
        let (status, r) = catalog(
            &state,
            json!({"shop_cipher": "CIPHER", "products": 10, "first_id": 5000, "variations": 4,
                   "variations_every": 3, "sku_prefix": "P", "missing_sku_every": 5,
                   "duplicate_sku_every": 4, "price": "19.99", "region": "MX", "currency": "MXN", "stock": 7,
                   "status": "SELLER_DEACTIVATED", "warehouse_id": "WH-9"}),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        // units n = 5, 10, 15, 20 have none (20: e wins over d); n = 4, 8, 12 copy unit n-1;
        // n = 16 copies unit 15, which has none: none too, not a duplicate
        assert_eq!(
            r,
            json!({"products": 10, "units": 22, "without_sku": 5, "duplicated": 3})
        );
        {
            let m = state.tiktok.lock();
            let units: Vec<(&String, &Sku)> = m
                .products
                .iter()
                .flat_map(|(pid, p)| p.skus.iter().map(move |s| (pid, s)))
                .collect();
            let sellers: Vec<&str> = units.iter().map(|(_, s)| s.seller_sku.as_str()).collect();
            assert_eq!(
                sellers,
                [
                    "P0-0", "P0-1", "P0-2", "P0-2", "", "P2", "P3-0", "P3-0", "P3-2", "", "P4", "P4", "P6-0", "P6-1",
                    "", "", "P7", "P8", "P9-0", "", "P9-2", "P9-3"
                ]
            );
            // ids: products 5000..5009, units 5010..5031 in order
            assert_eq!(m.products.keys().next().map(String::as_str), Some("5000"));
            assert_eq!(m.products.keys().last().map(String::as_str), Some("5009"));
            let ids: Vec<u64> = units.iter().map(|(_, s)| s.id.parse().unwrap_or(0)).collect();
            assert_eq!(ids, (5010..5032).collect::<Vec<u64>>());
            let (_, first) = units[0];
            assert_eq!(first.price.sale_price, "19.99");
            assert_eq!(first.price.currency, "MXN");
            assert_eq!(first.inventory, vec![("WH-9".to_string(), 7)]);
            assert_eq!(m.products["5000"].status, "SELLER_DEACTIVATED");
        }
        // the same ids again: refused, nothing created
        let (status, _) = catalog(
            &state,
            json!({"shop_cipher": "CIPHER", "products": 1, "first_id": 5031}),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(state.tiktok.lock().products.len(), 10);
        // the region given became the shop's: its next catalog is in MXN too
        let (_, r) = catalog(
            &state,
            json!({"shop_cipher": "CIPHER", "products": 1, "first_id": 6000}),
        )
        .await;
        assert_eq!(r["products"], 1);
        assert_eq!(state.tiktok.lock().products["6000"].skus[0].price.currency, "MXN");
        // defaults (shop OTHER has no region: US); variations without variations_every: one SKU each
        let (_, r) = catalog(&state, json!({"shop_cipher": "OTHER", "products": 3, "variations": 5})).await;
        assert_eq!(r, json!({"products": 3, "units": 3, "without_sku": 0, "duplicated": 0}));
        let m = state.tiktok.lock();
        let p = &m.products["1729000000000000"];
        assert_eq!(p.skus[0].id, "1729000000000003");
        assert_eq!(p.skus[0].seller_sku, "SKU-0");
        assert_eq!(p.skus[0].price.sale_price, "100.00");
        assert_eq!(p.skus[0].price.currency, "USD");
        assert_eq!(p.skus[0].inventory, vec![("WH-1".to_string(), 5)]);
        assert_eq!(p.status, "ACTIVATE");
    }

    #[tokio::test]
    async fn generator_refuses_bad_options() {
        let (state, _, _) = setup();
        for b in [
            json!({"products": 1}),
            json!({"shop_cipher": "CIPHER"}),
            json!({"shop_cipher": "CIPHER", "products": -1}),
            json!({"shop_cipher": "CIPHER", "products": 1, "price": 19.99}),
            json!({"shop_cipher": "CIPHER", "products": 1, "price": "19,99"}),
            json!({"shop_cipher": "CIPHER", "products": 1, "status": "ACTIVE"}),
            json!({"shop_cipher": "CIPHER", "products": 1, "stock": 99_999}),
            json!({"shop_cipher": "CIPHER", "products": 1, "currency": "usd"}),
            json!({"shop_cipher": "CIPHER", "products": 1, "currency": "MXN"}),
            json!({"shop_cipher": "CIPHER", "products": 1, "region": "GB", "currency": "USD"}),
            json!({"shop_cipher": "CIPHER", "products": 1, "region": "XX"}),
            json!({"shop_cipher": "CIPHER", "products": 2_000_000}),
            json!({"shop_cipher": "CIPHER", "products": 10, "first_id": u64::MAX - 5}),
        ] {
            let (status, _) = catalog(&state, b.clone()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
        }
        assert!(state.tiktok.lock().products.is_empty());
    }

    #[tokio::test]
    async fn generator_is_fast() {
        let (state, _, _) = setup();
        let t = std::time::Instant::now();
        let (_, r) = catalog(
            &state,
            json!({"shop_cipher": "CIPHER", "products": 10_000, "variations": 3, "variations_every": 2}),
        )
        .await;
        assert_eq!(r["units"], 20_000);
        assert!(t.elapsed() < std::time::Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn paging_returns_every_product_once() {
        let (state, access, _) = setup();
        // 120 products, every 4th with 5 SKUs: 30*5 + 90 = 240 units; another shop's products
        // and an older admin product are around
        catalog(
            &state,
            json!({"shop_cipher": "CIPHER", "products": 120, "variations": 5, "variations_every": 4, "first_id": 1000}),
        )
        .await;
        catalog(
            &state,
            json!({"shop_cipher": "OTHER", "products": 50, "first_id": 900_000}),
        )
        .await;
        {
            let mut m = state.tiktok.lock();
            m.products.insert(
                "2000".into(),
                Product {
                    shop_cipher: "CIPHER".into(),
                    skus: vec![Sku {
                        id: "S-OLD".into(),
                        seller_sku: "S-OLD".into(),
                        inventory: vec![("WH-1".into(), 3)],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
        }
        let mut seen: Vec<String> = Vec::new();
        let mut units = 0;
        let mut next = String::new();
        let mut pages = 0;
        loop {
            let r = page(&state, &access, "17", &next, b"").await;
            assert_eq!(r["code"], 0, "{r}");
            assert_eq!(r["data"]["total_count"], 121);
            let products = r["data"]["products"].as_array().cloned().unwrap_or_default();
            assert!(!products.is_empty());
            for p in &products {
                seen.push(p["id"].as_str().unwrap_or_default().to_string());
                units += p["skus"].as_array().map_or(0, Vec::len);
            }
            pages += 1;
            next = r["data"]["next_page_token"].as_str().unwrap_or_default().to_string();
            if next.is_empty() {
                assert!(products.len() <= 17);
                break;
            }
            assert_eq!(products.len(), 17);
        }
        assert_eq!(pages, 8); // 121 = 7 * 17 + 2
        assert_eq!(units, 241);
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, seen, "ascending, each once");
        assert_eq!(seen.len(), 121);
        assert_eq!(state.counters.lock()["tiktok products/search"], 8);
        // the shape of a product
        let r = page(&state, &access, "1", "", b"").await;
        let p = &r["data"]["products"][0];
        assert_eq!(p["id"], "1000");
        assert_eq!(p["status"], "ACTIVATE");
        assert_eq!(p["skus"].as_array().map(Vec::len), Some(5));
        assert_eq!(
            p["skus"][0],
            json!({"id": "1120", "seller_sku": "SKU-0-0",
                   "price": {"currency": "USD", "sale_price": "100.00", "tax_exclusive_price": "100.00"},
                   "inventory": [{"warehouse_id": "WH-1", "quantity": 5}]})
        );
        // an exact page size: the last full page has the empty token, no empty page follows
        let r = page(&state, &access, "100", "", b"").await;
        let t = r["data"]["next_page_token"].as_str().unwrap_or_default().to_string();
        let r = page(&state, &access, "21", &t, b"").await;
        assert_eq!(r["data"]["products"].as_array().map(Vec::len), Some(21));
        assert_eq!(r["data"]["next_page_token"], "");
    }

    #[tokio::test]
    async fn filters_and_empty_catalog() {
        let (state, access, _) = setup();
        let r = page(&state, &access, "10", "", b"{}").await;
        assert_eq!(
            r["data"],
            json!({"total_count": 0, "next_page_token": "", "products": []})
        );
        catalog(
            &state,
            json!({"shop_cipher": "CIPHER", "products": 30, "first_id": 100}),
        )
        .await;
        catalog(
            &state,
            json!({"shop_cipher": "CIPHER", "products": 5, "first_id": 200, "status": "SELLER_DEACTIVATED", "sku_prefix": "D-"}),
        )
        .await;
        let r = page(&state, &access, "100", "", br#"{"status":"ACTIVATE"}"#).await;
        assert_eq!(r["data"]["total_count"], 30);
        let r = page(&state, &access, "100", "", br#"{"status":"SELLER_DEACTIVATED"}"#).await;
        assert_eq!(r["data"]["total_count"], 5);
        let r = page(&state, &access, "100", "", br#"{"status":"ALL"}"#).await;
        assert_eq!(r["data"]["total_count"], 35);
        // counts follow the catalog (they are cached per catalog version)
        catalog(&state, json!({"shop_cipher": "CIPHER", "products": 1, "first_id": 300})).await;
        if let Some(p) = state.tiktok.lock().products.get_mut("100") {
            p.status = "FREEZE".into();
        }
        let r = page(&state, &access, "100", "", br#"{"status":"ALL"}"#).await;
        assert_eq!(r["data"]["total_count"], 36);
        let r = page(&state, &access, "100", "", br#"{"status":"ACTIVATE"}"#).await;
        assert_eq!(r["data"]["total_count"], 30);
        state.tiktok.lock().products.remove("300");
        let r = page(&state, &access, "100", "", br#"{"seller_skus":["SKU-3","D-4","nope"]}"#).await;
        let ids: Vec<&str> = r["data"]["products"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["id"].as_str())
            .collect();
        assert_eq!(ids, ["103", "204"]);
        // a token is tied to its filters
        let r = page(&state, &access, "2", "", br#"{"status":"ACTIVATE"}"#).await;
        let t = r["data"]["next_page_token"].as_str().unwrap_or_default().to_string();
        let r = page(&state, &access, "2", &t, br#"{"status":"ACTIVATE"}"#).await;
        assert_eq!(r["code"], 0);
        let r = page(&state, &access, "2", &t, b"").await;
        assert_eq!(r["code"], 36009001);
        // malformed filters
        for body in [
            &b"{"[..],
            br#"{"status":"ACTIVE"}"#,
            br#"{"seller_skus":"SKU-1"}"#,
            br#"[1]"#,
        ] {
            let uri = signed(SEARCH, SECRET, "CIPHER", &[("page_size", "10")], body);
            let r =
                body_json(search(AxState(state.clone()), uri, token(&access), Bytes::from_static(body)).await).await;
            assert_eq!(r["code"], 36009001, "{}", String::from_utf8_lossy(body));
        }
    }

    #[tokio::test]
    async fn page_size_is_checked() {
        let (state, access, _) = setup();
        for size in ["0", "101", "1000", "x", "-1"] {
            let r = page(&state, &access, size, "", b"").await;
            assert_eq!(r["code"], 36009001, "{size}");
            assert!(r["request_id"].is_string());
            assert!(r["message"].as_str().unwrap_or_default().contains("page_size"));
        }
        // missing altogether
        let uri = signed(SEARCH, SECRET, "CIPHER", &[], b"");
        let r = body_json(search(AxState(state.clone()), uri, token(&access), Bytes::new()).await).await;
        assert_eq!(r["code"], 36009001);
        assert_eq!(page(&state, &access, "100", "", b"").await["code"], 0);
    }

    #[tokio::test]
    async fn bad_page_tokens_are_refused() {
        let (state, access, other) = setup();
        catalog(
            &state,
            json!({"shop_cipher": "CIPHER", "products": 10, "first_id": 100}),
        )
        .await;
        catalog(&state, json!({"shop_cipher": "OTHER", "products": 10, "first_id": 200})).await;
        let garbage = b64url(b"not json");
        let wrong_version = b64url(br#"{"v":2,"shop":"CIPHER","filter":"x","after":"100"}"#);
        for t in ["%%%", "abc*", "Zm9vY", garbage.as_str(), wrong_version.as_str()] {
            let r = page(&state, &access, "5", t, b"").await;
            assert_eq!(r["code"], 36009001, "{t}");
        }
        // a token of shop OTHER, presented by CIPHER
        let uri = signed(SEARCH, SECRET, "OTHER", &[("page_size", "5")], b"");
        let r = body_json(search(AxState(state.clone()), uri, token(&other), Bytes::new()).await).await;
        let theirs = r["data"]["next_page_token"].as_str().unwrap_or_default().to_string();
        assert!(!theirs.is_empty());
        let r = page(&state, &access, "5", &theirs, b"").await;
        assert_eq!(r["code"], 36009001);
        assert!(r["message"].as_str().unwrap_or_default().contains("another shop"));
    }

    #[tokio::test]
    async fn search_is_signed_and_authorized() {
        let (state, access, _) = setup();
        let call = |uri: Uri, tok: &str| search(AxState(state.clone()), uri, token(tok), Bytes::new());
        // unsigned
        let uri: Uri = format!(
            "{SEARCH}?app_key=key1&timestamp={}&shop_cipher=CIPHER&page_size=10",
            unix_now()
        )
        .parse()
        .unwrap();
        let r = call(uri, &access).await;
        assert_eq!(r.status(), 401);
        assert_eq!(body_json(r).await["code"], 106001);
        // signed with another secret
        let r = call(signed(SEARCH, "wrong", "CIPHER", &[("page_size", "10")], b""), &access).await;
        assert_eq!(r.status(), 401);
        assert_eq!(body_json(r).await["code"], 106001);
        // the page_token is part of what is signed
        let uri = signed(SEARCH, SECRET, "CIPHER", &[("page_size", "10")], b"");
        let tampered: Uri = format!("{uri}&page_token=abc").parse().unwrap();
        assert_eq!(body_json(call(tampered, &access).await).await["code"], 106001);
        // the body is signed byte for byte
        let uri = signed(SEARCH, SECRET, "CIPHER", &[("page_size", "10")], b"");
        let r = search(
            AxState(state.clone()),
            uri,
            token(&access),
            Bytes::from_static(br#"{"status":"ACTIVATE"}"#),
        )
        .await;
        assert_eq!(body_json(r).await["code"], 106001);
        // an unknown token, another shop's cipher
        let r = call(signed(SEARCH, SECRET, "CIPHER", &[("page_size", "10")], b""), "nope").await;
        assert_eq!(body_json(r).await["code"], 105001);
        let r = call(signed(SEARCH, SECRET, "OTHER", &[("page_size", "10")], b""), &access).await;
        assert_eq!(body_json(r).await["code"], 106011);
        assert!(!state.counters.lock().contains_key("tiktok products/search"));
        // the shop's rate limit applies
        state.tiktok.lock().rate.limit = Some(1);
        let r = call(signed(SEARCH, SECRET, "CIPHER", &[("page_size", "10")], b""), &access).await;
        assert_eq!(body_json(r).await["code"], 0);
        let r = call(signed(SEARCH, SECRET, "CIPHER", &[("page_size", "10")], b""), &access).await;
        assert_eq!(r.status(), 429);
        assert_eq!(body_json(r).await["code"], 36009004);
    }

    #[tokio::test]
    async fn product_detail() {
        let (state, access, other) = setup();
        catalog(
            &state,
            json!({"shop_cipher": "CIPHER", "products": 2, "first_id": 100, "price": "0.50"}),
        )
        .await;
        let path = "/product/202309/products/101";
        let call = |shop: &str, tok: &str| {
            detail(
                AxState(state.clone()),
                Path("101".into()),
                signed(path, SECRET, shop, &[], b""),
                token(tok),
                Bytes::new(),
            )
        };
        let r = body_json(call("CIPHER", &access).await).await;
        assert_eq!(r["code"], 0);
        assert_eq!(r["data"]["skus"][0]["seller_sku"], "SKU-1");
        assert_eq!(r["data"]["skus"][0]["price"]["sale_price"], "0.50");
        let r = body_json(call("OTHER", &other).await).await;
        assert_eq!(r["code"], 12052048);
    }

    #[tokio::test]
    async fn generated_stock_is_updated_by_inventory_update() {
        let (state, access, _) = setup();
        catalog(
            &state,
            json!({"shop_cipher": "CIPHER", "products": 3, "first_id": 100, "variations": 2, "variations_every": 2}),
        )
        .await;
        // units n = 1..5 are SKUs 103..107; product 102 (i = 2) has SKUs 106 and 107
        let path = "/product/202309/products/102/inventory/update";
        let body = br#"{"skus":[{"id":"107","inventory":[{"warehouse_id":"WH-1","quantity":42}]}]}"#;
        let r = crate::tiktok::inventory_update(
            AxState(state.clone()),
            Path("102".into()),
            signed(path, SECRET, "CIPHER", &[], body),
            token(&access),
            Bytes::from_static(body),
        )
        .await;
        assert_eq!(body_json(r).await["code"], 0);
        let r = page(&state, &access, "10", "", b"").await;
        let skus = &r["data"]["products"][2]["skus"];
        assert_eq!(skus[0]["inventory"][0]["quantity"], 5);
        assert_eq!(skus[1]["id"], "107");
        assert_eq!(skus[1]["seller_sku"], "SKU-2-1");
        assert_eq!(skus[1]["inventory"][0]["quantity"], 42);
        // and read back by inventory search
        let body = br#"{"sku_ids":["107"]}"#;
        let r = crate::tiktok::inventory_search(
            AxState(state.clone()),
            signed("/product/202309/inventory/search", SECRET, "CIPHER", &[], body),
            token(&access),
            Bytes::from_static(body),
        )
        .await;
        let r = body_json(r).await;
        assert_eq!(r["data"]["inventory"][0]["skus"][0]["total_available_quantity"], 42);
    }
}
