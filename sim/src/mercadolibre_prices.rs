//! MercadoLibre prices. A price is written with the stock, by `PUT /items/{id}` (in
//! `mercadolibre`): `{"price": 1000}` on an item without variations, or
//! `{"variations":[{"id":V1,"price":69.99},{"id":V2,"price":69.99}]}`, each entry optionally with
//! its `available_quantity` too (an entry without `price` keeps its price). The price stored is
//! the one `GET /items/{id}`, the multiget and `/items/{id}/prices` serve. This module holds the
//! rules a price must meet, the read-only `/items/{id}/prices` and the admin API for prices.
//!
//! The rules [doc], each a 400 `validation_error` with one `cause[]`:
//! - the item must be `active`, else `item.price.not_modifiable`;
//! - a JSON number (a string, a negative number or zero is `item.price.invalid`), read from its
//!   own digits, never through a float;
//! - no more decimals than `GET /currencies/{id}` gives the item's currency (`item.price.invalid`,
//!   "price 10.555 has more than 2 decimal places for currency MXN");
//! - all the variations of an item have the same price: after the edit they must all be equal
//!   (`item.variations.price.invalid`); a top-level `price` on an item with variations is
//!   `item.price.invalid`. A variation left out of `variations` is deleted, as MercadoLibre does:
//!   the admin read counts deletions so a test can prove a client never caused one.
//!
//! Decisions where MercadoLibre publishes nothing [?]:
//! - The minimum price is per site (the id's first three letters), default 1 in every currency,
//!   set by the admin API; below it: `item.price.invalid`, "price 0.5 is below the minimum
//!   price 1 of site MLM".
//! - `GET /items/{id}/prices` answers the item's one standard price, as MercadoLibre's prices API
//!   shapes it: `{"id":"MLM1","prices":[{"id":"1","type":"standard","amount":69.99,
//!   "regular_amount":null,"currency_id":"MXN","last_updated":"...Z","conditions":
//!   {"context_restrictions":["channel_marketplace"],"start_time":null,"end_time":null,
//!   "eligible":true},"exchange_rate":null,"metadata":{}}]}`. `context` and other query
//!   parameters are ignored. Only the item's seller may read it (403 otherwise, like
//!   `GET /items/{id}`); `last_updated` is the last price write, or when the sandbox first served
//!   a price for items never written.
//! - `POST` and `PUT /items/{id}/prices` (writes of standard prices there) are refused with 405
//!   `method_not_allowed` and `Allow: GET`, after the usual bearer check (so a bad token is
//!   still a 401), whatever the item.
//! - Duplicate variation ids, or an id that is not an integer, in one PUT are
//!   `item.variations.invalid`.

use super::{authorize, error, validation_cause, Item, Variation};
use crate::mercadolibre_catalog::{self as catalog, ItemStatus, Price};
use crate::state::{rfc3339_now, State};
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// The minimum price of a site nobody configured.
pub const DEFAULT_MINIMUM: Price = Price::units(1);

/// Per-site minimum prices, set by the admin API.
#[derive(Default)]
pub struct PriceRules {
    minimums: BTreeMap<String, Price>,
}

/// A site's minimum price.
#[derive(Clone, Copy)]
pub struct Minimum<'a> {
    pub site: &'a str,
    pub price: Price,
}

impl PriceRules {
    pub fn for_site<'a>(&self, site: &'a str) -> Minimum<'a> {
        let price = self.minimums.get(site).copied().unwrap_or(DEFAULT_MINIMUM);
        Minimum { site, price }
    }

    fn to_json(&self) -> Value {
        let sites: Map<String, Value> = self
            .minimums
            .iter()
            .map(|(site, p)| (site.clone(), json!(p.to_text())))
            .collect();
        json!({"default": DEFAULT_MINIMUM.to_text(), "sites": sites})
    }
}

/// A price in a PUT: a JSON number the item's currency can carry, at least the site's minimum,
/// on an active item.
pub fn new_price(it: &Item, minimum: Minimum, v: &Value) -> Result<Price, Response> {
    let invalid = |message: &str| validation_cause("item.price.invalid", message);
    if it.status != ItemStatus::Active {
        return Err(validation_cause(
            "item.price.not_modifiable",
            &format!("The price of a {} item cannot be modified", it.status.as_str()),
        ));
    }
    let p = Price::from_number(v).ok_or_else(|| invalid("price must be a positive number"))?;
    catalog::check_price(&p, &it.currency_id).map_err(|e| invalid(&e))?;
    if p.exact() < minimum.price.exact() {
        return Err(invalid(&format!(
            "price {} is below the minimum price {} of site {}",
            p.to_text(),
            minimum.price.to_text(),
            minimum.site
        )));
    }
    Ok(p)
}

/// Every variation of an item has the same price [doc]: that price, or the refusal.
pub fn same_price(vs: &[Variation]) -> Result<Price, Response> {
    let refused = || {
        validation_cause(
            "item.variations.price.invalid",
            "all the variations of an item must have the same price: send it on every variation",
        )
    };
    let first = vs.first().map(|v| v.price).ok_or_else(refused)?;
    if vs.iter().any(|v| v.price != first) {
        return Err(refused());
    }
    Ok(first)
}

// ------------------------------------------------------------------------------------------------
// /items/{id}/prices

pub fn router() -> Router<Arc<State>> {
    Router::new().route(
        "/items/{id}/prices",
        get(get_prices).post(refuse_write).put(refuse_write),
    )
}

/// When the sandbox first served a price: `last_updated` of prices never written.
fn first_served() -> &'static str {
    static FIRST: OnceLock<String> = OnceLock::new();
    FIRST.get_or_init(rfc3339_now)
}

/// The item's standard price as MercadoLibre's prices API shapes it.
pub fn prices_body(id: &str, it: &Item) -> Value {
    let updated = it.price_updated.as_deref().unwrap_or_else(|| first_served());
    json!({"id": id, "prices": [{
        "id": "1",
        "type": "standard",
        "amount": it.price.to_json(),
        "regular_amount": null,
        "currency_id": it.currency_id,
        "last_updated": updated,
        "conditions": {"context_restrictions": ["channel_marketplace"], "start_time": null,
                       "end_time": null, "eligible": true},
        "exchange_rate": null,
        "metadata": {},
    }]})
}

async fn get_prices(AxState(state): AxState<Arc<State>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    state.count("mercadolibre GET /items/{id}/prices");
    let seller = match authorize(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let m = state.meli.lock();
    match m.items.get(&id) {
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("Item with id {id} not found"),
        ),
        Some(it) if it.seller != seller => error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "caller.id does not match item owner",
        ),
        Some(it) => Json(prices_body(&id, it)).into_response(),
    }
}

/// Standard prices are read-only here [doc]: they are written with `PUT /items/{id}`.
async fn refuse_write(AxState(state): AxState<Arc<State>>, method: axum::http::Method, headers: HeaderMap) -> Response {
    state.count(format!("mercadolibre {method} /items/{{id}}/prices"));
    if let Err(r) = authorize(&state, &headers) {
        return r;
    }
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Standard prices are read-only in /items/{id}/prices: change the price with PUT /items/{id}",
    );
    r.headers_mut()
        .insert("allow", axum::http::HeaderValue::from_static("GET"));
    r
}

// ------------------------------------------------------------------------------------------------
// Admin

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/mercadolibre/items/{id}/prices", get(admin_item_prices))
        .route(
            "/mercadolibre/prices/minimum",
            get(admin_minimums).post(admin_set_minimum),
        )
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// `GET /_admin/mercadolibre/items/{id}/prices`: the stored prices as exact text, the price
/// writes and the variations deleted by edits.
async fn admin_item_prices(AxState(state): AxState<Arc<State>>, Path(id): Path<String>) -> Response {
    let m = state.meli.lock();
    let Some(it) = m.items.get(&id) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such item");
    };
    let site = catalog::site_of(&id);
    let variations: Vec<Value> = it
        .variations
        .iter()
        .map(|v| json!({"id": v.id, "price": v.price.to_text(), "available_quantity": v.available_quantity}))
        .collect();
    Json(json!({
        "id": id,
        "site_id": site,
        "currency_id": it.currency_id,
        "status": it.status.as_str(),
        "price": it.price.to_text(),
        "variations": variations,
        "price_writes": it.price_writes,
        "stock_writes": it.writes,
        "variations_deleted": it.variations_deleted,
        "minimum_price": m.prices.for_site(site).price.to_text(),
    }))
    .into_response()
}

async fn admin_minimums(AxState(state): AxState<Arc<State>>) -> Response {
    Json(state.meli.lock().prices.to_json()).into_response()
}

/// `POST /_admin/mercadolibre/prices/minimum` `{"site_id":"MLM","minimum_price":"5"}` (decimal
/// text or a JSON number; null: back to the default 1). Answers every minimum.
async fn admin_set_minimum(AxState(state): AxState<Arc<State>>, body: axum::body::Bytes) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("body must be a JSON object");
    };
    if let Some(k) = body
        .keys()
        .find(|k| !["site_id", "minimum_price"].contains(&k.as_str()))
    {
        return bad_request(&format!("unknown field {k}: accepted are site_id and minimum_price"));
    }
    let site = match body.get("site_id").and_then(Value::as_str) {
        Some(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => s.to_string(),
        _ => return bad_request("site_id must be a site such as \"MLM\""),
    };
    let minimum = match body.get("minimum_price") {
        None => return bad_request("minimum_price is required (null: back to the default)"),
        Some(Value::Null) => None,
        Some(v) => match Price::from_text_or_number(v).filter(|p| p.is_positive()) {
            Some(p) => Some(p),
            None => return bad_request("minimum_price must be a positive decimal such as \"5\" or \"9.90\""),
        },
    };
    let mut m = state.meli.lock();
    match minimum {
        Some(p) => m.prices.minimums.insert(site, p),
        None => m.prices.minimums.remove(&site),
    };
    Json(m.prices.to_json()).into_response()
}

// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mercadolibre::put_item;
    use axum::http::HeaderValue;

    const SELLER: u64 = 9;

    /// MLM1: two variations (ids 1 and 2, stock 1 and 2) at 100 MXN; MLM2: plain, 10.50 MXN,
    /// stock 3; MLC3: plain, 5000 CLP; MLM4: another seller's.
    fn setup() -> (Arc<State>, HeaderMap) {
        let state = Arc::new(State::default());
        let mut m = state.meli.lock();
        m.apps.insert("app".into(), "secret".into());
        let g = m.grant(SELLER, "app");
        let mut item = Item::new(SELLER, "t".into());
        item.variations = vec![Variation::new(1, 1, item.price), Variation::new(2, 2, item.price)];
        m.items.insert("MLM1".into(), item);
        let mut plain = Item::new(SELLER, "plain".into());
        plain.price = Price::parse("10.50").expect("price");
        plain.available_quantity = 3;
        m.items.insert("MLM2".into(), plain);
        let mut chile = Item::new(SELLER, "chile".into());
        chile.currency_id = "CLP".into();
        chile.price = Price::units(5000);
        m.items.insert("MLC3".into(), chile);
        m.items.insert("MLM4".into(), Item::new(8, "theirs".into()));
        drop(m);
        let token = g["access_token"].as_str().unwrap_or_default();
        (state, bearer(token))
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        h
    }

    async fn json_of(r: Response) -> (StatusCode, Value) {
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 100_000).await.expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    async fn put(state: &Arc<State>, h: &HeaderMap, id: &str, body: &str) -> (StatusCode, Value) {
        let body = axum::body::Bytes::from(body.to_string());
        json_of(put_item(AxState(state.clone()), h.clone(), Path(id.into()), body).await).await
    }

    async fn admin(state: &Arc<State>, id: &str) -> Value {
        json_of(admin_item_prices(AxState(state.clone()), Path(id.into())).await)
            .await
            .1
    }

    /// A refusal in MercadoLibre's shape with one cause of this code.
    fn assert_refused(status: StatusCode, v: &Value, code: &str) {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"], "validation_error", "{v}");
        assert_eq!(v["status"], 400, "{v}");
        assert!(v["message"].is_string(), "{v}");
        assert_eq!(v["cause"][0]["code"], code, "{v}");
        assert!(v["cause"][0]["message"].is_string(), "{v}");
    }

    /// A price written is the price every read shows: the item, the multiget, `/prices`, admin.
    #[tokio::test]
    async fn a_price_written_is_read_back_everywhere() {
        let (state, h) = setup();
        let (code, v) = put(&state, &h, "MLM2", r#"{"price": 1299.5}"#).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(v["price"].to_string(), "1299.5");
        assert_eq!(v["available_quantity"], 3);
        let q = |pairs: &[(&str, &str)]| {
            axum::extract::Query(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };
        let r = catalog::multiget(AxState(state.clone()), h.clone(), q(&[("ids", "MLM2")])).await;
        let (_, v) = json_of(r).await;
        assert_eq!(v[0]["body"]["price"].to_string(), "1299.5");
        let (code, v) = json_of(get_prices(AxState(state.clone()), h.clone(), Path("MLM2".into())).await).await;
        assert_eq!(code, StatusCode::OK);
        let p = &v["prices"][0];
        assert_eq!((v["id"].as_str(), p["type"].as_str()), (Some("MLM2"), Some("standard")));
        assert_eq!(p["amount"].to_string(), "1299.5");
        assert_eq!(p["currency_id"], "MXN");
        assert_eq!(p["conditions"]["context_restrictions"], json!(["channel_marketplace"]));
        assert!(p["last_updated"].as_str().is_some_and(|t| t.ends_with('Z')));
        let a = admin(&state, "MLM2").await;
        assert_eq!(
            (a["price"].as_str(), a["price_writes"].as_u64()),
            (Some("1299.5"), Some(1))
        );
        assert_eq!(a["stock_writes"], 0, "a price-only edit is no stock write");
        assert_eq!(a["variations_deleted"], 0);
        assert_eq!(state.counters.lock()["mercadolibre price writes"], 1);
    }

    /// Price and stock in one PUT: both stored, one call, one write of each.
    #[tokio::test]
    async fn price_and_stock_go_in_one_call() {
        let (state, h) = setup();
        let (code, v) = put(&state, &h, "MLM2", r#"{"available_quantity": 7, "price": 1000}"#).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(
            (v["price"].as_i64(), v["available_quantity"].as_i64()),
            (Some(1000), Some(7))
        );
        let body = r#"{"variations":[{"id":1,"price":69.99,"available_quantity":4},{"id":2,"price":69.99}]}"#;
        let (code, v) = put(&state, &h, "MLM1", body).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(v["price"].to_string(), "69.99");
        assert_eq!(v["available_quantity"], 6, "4 + the untouched 2");
        let a = admin(&state, "MLM1").await;
        assert_eq!(
            a["variations"],
            json!([{"id": 1, "price": "69.99", "available_quantity": 4},
                   {"id": 2, "price": "69.99", "available_quantity": 2}])
        );
        assert_eq!(
            (a["price_writes"].as_u64(), a["stock_writes"].as_u64()),
            (Some(1), Some(1))
        );
        let c = state.counters.lock();
        assert_eq!((c["mercadolibre price writes"], c["mercadolibre stock writes"]), (2, 2));
        assert_eq!(c["mercadolibre PUT /items/{id}"], 2);
    }

    /// Every refusal named in the rules, in MercadoLibre's shape; none changes anything.
    #[tokio::test]
    async fn refused_prices_change_nothing() {
        let (state, h) = setup();
        for (id, body, code) in [
            ("MLM2", r#"{"price": "10"}"#, "item.price.invalid"),
            ("MLM2", r#"{"price": -5}"#, "item.price.invalid"),
            ("MLM2", r#"{"price": 0}"#, "item.price.invalid"),
            ("MLM2", r#"{"price": 0.5}"#, "item.price.invalid"),
            ("MLM2", r#"{"price": 10.555}"#, "item.price.invalid"),
            (
                "MLM2",
                r#"{"price": 12, "available_quantity": -1}"#,
                "item.available_quantity.invalid",
            ),
            ("MLC3", r#"{"price": 4999.5}"#, "item.price.invalid"),
            ("MLM1", r#"{"price": 69.99}"#, "item.price.invalid"),
            (
                "MLM1",
                r#"{"variations":[{"id":1,"price":69.99},{"id":2,"price":70}]}"#,
                "item.variations.price.invalid",
            ),
            (
                "MLM1",
                r#"{"variations":[{"id":1,"price":69.99},{"id":2}]}"#,
                "item.variations.price.invalid",
            ),
            (
                "MLM1",
                r#"{"variations":[{"id":1,"price":69.99},{"id":1,"price":69.99}]}"#,
                "item.variations.invalid",
            ),
            (
                "MLM1",
                r#"{"variations":[{"id":3,"price":69.99}]}"#,
                "item.variations.invalid",
            ),
            (
                "MLM1",
                r#"{"variations":[{"id":1,"price":0.001},{"id":2,"price":0.001}]}"#,
                "item.price.invalid",
            ),
        ] {
            let (status, v) = put(&state, &h, id, body).await;
            assert_refused(status, &v, code);
        }
        let (_, v) = put(&state, &h, "MLM2", r#"{"price": 10.555}"#).await;
        assert_eq!(
            v["cause"][0]["message"],
            "price 10.555 has more than 2 decimal places for currency MXN"
        );
        // a 0-decimal currency takes whole amounts only; 4999.0 is whole
        let (code, v) = put(&state, &h, "MLC3", r#"{"price": 4999.0}"#).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(v["price"].to_string(), "4999");
        // paused and closed items: not modifiable, even with the stock that could be written
        for status in [ItemStatus::Paused, ItemStatus::Closed] {
            state.meli.lock().items.get_mut("MLM2").expect("item").status = status;
            let (code, v) = put(&state, &h, "MLM2", r#"{"price": 5, "available_quantity": 1}"#).await;
            assert_refused(code, &v, "item.price.not_modifiable");
        }
        let m = state.meli.lock();
        let (plain, vars) = (&m.items["MLM2"], &m.items["MLM1"]);
        assert_eq!((plain.price.to_text(), plain.available_quantity), ("10.5".into(), 3));
        assert_eq!(plain.price_writes + plain.writes + vars.price_writes + vars.writes, 0);
        let vs: Vec<(i64, i64, String)> = vars
            .variations
            .iter()
            .map(|v| (v.id, v.available_quantity, v.price.to_text()))
            .collect();
        assert_eq!(vs, vec![(1, 1, "100".into()), (2, 2, "100".into())]);
        assert_eq!(state.counters.lock().get("mercadolibre price writes"), Some(&1));
    }

    /// The site's minimum, set by the admin API, refuses lower prices with a message naming it.
    #[tokio::test]
    async fn the_site_minimum_is_configurable() {
        let (state, h) = setup();
        let set = |body: Value| admin_set_minimum(AxState(state.clone()), body.to_string().into());
        let (code, v) = json_of(set(json!({"site_id": "MLM", "minimum_price": "5"})).await).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v, json!({"default": "1", "sites": {"MLM": "5"}}));
        let (status, v) = put(&state, &h, "MLM2", r#"{"price": 4.99}"#).await;
        assert_refused(status, &v, "item.price.invalid");
        assert_eq!(
            v["cause"][0]["message"],
            "price 4.99 is below the minimum price 5 of site MLM"
        );
        let (code, _) = put(&state, &h, "MLM2", r#"{"price": 5}"#).await;
        assert_eq!(code, StatusCode::OK);
        // other sites keep the default
        let (code, _) = put(&state, &h, "MLC3", r#"{"price": 1}"#).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(admin(&state, "MLM2").await["minimum_price"], "5");
        for bad in [
            json!({"site_id": "MLM", "minimum_price": 0}),
            json!({"site_id": "MLM", "minimum_price": "-1"}),
            json!({"site_id": "mlm", "minimum_price": 1}),
            json!({"site_id": "MLM"}),
            json!({"site_id": "MLM", "minimum_price": 1, "currency": "MXN"}),
        ] {
            let (code, v) = json_of(set(bad.clone()).await).await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(v["status"], 400, "{v}");
        }
        let (_, v) = json_of(set(json!({"site_id": "MLM", "minimum_price": null})).await).await;
        assert_eq!(v, json!({"default": "1", "sites": {}}));
        let (code, _) = put(&state, &h, "MLM2", r#"{"price": 1}"#).await;
        assert_eq!(code, StatusCode::OK);
        let (_, v) = json_of(admin_minimums(AxState(state.clone())).await).await;
        assert_eq!(v["default"], "1");
    }

    /// A variation left out of the array is deleted, as MercadoLibre does, and counted.
    #[tokio::test]
    async fn left_out_variations_are_deleted_and_counted() {
        let (state, h) = setup();
        let (code, v) = put(&state, &h, "MLM1", r#"{"variations":[{"id":2,"price":80}]}"#).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(v["variations"].as_array().map(Vec::len), Some(1));
        let a = admin(&state, "MLM1").await;
        assert_eq!(
            (a["variations_deleted"].as_u64(), a["price"].as_str()),
            (Some(1), Some("80"))
        );
        assert_eq!(state.counters.lock()["mercadolibre variations deleted"], 1);
    }

    /// `/items/{id}/prices` is read-only; reads and refusals go through the bearer check.
    #[tokio::test]
    async fn the_prices_resource_is_read_only() {
        let (state, h) = setup();
        for method in [axum::http::Method::POST, axum::http::Method::PUT] {
            let r = refuse_write(AxState(state.clone()), method.clone(), h.clone()).await;
            assert_eq!(r.headers().get("allow").map(|v| v.as_bytes()), Some(&b"GET"[..]));
            let (code, v) = json_of(r).await;
            assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(
                (v["error"].as_str(), v["status"].as_u64()),
                (Some("method_not_allowed"), Some(405))
            );
            assert!(v["cause"].is_array());
        }
        let r = refuse_write(AxState(state.clone()), axum::http::Method::POST, bearer("nope")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let get = |h: HeaderMap, id: &str| get_prices(AxState(state.clone()), h, Path(id.into()));
        assert_eq!(get(h.clone(), "MLM4").await.status(), StatusCode::FORBIDDEN);
        assert_eq!(get(h.clone(), "MLM9").await.status(), StatusCode::NOT_FOUND);
        let (code, v) = json_of(get(bearer("nope"), "MLM2").await).await;
        assert_eq!((code, v["status"].as_u64()), (StatusCode::UNAUTHORIZED, Some(401)));
        assert_eq!(state.meli.lock().items["MLM2"].price_writes, 0);
    }

    /// Price writes authenticate as every item call: 401 bad or expired token, 403 another
    /// seller's item, 404 unknown item, 429 over the seller's rate.
    #[tokio::test]
    async fn price_writes_need_the_sellers_token() {
        let (state, h) = setup();
        let body = r#"{"price": 50}"#;
        let (code, v) = put(&state, &bearer("nope"), "MLM2", body).await;
        assert_eq!(
            (code, v["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
        let (code, _) = put(&state, &h, "MLM4", body).await;
        assert_eq!(code, StatusCode::FORBIDDEN);
        let (code, _) = put(&state, &h, "MLM9", body).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        state.meli.lock().rate.limit = Some(0);
        let (code, _) = put(&state, &h, "MLM2", body).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        state.meli.lock().rate.limit = None;
        state.meli.lock().expire_access_tokens(Some(SELLER));
        let (code, v) = put(&state, &h, "MLM2", body).await;
        assert_eq!(
            (code, v["message"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("expired_token"))
        );
        assert_eq!(state.meli.lock().items["MLM2"].price_writes, 0);
    }

    /// Decimal places per currency: CLP and COP (and PYG) none, the others 2.
    #[tokio::test]
    async fn currencies_give_their_decimal_places() {
        let (state, _) = setup();
        let get = |id: &str| catalog::currency(AxState(state.clone()), Path(id.into()));
        let (code, v) = json_of(get("MXN").await).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            v,
            json!({"id": "MXN", "symbol": "$", "description": "Peso mexicano", "decimal_places": 2})
        );
        for (id, places) in [("CLP", 0), ("COP", 0), ("BRL", 2), ("ARS", 2), ("USD", 2)] {
            assert_eq!(json_of(get(id).await).await.1["decimal_places"], places, "{id}");
        }
        let (code, v) = json_of(get("XXX").await).await;
        assert_eq!((code, v["status"].as_u64()), (StatusCode::NOT_FOUND, Some(404)));
    }
}
