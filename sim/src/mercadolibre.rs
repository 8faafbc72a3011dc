//! MercadoLibre: OAuth token endpoint (code grant, single-use rotating refresh tokens), items
//! with variations (stock and price writes), user-products stock with x-version, per-seller
//! rate limit. The catalog (multiget, search, generator) is in `mercadolibre_catalog`, the price
//! rules and `/items/{id}/prices` in `mercadolibre_prices`. Error bodies have MercadoLibre's
//! shape: {message, error, status, cause}.

#[path = "mercadolibre_prices.rs"]
pub mod prices;

use crate::mercadolibre_catalog::{self as catalog, ItemStatus, Price};
use crate::state::{random_token, rfc3339_now, State};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Form, Json, Router};
use marketplace_signing as signing;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Meli {
    pub apps: HashMap<String, String>,
    /// seller -> app client id
    pub sellers: HashMap<u64, String>,
    access: HashMap<String, (u64, Instant)>,
    /// refresh token -> (seller, client id); removed on first use
    refresh: HashMap<String, (u64, String)>,
    codes: HashMap<String, (u64, String)>,
    /// code -> (redirect_uri, PKCE challenge) it was issued for, checked at the exchange
    code_checks: HashMap<String, (Option<String>, Option<String>)>,
    pub items: HashMap<String, Item>,
    pub user_products: HashMap<String, UserProduct>,
    pub token_lifetime: Duration,
    /// Per seller; MercadoLibre counts in a minute.
    pub rate: crate::state::RateLimit,
    /// Sent as Retry-After on 429s when set (MercadoLibre documents no header).
    pub retry_after_s: Option<f64>,
    /// Sellers whose every API call answers this status (a failing tenant).
    pub failing_sellers: HashMap<u64, u16>,
    next_variation_id: i64,
    /// Every token ever issued, so tests can prove none leaks.
    pub issued: Vec<String>,
    pub orders: HashMap<u64, crate::mercadolibre_notifications::Order>,
    /// Order reads answered with a given status and body, verbatim (a fault: what a broken or
    /// hostile answer does to the app)
    pub raw_orders: HashMap<String, (u16, String)>,
    /// Outstanding scan scroll ids.
    pub scrolls: HashMap<String, catalog::Scroll>,
    /// How long a scroll id lives after it was issued (5 minutes).
    pub scroll_ttl: Duration,
    /// Minimum prices per site.
    pub prices: prices::PriceRules,
}

impl Default for Meli {
    fn default() -> Self {
        Meli {
            apps: HashMap::new(),
            sellers: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            codes: HashMap::new(),
            code_checks: HashMap::new(),
            items: HashMap::new(),
            user_products: HashMap::new(),
            token_lifetime: Duration::from_secs(21_600),
            rate: Default::default(),
            retry_after_s: None,
            failing_sellers: HashMap::new(),
            next_variation_id: 900_000_000,
            issued: Vec::new(),
            orders: HashMap::new(),
            raw_orders: HashMap::new(),
            scrolls: HashMap::new(),
            scroll_ttl: catalog::SCROLL_TTL,
            prices: Default::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Item {
    pub seller: u64,
    pub title: String,
    /// Items without variations; with variations it is their sum.
    pub available_quantity: i64,
    pub variations: Vec<Variation>,
    /// Stock writes received.
    pub writes: u64,
    /// Price writes received.
    pub price_writes: u64,
    /// When the price was last written (RFC 3339); None: never since the item was made.
    pub price_updated: Option<String>,
    /// Variations deleted by edits that left them out of `variations`.
    pub variations_deleted: u64,
    pub price: Price,
    pub currency_id: String,
    pub status: ItemStatus,
    /// None: built from the id and title.
    pub permalink: Option<String>,
    pub user_product_id: Option<String>,
    /// The `SELLER_SKU` attribute (MercadoLibre has no top-level seller_sku on items).
    pub seller_sku: Option<String>,
    /// The older place for the seller's SKU.
    pub seller_custom_field: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Variation {
    pub id: i64,
    pub available_quantity: i64,
    pub price: Price,
    /// Served in the variation's `attributes[]` only with `include_attributes=all`.
    pub seller_sku: Option<String>,
    pub seller_custom_field: Option<String>,
}

impl Item {
    /// An active item in MXN at 100, without SKU or variations.
    pub fn new(seller: u64, title: String) -> Item {
        Item {
            seller,
            title,
            available_quantity: 0,
            variations: Vec::new(),
            writes: 0,
            price_writes: 0,
            price_updated: None,
            variations_deleted: 0,
            price: Price::units(100),
            currency_id: "MXN".into(),
            status: ItemStatus::Active,
            permalink: None,
            user_product_id: None,
            seller_sku: None,
            seller_custom_field: None,
        }
    }
}

impl Variation {
    pub fn new(id: i64, available_quantity: i64, price: Price) -> Variation {
        Variation {
            id,
            available_quantity,
            price,
            seller_sku: None,
            seller_custom_field: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct UserProduct {
    pub seller: u64,
    pub quantity: i64,
    pub version: u64,
    pub writes: u64,
}

pub fn error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "error": error, "status": status.as_u16(), "cause": []})),
    )
        .into_response()
}

impl Meli {
    /// Issues a new token pair for a seller.
    pub fn grant(&mut self, seller: u64, client_id: &str) -> Value {
        let access = random_token("APP_USR-");
        let refresh = random_token("TG-");
        self.access
            .insert(access.clone(), (seller, Instant::now() + self.token_lifetime));
        self.refresh.insert(refresh.clone(), (seller, client_id.to_string()));
        self.issued.push(access.clone());
        self.issued.push(refresh.clone());
        json!({"access_token": access, "token_type": "Bearer", "expires_in": self.token_lifetime.as_secs(),
               "scope": "offline_access read write", "user_id": seller, "refresh_token": refresh})
    }

    pub fn new_code(&mut self, seller: u64, client_id: &str) -> String {
        let code = random_token("TG-code-");
        self.codes.insert(code.clone(), (seller, client_id.to_string()));
        self.issued.push(code.clone());
        code
    }

    /// The seller approves the app on the authorization page: a code bound to the redirect URI
    /// and PKCE challenge the page was opened with.
    pub fn approve(
        &mut self,
        seller: u64,
        client_id: &str,
        redirect_uri: Option<String>,
        challenge: Option<String>,
    ) -> String {
        self.sellers.insert(seller, client_id.to_string());
        let code = self.new_code(seller, client_id);
        self.code_checks.insert(code.clone(), (redirect_uri, challenge));
        code
    }

    pub fn expire_access_tokens(&mut self, seller: Option<u64>) -> usize {
        let now = Instant::now();
        let mut n = 0;
        for (s, exp) in self.access.values_mut() {
            if seller.is_none_or(|x| x == *s) {
                *exp = now;
                n += 1;
            }
        }
        n
    }

    pub fn revoke_refresh_tokens(&mut self, seller: u64) {
        self.refresh.retain(|_, (s, _)| *s != seller);
    }

    pub fn next_variation(&mut self) -> i64 {
        self.next_variation_id += 1;
        self.next_variation_id
    }
}

/// The item as `GET /items/{id}` serves it (variations without their attributes).
pub fn item_json(id: &str, it: &Item) -> Value {
    catalog::item_body(id, it, false)
}

pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/items/{id}", get(get_item).put(put_item))
        .route("/user-products/{id}/stock", get(get_up_stock))
        .route("/user-products/{id}/stock/type/selling_address", put(put_up_stock))
        .merge(crate::mercadolibre_notifications::router())
        .merge(crate::mercadolibre_catalog::router())
        .merge(prices::router())
}

#[derive(Deserialize)]
struct TokenForm {
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    refresh_token: Option<String>,
}

const INVALID_GRANT: &str =
    "Error validating grant. Your authorization code or refresh token may be expired or it was already used";

async fn token(AxState(state): AxState<Arc<State>>, Form(f): Form<TokenForm>) -> Response {
    let kind = f.grant_type.clone().unwrap_or_default();
    state.count(format!("mercadolibre token {kind}"));
    let mut m = state.meli.lock();
    let client_id = f.client_id.unwrap_or_default();
    if m.apps
        .get(&client_id)
        .is_none_or(|s| Some(s) != f.client_secret.as_ref())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "invalid client_id or client_secret",
        );
    }
    let used = match kind.as_str() {
        "authorization_code" => {
            let code = f.code.clone().unwrap_or_default();
            let (redirect, challenge) = m.code_checks.remove(&code).unwrap_or((None, None));
            let redirect_ok = redirect.is_none() || redirect == f.redirect_uri;
            let pkce_ok = challenge.is_none_or(|c| {
                f.code_verifier
                    .as_deref()
                    .is_some_and(|v| signing::pkce_challenge(v) == c)
            });
            let found = m.codes.remove(&code);
            found.filter(|_| redirect_ok && pkce_ok)
        }
        "refresh_token" => f.refresh_token.and_then(|r| m.refresh.remove(&r)),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "unsupported grant_type",
            )
        }
    };
    match used {
        Some((seller, cid)) if cid == client_id => {
            drop(m);
            state.count(format!("mercadolibre token {kind} ok"));
            Json(state.meli.lock().grant(seller, &client_id)).into_response()
        }
        _ => {
            state.count(format!("mercadolibre token {kind} invalid_grant"));
            error(StatusCode::BAD_REQUEST, "invalid_grant", INVALID_GRANT)
        }
    }
}

/// Authenticates the bearer token and applies the per-seller rate limit.
pub fn authorize(state: &State, headers: &HeaderMap) -> Result<u64, Response> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let mut m = state.meli.lock();
    let seller = match m.access.get(token) {
        Some((seller, exp)) if *exp > Instant::now() => *seller,
        Some(_) => {
            drop(m);
            state.count("mercadolibre 401 expired");
            return Err(error(StatusCode::UNAUTHORIZED, "unauthorized", "expired_token"));
        }
        None => {
            drop(m);
            state.count("mercadolibre 401 invalid");
            return Err(error(StatusCode::UNAUTHORIZED, "unauthorized", "invalid access token"));
        }
    };
    state.count(format!("mercadolibre seller {seller} requests"));
    if let Some(status) = m.failing_sellers.get(&seller) {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Err(error(status, "internal_error", "seller account unavailable (injected)"));
    }
    if m.rate.over(&seller.to_string()) {
        let retry_after = m.retry_after_s;
        drop(m);
        state.count("mercadolibre 429");
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", "Too Many Requests");
        if let Some(ra) = retry_after.and_then(|ra| axum::http::HeaderValue::from_str(&ra.to_string()).ok()) {
            r.headers_mut().insert("retry-after", ra);
        }
        return Err(r);
    }
    Ok(seller)
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("Item with id {id} not found"),
    )
}

fn forbidden() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "caller.id does not match item owner",
    )
}

/// `GET /items/{id}`, with `attributes=` and `include_attributes=all` as the multiget has them.
async fn get_item(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    state.count("mercadolibre GET /items/{id}");
    let seller = match authorize(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let view = catalog::View::from_query(&q);
    let m = state.meli.lock();
    match m.items.get(&id) {
        None => not_found(&id),
        Some(it) if it.seller != seller => forbidden(),
        Some(it) => Json(view.render(&id, it)).into_response(),
    }
}

fn validation(message: &str) -> Response {
    validation_cause("item.available_quantity.invalid", message)
}

/// 400 `validation_error` with one cause, as MercadoLibre refuses item edits.
pub fn validation_cause(code: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(
            json!({"message": "Validation error", "error": "validation_error", "status": 400,
                    "cause": [{"code": code, "type": "error", "message": message}]}),
        ),
    )
        .into_response()
}

fn quantity(v: &Value) -> Option<i64> {
    v.as_i64().filter(|q| (0..=99_999_999).contains(q))
}

const QUANTITY_RANGE: &str = "available_quantity must be an integer between 0 and 99999999";

/// `PUT /items/{id}`: `available_quantity` and/or `price` on an item without variations, or
/// `variations` (each with `available_quantity` and/or `price`), in one call. Refused whole on
/// the first error, nothing changed.
pub async fn put_item(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    state.count("mercadolibre PUT /items/{id}");
    let seller = match authorize(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "body is not valid JSON");
    };
    let mut guard = state.meli.lock();
    let m = &mut *guard;
    let Some(mut it) = m.items.get(&id).cloned() else {
        return not_found(&id);
    };
    if it.seller != seller {
        return forbidden();
    }
    let minimum = m.prices.for_site(catalog::site_of(&id));
    let edit = match edit_item(m, &id, &mut it, &body, minimum) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if edit.stock {
        it.writes += 1;
    }
    if edit.price {
        it.price_writes += 1;
        it.price_updated = Some(rfc3339_now());
    }
    it.variations_deleted += edit.deleted;
    m.items.insert(id.clone(), it.clone());
    drop(guard);
    if edit.stock {
        state.count("mercadolibre stock writes");
    }
    if edit.price {
        state.count("mercadolibre price writes");
    }
    for _ in 0..edit.deleted {
        state.count("mercadolibre variations deleted");
    }
    Json(item_json(&id, &it)).into_response()
}

/// What an item edit did.
struct Edit {
    stock: bool,
    price: bool,
    /// variations left out of `variations`, so deleted
    deleted: u64,
}

/// Applies a `PUT /items/{id}` body to a copy of the item.
fn edit_item(m: &mut Meli, id: &str, it: &mut Item, body: &Value, minimum: prices::Minimum) -> Result<Edit, Response> {
    let before: Vec<(i64, i64)> = it.variations.iter().map(|v| (v.id, v.available_quantity)).collect();
    let mut quantity_given = body.get("available_quantity").is_some();
    let mut price_given = false;
    if let Some(q) = body.get("available_quantity") {
        if !it.variations.is_empty() {
            return Err(validation(
                "item has variations: set available_quantity on each variation",
            ));
        }
        it.available_quantity = quantity(q).ok_or_else(|| validation(QUANTITY_RANGE))?;
    }
    if let Some(p) = body.get("price") {
        if !it.variations.is_empty() {
            return Err(validation_cause(
                "item.price.invalid",
                "item has variations: send the same price on every variation",
            ));
        }
        it.price = prices::new_price(it, minimum, p)?;
        price_given = true;
    }
    let mut deleted = 0;
    if let Some(vs) = body.get("variations") {
        let vs = vs.as_array().ok_or_else(|| validation("variations must be an array"))?;
        let mut next: Vec<Variation> = Vec::with_capacity(vs.len());
        for v in vs {
            quantity_given |= v.get("available_quantity").is_some();
            let price = v.get("price").map(|p| prices::new_price(it, minimum, p)).transpose()?;
            price_given |= price.is_some();
            let q = match v.get("available_quantity") {
                None => None,
                Some(q) => Some(quantity(q).ok_or_else(|| validation(QUANTITY_RANGE))?),
            };
            let Some(vid) = v.get("id") else {
                // A variation sent without id is created anew.
                next.push(Variation::new(
                    m.next_variation(),
                    q.unwrap_or(0),
                    price.unwrap_or(it.price),
                ));
                continue;
            };
            let vid = vid
                .as_i64()
                .ok_or_else(|| validation_cause("item.variations.invalid", "variation id must be an integer"))?;
            if next.iter().any(|x| x.id == vid) {
                return Err(validation_cause(
                    "item.variations.invalid",
                    &format!("variation {vid} is listed twice"),
                ));
            }
            let Some(old) = it.variations.iter().find(|x| x.id == vid) else {
                return Err(validation_cause(
                    "item.variations.invalid",
                    &format!("variation {vid} does not belong to item {id}"),
                ));
            };
            let mut new = old.clone();
            new.available_quantity = q.unwrap_or(new.available_quantity);
            new.price = price.unwrap_or(new.price);
            next.push(new);
        }
        if price_given {
            it.price = prices::same_price(&next)?;
        }
        // Variations left out are deleted, as MercadoLibre does.
        deleted = it
            .variations
            .iter()
            .filter(|old| !next.iter().any(|n| n.id == old.id))
            .count() as u64;
        it.variations = next;
    }
    let after: Vec<(i64, i64)> = it.variations.iter().map(|v| (v.id, v.available_quantity)).collect();
    Ok(Edit {
        // A price-only edit is no stock write; anything else counts as one.
        stock: !(price_given && !quantity_given && before == after),
        price: price_given,
        deleted,
    })
}

async fn get_up_stock(AxState(state): AxState<Arc<State>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    state.count("mercadolibre GET /user-products/{id}/stock");
    let seller = match authorize(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let m = state.meli.lock();
    match m.user_products.get(&id) {
        None => error(StatusCode::NOT_FOUND, "not_found", &format!("User product {id} not found")),
        Some(up) if up.seller != seller => forbidden(),
        Some(up) => (
            [("x-version", up.version.to_string())],
            Json(json!({"locations": [{"type": "selling_address", "quantity": up.quantity}], "user_id": up.seller, "id": id})),
        )
            .into_response(),
    }
}

async fn put_up_stock(
    AxState(state): AxState<Arc<State>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    state.count("mercadolibre PUT /user-products/{id}/stock/type/selling_address");
    let seller = match authorize(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(version) = headers
        .get("x-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "x-version header is required");
    };
    let Some(q) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("quantity").and_then(quantity))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "quantity must be an integer between 0 and 99999999",
        );
    };
    let mut m = state.meli.lock();
    let Some(up) = m.user_products.get_mut(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("User product {id} not found"),
        );
    };
    if up.seller != seller {
        return forbidden();
    }
    if up.version != version {
        drop(m);
        state.count("mercadolibre 409");
        return error(
            StatusCode::CONFLICT,
            "conflict",
            "version mismatch: read the stock again",
        );
    }
    up.quantity = q;
    up.version += 1;
    up.writes += 1;
    drop(m);
    state.count("mercadolibre stock writes");
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn setup() -> (Arc<State>, String, String) {
        let state = Arc::new(State::default());
        let mut m = state.meli.lock();
        m.apps.insert("app".into(), "secret".into());
        let g = m.grant(9, "app");
        let mut item = Item::new(9, "t".into());
        item.variations = vec![Variation::new(1, 1, item.price), Variation::new(2, 2, item.price)];
        m.items.insert("MLM1".into(), item);
        m.user_products.insert(
            "MLMU1".into(),
            UserProduct {
                seller: 9,
                quantity: 3,
                version: 4,
                writes: 0,
            },
        );
        drop(m);
        let access = g["access_token"].as_str().unwrap_or_default().to_string();
        let refresh = g["refresh_token"].as_str().unwrap_or_default().to_string();
        (state, access, refresh)
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        h
    }

    fn refresh_form(token: &str) -> Form<TokenForm> {
        Form(TokenForm {
            grant_type: Some("refresh_token".into()),
            client_id: Some("app".into()),
            client_secret: Some("secret".into()),
            code: None,
            refresh_token: Some(token.into()),
            redirect_uri: None,
            code_verifier: None,
        })
    }

    #[tokio::test]
    async fn refresh_tokens_work_once() {
        let (state, _, refresh) = setup();
        let first = token(AxState(state.clone()), refresh_form(&refresh)).await;
        assert_eq!(first.status(), StatusCode::OK);
        let again = token(AxState(state.clone()), refresh_form(&refresh)).await;
        assert_eq!(again.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(again.into_body(), 10_000).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "invalid_grant");
    }

    /// An authorization code is bound to the redirect_uri and PKCE challenge it was issued for,
    /// and works once.
    #[tokio::test]
    async fn codes_need_their_redirect_uri_and_pkce_verifier() {
        let (state, _, _) = setup();
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let code_form = |code: &str, redirect: &str, verifier: &str| {
            Form(TokenForm {
                grant_type: Some("authorization_code".into()),
                client_id: Some("app".into()),
                client_secret: Some("secret".into()),
                code: Some(code.into()),
                refresh_token: None,
                redirect_uri: Some(redirect.into()),
                code_verifier: Some(verifier.into()),
            })
        };
        let approve = || {
            state.meli.lock().approve(
                11,
                "app",
                Some("https://app.example/cb".into()),
                Some(signing::pkce_challenge(verifier)),
            )
        };
        let code = approve();
        let wrong = token(
            AxState(state.clone()),
            code_form(&code, "https://app.example/cb", "another-verifier"),
        )
        .await;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
        // a refused attempt burns the code, as MercadoLibre does
        let again = token(
            AxState(state.clone()),
            code_form(&code, "https://app.example/cb", verifier),
        )
        .await;
        assert_eq!(again.status(), StatusCode::BAD_REQUEST);
        let code = approve();
        let elsewhere = token(
            AxState(state.clone()),
            code_form(&code, "https://evil.example/", verifier),
        )
        .await;
        assert_eq!(elsewhere.status(), StatusCode::BAD_REQUEST);
        let code = approve();
        let ok = token(
            AxState(state.clone()),
            code_form(&code, "https://app.example/cb", verifier),
        )
        .await;
        assert_eq!(ok.status(), StatusCode::OK);
        let body = axum::body::to_bytes(ok.into_body(), 10_000).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["user_id"], 11);
    }

    #[tokio::test]
    async fn variations_left_out_are_deleted() {
        let (state, access, _) = setup();
        let body = axum::body::Bytes::from(r#"{"variations":[{"id":2,"available_quantity":7}]}"#);
        let r = put_item(AxState(state.clone()), bearer(&access), Path("MLM1".into()), body).await;
        assert_eq!(r.status(), StatusCode::OK);
        let vs: Vec<(i64, i64)> = state.meli.lock().items["MLM1"]
            .variations
            .iter()
            .map(|v| (v.id, v.available_quantity))
            .collect();
        assert_eq!(vs, vec![(2, 7)]);
        let r = put_item(AxState(state.clone()), bearer("nope"), Path("MLM1".into()), "{}".into()).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn user_product_writes_need_the_current_version() {
        let (state, access, _) = setup();
        let body = || axum::body::Bytes::from(r#"{"quantity":8}"#);
        let r = put_up_stock(AxState(state.clone()), bearer(&access), Path("MLMU1".into()), body()).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "missing x-version");
        let mut h = bearer(&access);
        h.insert("x-version", HeaderValue::from_static("3"));
        let r = put_up_stock(AxState(state.clone()), h.clone(), Path("MLMU1".into()), body()).await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "stale x-version");
        h.insert("x-version", HeaderValue::from_static("4"));
        let r = put_up_stock(AxState(state.clone()), h, Path("MLMU1".into()), body()).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(state.meli.lock().user_products["MLMU1"].quantity, 8);
    }

    #[tokio::test]
    async fn the_per_seller_rate_limit_answers_429() {
        let (state, access, _) = setup();
        state.meli.lock().rate.limit = Some(2);
        for expected in [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
            let r = get_item(
                AxState(state.clone()),
                bearer(&access),
                Path("MLM1".into()),
                Query(HashMap::new()),
            )
            .await;
            assert_eq!(r.status(), expected);
        }
    }
}
