//! The MercadoLibre catalog: what the marketplace serves about a seller's listings and an admin
//! API that builds large catalogs quickly.
//!
//! - Discovery, `GET /users/{id}/items/search`: `search_type=scan` pages by opaque `scroll_id`s
//!   kept server-side, each valid for 5 minutes after it was issued; without `search_type`,
//!   `offset` + `limit` paging that refuses to go past 1,000 results. `limit` is at most 100.
//!   Filters `status` and `seller_sku`. Ids come in a stable order (natural order of the id).
//! - Details, `GET /items?ids=` (1–20) with `attributes=` (only those top-level fields, `id`
//!   always) and `include_attributes=all` (the variations' `attributes[]`, where their SELLER_SKU
//!   lives). An item has no top-level `seller_sku`: its SKU is the `SELLER_SKU` attribute, or the
//!   older `seller_custom_field`.
//! - Prices are exact decimals ([`Decimal`]), never floats; they are served as JSON numbers with
//!   the same digits (at most 15 significant digits, so the number round-trips).
//! - `GET /currencies/{id}`: `decimal_places` per currency (CLP, COP and PYG 0, the others 2).
//!   Price writes are in `mercadolibre_prices`.

use crate::catalog_rule::{Common, Decimal, DEFAULT_FIRST_ID};
use crate::mercadolibre::{authorize, error, Item, Meli, Variation};
use crate::state::{random_token, State};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a scroll id lives after it was issued [doc].
pub const SCROLL_TTL: Duration = Duration::from_secs(300);
/// Offset paging stops at this many results [doc].
pub const OFFSET_CAP: usize = 1_000;
/// The largest `limit` of a search page.
pub const MAX_LIMIT: usize = 100;
/// The default `limit` of a search page.
pub const DEFAULT_LIMIT: usize = 50;
/// Ids per multiget.
pub const MULTIGET_MAX: usize = 20;

// ------------------------------------------------------------------------------------------------
// Prices

/// A price: an exact [`Decimal`] with its trailing zeros dropped ("199.90" is 199.9) and at most
/// 15 significant digits, so the JSON number it is served as reads back as the same decimal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price(Decimal);

/// At most this many significant digits, so the JSON number reads back as the same decimal.
const MAX_DIGITS: usize = 15;

impl Price {
    pub const fn units(n: i64) -> Price {
        Price(Decimal::new(n, 0))
    }

    /// Plain decimal text: digits, optionally a point and more digits; no sign, no exponent.
    pub fn parse(text: &str) -> Option<Price> {
        let (int, frac) = Decimal::split(text)?;
        let (int, frac) = (int.trim_start_matches('0'), frac.trim_end_matches('0'));
        if int.len() + frac.len() > MAX_DIGITS {
            return None;
        }
        Decimal::from_digits(int, frac).map(Price)
    }

    /// A JSON number, read back from its own text (no arithmetic on a float).
    pub fn from_number(v: &Value) -> Option<Price> {
        match v {
            Value::Number(n) => Price::parse(&n.to_string()),
            _ => None,
        }
    }

    /// The admin API's price: decimal text ("199.90") or a JSON number.
    pub fn from_text_or_number(v: &Value) -> Option<Price> {
        match v {
            Value::String(s) => Price::parse(s),
            _ => Price::from_number(v),
        }
    }

    pub fn decimals(self) -> u32 {
        self.0.scale()
    }

    pub fn is_positive(self) -> bool {
        self.0.is_positive()
    }

    pub fn to_text(self) -> String {
        self.0.to_string()
    }

    /// A JSON number with exactly these digits (see [`Decimal::to_json_number`]).
    pub fn to_json(self) -> Value {
        self.0.to_json_number()
    }

    /// The amount as a `rust_decimal`, to compare prices (at most 15 digits: it always fits).
    pub fn exact(self) -> rust_decimal::Decimal {
        self.to_text().parse().unwrap_or(rust_decimal::Decimal::MAX)
    }
}

/// MercadoLibre's currencies: (id, symbol, description, decimal places).
const CURRENCIES: &[(&str, &str, &str, u32)] = &[
    ("ARS", "$", "Peso argentino", 2),
    ("BOB", "Bs", "Boliviano", 2),
    ("BRL", "R$", "Real", 2),
    ("CLF", "UF", "Unidad de Fomento", 2),
    ("CLP", "$", "Peso Chileno", 0),
    ("COP", "$", "Peso colombiano", 0),
    ("CRC", "₡", "Colones", 2),
    ("CUC", "CUC", "Peso Cubano Convertible", 2),
    ("DOP", "$", "Peso Dominicano", 2),
    ("EUR", "€", "Euro", 2),
    ("GTQ", "Q", "Quetzal Guatemalteco", 2),
    ("HNL", "L", "Lempira", 2),
    ("MXN", "$", "Peso mexicano", 2),
    ("NIO", "C$", "Córdoba", 2),
    ("PAB", "B/.", "Balboa", 2),
    ("PEN", "S/", "Soles", 2),
    ("PYG", "₲", "Guaraní", 0),
    ("USD", "U$S", "Dólar", 2),
    ("UYU", "$", "Peso Uruguayo", 2),
    ("VES", "Bs.", "Bolivar fuerte", 2),
];

pub fn currency_decimals(id: &str) -> Option<u32> {
    CURRENCIES.iter().find(|c| c.0 == id).map(|c| c.3)
}

/// A price that `currency` can carry: positive, no more decimals than it has.
pub fn check_price(p: &Price, currency: &str) -> Result<(), String> {
    let Some(decimals) = currency_decimals(currency) else {
        return Err(format!("unknown currency_id {currency}"));
    };
    if !p.is_positive() {
        return Err("price must be greater than 0".into());
    }
    if p.decimals() > decimals {
        return Err(format!(
            "price {} has more than {decimals} decimal places for currency {currency}",
            p.to_text()
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Items as MercadoLibre renders them

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemStatus {
    Active,
    Paused,
    Closed,
}

impl ItemStatus {
    pub fn parse(s: &str) -> Option<ItemStatus> {
        match s {
            "active" => Some(ItemStatus::Active),
            "paused" => Some(ItemStatus::Paused),
            "closed" => Some(ItemStatus::Closed),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ItemStatus::Active => "active",
            ItemStatus::Paused => "paused",
            ItemStatus::Closed => "closed",
        }
    }
}

/// Statuses MercadoLibre knows; the sandbox's items are only ever the first three.
const KNOWN_STATUSES: &[&str] = &[
    "active",
    "paused",
    "closed",
    "under_review",
    "inactive",
    "payment_required",
    "not_yet_active",
];

fn sku_attribute(sku: &str) -> Value {
    json!({"id": "SELLER_SKU", "name": "SKU", "value_id": null, "value_name": sku,
           "values": [{"id": null, "name": sku, "struct": null}], "value_type": "string"})
}

/// The item's site: the first three letters of its id ("MLM" for "MLM123").
pub fn site_of(id: &str) -> &str {
    id.get(..3).unwrap_or("")
}

/// The listing's page, as MercadoLibre builds it from the site and the title.
pub fn default_permalink(id: &str, title: &str) -> String {
    let site = site_of(id);
    let host = match site {
        "MLA" => "articulo.mercadolibre.com.ar",
        "MLB" => "produto.mercadolivre.com.br",
        "MLC" => "articulo.mercadolibre.cl",
        "MCO" => "articulo.mercadolibre.com.co",
        "MLU" => "articulo.mercadolibre.com.uy",
        "MPE" => "articulo.mercadolibre.com.pe",
        _ => "articulo.mercadolibre.com.mx",
    };
    let number = id.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let slug: String = title
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("https://{host}/{site}-{number}-{}-_JM", slug.trim_matches('-'))
}

fn variation_body(v: &Variation, with_attributes: bool) -> Value {
    let mut o = json!({"id": v.id, "price": v.price.to_json(), "available_quantity": v.available_quantity,
                       "attribute_combinations": [], "seller_custom_field": v.seller_custom_field});
    if with_attributes {
        o["attributes"] = Value::Array(v.seller_sku.as_deref().map(sku_attribute).into_iter().collect());
    }
    o
}

/// The whole item body. Variations carry their `attributes[]` only when asked
/// (`include_attributes=all`), as MercadoLibre does.
pub fn item_body(id: &str, it: &Item, variation_attributes: bool) -> Value {
    let available = if it.variations.is_empty() {
        it.available_quantity
    } else {
        it.variations.iter().map(|v| v.available_quantity).sum()
    };
    json!({
        "id": id,
        "site_id": site_of(id),
        "title": it.title,
        "seller_id": it.seller,
        "price": it.price.to_json(),
        "base_price": it.price.to_json(),
        "currency_id": it.currency_id,
        "available_quantity": available,
        "status": it.status.as_str(),
        "permalink": it.permalink.clone().unwrap_or_else(|| default_permalink(id, &it.title)),
        "user_product_id": it.user_product_id,
        "seller_custom_field": it.seller_custom_field,
        "attributes": it.seller_sku.as_deref().map(sku_attribute).into_iter().collect::<Vec<_>>(),
        "variations": it.variations.iter().map(|v| variation_body(v, variation_attributes)).collect::<Vec<_>>(),
    })
}

/// Keeps only the requested top-level fields (and always `id`).
pub fn select_fields(body: Value, fields: &[String]) -> Value {
    let Value::Object(all) = body else { return body };
    let kept: Map<String, Value> = all
        .into_iter()
        .filter(|(k, _)| k == "id" || fields.iter().any(|f| f == k))
        .collect();
    Value::Object(kept)
}

/// How a GET of items is rendered: `attributes=a,b,c` and `include_attributes=all`.
pub struct View {
    fields: Option<Vec<String>>,
    variation_attributes: bool,
}

impl View {
    pub fn from_query(q: &HashMap<String, String>) -> View {
        let fields: Vec<String> = q
            .get("attributes")
            .map(|a| {
                a.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        View {
            fields: (!fields.is_empty()).then_some(fields),
            variation_attributes: q.get("include_attributes").is_some_and(|v| v == "all"),
        }
    }

    pub fn render(&self, id: &str, it: &Item) -> Value {
        let body = item_body(id, it, self.variation_attributes);
        match &self.fields {
            Some(f) => select_fields(body, f),
            None => body,
        }
    }
}

/// Every SKU the item carries: the SELLER_SKU attribute, `seller_custom_field`, and the same on
/// each variation.
fn item_has_sku(it: &Item, sku: &str) -> bool {
    it.seller_sku.as_deref() == Some(sku)
        || it.seller_custom_field.as_deref() == Some(sku)
        || it
            .variations
            .iter()
            .any(|v| v.seller_sku.as_deref() == Some(sku) || v.seller_custom_field.as_deref() == Some(sku))
}

// ------------------------------------------------------------------------------------------------
// Router

pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/items", get(multiget))
        .route("/users/{id}/items/search", get(search))
        .route("/currencies/{id}", get(currency))
}

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/mercadolibre/catalog", post(generate))
        .route("/mercadolibre/catalog/expire_scrolls", post(expire_scrolls))
        .route("/mercadolibre/catalog/config", post(config))
        .merge(crate::mercadolibre::prices::admin_router())
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

pub async fn currency(AxState(state): AxState<Arc<State>>, Path(id): Path<String>) -> Response {
    state.count("mercadolibre GET /currencies/{id}");
    match CURRENCIES.iter().find(|c| c.0 == id) {
        Some((id, symbol, description, decimals)) => {
            Json(json!({"id": id, "symbol": symbol, "description": description, "decimal_places": decimals}))
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, "not_found", &format!("Currency {id} not found")),
    }
}

// ------------------------------------------------------------------------------------------------
// Details: multiget

pub async fn multiget(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    state.count("mercadolibre GET /items?ids");
    let seller = match authorize(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ids: Vec<&str> = q
        .get("ids")
        .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > MULTIGET_MAX {
        return bad_request("ids must list between 1 and 20 items");
    }
    let view = View::from_query(&q);
    let m = state.meli.lock();
    let out: Vec<Value> = ids
        .iter()
        .map(|id| match m.items.get(*id) {
            Some(it) if it.seller == seller => json!({"code": 200, "body": view.render(id, it)}),
            Some(_) => json!({"code": 403, "body": {"message": "caller.id does not match item owner", "error": "forbidden", "status": 403, "cause": []}}),
            None => json!({"code": 404, "body": {"message": format!("Item with id {id} not found"), "error": "not_found", "status": 404, "cause": []}}),
        })
        .collect();
    Json(out).into_response()
}

// ------------------------------------------------------------------------------------------------
// Discovery: scan and offset paging

/// A scan in progress: the ids it found when it started and where the next page begins.
#[derive(Clone, Debug)]
pub struct Scroll {
    seller: u64,
    ids: Arc<Vec<String>>,
    position: usize,
    expires: Instant,
}

/// Natural order of ids: "MLM2" before "MLM10"; then the text itself.
fn id_key(id: &str) -> (&str, usize, &str, &str) {
    let digits_at = id.find(|c: char| c.is_ascii_digit()).unwrap_or(id.len());
    let (prefix, rest) = id.split_at(digits_at);
    let number = rest.trim_start_matches('0');
    let number_len = number.find(|c: char| !c.is_ascii_digit()).unwrap_or(number.len());
    (prefix, number_len, number, id)
}

/// The seller's item ids matching the filters, in order.
fn matching_ids(m: &Meli, seller: u64, status: Option<&str>, sku: Option<&str>) -> Vec<String> {
    let mut ids: Vec<&String> = m
        .items
        .iter()
        .filter(|(_, it)| it.seller == seller)
        .filter(|(_, it)| status.is_none_or(|s| it.status.as_str() == s))
        .filter(|(_, it)| sku.is_none_or(|s| item_has_sku(it, s)))
        .map(|(id, _)| id)
        .collect();
    ids.sort_unstable_by(|a, b| id_key(a).cmp(&id_key(b)));
    ids.into_iter().cloned().collect()
}

fn parse_limit(q: &HashMap<String, String>) -> Result<usize, Response> {
    let Some(raw) = q.get("limit") else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<i64>() {
        Ok(n) if n > MAX_LIMIT as i64 => Err(bad_request(&format!(
            "The limit param must be lower than or equal to {MAX_LIMIT}"
        ))),
        Ok(n) if n >= 1 => Ok(n as usize),
        _ => Err(bad_request(&format!(
            "Invalid limit {raw}: must be a number between 1 and {MAX_LIMIT}"
        ))),
    }
}

fn scroll_invalid() -> Response {
    bad_request("The scroll_id is invalid or expired. Start a new search with search_type=scan")
}

pub async fn search(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    state.count("mercadolibre GET /users/{id}/items/search");
    let seller = match authorize(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    if user.parse::<u64>().ok() != Some(seller) {
        return error(StatusCode::FORBIDDEN, "forbidden", "caller.id does not match user");
    }
    let limit = match parse_limit(&q) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let status = q.get("status").map(String::as_str);
    if let Some(s) = status {
        if !KNOWN_STATUSES.contains(&s) {
            return bad_request(&format!("Invalid status {s}"));
        }
    }
    let sku = q.get("seller_sku").map(String::as_str);
    match q.get("search_type").map(String::as_str) {
        Some("scan") => {
            if q.contains_key("offset") {
                return bad_request("offset cannot be used with search_type=scan: follow the scroll_id");
            }
            scan(
                &state,
                seller,
                limit,
                q.get("scroll_id").map(String::as_str),
                status,
                sku,
            )
        }
        Some(other) => bad_request(&format!("Invalid search_type {other}")),
        None if q.contains_key("scroll_id") => bad_request("scroll_id can only be used with search_type=scan"),
        None => {
            let offset = match q.get("offset").map(|o| o.parse::<usize>()) {
                None => 0,
                Some(Ok(o)) => o,
                Some(Err(_)) => return bad_request("Invalid offset: must be a non-negative number"),
            };
            if offset.saturating_add(limit) > OFFSET_CAP {
                return bad_request(&format!(
                    "The sum of offset and limit cannot exceed {OFFSET_CAP}. Use search_type=scan to get more results"
                ));
            }
            let ids = matching_ids(&state.meli.lock(), seller, status, sku);
            let page: Vec<&String> = ids.iter().skip(offset).take(limit).collect();
            Json(json!({"seller_id": seller.to_string(), "query": null,
                        "paging": {"limit": limit, "offset": offset, "total": ids.len()},
                        "results": page, "orders": [{"id": "id_asc", "name": "Order by item id"}]}))
            .into_response()
        }
    }
}

/// One page of a scan. A scroll id can be replayed (the same page again) until it expires; each
/// page issues a new one, valid for the TTL from then.
fn scan(
    state: &State,
    seller: u64,
    limit: usize,
    scroll_id: Option<&str>,
    status: Option<&str>,
    sku: Option<&str>,
) -> Response {
    let now = Instant::now();
    let mut guard = state.meli.lock();
    let m = &mut *guard;
    m.scrolls.retain(|_, s| s.expires > now);
    let (ids, position) = match scroll_id {
        Some(token) => match m.scrolls.get(token) {
            Some(s) if s.seller == seller => (s.ids.clone(), s.position),
            _ => {
                drop(guard);
                state.count("mercadolibre scroll invalid");
                return scroll_invalid();
            }
        },
        None => (Arc::new(matching_ids(m, seller, status, sku)), 0),
    };
    let page: Vec<String> = ids.iter().skip(position).take(limit).cloned().collect();
    let token = random_token("");
    let total = ids.len();
    m.scrolls.insert(
        token.clone(),
        Scroll {
            seller,
            ids,
            position: position + page.len(),
            expires: now + m.scroll_ttl,
        },
    );
    Json(
        json!({"seller_id": seller.to_string(), "query": null, "scroll_id": token, "results": page,
                "paging": {"limit": limit, "total": total}}),
    )
    .into_response()
}

// ------------------------------------------------------------------------------------------------
// Admin

async fn expire_scrolls(AxState(state): AxState<Arc<State>>) -> Response {
    let mut m = state.meli.lock();
    let n = m.scrolls.len();
    m.scrolls.clear();
    Json(json!({"expired": n})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogConfig {
    /// how long a scroll id lives (default 300 s)
    scroll_ttl_s: Option<f64>,
}

async fn config(AxState(state): AxState<Arc<State>>, body: axum::body::Bytes) -> Response {
    let c: CatalogConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return bad_request(&e.to_string()),
    };
    if let Some(ttl) = c.scroll_ttl_s {
        if !(ttl.is_finite() && ttl >= 0.0) {
            return bad_request("scroll_ttl_s must be a non-negative number");
        }
        state.meli.lock().scroll_ttl = Duration::from_secs_f64(ttl);
    }
    Json(json!({"scroll_ttl_s": state.meli.lock().scroll_ttl.as_secs_f64()})).into_response()
}

fn default_currency() -> String {
    "MXN".into()
}
fn default_status() -> String {
    "active".into()
}

/// The catalog generator's body: the fields every marketplace's generator takes ([`Common`]) and
/// the items' seller, currency and status.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    pub seller_id: u64,
    #[serde(flatten)]
    pub common: Common,
    #[serde(default = "default_currency")]
    pub currency: String,
    #[serde(default = "default_status")]
    pub status: String,
}

impl Generate {
    /// Its fields besides the common ones.
    const OWN_FIELDS: &[&str] = &["seller_id", "currency", "status"];
}

const MAX_PRODUCTS: u64 = 1_000_000;
const MAX_UNITS: u64 = 2_000_000;
const MAX_VARIATIONS: u64 = 100;

/// Why the generator refused: bad input (400) or ids owned by another seller (409).
#[derive(Debug)]
pub enum Refused {
    Bad(String),
    Conflict(String),
}

impl From<String> for Refused {
    fn from(s: String) -> Refused {
        Refused::Bad(s)
    }
}

impl From<&str> for Refused {
    fn from(s: &str) -> Refused {
        Refused::Bad(s.to_string())
    }
}

/// Builds the catalog into `m`; answers the counts. Product i is item `MLM{first_id + i}`; when it
/// has variations (even just one), its units are them, unit j numbered `(first_id + i) * 100 + j`.
pub fn build_catalog(m: &mut Meli, g: &Generate) -> Result<Value, Refused> {
    let c = &g.common;
    let first_id = c.first_id_or(DEFAULT_FIRST_ID);
    if c.products > MAX_PRODUCTS {
        return Err(format!("products is at most {MAX_PRODUCTS}").into());
    }
    if c.variations > MAX_VARIATIONS {
        return Err(format!("variations is at most {MAX_VARIATIONS} (variation ids are item number * 100 + j)").into());
    }
    // products and variations are bounded: no overflow
    let units = c.units().unwrap_or(u64::MAX);
    if units > MAX_UNITS {
        return Err(format!("the catalog would have {units} units; at most {MAX_UNITS}").into());
    }
    let last_number = first_id
        .checked_add(c.products)
        .ok_or("first_id + products overflows")?;
    if c.products_with_variations() > 0 && last_number.checked_mul(100).is_none_or(|x| x > i64::MAX as u64) {
        return Err("first_id is too large for variation ids (item number * 100 + j)".into());
    }
    let price = Price::from_text_or_number(&c.price).ok_or("price must be decimal text such as \"199.90\"")?;
    check_price(&price, &g.currency)?;
    if !(0..=99_999_999).contains(&c.stock) {
        return Err("stock must be between 0 and 99999999".into());
    }
    let status = ItemStatus::parse(&g.status).ok_or("status must be active, paused or closed")?;
    // The seller's own items are replaced; another seller's are never taken over.
    if let Some(taken) = (first_id..last_number).find(|n| {
        m.items
            .get(&format!("MLM{n}"))
            .is_some_and(|it| it.seller != g.seller_id)
    }) {
        return Err(Refused::Conflict(format!(
            "MLM{taken} belongs to another seller: nothing was created"
        )));
    }
    m.items.reserve(c.products as usize);
    let mut plan = c.plan();
    for p in plan.by_ref() {
        let number = first_id + p.i;
        let mut item = Item::new(g.seller_id, format!("Product {}", p.i));
        item.price = price;
        item.currency_id = g.currency.clone();
        item.status = status;
        if c.has_variations(p.i) {
            item.variations = p
                .units
                .into_iter()
                .map(|u| Variation {
                    id: (number * 100 + u.j) as i64,
                    available_quantity: c.stock,
                    price,
                    seller_sku: u.sku,
                    seller_custom_field: None,
                })
                .collect();
        } else {
            item.available_quantity = c.stock;
            item.seller_sku = p.units.into_iter().next().and_then(|u| u.sku);
        }
        m.items.insert(format!("MLM{number}"), item);
    }
    let mut out = plan.counts().to_json();
    let any = c.products > 0;
    out["item_ids_first"] = json!(any.then(|| format!("MLM{first_id}")));
    out["item_ids_last"] = json!(any.then(|| format!("MLM{}", last_number - 1)));
    Ok(out)
}

async fn generate(AxState(state): AxState<Arc<State>>, body: axum::body::Bytes) -> Response {
    let g: Generate = match serde_json::from_slice(&body) {
        Ok(g) => g,
        Err(e) => return bad_request(&Common::name_accepted_fields(e.to_string(), Generate::OWN_FIELDS)),
    };
    let out = build_catalog(&mut state.meli.lock(), &g);
    match out {
        Ok(v) => Json(v).into_response(),
        Err(Refused::Bad(e)) => bad_request(&e),
        Err(Refused::Conflict(e)) => error(StatusCode::CONFLICT, "conflict", &e),
    }
}

// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SELLER: u64 = 77;

    fn setup() -> (Arc<State>, HeaderMap) {
        let state = Arc::new(State::default());
        let mut m = state.meli.lock();
        m.apps.insert("app".into(), "secret".into());
        let g = m.grant(SELLER, "app");
        drop(m);
        let token = g["access_token"].as_str().unwrap_or_default().to_string();
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        (state, h)
    }

    fn gen(state: &State, body: Value) -> Value {
        let g: Generate = serde_json::from_value(body).expect("generate body");
        build_catalog(&mut state.meli.lock(), &g).expect("catalog")
    }

    fn query(pairs: &[(&str, &str)]) -> Query<HashMap<String, String>> {
        Query(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    async fn json_of(r: Response) -> (StatusCode, Value) {
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 10_000_000).await.expect("body");
        (status, serde_json::from_slice(&body).expect("json"))
    }

    async fn do_search(state: &Arc<State>, h: &HeaderMap, pairs: &[(&str, &str)]) -> (StatusCode, Value) {
        json_of(
            search(
                AxState(state.clone()),
                h.clone(),
                Path(SELLER.to_string()),
                query(pairs),
            )
            .await,
        )
        .await
    }

    async fn do_multiget(state: &Arc<State>, h: &HeaderMap, pairs: &[(&str, &str)]) -> (StatusCode, Value) {
        json_of(multiget(AxState(state.clone()), h.clone(), query(pairs)).await).await
    }

    fn assert_ml_error(v: &Value, status: u16) {
        assert_eq!(v["status"], status, "{v}");
        assert!(
            v["message"].is_string() && v["error"].is_string() && v["cause"].is_array(),
            "{v}"
        );
    }

    #[test]
    fn prices_stay_exact() {
        for (text, json_text, canon) in [
            ("199.90", "199.9", "199.9"),
            ("1299.5", "1299.5", "1299.5"),
            ("100.00", "100", "100"),
            ("0.01", "0.01", "0.01"),
            ("123456789012.34", "123456789012.34", "123456789012.34"),
        ] {
            let p = Price::parse(text).expect(text);
            assert_eq!(p.to_text(), canon);
            assert_eq!(p.to_json().to_string(), json_text);
            assert_eq!(Price::from_number(&p.to_json()), Some(p));
        }
        for bad in ["", "-1", "1e3", "1.", ".5", "12a", "1234567890123456"] {
            assert_eq!(Price::parse(bad), None, "{bad}");
        }
        assert!(check_price(&Price::parse("10.5").expect("p"), "CLP").is_err());
        assert!(check_price(&Price::parse("10").expect("p"), "CLP").is_ok());
        assert!(check_price(&Price::parse("0").expect("p"), "MXN").is_err());
    }

    /// The generation rule, small enough to count by hand: 7 products, every 3rd (i = 0, 3, 6)
    /// with 2 variations → units 1..=10: i0 (1,2) i1 (3) i2 (4) i3 (5,6) i4 (7) i5 (8) i6 (9,10).
    /// missing every 4 → units 4 and 8 have none; duplicate every 3 → units 3, 6, 9 copy 2, 5, 8;
    /// unit 9 copies unit 8, which has none, so it has none either.
    #[test]
    fn the_generator_follows_the_rule() {
        let (state, _) = setup();
        let out = gen(
            &state,
            json!({"seller_id": SELLER, "products": 7, "first_id": 500, "variations": 2, "variations_every": 3,
                   "sku_prefix": "P", "missing_sku_every": 4, "duplicate_sku_every": 3, "price": "199.90",
                   "currency": "MXN", "stock": 4, "status": "active"}),
        );
        assert_eq!(
            out,
            json!({"products": 7, "units": 10, "without_sku": 3, "duplicated": 2,
                   "item_ids_first": "MLM500", "item_ids_last": "MLM506"})
        );
        let m = state.meli.lock();
        let skus = |id: &str| -> Vec<Option<String>> {
            let it = &m.items[id];
            if it.variations.is_empty() {
                vec![it.seller_sku.clone()]
            } else {
                assert_eq!(it.seller_sku, None, "a product with variations has no item SKU");
                it.variations.iter().map(|v| v.seller_sku.clone()).collect()
            }
        };
        let s = |x: &str| Some(x.to_string());
        assert_eq!(skus("MLM500"), vec![s("P0-0"), s("P0-1")]);
        assert_eq!(skus("MLM501"), vec![s("P0-1")]); // unit 3 duplicates unit 2
        assert_eq!(skus("MLM502"), vec![None]); // unit 4 missing
        assert_eq!(skus("MLM503"), vec![s("P3-0"), s("P3-0")]); // unit 6 duplicates unit 5
        assert_eq!(skus("MLM504"), vec![s("P4")]);
        assert_eq!(skus("MLM505"), vec![None]); // unit 8 missing
        assert_eq!(skus("MLM506"), vec![None, s("P6-1")]); // unit 9 copies unit 8: none
        let ids: Vec<i64> = m.items["MLM503"].variations.iter().map(|v| v.id).collect();
        assert_eq!(ids, vec![50300, 50301]);
        let body = item_body("MLM500", &m.items["MLM500"], false);
        assert_eq!(body["price"].to_string(), "199.9");
        assert_eq!(body["currency_id"], "MXN");
        assert_eq!(body["available_quantity"], 8);
        assert_eq!(body["seller_id"], SELLER);
    }

    #[test]
    fn the_generator_is_fast_and_checks_its_input() {
        let (state, _) = setup();
        let start = Instant::now();
        let out = gen(
            &state,
            json!({"seller_id": SELLER, "products": 12_000, "variations": 3, "variations_every": 4}),
        );
        assert_eq!(out["units"], 3_000 * 3 + 9_000);
        assert_eq!(out["item_ids_last"], "MLM1011999");
        assert!(start.elapsed() < Duration::from_millis(900), "{:?}", start.elapsed());
        let mut m = state.meli.lock();
        for bad in [
            json!({"seller_id": 1, "products": 1, "price": "10.555"}),
            json!({"seller_id": 1, "products": 1, "price": "10.5", "currency": "CLP"}),
            json!({"seller_id": 1, "products": 1, "status": "sold"}),
            json!({"seller_id": 1, "products": 1, "variations": 101, "variations_every": 1}),
            json!({"seller_id": 1, "products": 2_000_000}),
        ] {
            let g: Generate = serde_json::from_value(bad.clone()).expect("body");
            assert!(matches!(build_catalog(&mut m, &g), Err(Refused::Bad(_))), "{bad}");
        }
        // another seller's ids are not taken over; the seller's own are replaced
        let g: Generate =
            serde_json::from_value(json!({"seller_id": 1, "products": 1, "first_id": 1_011_999})).expect("body");
        assert!(matches!(build_catalog(&mut m, &g), Err(Refused::Conflict(_))));
        assert_eq!(m.items["MLM1011999"].seller, SELLER);
        let g: Generate =
            serde_json::from_value(json!({"seller_id": SELLER, "products": 1, "first_id": 1_011_999, "stock": 1}))
                .expect("body");
        assert!(build_catalog(&mut m, &g).is_ok());
        assert_eq!(m.items["MLM1011999"].available_quantity, 1);
    }

    /// The SKU lives in `attributes[]` (SELLER_SKU), never as a top-level `seller_sku`; the
    /// variations' attributes appear only with include_attributes=all.
    #[tokio::test]
    async fn seller_sku_is_only_an_attribute() {
        let (state, h) = setup();
        gen(
            &state,
            json!({"seller_id": SELLER, "products": 2, "variations": 2, "variations_every": 2}),
        );
        let (code, v) = do_multiget(&state, &h, &[("ids", "MLM1000000,MLM1000001")]).await;
        assert_eq!(code, StatusCode::OK);
        let with_vars = &v[0]["body"];
        let single = &v[1]["body"];
        for body in [with_vars, single] {
            assert!(body.get("seller_sku").is_none(), "{body}");
        }
        assert_eq!(single["attributes"][0]["id"], "SELLER_SKU");
        assert_eq!(single["attributes"][0]["value_name"], "SKU-1");
        assert_eq!(with_vars["attributes"], json!([]));
        let var = &with_vars["variations"][0];
        assert!(
            var.get("attributes").is_none() && var.get("seller_sku").is_none(),
            "{var}"
        );
        assert_eq!(var["id"], 100_000_000);
        assert_eq!(var["price"], 100);
        assert_eq!(var["available_quantity"], 5);
        assert!(
            !v.to_string().contains("SKU-0-"),
            "variation SKUs leak without include_attributes"
        );

        let (_, v) = do_multiget(&state, &h, &[("ids", "MLM1000000"), ("include_attributes", "all")]).await;
        let var = &v[0]["body"]["variations"][1];
        assert_eq!(var["attributes"][0]["id"], "SELLER_SKU");
        assert_eq!(var["attributes"][0]["value_name"], "SKU-0-1");
        assert!(var.get("seller_sku").is_none());
    }

    #[tokio::test]
    async fn multiget_selects_attributes() {
        let (state, h) = setup();
        gen(
            &state,
            json!({"seller_id": SELLER, "products": 3, "price": "1299.50", "variations": 2, "variations_every": 3}),
        );
        let (code, v) = do_multiget(
            &state,
            &h,
            &[
                ("ids", "MLM1000001,MLM9,MLM1000000"),
                ("attributes", "title,price,currency_id"),
            ],
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v[0]["code"], 200);
        assert_eq!(
            v[0]["body"],
            json!({"id": "MLM1000001", "title": "Product 1", "price": 1299.5, "currency_id": "MXN"})
        );
        assert_eq!(v[0]["body"]["price"].to_string(), "1299.5");
        assert_eq!(v[1]["code"], 404);
        assert_ml_error(&v[1]["body"], 404);
        // variations asked for, with their attributes
        let (_, v) = do_multiget(
            &state,
            &h,
            &[
                ("ids", "MLM1000000"),
                ("attributes", "variations"),
                ("include_attributes", "all"),
            ],
        )
        .await;
        let body = v[0]["body"].as_object().expect("body");
        assert_eq!(body.keys().collect::<Vec<_>>(), vec!["id", "variations"]);
        assert_eq!(body["variations"][0]["attributes"][0]["value_name"], "SKU-0-0");
        // without attributes=: everything the item has
        let (_, v) = do_multiget(&state, &h, &[("ids", "MLM1000002")]).await;
        for field in [
            "id",
            "title",
            "price",
            "currency_id",
            "available_quantity",
            "status",
            "permalink",
            "user_product_id",
            "attributes",
            "variations",
            "seller_custom_field",
        ] {
            assert!(v[0]["body"].get(field).is_some(), "{field} missing");
        }
        // 0 or 21 ids are refused in MercadoLibre's shape
        let many: Vec<String> = (0..21).map(|i| format!("MLM{i}")).collect();
        for ids in [String::new(), many.join(",")] {
            let (code, v) = do_multiget(&state, &h, &[("ids", ids.as_str())]).await;
            assert_eq!(code, StatusCode::BAD_REQUEST);
            assert_ml_error(&v, 400);
        }
    }

    /// A scan over a few hundred items sees every id once, in order, then an empty page.
    #[tokio::test]
    async fn scan_pages_through_every_item_once() {
        let (state, h) = setup();
        gen(&state, json!({"seller_id": SELLER, "products": 345}));
        gen(&state, json!({"seller_id": 5, "products": 10, "first_id": 1}));
        let (code, first) = do_search(&state, &h, &[("search_type", "scan"), ("limit", "100")]).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(first["paging"], json!({"limit": 100, "total": 345}));
        let mut seen: Vec<String> = Vec::new();
        let mut page = first;
        let mut calls = 1;
        loop {
            let results = page["results"].as_array().expect("results").clone();
            if results.is_empty() {
                break;
            }
            seen.extend(results.iter().filter_map(|v| v.as_str().map(str::to_string)));
            let scroll = page["scroll_id"].as_str().expect("scroll_id").to_string();
            assert!(!scroll.is_empty());
            let (code, next) = do_search(
                &state,
                &h,
                &[("search_type", "scan"), ("limit", "100"), ("scroll_id", &scroll)],
            )
            .await;
            assert_eq!(code, StatusCode::OK, "{next}");
            page = next;
            calls += 1;
        }
        assert_eq!(calls, 5, "4 full or partial pages and the empty one");
        let expected: Vec<String> = (0..345).map(|i| format!("MLM{}", 1_000_000 + i)).collect();
        assert_eq!(seen, expected);
        assert_eq!(state.counters.lock()["mercadolibre GET /users/{id}/items/search"], 5);
    }

    #[tokio::test]
    async fn scan_filters_by_status_and_sku() {
        let (state, h) = setup();
        gen(&state, json!({"seller_id": SELLER, "products": 5}));
        gen(
            &state,
            json!({"seller_id": SELLER, "products": 3, "first_id": 2_000_000, "status": "paused",
                   "variations": 2, "variations_every": 1, "sku_prefix": "V"}),
        );
        let (_, v) = do_search(&state, &h, &[("search_type", "scan"), ("status", "paused")]).await;
        assert_eq!(v["results"], json!(["MLM2000000", "MLM2000001", "MLM2000002"]));
        let (_, v) = do_search(&state, &h, &[("seller_sku", "SKU-3")]).await;
        assert_eq!(v["results"], json!(["MLM1000003"]));
        let (_, v) = do_search(&state, &h, &[("seller_sku", "V1-1")]).await;
        assert_eq!(v["results"], json!(["MLM2000001"]), "a variation's SELLER_SKU");
        let (code, v) = do_search(&state, &h, &[("status", "sold")]).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_ml_error(&v, 400);
    }

    /// Expired (or unknown) scroll ids are refused with 400; a fresh scan works.
    #[tokio::test]
    async fn expired_scroll_ids_are_refused() {
        let (state, h) = setup();
        gen(&state, json!({"seller_id": SELLER, "products": 30}));
        let (_, first) = do_search(&state, &h, &[("search_type", "scan"), ("limit", "10")]).await;
        let scroll = first["scroll_id"].as_str().expect("scroll_id").to_string();
        // the scroll id works, and replaying it gives the same page
        for _ in 0..2 {
            let (code, v) = do_search(&state, &h, &[("search_type", "scan"), ("scroll_id", &scroll)]).await;
            assert_eq!(code, StatusCode::OK);
            assert_eq!(v["results"][0], "MLM1000010");
        }
        let r = expire_scrolls(AxState(state.clone())).await;
        let (_, v) = json_of(r).await;
        assert!(v["expired"].as_u64().is_some_and(|n| n >= 1));
        let (code, v) = do_search(&state, &h, &[("search_type", "scan"), ("scroll_id", &scroll)]).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_ml_error(&v, 400);
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("scroll_id") && message.contains("expired"),
            "{message}"
        );
        let (code, _) = do_search(&state, &h, &[("search_type", "scan"), ("scroll_id", "made-up")]).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        // a fresh scan starts over
        let (code, v) = do_search(&state, &h, &[("search_type", "scan"), ("limit", "10")]).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["results"][0], "MLM1000000");
        // and scroll ids die of age too
        state.meli.lock().scroll_ttl = Duration::from_millis(0);
        let (_, v) = do_search(&state, &h, &[("search_type", "scan"), ("limit", "10")]).await;
        let scroll = v["scroll_id"].as_str().expect("scroll_id").to_string();
        let (code, _) = do_search(&state, &h, &[("search_type", "scan"), ("scroll_id", &scroll)]).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn offset_paging_stops_at_1000() {
        let (state, h) = setup();
        gen(&state, json!({"seller_id": SELLER, "products": 1_200}));
        let (code, v) = do_search(&state, &h, &[("offset", "950"), ("limit", "50")]).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["paging"], json!({"limit": 50, "offset": 950, "total": 1200}));
        assert_eq!(v["results"][0], "MLM1000950");
        assert_eq!(v["results"].as_array().map(Vec::len), Some(50));
        let (code, v) = do_search(&state, &h, &[("offset", "951"), ("limit", "50")]).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_ml_error(&v, 400);
        let (code, _) = do_search(&state, &h, &[("offset", "1000")]).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        // default limit 50
        let (_, v) = do_search(&state, &h, &[]).await;
        assert_eq!(v["paging"]["limit"], 50);
        assert_eq!(v["results"].as_array().map(Vec::len), Some(50));
    }

    #[tokio::test]
    async fn limits_above_100_are_refused() {
        let (state, h) = setup();
        gen(&state, json!({"seller_id": SELLER, "products": 3}));
        for pairs in [
            vec![("limit", "101")],
            vec![("search_type", "scan"), ("limit", "101")],
            vec![("limit", "0")],
            vec![("limit", "ten")],
            vec![("search_type", "hash")],
            vec![("scroll_id", "x")],
        ] {
            let (code, v) = do_search(&state, &h, &pairs).await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{pairs:?}");
            assert_ml_error(&v, 400);
        }
        let (code, v) = do_search(&state, &h, &[("search_type", "scan"), ("limit", "100")]).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["results"].as_array().map(Vec::len), Some(3));
        // another user's search
        let r = search(AxState(state.clone()), h.clone(), Path("5".into()), query(&[])).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = search(AxState(state.clone()), h.clone(), Path("abc".into()), query(&[])).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }

    /// The per-seller limit and a failing seller apply to catalog calls too, and each is counted.
    #[tokio::test]
    async fn catalog_calls_are_rate_limited_and_counted() {
        let (state, h) = setup();
        gen(&state, json!({"seller_id": SELLER, "products": 3}));
        state.meli.lock().rate.limit = Some(2);
        let (code, _) = do_search(&state, &h, &[("search_type", "scan")]).await;
        assert_eq!(code, StatusCode::OK);
        let (code, _) = do_multiget(&state, &h, &[("ids", "MLM1000000")]).await;
        assert_eq!(code, StatusCode::OK);
        let (code, v) = do_search(&state, &h, &[("search_type", "scan")]).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        assert_ml_error(&v, 429);
        let (code, _) = do_multiget(&state, &h, &[("ids", "MLM1000000")]).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        state.meli.lock().rate.limit = None;
        state.meli.lock().failing_sellers.insert(SELLER, 503);
        let (code, _) = do_search(&state, &h, &[("search_type", "scan")]).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        let c = state.counters.lock();
        assert_eq!(c["mercadolibre GET /users/{id}/items/search"], 3);
        assert_eq!(c["mercadolibre GET /items?ids"], 2);
        assert_eq!(c["mercadolibre 429"], 2);
    }

    /// Generated items belong to the seller: the stock PUT writes them like any item.
    #[tokio::test]
    async fn generated_items_take_stock_writes() {
        let (state, h) = setup();
        gen(
            &state,
            json!({"seller_id": SELLER, "products": 2, "variations": 2, "variations_every": 2}),
        );
        let r = crate::mercadolibre::put_item(
            AxState(state.clone()),
            h.clone(),
            Path("MLM1000001".into()),
            axum::body::Bytes::from(r#"{"available_quantity": 9}"#),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = r#"{"variations":[{"id":100000000,"available_quantity":1},{"id":100000001}]}"#;
        let r = crate::mercadolibre::put_item(
            AxState(state.clone()),
            h.clone(),
            Path("MLM1000000".into()),
            axum::body::Bytes::from(body),
        )
        .await;
        let (code, v) = json_of(r).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(v["available_quantity"], 6);
        let m = state.meli.lock();
        assert_eq!(m.items["MLM1000001"].available_quantity, 9);
        assert_eq!(m.items["MLM1000000"].writes, 1);
        assert_eq!(
            m.items["MLM1000000"].variations[1].seller_sku.as_deref(),
            Some("SKU-0-1"),
            "a stock write keeps the variation's SKU"
        );
    }
}
