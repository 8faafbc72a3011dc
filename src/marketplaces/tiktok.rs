//! TikTok Shop (API 202309): every shop call carries `app_key`, `timestamp`, `shop_cipher` and a
//! `sign` computed over exactly the query, path and body bytes sent; the access token goes in
//! `x-tts-access-token`. Stock: inventory update per SKU and warehouse (absolute quantities,
//! 0 to 99,998). The envelope's `code` decides: 0 success, 105xxx token, 106001 sign, throttling,
//! others permanent with TikTok's message. Tokens refresh with a GET on the auth host; expiry
//! times come back absolute and are turned into "seconds from now".

use super::events::{Order, OrderLine};
use super::http::{self, elapsed_ms, Reply};
use super::subscriptions::{RemoteSubscription, SubscriptionError};
use super::unix_now;
use super::{
    check_keys, Connector, Credentials, Marketplace, PushKind, PushRequest, PushResult, RefreshError, RemoteRead,
    TokenGrant,
};
use marketplace_signing as signing;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Instant;

pub struct TikTok;

pub const DEFAULT_BASE: &str = "https://open-api.tiktokglobalshop.com";
pub const AUTH_BASE: &str = "https://auth.tiktok-shops.com";
/// The API takes 0 <= quantity < 99,999.
pub const MAX_QUANTITY: i64 = 99_998;

fn setting<'a>(settings: &'a Value, key: &str) -> Option<&'a str> {
    settings.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A signed shop call: POST `path` with `body`, the common parameters, sign and token.
fn call(agent: &ureq::Agent, req: &PushRequest, path: &str, body: &Value) -> Result<Reply, String> {
    signed(agent, req, path, &[], Some(body))
}

/// A product's details (its SKUs with their prices).
fn read_product(agent: &ureq::Agent, req: &PushRequest, product: &str) -> Result<Value, String> {
    if product.is_empty() || !product.bytes().all(|b| b.is_ascii_digit()) {
        return Err("tiktok listing settings: product_id must be digits".into());
    }
    let reply = signed(agent, req, &format!("/product/202309/products/{product}"), &[], None)?;
    if let Some(error) = classify(&reply).error() {
        return Err(error.to_string());
    }
    Ok(reply.json().unwrap_or(Value::Null))
}

/// A signed shop call: GET (no body) or POST, with `extra` query parameters (signed too).
pub(super) fn signed(
    agent: &ureq::Agent,
    req: &PushRequest,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Reply, String> {
    send(agent, req, false, path, extra, body)
}

/// A signed shop call sending `body` with PUT (the event API sets a webhook so).
pub(super) fn signed_put(agent: &ureq::Agent, req: &PushRequest, path: &str, body: &Value) -> Result<Reply, String> {
    send(agent, req, true, path, &[], Some(body))
}

/// A signed shop call; a body goes by PUT when `put`, else by POST.
fn send(
    agent: &ureq::Agent,
    req: &PushRequest,
    put: bool,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Reply, String> {
    let creds = &req.credentials;
    let app_secret = creds.secret("app_secret").unwrap_or_default();
    let mut query = BTreeMap::new();
    query.insert("app_key".to_string(), creds.identifier("app_key").unwrap_or_default());
    query.insert("timestamp".to_string(), unix_now().to_string());
    // every shop call names its shop; the app-level ones (authorized shops) have none yet
    if let Some(cipher) = creds.identifier("shop_cipher").filter(|c| !c.is_empty()) {
        query.insert("shop_cipher".to_string(), cipher);
    }
    for (k, v) in extra {
        query.insert(k.to_string(), v.to_string());
    }
    let raw = body.map(Value::to_string).unwrap_or_default();
    let sign = signing::tiktok_request(app_secret, path, &query, raw.as_bytes());
    let url = format!("{}{path}", req.base_url);
    let token = req.access_token.as_str();
    let result = match body {
        Some(_) => {
            let mut r = if put { agent.put(url) } else { agent.post(url) }
                .header("content-type", "application/json")
                .header("x-tts-access-token", token);
            for (k, v) in &query {
                r = r.query(k, v);
            }
            r.query("sign", &sign).send(raw.as_bytes())
        }
        None => {
            let mut r = agent.get(url).header("x-tts-access-token", token);
            for (k, v) in &query {
                r = r.query(k, v);
            }
            r.query("sign", &sign).call()
        }
    };
    http::read(result).map_err(|e| e.0)
}

/// The outcome of a shop call's reply.
pub(crate) fn classify(reply: &Reply) -> PushKind {
    let v = reply.json();
    let code = v.as_ref().and_then(|v| v.get("code")).and_then(Value::as_i64);
    let message = v
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let error = |c: i64| http::truncate(&format!("TikTok Shop {c}: {message}"), 500);
    match code {
        Some(0) if reply.status == 200 => PushKind::Applied { remote: None },
        _ if reply.status == 429 => PushKind::Throttled {
            error: error(code.unwrap_or(429)),
            retry_after: reply.retry_after,
        },
        _ if reply.status >= 500 => http::classify_failure(reply),
        // token trouble (105xxx) and a refused sign (106001): refresh; a refresh that fails
        // for good makes the connection need re-authorization
        Some(c) if (105_000..106_000).contains(&c) || c == 106_001 => PushKind::Unauthorized { error: error(c) },
        Some(36_009_004) => PushKind::Throttled {
            error: error(36_009_004),
            retry_after: reply.retry_after,
        },
        Some(c) => PushKind::Permanent { error: error(c) },
        None if reply.status == 200 => PushKind::Retry {
            error: "TikTok Shop answered without an envelope".into(),
            retry_after: None,
        },
        None => http::classify_failure(reply),
    }
}

impl Connector for TikTok {
    fn marketplace(&self) -> Marketplace {
        Marketplace::TikTok
    }

    fn default_base_url(&self) -> &'static str {
        DEFAULT_BASE
    }

    /// `{"app_key", "app_secret", "access_token", "refresh_token", "shop_cipher",
    ///   "access_token_expire_in"? (absolute unix time, as TikTok answers) | "expires_in"? (s),
    ///   "shop_id"?, "open_id"?}`
    fn split_credentials(&self, input: &Value) -> Result<Credentials, String> {
        let obj = input.as_object().ok_or("tiktok credentials must be a JSON object")?;
        check_keys(
            obj,
            &[
                "app_key",
                "app_secret",
                "access_token",
                "refresh_token",
                "shop_cipher",
                "access_token_expire_in",
                "expires_in",
                "shop_id",
                "open_id",
            ],
            "tiktok credentials",
        )?;
        let text = |k: &str, required: bool| match obj.get(k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(Value::Number(n)) if k == "shop_id" => Ok(Some(n.to_string())),
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(format!("tiktok credentials: \"{k}\" is required")),
            Some(_) => Err(format!("tiktok credentials: \"{k}\" must be a non-empty string")),
        };
        let mut identifiers = Map::new();
        for (k, required) in [
            ("app_key", true),
            ("shop_cipher", true),
            ("shop_id", false),
            ("open_id", false),
        ] {
            if let Some(v) = text(k, required)? {
                identifiers.insert(k.into(), Value::String(v));
            }
        }
        let mut secrets = Map::new();
        for (k, required) in [("app_secret", true), ("refresh_token", true), ("access_token", false)] {
            if let Some(v) = text(k, required)? {
                secrets.insert(k.into(), Value::String(v));
            }
        }
        let number = |k: &str| match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or(format!("tiktok credentials: \"{k}\" must be a non-negative integer")),
        };
        let expires_in = match (number("access_token_expire_in")?, number("expires_in")?) {
            (Some(at), _) => Some(at.saturating_sub(unix_now()).max(0)),
            (None, rel) => rel,
        };
        Ok(Credentials {
            identifiers,
            secrets,
            expires_in,
        })
    }

    /// The external id is the SKU id; settings name its `product_id` and `warehouse_id`.
    fn check_listing(&self, external_id: &str, settings: &Value) -> Result<(), String> {
        let ok_id = |s: &str| {
            !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !ok_id(external_id) {
            return Err(format!(
                "invalid tiktok SKU id \"{}\": letters, digits, '-' or '_'",
                external_id.chars().take(64).collect::<String>()
            ));
        }
        let obj = settings.as_object().ok_or("listing settings must be a JSON object")?;
        check_keys(obj, &["product_id", "warehouse_id"], "tiktok listing settings")?;
        for k in ["product_id", "warehouse_id"] {
            match setting(settings, k) {
                Some(v) if ok_id(v) => {}
                _ => {
                    return Err(format!(
                        "tiktok listing settings: \"{k}\" is required (letters, digits, '-' or '_')"
                    ))
                }
            }
        }
        Ok(())
    }

    fn writes_prices(&self) -> bool {
        true
    }

    fn max_price_batch(&self) -> usize {
        super::tiktok_prices::MAX_PRICES
    }

    fn price_call_group(&self, _connection_settings: &Value, listing_settings: &Value) -> String {
        super::tiktok_prices::product_id(listing_settings).unwrap_or_default()
    }

    fn push_prices(&self, agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
        super::tiktok_prices::push(agent, reqs)
    }

    fn webhook_topics(&self) -> &'static [&'static str] {
        super::tiktok_subscriptions::TOPICS
    }

    fn list_subscriptions(
        &self,
        agent: &ureq::Agent,
        req: &PushRequest,
    ) -> Result<Vec<RemoteSubscription>, SubscriptionError> {
        super::tiktok_subscriptions::list(agent, req)
    }

    fn subscribe(
        &self,
        agent: &ureq::Agent,
        req: &PushRequest,
        topic: &str,
        address: &str,
        _remote_id: Option<&str>,
    ) -> Result<RemoteSubscription, SubscriptionError> {
        super::tiktok_subscriptions::subscribe(agent, req, topic, address)
    }

    fn catalog_page(
        &self,
        agent: &ureq::Agent,
        req: &PushRequest,
        cursor: Option<&str>,
    ) -> Result<super::catalog::CatalogPage, super::catalog::CatalogError> {
        super::tiktok_catalog::page(agent, req, cursor)
    }

    fn push_stock(&self, agent: &ureq::Agent, req: &PushRequest) -> PushResult {
        let start = Instant::now();
        let (Some(product), Some(warehouse)) = (
            setting(&req.listing_settings, "product_id"),
            setting(&req.listing_settings, "warehouse_id"),
        ) else {
            return PushResult {
                kind: PushKind::Permanent {
                    error: "the listing has no product_id or warehouse_id".into(),
                },
                http_status: None,
                latency_ms: 0.0,
                learned: None,
            };
        };
        let path = format!("/product/202309/products/{product}/inventory/update");
        let body = json!({"skus": [{"id": req.external_id, "inventory": [
            {"warehouse_id": warehouse, "quantity": req.quantity.clamp(0, MAX_QUANTITY)}]}]});
        match call(agent, req, &path, &body) {
            Ok(reply) => PushResult {
                kind: classify(&reply),
                http_status: Some(reply.status),
                latency_ms: elapsed_ms(start),
                learned: None,
            },
            Err(e) => PushResult {
                kind: PushKind::Retry {
                    error: e,
                    retry_after: None,
                },
                http_status: None,
                latency_ms: elapsed_ms(start),
                learned: None,
            },
        }
    }

    fn read_order(&self, agent: &ureq::Agent, req: &PushRequest, order_id: &str) -> Result<Order, String> {
        let reply = signed(agent, req, "/order/202309/orders", &[("ids", order_id)], None)?;
        if let Some(error) = classify(&reply).error() {
            return Err(error.to_string());
        }
        let v = reply.json().unwrap_or(Value::Null);
        let order = v
            .pointer("/data/orders")
            .and_then(Value::as_array)
            .and_then(|o| {
                o.iter()
                    .find(|o| super::webhooks::id_text(o.get("id")).as_deref() == Some(order_id))
            })
            .ok_or_else(|| format!("TikTok Shop does not return order {order_id}"))?;
        order_from_json(order)
    }

    /// Stock by inventory search per SKU; prices from the product (one GET per product asked).
    fn reads_prices(&self) -> bool {
        true
    }

    fn read_calls(&self, reqs: &[PushRequest]) -> usize {
        let products: std::collections::BTreeSet<String> = reqs
            .iter()
            .filter(|r| r.read_price)
            .filter_map(|r| super::tiktok_prices::product_id(&r.listing_settings))
            .collect();
        reqs.len() + products.len()
    }

    fn read_listings(&self, agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<Result<RemoteRead, String>> {
        let mut products: std::collections::BTreeMap<String, Result<Value, String>> = Default::default();
        reqs.iter()
            .map(|r| {
                let stock = self.read_stock(agent, r)?;
                let product = r
                    .read_price
                    .then(|| super::tiktok_prices::product_id(&r.listing_settings))
                    .flatten();
                let Some(product) = product else {
                    return Ok(RemoteRead { stock, price: None });
                };
                let detail = products
                    .entry(product.clone())
                    .or_insert_with(|| read_product(agent, r, &product));
                let detail = detail.as_ref().map_err(Clone::clone)?;
                let price = detail
                    .pointer("/data/skus")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|s| super::webhooks::id_text(s.get("id")).as_deref() == Some(r.external_id.as_str()))
                    .and_then(|s| super::decimal_of(s.pointer("/price/sale_price")));
                Ok(RemoteRead { stock, price })
            })
            .collect()
    }

    fn read_stock(&self, agent: &ureq::Agent, req: &PushRequest) -> Result<Option<i64>, String> {
        let reply = call(
            agent,
            req,
            "/product/202309/inventory/search",
            &json!({"sku_ids": [req.external_id]}),
        )?;
        if let Some(error) = classify(&reply).error() {
            return Err(error.to_string());
        }
        let warehouse = setting(&req.listing_settings, "warehouse_id");
        let v = reply.json().unwrap_or(Value::Null);
        let sku = v
            .pointer("/data/inventory")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|p| p.get("skus").and_then(Value::as_array).into_iter().flatten())
            .find(|s| s.get("id").and_then(Value::as_str) == Some(req.external_id.as_str()));
        Ok(sku.and_then(|s| {
            s.get("warehouse_inventory")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|w| w.get("warehouse_id").and_then(Value::as_str) == warehouse)
                .and_then(|w| w.get("available_quantity").and_then(Value::as_i64))
        }))
    }

    fn refresh(&self, agent: &ureq::Agent, base_url: &str, creds: &Credentials) -> Result<TokenGrant, RefreshError> {
        let app_key = creds
            .identifier("app_key")
            .ok_or_else(|| RefreshError::InvalidGrant("app_key missing".into()))?;
        let app_secret = creds
            .secret("app_secret")
            .ok_or_else(|| RefreshError::InvalidGrant("app_secret missing".into()))?;
        let refresh_token = creds
            .secret("refresh_token")
            .ok_or_else(|| RefreshError::InvalidGrant("refresh_token missing".into()))?;
        // the real token endpoint lives on its own host; an overridden base (the sandbox) has both
        let auth_base = if base_url == DEFAULT_BASE { AUTH_BASE } else { base_url };
        let reply = http::read(
            agent
                .get(format!("{auth_base}/api/v2/token/refresh"))
                .query("app_key", &app_key)
                .query("app_secret", app_secret)
                .query("refresh_token", refresh_token)
                .query("grant_type", "refresh_token")
                .call(),
        )
        // the request URL carries the app secret: no transport detail goes into the message
        .map_err(|_| RefreshError::Transient("TikTok Shop token endpoint unreachable".into()))?;
        if reply.status >= 500 || reply.status == 429 {
            return Err(RefreshError::Transient(format!(
                "TikTok Shop token endpoint: HTTP {}",
                reply.status
            )));
        }
        let v = reply
            .json()
            .ok_or_else(|| RefreshError::Transient("TikTok Shop token endpoint: not JSON".into()))?;
        let code = v.get("code").and_then(Value::as_i64).unwrap_or(-1);
        if code != 0 {
            let message = v.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(RefreshError::InvalidGrant(http::truncate(
                &format!("TikTok Shop {code}: {message}"),
                300,
            )));
        }
        let data = v.get("data").cloned().unwrap_or(Value::Null);
        let access_token = data
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| RefreshError::Transient("TikTok Shop token reply without access_token".into()))?;
        Ok(TokenGrant {
            access_token: access_token.to_string(),
            refresh_token: data.get("refresh_token").and_then(Value::as_str).map(str::to_string),
            expires_in: data
                .get("access_token_expire_in")
                .and_then(Value::as_i64)
                .map(|at| at.saturating_sub(unix_now()).max(0)),
        })
    }
}

/// The shop a new token was granted for: (shop_cipher, shop_id), from the authorized shops.
pub fn authorized_shop(agent: &ureq::Agent, api_base: &str, creds: &Value) -> Result<(String, String), String> {
    // no shop_cipher yet, so not a connection's credentials: just what signing needs
    let mut split = Credentials::default();
    for (k, into_secrets) in [("app_key", false), ("app_secret", true)] {
        if let Some(v) = creds.get(k).cloned() {
            if into_secrets {
                &mut split.secrets
            } else {
                &mut split.identifiers
            }
            .insert(k.to_string(), v);
        }
    }
    let req = PushRequest {
        base_url: api_base.to_string(),
        external_id: String::new(),
        listing_settings: Value::Null,
        quantity: 0,
        access_token: creds
            .get("access_token")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        credentials: split,
        idempotency_key: String::new(),
        last_known: None,
        connection_settings: Value::Null,
        price: None,
        read_price: false,
    };
    let reply = signed(agent, &req, "/authorization/202309/shops", &[], None)?;
    if let Some(error) = classify(&reply).error() {
        return Err(error.to_string());
    }
    let v = reply.json().unwrap_or(Value::Null);
    let shop = v
        .pointer("/data/shops/0")
        .ok_or("TikTok Shop authorized no shop for this token")?;
    let cipher = super::webhooks::id_text(shop.get("cipher")).ok_or("the authorized shop has no cipher")?;
    Ok((cipher, super::webhooks::id_text(shop.get("id")).unwrap_or_default()))
}

/// A TikTok Shop order: every line item is one unit.
pub fn order_from_json(o: &Value) -> Result<Order, String> {
    let cancelled = o.get("status").and_then(Value::as_str) == Some("CANCELLED");
    super::events::order(o, "id", cancelled, "line_items", |l| {
        Ok(OrderLine {
            line_id: super::webhooks::id_text(l.get("id")).ok_or("a line item has no id")?,
            external_id: super::webhooks::id_text(l.get("sku_id")),
            variation_id: None,
            sku: super::events::text(l, "/seller_sku"),
            quantity: 1,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply::new(status, body)
    }

    #[test]
    fn envelope_codes_map_to_decisions() {
        assert_eq!(
            classify(&reply(200, r#"{"code":0,"message":"Success","data":null}"#)),
            PushKind::Applied { remote: None }
        );
        assert!(matches!(
            classify(&reply(401, r#"{"code":105002,"message":"Access token is expired."}"#)),
            PushKind::Unauthorized { .. }
        ));
        match classify(&reply(401, r#"{"code":106001,"message":"Invalid credentials."}"#)) {
            PushKind::Unauthorized { error } => assert_eq!(error, "TikTok Shop 106001: Invalid credentials."),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&reply(429, r#"{"code":36009004}"#)),
            PushKind::Throttled { .. }
        ));
        assert!(matches!(classify(&reply(503, "")), PushKind::Retry { .. }));
        assert!(matches!(
            classify(&reply(200, r#"{"code":12052230,"message":"SKU x does not exist."}"#)),
            PushKind::Permanent { .. }
        ));
        assert!(matches!(classify(&reply(200, "<html>")), PushKind::Retry { .. }));
    }

    #[test]
    fn credentials_turn_absolute_expiry_into_seconds_from_now() {
        let c = TikTok
            .split_credentials(
                &json!({"app_key": "k", "app_secret": "s", "access_token": "a", "refresh_token": "r",
                                       "shop_cipher": "C", "access_token_expire_in": unix_now() + 3600}),
            )
            .unwrap();
        let e = c.expires_in.unwrap_or(0);
        assert!((3590..=3600).contains(&e), "{e}");
        assert!(c.identifiers.get("app_secret").is_none());
        assert_eq!(c.secret("app_secret"), Some("s"));
        assert!(TikTok.split_credentials(&json!({"app_key": "k"})).is_err());
        assert!(TikTok
            .check_listing("123", &json!({"product_id": "P1", "warehouse_id": "W1"}))
            .is_ok());
        assert!(TikTok.check_listing("123", &json!({"product_id": "P1"})).is_err());
        assert!(TikTok
            .check_listing("1 2", &json!({"product_id": "P1", "warehouse_id": "W1"}))
            .is_err());
    }
}
