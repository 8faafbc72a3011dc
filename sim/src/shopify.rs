//! Shopify Admin API: expiring offline tokens with rotating refresh (`/admin/oauth/access_token`),
//! GraphQL `inventorySetQuantities` (`@idempotent(key:)`, compare-and-set with
//! `changeFromQuantity` from 2026-04 and `compareQuantity` before, the real userError codes, the
//! cost extension and HTTP 200 `THROTTLED`), an `inventoryItem` level query, and the legacy REST
//! `inventory_levels/set.json` with `X-Shopify-Shop-Api-Call-Limit` and 429 `Retry-After`. The
//! catalog query (`productVariants`) is answered by shopify_catalog.rs; prices
//! (`productVariantsBulkUpdate`, `inventoryItem { variant(s) }`) by shopify_prices.rs; webhook
//! subscriptions and where deliveries go by shopify_webhooks.rs; uninstalls and the privacy
//! webhooks by shopify_privacy.rs.
//! One server plays every shop: the access token says which.

use crate::state::{random_token, State};
use crate::webhooks::{self, Delivery};
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use marketplace_signing as signing;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MUTATION_COST: f64 = 10.0;
pub const QUERY_COST: f64 = 2.0;

pub struct Shopify {
    /// client_id -> client_secret
    pub apps: HashMap<String, String>,
    /// access token -> (shop, expiry; None = non-expiring)
    pub(crate) access: HashMap<String, (String, Option<Instant>)>,
    /// refresh token -> (shop, client_id); removed on first use
    pub(crate) refresh: HashMap<String, (String, String)>,
    /// authorization code -> (shop, client_id, issued); single use, 10 minutes
    codes: HashMap<String, (String, String, Instant)>,
    /// (shop, inventory item id, location id) -> available
    pub levels: HashMap<(String, String, String), Level>,
    /// idempotency key -> the response first given
    idempotent: HashMap<String, Value>,
    /// GraphQL cost bucket per shop: (available points, last refill)
    buckets: HashMap<String, (f64, Instant)>,
    pub bucket_max: f64,
    pub restore_rate: f64,
    /// REST leaky bucket per shop: (calls in bucket, last leak)
    rest: HashMap<String, (f64, Instant)>,
    pub rest_bucket: f64,
    pub rest_leak_per_s: f64,
    pub token_lifetime: Duration,
    pub issued: Vec<String>,
    /// shop -> the app it installed (webhooks are signed with that app's secret)
    pub shop_apps: HashMap<String, String>,
    /// client_id -> the secret webhooks are signed with, when not the app secret (rotation tests)
    pub webhook_secrets: HashMap<String, String>,
    /// order id -> order
    pub orders: HashMap<u64, Order>,
    /// shop -> products and variants (`productVariants`; see shopify_catalog.rs)
    pub catalog: crate::shopify_catalog::Catalog,
    /// webhook subscriptions made through the API (see shopify_webhooks.rs)
    pub webhooks: crate::shopify_webhooks::Subscriptions,
    next_id: u64,
}

/// A sale: the levels it took from and its lines as Shopify reports them.
#[derive(Clone, Debug)]
pub struct Order {
    pub shop: String,
    /// (line id, inventory item id, location id, sku, quantity)
    pub lines: Vec<(u64, String, String, String, i64)>,
    pub cancelled: bool,
    /// the buyer (`customer` in the order body; see shopify_privacy.rs)
    pub customer: Value,
}

impl Default for Shopify {
    fn default() -> Self {
        Shopify {
            apps: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            codes: HashMap::new(),
            levels: HashMap::new(),
            idempotent: HashMap::new(),
            buckets: HashMap::new(),
            bucket_max: 2000.0,
            restore_rate: 100.0,
            rest: HashMap::new(),
            rest_bucket: 40.0,
            rest_leak_per_s: 2.0,
            token_lifetime: Duration::from_secs(3600),
            issued: Vec::new(),
            shop_apps: HashMap::new(),
            webhook_secrets: HashMap::new(),
            orders: HashMap::new(),
            catalog: Default::default(),
            webhooks: Default::default(),
            next_id: 450_789_469_000,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Level {
    pub available: i64,
    pub writes: u64,
}

impl Shopify {
    /// A token for `shop`: expiring (with a rotating refresh token) or not.
    pub fn grant(&mut self, shop: &str, client_id: &str, expiring: bool) -> Value {
        let access = random_token("shpat_");
        self.issued.push(access.clone());
        self.shop_apps.insert(shop.to_string(), client_id.to_string());
        if !expiring {
            self.access.insert(access.clone(), (shop.to_string(), None));
            return json!({"access_token": access, "scope": "read_inventory,write_inventory"});
        }
        let refresh = random_token("shprt_");
        self.issued.push(refresh.clone());
        self.access.insert(
            access.clone(),
            (shop.to_string(), Some(Instant::now() + self.token_lifetime)),
        );
        self.refresh
            .insert(refresh.clone(), (shop.to_string(), client_id.to_string()));
        json!({"access_token": access, "scope": "read_inventory,write_inventory",
               "expires_in": self.token_lifetime.as_secs(), "refresh_token": refresh,
               "refresh_token_expires_in": 7_776_000})
    }

    pub fn expire_access_tokens(&mut self) -> usize {
        let now = Instant::now();
        let mut n = 0;
        for (_, exp) in self.access.values_mut() {
            if exp.is_some() {
                *exp = Some(now);
                n += 1;
            }
        }
        n
    }

    /// Takes `cost` points from the shop's bucket; Err(points available) when short.
    pub(crate) fn spend(&mut self, shop: &str, cost: f64) -> Result<f64, f64> {
        let (max, rate) = (self.bucket_max, self.restore_rate);
        let b = self.buckets.entry(shop.to_string()).or_insert((max, Instant::now()));
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(max);
        b.1 = now;
        if b.0 < cost {
            return Err(b.0);
        }
        b.0 -= cost;
        Ok(b.0)
    }

    /// Gives `points` back to the shop's bucket (a query that cost less than requested, as
    /// Shopify refunds it); the points then available.
    pub(crate) fn refund(&mut self, shop: &str, points: f64) -> f64 {
        let max = self.bucket_max;
        let b = self.buckets.entry(shop.to_string()).or_insert((max, Instant::now()));
        b.0 = (b.0 + points.max(0.0)).min(max);
        b.0
    }

    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A webhook as Shopify sends it, signed with the app the shop installed; routed to no
    /// address yet (`shopify_webhooks::delivery` routes it).
    pub fn delivery(&self, shop: &str, topic: &str, body: &Value) -> Result<Delivery, String> {
        let app = self.shop_apps.get(shop).ok_or("the shop has installed no app")?;
        self.signed(app, shop, topic, body)
    }

    /// The raw JSON body signed (base64 HMAC-SHA256) with `app`'s webhook secret, and Shopify's
    /// headers (an uninstalled shop's `shop/redact` is still signed with its former app).
    pub(crate) fn signed(&self, app: &str, shop: &str, topic: &str, body: &Value) -> Result<Delivery, String> {
        let secret = self
            .webhook_secrets
            .get(app)
            .or_else(|| self.apps.get(app))
            .ok_or("the shop's app is unknown")?;
        let raw = body.to_string();
        Ok(Delivery {
            marketplace: "shopify",
            headers: vec![
                ("X-Shopify-Topic".into(), topic.into()),
                (
                    "X-Shopify-Hmac-Sha256".into(),
                    signing::shopify_webhook(secret, raw.as_bytes()),
                ),
                ("X-Shopify-Shop-Domain".into(), shop.into()),
                ("X-Shopify-API-Version".into(), "2026-10".into()),
                ("X-Shopify-Webhook-Id".into(), crate::state::uuid()),
                ("X-Shopify-Event-Id".into(), crate::state::uuid()),
                ("X-Shopify-Triggered-At".into(), crate::state::rfc3339_now()),
            ],
            body: raw,
            targets: Some(Vec::new()),
        })
    }

    fn order_body(&self, id: u64, o: &Order) -> Value {
        let now = crate::state::rfc3339_now();
        json!({"id": id, "admin_graphql_api_id": format!("gid://shopify/Order/{id}"), "name": format!("#{}", id % 10_000),
               "created_at": now, "updated_at": now, "financial_status": "paid",
               "cancelled_at": if o.cancelled { Value::String(now.clone()) } else { Value::Null },
               "cancel_reason": if o.cancelled { json!("customer") } else { Value::Null },
               "customer": o.customer, "shipping_address": crate::shopify_privacy::shipping_address(&o.customer),
               "line_items": o.lines.iter().map(|(lid, _, _, sku, q)| json!({"id": lid, "sku": sku, "quantity": q,
                   "variant_id": lid + 1_000_000, "title": sku})).collect::<Vec<_>>()})
    }

    pub(crate) fn cost(&self, requested: f64, actual: f64, available: f64) -> Value {
        json!({"cost": {"requestedQueryCost": requested, "actualQueryCost": actual,
               "throttleStatus": {"maximumAvailable": self.bucket_max, "currentlyAvailable": available,
                                  "restoreRate": self.restore_rate}}})
    }
}

pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/admin/oauth/access_token", post(access_token))
        .route("/admin/api/{version}/graphql.json", post(graphql))
        .route("/admin/api/{version}/inventory_levels/set.json", post(rest_set))
        .merge(crate::shopify_catalog::router())
}

fn rest_error(status: StatusCode, errors: Value) -> Response {
    (status, Json(json!({ "errors": errors }))).into_response()
}

/// The shop of a valid `X-Shopify-Access-Token`.
fn authenticate(state: &State, headers: &HeaderMap) -> Result<String, Response> {
    let token = headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let m = state.shopify.lock();
    match m.access.get(token) {
        Some((shop, exp)) if exp.is_none_or(|e| e > Instant::now()) => Ok(shop.clone()),
        Some(_) => {
            state.count("shopify 401 expired");
            Err(rest_error(
                StatusCode::UNAUTHORIZED,
                json!("[API] Invalid API key or access token (unrecognized login or wrong password)"),
            ))
        }
        None => Err(rest_error(
            StatusCode::UNAUTHORIZED,
            json!("[API] Invalid API key or access token (unrecognized login or wrong password)"),
        )),
    }
}

pub(crate) async fn access_token(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
    let mut m = state.shopify.lock();
    let bad_grant = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    if m.apps.get(s("client_id")).map(String::as_str) != Some(s("client_secret")) || s("client_secret").is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_client", "error_description": "Client credentials are invalid"})),
        )
            .into_response();
    }
    if s("grant_type").is_empty() && !s("code").is_empty() {
        // the authorization-code exchange of the install flow
        let Some((shop, client, issued)) = m.codes.remove(s("code")) else {
            return bad_grant("The authorization code was not found or was already used");
        };
        if client != s("client_id") || issued.elapsed() > Duration::from_secs(600) {
            return bad_grant("The authorization code was not found or was already used");
        }
        state.count("shopify code exchange ok");
        let expiring =
            matches!(b.get("expiring"), Some(Value::String(x)) if x == "1") || b.get("expiring") == Some(&json!(1));
        return Json(m.grant(&shop, &client, expiring)).into_response();
    }
    if s("grant_type") != "refresh_token" {
        return bad_grant("unsupported grant_type");
    }
    let Some((shop, client)) = m.refresh.remove(s("refresh_token")) else {
        state.count("shopify token refresh invalid");
        return bad_grant("The refresh token is invalid, expired or already used.");
    };
    state.count("shopify token refresh ok");
    Json(m.grant(&shop, &client, true)).into_response()
}

/// "2026-04" and later use changeFromQuantity and require @idempotent.
fn modern(version: &str) -> bool {
    version >= "2026-04"
}

/// The key of `@idempotent(key: "...")` in a query, if any.
fn idempotency_key(query: &str) -> Option<String> {
    let at = query.find("@idempotent")?;
    let rest = &query[at..];
    let open = rest.find('"')?;
    let close = rest[open + 1..].find('"')?;
    Some(rest[open + 1..open + 1 + close].to_string())
}

fn user_error(code: &str, field: Value, message: &str) -> Value {
    json!({"code": code, "field": field, "message": message})
}

fn level_id(v: &Value) -> String {
    match v {
        Value::String(s) => s.rsplit('/').next().unwrap_or("").to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Takes a fixed `cost` from the shop's bucket: the `extensions` to answer with, or the whole
/// HTTP 200 `THROTTLED` reply when the bucket is short.
pub(crate) fn charge(state: &State, m: &mut Shopify, shop: &str, cost: f64) -> Result<Value, Value> {
    match m.spend(shop, cost) {
        Ok(available) => Ok(m.cost(cost, cost, available)),
        Err(available) => {
            state.count("shopify throttled");
            let ext = m.cost(cost, 0.0, available);
            Err(
                json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED",
                "documentation": "https://shopify.dev/api/usage/rate-limits"}}], "extensions": ext}),
            )
        }
    }
}

pub(crate) async fn graphql(
    AxState(state): AxState<Arc<State>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    Json(b): Json<Value>,
) -> Response {
    let shop = match authenticate(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let query = b.get("query").and_then(Value::as_str).unwrap_or("").to_string();
    let vars = b.get("variables").cloned().unwrap_or(Value::Null);
    let mut m = state.shopify.lock();
    if crate::shopify_webhooks::is_webhook_document(&query) {
        // webhookSubscriptions and their mutations: the subscriptions of the shop's app
        let answer = crate::shopify_webhooks::answer(&state, &mut m, &shop, &version, &query, &vars);
        return Json(answer).into_response();
    }
    if crate::shopify_catalog::is_catalog_query(&query) {
        // productVariants: its own cost, paging and limits
        return Json(crate::shopify_catalog::answer(&state, &mut m, &shop, &query, &vars)).into_response();
    }
    if crate::shopify_prices::is_price_document(&query) {
        // productVariantsBulkUpdate and inventoryItem -> variant: checked and costed there
        let answer = crate::shopify_prices::answer(&state, &mut m, &shop, &version, &query, &vars);
        return Json(answer).into_response();
    }
    let mutation = query.contains("inventorySetQuantities");
    let cost = if mutation { MUTATION_COST } else { QUERY_COST };
    let ext = match charge(&state, &mut m, &shop, cost) {
        Ok(ext) => ext,
        Err(throttled) => return Json(throttled).into_response(),
    };
    if !mutation {
        if !query.contains("inventoryItem") {
            return Json(json!({"errors": [{"message": "Only inventory queries are emulated"}], "extensions": ext}))
                .into_response();
        }
        let item = level_id(vars.get("id").unwrap_or(&Value::Null));
        let loc = level_id(vars.get("locationId").unwrap_or(&Value::Null));
        let level = m.levels.get(&(shop.clone(), item.clone(), loc.clone())).map(|l| {
            json!({"location": {"id": format!("gid://shopify/Location/{loc}")},
                   "quantities": [{"name": "available", "quantity": l.available}]})
        });
        let data =
            json!({"inventoryItem": {"id": format!("gid://shopify/InventoryItem/{item}"), "inventoryLevel": level}});
        return Json(json!({"data": data, "extensions": ext})).into_response();
    }
    state.count("shopify inventorySetQuantities calls");
    let key = idempotency_key(&query);
    if modern(&version) && key.is_none() {
        return Json(
            json!({"errors": [{"message": "The @idempotent directive is required for this mutation.",
            "extensions": {"code": "BAD_REQUEST"}}], "extensions": ext}),
        )
        .into_response();
    }
    if let Some(previous) = key.as_ref().and_then(|k| m.idempotent.get(k)) {
        state.count("shopify idempotent replays");
        let mut r = previous.clone();
        r["extensions"] = ext;
        return Json(r).into_response();
    }
    let input = vars.get("input").cloned().unwrap_or(Value::Null);
    let quantities = input
        .get("quantities")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut errors = Vec::new();
    let mut writes = Vec::new();
    if input.get("name").and_then(Value::as_str) != Some("available")
        && input.get("name").and_then(Value::as_str) != Some("on_hand")
    {
        errors.push(user_error(
            "INVALID_NAME",
            json!(["input", "name"]),
            "The quantity name must be available or on_hand.",
        ));
    }
    if quantities.len() > 250 {
        errors.push(user_error(
            "INVALID_QUANTITY",
            json!(["input", "quantities"]),
            "At most 250 quantities.",
        ));
    }
    let ignore_compare = input.get("ignoreCompareQuantity").and_then(Value::as_bool) == Some(true);
    for (i, q) in quantities.iter().enumerate() {
        let field = |f: &str| json!(["input", "quantities", i.to_string(), f]);
        let item = level_id(q.get("inventoryItemId").unwrap_or(&Value::Null));
        let loc = level_id(q.get("locationId").unwrap_or(&Value::Null));
        let qty = q.get("quantity").and_then(Value::as_i64).unwrap_or(-1);
        if qty < 0 {
            errors.push(user_error(
                "INVALID_QUANTITY_NEGATIVE",
                field("quantity"),
                "The quantity can't be negative.",
            ));
            continue;
        }
        if qty > 1_000_000_000 {
            errors.push(user_error(
                "INVALID_QUANTITY_TOO_HIGH",
                field("quantity"),
                "The quantity can't be higher than 1,000,000,000.",
            ));
            continue;
        }
        // (the exact level first: a generated catalog holds tens of thousands of levels)
        if !m.levels.contains_key(&(shop.clone(), item.clone(), loc.clone()))
            && !m.levels.keys().any(|(s, it, _)| *s == shop && *it == item)
        {
            errors.push(user_error(
                "INVALID_INVENTORY_ITEM",
                field("inventoryItemId"),
                "The specified inventory item could not be found.",
            ));
            continue;
        }
        let Some(level) = m.levels.get(&(shop.clone(), item.clone(), loc.clone())) else {
            errors.push(user_error(
                "ITEM_NOT_STOCKED_AT_LOCATION",
                field("locationId"),
                "The item is not stocked at the specified location.",
            ));
            continue;
        };
        let (cas_field, stale_code) = if modern(&version) {
            ("changeFromQuantity", "CHANGE_FROM_QUANTITY_STALE")
        } else {
            ("compareQuantity", "COMPARE_QUANTITY_STALE")
        };
        match q.get(cas_field) {
            None if modern(&version) => {
                errors.push(user_error(
                    "INVALID",
                    field(cas_field),
                    "changeFromQuantity is required (null opts out).",
                ));
                continue;
            }
            Some(Value::Number(n)) if !ignore_compare && n.as_i64() != Some(level.available) => {
                state.count("shopify stale");
                errors.push(user_error(
                    stale_code,
                    field(cas_field),
                    "The specified compare quantity does not match the current quantity.",
                ));
                continue;
            }
            None if !ignore_compare => {
                errors.push(user_error(
                    "INVALID",
                    field(cas_field),
                    "compareQuantity is required unless ignoreCompareQuantity is true.",
                ));
                continue;
            }
            _ => {}
        }
        writes.push(((shop.clone(), item, loc), qty, level.available));
    }
    // all or nothing, as the real mutation
    let payload = if errors.is_empty() {
        let mut changes = Vec::new();
        for (k, qty, before) in writes {
            if let Some(l) = m.levels.get_mut(&k) {
                l.available = qty;
                l.writes += 1;
            }
            state.count("shopify stock writes");
            changes.push(json!({"name": "available", "delta": qty - before, "quantityAfterChange": qty}));
        }
        json!({"inventoryAdjustmentGroup": {"id": format!("gid://shopify/InventoryAdjustmentGroup/{}", random_token("")),
               "createdAt": "2026-11-26T00:00:00Z", "reason": input.get("reason").cloned().unwrap_or(Value::Null),
               "changes": changes}, "userErrors": []})
    } else {
        json!({"inventoryAdjustmentGroup": null, "userErrors": errors})
    };
    let response = json!({"data": {"inventorySetQuantities": payload}});
    if let Some(k) = key {
        m.idempotent.insert(k, response.clone());
    }
    let mut r = response;
    r["extensions"] = ext;
    Json(r).into_response()
}

/// Legacy REST: `{"location_id", "inventory_item_id", "available"}`, a leaky bucket of 40 calls
/// leaking 2/s, `X-Shopify-Shop-Api-Call-Limit` on every reply, 429 with `Retry-After` over it.
async fn rest_set(AxState(state): AxState<Arc<State>>, headers: HeaderMap, Json(b): Json<Value>) -> Response {
    let shop = match authenticate(&state, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut m = state.shopify.lock();
    let (cap, leak) = (m.rest_bucket, m.rest_leak_per_s);
    let bucket = m.rest.entry(shop.clone()).or_insert((0.0, Instant::now()));
    let now = Instant::now();
    bucket.0 = (bucket.0 - now.duration_since(bucket.1).as_secs_f64() * leak).max(0.0);
    bucket.1 = now;
    if bucket.0 + 1.0 > cap {
        let wait = ((bucket.0 + 1.0 - cap) / leak).max(0.1);
        state.count("shopify 429");
        let mut r = rest_error(
            StatusCode::TOO_MANY_REQUESTS,
            json!("Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("{wait:.1}")) {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    bucket.0 += 1.0;
    let used = bucket.0.ceil() as i64;
    let limit = HeaderValue::from_str(&format!("{used}/{}", cap as i64)).ok();
    let item = level_id(b.get("inventory_item_id").unwrap_or(&Value::Null));
    let loc = level_id(b.get("location_id").unwrap_or(&Value::Null));
    let available = b.get("available").and_then(Value::as_i64);
    let mut r = match (m.levels.get_mut(&(shop, item.clone(), loc.clone())), available) {
        (Some(l), Some(a)) => {
            l.available = a;
            l.writes += 1;
            state.count("shopify stock writes");
            Json(
                json!({"inventory_level": {"inventory_item_id": item.parse::<i64>().unwrap_or(0),
                "location_id": loc.parse::<i64>().unwrap_or(0), "available": a, "updated_at": "2026-11-26T00:00:00Z"}}),
            )
            .into_response()
        }
        (None, _) => rest_error(StatusCode::NOT_FOUND, json!("Not Found")),
        (_, None) => rest_error(StatusCode::UNPROCESSABLE_ENTITY, json!({"available": ["is required"]})),
    };
    if let Some(v) = limit {
        r.headers_mut().insert("x-shopify-shop-api-call-limit", v);
    }
    r
}

// ---- admin (/_admin/shopify/...) --------------------------------------------------------------

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/apps", post(admin_app))
        .route("/shops", post(admin_shop))
        .route("/authorize", post(admin_authorize))
        .route("/levels", post(admin_level))
        .route("/levels/{item}/{location}", get(admin_get_level))
        .route("/levels/{item}/{location}/bump", post(admin_bump))
        .route("/orders", post(admin_order))
        .route("/orders/{id}/cancel", post(admin_cancel))
        .route("/webhook_secret", post(admin_webhook_secret))
        .route("/expire_tokens", post(admin_expire))
        .route("/config", post(admin_config))
        .route("/issued_tokens", get(admin_issued))
        .merge(crate::shopify_catalog::admin_router())
        .merge(crate::shopify_prices::admin_router())
        .merge(crate::shopify_webhooks::admin_router())
        .merge(crate::shopify_privacy::admin_router())
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

fn text<'a>(b: &'a Value, k: &str) -> Option<&'a str> {
    b.get(k).and_then(Value::as_str)
}

/// `{"client_id", "client_secret"}`
async fn admin_app(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(id), Some(secret)) = (text(&b, "client_id"), text(&b, "client_secret")) else {
        return bad("client_id and client_secret are required");
    };
    let mut m = state.shopify.lock();
    m.issued.push(secret.to_string());
    m.apps.insert(id.to_string(), secret.to_string());
    Json(json!({"ok": true})).into_response()
}

/// `{"shop", "client_id", "expiring"?: true}` -> a token grant
async fn admin_shop(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(shop), Some(id)) = (text(&b, "shop"), text(&b, "client_id")) else {
        return bad("shop and client_id are required");
    };
    let expiring = b.get("expiring").and_then(Value::as_bool).unwrap_or(true);
    let g = state.shopify.lock().grant(shop, id, expiring);
    Json(g).into_response()
}

/// The merchant approves the install: `{"shop", "client_id", "state"}` -> the callback's query
/// parameters as Shopify sends them (`code, hmac, host, shop, state, timestamp`), signed with the
/// app secret.
async fn admin_authorize(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(shop), Some(id)) = (text(&b, "shop"), text(&b, "client_id")) else {
        return bad("shop and client_id are required");
    };
    match state
        .shopify
        .lock()
        .install_callback(shop, id, text(&b, "state").unwrap_or(""))
    {
        Ok(q) => Json(json!(q)).into_response(),
        Err(e) => bad(&e),
    }
}

impl Shopify {
    /// The merchant approves the install: the callback's query (`code, hmac, host, shop, state,
    /// timestamp`), signed with the app secret as Shopify does; the code works once, 10 minutes.
    pub fn install_callback(
        &mut self,
        shop: &str,
        client_id: &str,
        st: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, String> {
        let secret = self.apps.get(client_id).cloned().ok_or("unknown client_id")?;
        let code = random_token("");
        self.codes
            .insert(code.clone(), (shop.to_string(), client_id.to_string(), Instant::now()));
        self.issued.push(code.clone());
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut q = std::collections::BTreeMap::new();
        q.insert("code".to_string(), code);
        q.insert("host".into(), "YWRtaW4uc2hvcGlmeS5jb20vc3RvcmUvc2FuZGJveA".into());
        q.insert("shop".into(), shop.to_string());
        q.insert("state".into(), st.to_string());
        q.insert("timestamp".into(), timestamp.to_string());
        let hmac = marketplace_signing::shopify_oauth(&secret, &q);
        q.insert("hmac".into(), hmac);
        Ok(q)
    }
}

/// `{"shop", "inventory_item_id", "location_id", "available"?}`
async fn admin_level(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(shop), Some(item), Some(loc)) = (text(&b, "shop"), b.get("inventory_item_id"), b.get("location_id"))
    else {
        return bad("shop, inventory_item_id and location_id are required");
    };
    let level = Level {
        available: b.get("available").and_then(Value::as_i64).unwrap_or(0),
        writes: 0,
    };
    state
        .shopify
        .lock()
        .levels
        .insert((shop.to_string(), level_id(item), level_id(loc)), level);
    Json(json!({"ok": true})).into_response()
}

fn find_level(m: &Shopify, item: &str, loc: &str) -> Option<(String, String, String)> {
    m.levels.keys().find(|(_, i, l)| i == item && l == loc).cloned()
}

async fn admin_get_level(AxState(state): AxState<Arc<State>>, Path((item, loc)): Path<(String, String)>) -> Response {
    let m = state.shopify.lock();
    match find_level(&m, &item, &loc).and_then(|k| m.levels.get(&k)) {
        Some(l) => Json(json!({"available": l.available, "writes": l.writes})).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "no such level"}))).into_response(),
    }
}

/// Another writer (an edit in the Shopify admin): `{"available", "send"?}` is set without our
/// knowing; Shopify then sends `inventory_levels/update`.
async fn admin_bump(
    AxState(state): AxState<Arc<State>>,
    Path((item, loc)): Path<(String, String)>,
    Json(b): Json<Value>,
) -> Response {
    let mut m = state.shopify.lock();
    let Some(k) = find_level(&m, &item, &loc) else {
        return bad("no such level");
    };
    let Some(l) = m.levels.get_mut(&k) else {
        return bad("no such level");
    };
    if let Some(a) = b.get("available").and_then(Value::as_i64) {
        l.available = a;
    }
    let available = l.available;
    let num = |s: &str| {
        s.parse::<u64>()
            .map(Value::from)
            .unwrap_or(Value::String(s.to_string()))
    };
    let event = json!({"inventory_item_id": num(&k.1), "location_id": num(&k.2), "available": available,
                       "updated_at": crate::state::rfc3339_now(),
                       "admin_graphql_api_id": format!("gid://shopify/InventoryLevel/{}?inventory_item_id={}", k.2, k.1)});
    match crate::shopify_webhooks::delivery(&state, &m, &k.0, "inventory_levels/update", &event) {
        Ok(d) => {
            drop(m);
            webhooks::produced(&state, &b, json!({"ok": true, "available": available}), &d, None)
        }
        // a level of a shop with no app: nothing to notify
        Err(_) => Json(json!({"ok": true, "available": available})).into_response(),
    }
}

/// A sale: `{"shop", "lines": [{"inventory_item_id", "location_id", "sku", "quantity"}],
/// "customer"?, "send"?}` takes from the levels and sends `orders/create`. The order carries a
/// generated buyer (`customer` fields given override it) and their shipping address.
pub(crate) async fn admin_order(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let Some(shop) = text(&b, "shop") else {
        return bad("shop is required");
    };
    if b.get("customer").is_some_and(|c| !c.is_object()) {
        return bad("customer must be an object");
    }
    let mut m = state.shopify.lock();
    let mut lines = Vec::new();
    for l in b.get("lines").and_then(Value::as_array).into_iter().flatten() {
        let (Some(item), Some(loc), Some(q)) = (
            l.get("inventory_item_id"),
            l.get("location_id"),
            l.get("quantity").and_then(Value::as_i64).filter(|q| *q > 0),
        ) else {
            return bad("each line needs inventory_item_id, location_id and a positive quantity");
        };
        let (item, loc) = (level_id(item), level_id(loc));
        let sku = text(l, "sku").unwrap_or("").to_string();
        let line_id = m.next_id();
        lines.push((line_id, item, loc, sku, q));
    }
    if lines.is_empty() {
        return bad("an order needs lines");
    }
    for (_, item, loc, _, q) in &lines {
        if let Some(level) = m.levels.get_mut(&(shop.to_string(), item.clone(), loc.clone())) {
            level.available -= q;
        }
    }
    let id = m.next_id();
    // a buyer per order, its id derived (not drawn) so order and line ids stay as they were
    let customer_id = id + 100_000_000_000;
    let order = Order {
        shop: shop.to_string(),
        lines,
        cancelled: false,
        customer: crate::shopify_privacy::customer(customer_id, b.get("customer")),
    };
    let body = m.order_body(id, &order);
    m.orders.insert(id, order);
    match crate::shopify_webhooks::delivery(&state, &m, shop, "orders/create", &body) {
        Ok(d) => {
            drop(m);
            webhooks::produced(&state, &b, json!({"order_id": id}), &d, None)
        }
        Err(e) => bad(&e),
    }
}

/// `{"send"?}`: cancels an order (its stock goes back) and sends `orders/cancelled`.
async fn admin_cancel(AxState(state): AxState<Arc<State>>, Path(id): Path<u64>, Json(b): Json<Value>) -> Response {
    let mut m = state.shopify.lock();
    let Some(mut order) = m.orders.get(&id).cloned() else {
        return bad("no such order");
    };
    if !order.cancelled {
        for (_, item, loc, _, q) in &order.lines {
            if let Some(level) = m.levels.get_mut(&(order.shop.clone(), item.clone(), loc.clone())) {
                level.available += q;
            }
        }
    }
    order.cancelled = true;
    let body = m.order_body(id, &order);
    let shop = order.shop.clone();
    m.orders.insert(id, order);
    match crate::shopify_webhooks::delivery(&state, &m, &shop, "orders/cancelled", &body) {
        Ok(d) => {
            drop(m);
            webhooks::produced(&state, &b, json!({"order_id": id}), &d, None)
        }
        Err(e) => bad(&e),
    }
}

/// `{"client_id", "webhook_secret"}`: sign the app's webhooks with another secret (rotation).
async fn admin_webhook_secret(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let (Some(id), Some(secret)) = (text(&b, "client_id"), text(&b, "webhook_secret")) else {
        return bad("client_id and webhook_secret are required");
    };
    let mut m = state.shopify.lock();
    m.issued.push(secret.to_string());
    m.webhook_secrets.insert(id.to_string(), secret.to_string());
    Json(json!({"ok": true})).into_response()
}

async fn admin_expire(AxState(state): AxState<Arc<State>>) -> Response {
    let n = state.shopify.lock().expire_access_tokens();
    Json(json!({"expired": n})).into_response()
}

/// `{"bucket_max"?, "restore_rate"?, "token_lifetime_s"?, "rest_bucket"?, "rest_leak_per_s"?,
/// "allow_http_webhooks"?}`
pub(crate) async fn admin_config(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let mut m = state.shopify.lock();
    if let Some(v) = b.get("allow_http_webhooks").and_then(Value::as_bool) {
        // loopback tests subscribe http:// addresses; Shopify takes https only
        m.webhooks.allow_http = v;
    }
    let num = |k: &str| b.get(k).and_then(Value::as_f64).filter(|v| *v > 0.0 && v.is_finite());
    if let Some(v) = num("bucket_max") {
        m.bucket_max = v;
        m.buckets.clear();
    }
    if let Some(v) = num("restore_rate") {
        m.restore_rate = v;
    }
    if let Some(v) = num("token_lifetime_s") {
        m.token_lifetime = Duration::from_secs_f64(v);
    }
    if let Some(v) = num("rest_bucket") {
        m.rest_bucket = v;
    }
    if let Some(v) = num("rest_leak_per_s") {
        m.rest_leak_per_s = v;
    }
    Json(json!({"ok": true})).into_response()
}

async fn admin_issued(AxState(state): AxState<Arc<State>>) -> Response {
    Json(json!(state.shopify.lock().issued)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Arc<State>, HeaderMap) {
        let state = Arc::new(State::default());
        let mut m = state.shopify.lock();
        m.apps.insert("c".into(), "s".into());
        let g = m.grant("a.myshopify.com", "c", true);
        m.levels
            .insert(("a.myshopify.com".into(), "1".into(), "9".into()), Level::default());
        drop(m);
        let mut h = HeaderMap::new();
        h.insert(
            "x-shopify-access-token",
            HeaderValue::from_str(g["access_token"].as_str().unwrap_or_default()).unwrap(),
        );
        (state, h)
    }

    fn mutation(key: Option<&str>, quantity: i64, change_from: Value) -> Json<Value> {
        let directive = key.map(|k| format!("@idempotent(key: \"{k}\")")).unwrap_or_default();
        Json(
            json!({"query": format!("mutation {{ inventorySetQuantities(input: $input) {directive} {{ userErrors {{ code }} }} }}"),
            "variables": {"input": {"name": "available", "reason": "correction", "quantities": [
                {"inventoryItemId": "gid://shopify/InventoryItem/1", "locationId": "gid://shopify/Location/9",
                 "quantity": quantity, "changeFromQuantity": change_from}]}}}),
        )
    }

    async fn body_json(r: Response) -> Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    async fn call(state: &Arc<State>, h: &HeaderMap, version: &str, body: Json<Value>) -> Value {
        body_json(graphql(AxState(state.clone()), Path(version.into()), h.clone(), body).await).await
    }

    #[tokio::test]
    async fn compare_and_set_idempotency_and_required_key() {
        let (state, h) = setup();
        let errors = |v: &Value| v["data"]["inventorySetQuantities"]["userErrors"].clone();
        // 2026-04+: the directive is required
        let v = call(&state, &h, "2026-10", mutation(None, 5, Value::Null)).await;
        assert!(v["errors"][0]["message"].as_str().unwrap_or("").contains("@idempotent"));
        // stale compare: nothing applied
        let v = call(&state, &h, "2026-10", mutation(Some("k1"), 5, json!(3))).await;
        assert_eq!(errors(&v)[0]["code"], "CHANGE_FROM_QUANTITY_STALE");
        assert_eq!(
            state.shopify.lock().levels.values().next().map(|l| l.available),
            Some(0)
        );
        // right compare: applied, with the cost extension
        let v = call(&state, &h, "2026-10", mutation(Some("k2"), 5, json!(0))).await;
        assert_eq!(errors(&v), json!([]));
        assert_eq!(v["extensions"]["cost"]["actualQueryCost"], MUTATION_COST);
        // the same key again: the first answer, not applied twice
        let again = call(&state, &h, "2026-10", mutation(Some("k2"), 5, json!(0))).await;
        assert_eq!(errors(&again), json!([]));
        assert_eq!(state.shopify.lock().levels.values().next().map(|l| l.writes), Some(1));
    }

    #[tokio::test]
    async fn the_install_callback_is_signed_and_its_code_works_once() {
        let (state, _) = setup();
        let cb = body_json(
            admin_authorize(
                AxState(state.clone()),
                Json(json!({"shop": "a.myshopify.com", "client_id": "c", "state": "n1"})),
            )
            .await,
        )
        .await;
        let q: std::collections::BTreeMap<String, String> = serde_json::from_value(cb.clone()).unwrap();
        assert_eq!(marketplace_signing::shopify_oauth("s", &q), q["hmac"]);
        let exchange = || Json(json!({"client_id": "c", "client_secret": "s", "code": q["code"], "expiring": "1"}));
        let g = body_json(access_token(AxState(state.clone()), exchange()).await).await;
        assert!(g["refresh_token"].as_str().is_some());
        let r = access_token(AxState(state), exchange()).await;
        assert_eq!(r.status(), 400);
    }

    #[tokio::test]
    async fn throttled_is_http_200_with_cost() {
        let (state, h) = setup();
        {
            let mut m = state.shopify.lock();
            m.bucket_max = 15.0;
            m.restore_rate = 0.001;
        }
        let first = call(&state, &h, "2026-10", mutation(Some("a"), 1, json!(0))).await;
        assert_eq!(
            first["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]
                .as_f64()
                .map(|v| v.round()),
            Some(5.0)
        );
        let r = graphql(
            AxState(state.clone()),
            Path("2026-10".into()),
            h.clone(),
            mutation(Some("b"), 2, json!(1)),
        )
        .await;
        assert_eq!(r.status(), 200);
        let v = body_json(r).await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "THROTTLED");
    }

    #[tokio::test]
    async fn rest_reports_the_call_limit_and_429s() {
        let (state, h) = setup();
        state.shopify.lock().rest_bucket = 2.0;
        let body = || Json(json!({"location_id": 9, "inventory_item_id": 1, "available": 6}));
        let r = rest_set(AxState(state.clone()), h.clone(), body()).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-shopify-shop-api-call-limit"], "1/2");
        let _ = rest_set(AxState(state.clone()), h.clone(), body()).await;
        let r = rest_set(AxState(state.clone()), h.clone(), body()).await;
        assert_eq!(r.status(), 429);
        assert!(r.headers().contains_key("retry-after"));
    }
}
