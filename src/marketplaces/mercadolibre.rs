//! MercadoLibre: classic items, items with variations and user products (distributed stock).

use super::events::{Order, OrderLine};
use super::http::{self, classify_failure, elapsed_ms, Reply};
use super::{
    check_keys, Connector, Credentials, Marketplace, PushKind, PushRequest, PushResult, RefreshError, RemoteRead,
    TokenGrant,
};
use serde_json::{json, Map, Value};
use std::time::Instant;

pub struct MercadoLibre;

/// How a listing's stock is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListingKind {
    Item,
    Variation(i64),
    UserProduct,
}

/// User products look like `MLBU206642488`: a site id, `U`, digits.
fn looks_like_user_product(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() > 4 && b[..3].iter().all(u8::is_ascii_uppercase) && b[3] == b'U' && b[4..].iter().all(u8::is_ascii_digit)
}

pub(super) fn listing_kind(external_id: &str, settings: &Value) -> Result<ListingKind, String> {
    let obj = match settings {
        Value::Null => return Ok(default_kind(external_id)),
        Value::Object(o) => o,
        _ => return Err("listing settings must be a JSON object".into()),
    };
    check_keys(obj, &["kind", "variation_id"], "mercadolibre listing settings")?;
    let variation = match obj.get("variation_id") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().ok_or("settings.variation_id must be an integer")?),
        Some(Value::String(s)) => Some(
            s.parse::<i64>()
                .map_err(|_| "settings.variation_id must be an integer")?,
        ),
        Some(_) => return Err("settings.variation_id must be an integer".into()),
    };
    let kind = match obj.get("kind").map(|k| k.as_str()) {
        None => default_kind(external_id),
        Some(Some("item")) => ListingKind::Item,
        Some(Some("user_product")) => ListingKind::UserProduct,
        Some(_) => return Err("settings.kind must be \"item\" or \"user_product\"".into()),
    };
    match (kind, variation) {
        (ListingKind::UserProduct, Some(_)) => Err("settings.variation_id does not apply to user products".into()),
        (_, Some(v)) => Ok(ListingKind::Variation(v)),
        (k, None) => Ok(k),
    }
}

fn default_kind(external_id: &str) -> ListingKind {
    if looks_like_user_product(external_id) {
        ListingKind::UserProduct
    } else {
        ListingKind::Item
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn as_id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Connector for MercadoLibre {
    fn marketplace(&self) -> Marketplace {
        Marketplace::MercadoLibre
    }

    fn default_base_url(&self) -> &'static str {
        "https://api.mercadolibre.com"
    }

    fn split_credentials(&self, input: &Value) -> Result<Credentials, String> {
        let obj = input
            .as_object()
            .ok_or("mercadolibre credentials must be a JSON object")?;
        check_keys(
            obj,
            &[
                "client_id",
                "client_secret",
                "refresh_token",
                "access_token",
                "expires_in",
                "user_id",
            ],
            "mercadolibre credentials",
        )?;
        let text = |k: &str, required: bool| -> Result<Option<String>, String> {
            match obj.get(k) {
                None | Some(Value::Null) if !required => Ok(None),
                None | Some(Value::Null) => Err(format!("mercadolibre credentials: \"{k}\" is required")),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(format!("mercadolibre credentials: \"{k}\" must be a non-empty string")),
            }
        };
        let client_id = obj
            .get("client_id")
            .and_then(as_id_string)
            .ok_or("mercadolibre credentials: \"client_id\" is required (string or number)")?;
        let client_secret = text("client_secret", true)?;
        let refresh_token = text("refresh_token", true)?;
        let access_token = text("access_token", false)?;
        let expires_in = match obj.get("expires_in") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .filter(|s| *s >= 0)
                    .ok_or("mercadolibre credentials: \"expires_in\" must be a non-negative integer")?,
            ),
        };
        let mut identifiers = Map::new();
        identifiers.insert("client_id".into(), Value::String(client_id));
        if let Some(u) = obj.get("user_id") {
            let u = as_id_string(u).ok_or("mercadolibre credentials: \"user_id\" must be a string or number")?;
            identifiers.insert("user_id".into(), Value::String(u));
        }
        let mut secrets = Map::new();
        secrets.insert("client_secret".into(), client_secret.into());
        secrets.insert("refresh_token".into(), refresh_token.into());
        if let Some(a) = access_token {
            secrets.insert("access_token".into(), a.into());
        }
        Ok(Credentials {
            identifiers,
            secrets,
            expires_in,
        })
    }

    fn check_listing(&self, external_id: &str, settings: &Value) -> Result<(), String> {
        if !valid_id(external_id) {
            return Err(format!(
                "invalid mercadolibre listing id \"{}\": expected letters, digits, '-' or '_'",
                external_id.chars().take(64).collect::<String>()
            ));
        }
        listing_kind(external_id, settings).map(|_| ())
    }

    fn push_stock(&self, agent: &ureq::Agent, req: &PushRequest) -> PushResult {
        let start = Instant::now();
        let (kind, status) = match listing_kind(&req.external_id, &req.listing_settings) {
            Err(e) => (PushKind::Permanent { error: e }, None),
            Ok(_) if !valid_id(&req.external_id) => (
                PushKind::Permanent {
                    error: "invalid listing id".into(),
                },
                None,
            ),
            Ok(ListingKind::Item) => push_item(agent, req),
            Ok(ListingKind::Variation(v)) => push_variation(agent, req, v),
            Ok(ListingKind::UserProduct) => push_user_product(agent, req),
        };
        PushResult {
            kind,
            http_status: status,
            latency_ms: elapsed_ms(start),
            learned: None,
        }
    }

    fn writes_prices(&self) -> bool {
        true
    }

    fn writes_price_with_stock(&self) -> bool {
        true
    }

    fn push_prices(&self, agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
        reqs.iter()
            .map(|r| super::mercadolibre_prices::push(agent, r))
            .collect()
    }

    fn catalog_page(
        &self,
        http: &ureq::Agent,
        req: &PushRequest,
        cursor: Option<&str>,
    ) -> Result<super::catalog::CatalogPage, super::catalog::CatalogError> {
        super::mercadolibre_catalog::page(http, req, cursor)
    }

    fn read_stock(&self, agent: &ureq::Agent, req: &PushRequest) -> Result<Option<i64>, String> {
        let kind = listing_kind(&req.external_id, &req.listing_settings)?;
        let path = match kind {
            ListingKind::UserProduct => format!("/user-products/{}/stock", req.external_id),
            _ => format!("/items/{}", req.external_id),
        };
        let v = get_json(agent, req, &path)?;
        Ok(quantity_of(kind, &v))
    }

    /// Items and variations are read 20 at a time (`GET /items?ids=`); user products one by one.
    fn max_read_batch(&self) -> usize {
        MULTIGET_MAX
    }

    fn read_calls(&self, reqs: &[PushRequest]) -> usize {
        let user_products = reqs
            .iter()
            .filter(|r| {
                matches!(
                    listing_kind(&r.external_id, &r.listing_settings),
                    Ok(ListingKind::UserProduct)
                )
            })
            .count();
        user_products + usize::from(user_products < reqs.len())
    }

    fn read_stocks(&self, agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<Result<Option<i64>, String>> {
        self.read_listings(agent, reqs)
            .into_iter()
            .map(|r| r.map(|read| read.stock))
            .collect()
    }

    /// Prices come with the same multiget (an item's variations share its price).
    fn reads_prices(&self) -> bool {
        true
    }

    fn read_listings(&self, agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<Result<RemoteRead, String>> {
        let kinds: Vec<Result<ListingKind, String>> = reqs
            .iter()
            .map(|r| listing_kind(&r.external_id, &r.listing_settings))
            .collect();
        let mut ids: Vec<&str> = reqs
            .iter()
            .zip(&kinds)
            .filter(|(r, k)| matches!(k, Ok(ListingKind::Item | ListingKind::Variation(_))) && valid_id(&r.external_id))
            .map(|(r, _)| r.external_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // one multiget for every item of the batch: id -> (code, body)
        let items: Result<std::collections::HashMap<String, (i64, Value)>, String> = match (ids.first(), reqs.first()) {
            (Some(_), Some(first)) => get_json(agent, first, &format!("/items?ids={}", ids.join(","))).map(|v| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        let body = e.get("body")?.clone();
                        let id = body.get("id").and_then(Value::as_str).map(str::to_string)?;
                        Some((id, (e.get("code").and_then(Value::as_i64).unwrap_or(0), body)))
                    })
                    .collect()
            }),
            _ => Ok(Default::default()),
        };
        reqs.iter()
            .zip(kinds)
            .map(|(r, kind)| match kind? {
                ListingKind::UserProduct => self.read_stock(agent, r).map(|stock| RemoteRead { stock, price: None }),
                k => {
                    let items = items.as_ref().map_err(Clone::clone)?;
                    match items.get(&r.external_id) {
                        Some((200, item)) => Ok(RemoteRead {
                            stock: quantity_of(k, item),
                            price: r.read_price.then(|| super::decimal_of(item.get("price"))).flatten(),
                        }),
                        Some((_, body)) => Err(http::truncate(
                            body.get("message").and_then(Value::as_str).unwrap_or("refused"),
                            300,
                        )),
                        None => Err(format!("MercadoLibre does not know item {}", r.external_id)),
                    }
                }
            })
            .collect()
    }

    fn read_order(&self, agent: &ureq::Agent, req: &PushRequest, order_id: &str) -> Result<Order, String> {
        if !valid_id(order_id) {
            return Err("invalid order id".into());
        }
        order_from_json(&get_json(agent, req, &format!("/orders/{order_id}"))?)
    }

    fn missed_notifications(&self, agent: &ureq::Agent, req: &PushRequest) -> Result<Vec<Value>, String> {
        let app = req.credentials.identifier("client_id").ok_or("client_id missing")?;
        if !valid_id(&app) {
            return Err("invalid client_id".into());
        }
        let v = get_json(agent, req, &format!("/missed_feeds?app_id={app}"))?;
        Ok(v.get("messages").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    fn refresh(&self, agent: &ureq::Agent, base_url: &str, creds: &Credentials) -> Result<TokenGrant, RefreshError> {
        let client_id = creds
            .identifier("client_id")
            .ok_or_else(|| RefreshError::InvalidGrant("client_id missing".into()))?;
        let client_secret = creds
            .secret("client_secret")
            .ok_or_else(|| RefreshError::InvalidGrant("client_secret missing".into()))?;
        let refresh_token = creds
            .secret("refresh_token")
            .ok_or_else(|| RefreshError::InvalidGrant("refresh_token missing".into()))?;
        let reply = http::read(
            agent
                .post(format!("{base_url}/oauth/token"))
                .header("accept", "application/json")
                .send_form([
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret),
                    ("refresh_token", refresh_token),
                ]),
        )
        .map_err(|e| RefreshError::Transient(e.0))?;
        parse_token_reply(&reply)
    }
}

fn parse_token_reply(reply: &Reply) -> Result<TokenGrant, RefreshError> {
    let body = reply.json();
    if (200..300).contains(&reply.status) {
        let body = body.ok_or_else(|| RefreshError::Transient("token endpoint answered non-JSON".into()))?;
        let access_token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| RefreshError::Transient("token reply without access_token".into()))?;
        return Ok(TokenGrant {
            access_token: access_token.to_string(),
            refresh_token: body.get("refresh_token").and_then(Value::as_str).map(str::to_string),
            expires_in: body.get("expires_in").and_then(Value::as_i64),
        });
    }
    let code = body
        .as_ref()
        .and_then(|b| b.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = http::error_text(reply);
    if matches!(code, "invalid_grant" | "invalid_client" | "unauthorized_client")
        || reply.status == 401
        || reply.status == 403
    {
        Err(RefreshError::InvalidGrant(text))
    } else {
        Err(RefreshError::Transient(text))
    }
}

pub(super) type Step = (PushKind, Option<u16>);

/// Items a multiget takes.
const MULTIGET_MAX: usize = 20;

/// The quantity a listing has in an item (or user-product stock) document.
fn quantity_of(kind: ListingKind, v: &Value) -> Option<i64> {
    match kind {
        ListingKind::Item => v.get("available_quantity").and_then(Value::as_i64),
        ListingKind::Variation(id) => v
            .get("variations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|x| x.get("id").and_then(Value::as_i64) == Some(id))
            .and_then(|x| x.get("available_quantity").and_then(Value::as_i64)),
        ListingKind::UserProduct => v
            .get("locations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|l| l.get("type").and_then(Value::as_str) == Some("selling_address"))
            .and_then(|l| l.get("quantity").and_then(Value::as_i64)),
    }
}

/// A GET answered with JSON, or the error in MercadoLibre's words.
fn get_json(agent: &ureq::Agent, req: &PushRequest, path: &str) -> Result<Value, String> {
    let reply = get(agent, req, path).map_err(|(k, _)| k.error().unwrap_or("no reply").to_string())?;
    if !ok(&reply) {
        return Err(http::error_text(&reply));
    }
    reply
        .json()
        .ok_or_else(|| "MercadoLibre answered with a body that is not JSON".to_string())
}

pub(super) fn get(agent: &ureq::Agent, req: &PushRequest, path: &str) -> Result<Reply, Step> {
    http::read(
        agent
            .get(format!("{}{path}", req.base_url))
            .header("authorization", format!("Bearer {}", req.access_token))
            .call(),
    )
    .map_err(|e| {
        (
            PushKind::Retry {
                error: e.0,
                retry_after: None,
            },
            None,
        )
    })
}

fn put(agent: &ureq::Agent, req: &PushRequest, path: &str, body: &Value, version: Option<&str>) -> Result<Reply, Step> {
    put_text(agent, req, path, body.to_string(), version)
}

/// PUT a body as text (prices write theirs by hand: exact decimals as JSON numbers).
pub(super) fn put_text(
    agent: &ureq::Agent,
    req: &PushRequest,
    path: &str,
    body: String,
    version: Option<&str>,
) -> Result<Reply, Step> {
    let mut r = agent
        .put(format!("{}{path}", req.base_url))
        .header("authorization", format!("Bearer {}", req.access_token))
        .header("content-type", "application/json");
    if let Some(v) = version {
        r = r.header("x-version", v);
    }
    http::read(r.send(body.as_bytes())).map_err(|e| {
        (
            PushKind::Retry {
                error: e.0,
                retry_after: None,
            },
            None,
        )
    })
}

fn ok(reply: &Reply) -> bool {
    (200..300).contains(&reply.status)
}

fn failure(reply: &Reply) -> Step {
    (classify_failure(reply), Some(reply.status))
}

fn push_item(agent: &ureq::Agent, req: &PushRequest) -> Step {
    let reply = match put(
        agent,
        req,
        &format!("/items/{}", req.external_id),
        &json!({"available_quantity": req.quantity}),
        None,
    ) {
        Ok(r) => r,
        Err(step) => return step,
    };
    if !ok(&reply) {
        return failure(&reply);
    }
    let remote = reply
        .json()
        .and_then(|b| b.get("available_quantity").and_then(Value::as_i64));
    (PushKind::Applied { remote }, Some(reply.status))
}

/// Every variation id of the listing's item (a write must list them all, or MercadoLibre deletes
/// the missing ones), read now; an error when `variation` is not among them.
pub(super) fn variation_ids(agent: &ureq::Agent, req: &PushRequest, variation: i64) -> Result<Vec<i64>, Step> {
    let item = match get(agent, req, &format!("/items/{}", req.external_id)) {
        Ok(r) if ok(&r) => r,
        Ok(r) => return Err(failure(&r)),
        Err(step) => return Err(step),
    };
    let ids: Vec<i64> = item
        .json()
        .and_then(|b| b.get("variations").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.get("id").and_then(Value::as_i64))
        .collect();
    if !ids.contains(&variation) {
        return Err((
            PushKind::Permanent {
                error: format!("variation {variation} does not exist on item {}", req.external_id),
            },
            Some(item.status),
        ));
    }
    Ok(ids)
}

fn push_variation(agent: &ureq::Agent, req: &PushRequest, variation: i64) -> Step {
    let path = format!("/items/{}", req.external_id);
    let ids = match variation_ids(agent, req, variation) {
        Ok(ids) => ids,
        Err(step) => return step,
    };
    // Every existing variation id must be sent, or MercadoLibre deletes the missing ones.
    let variations: Vec<Value> = ids
        .iter()
        .map(|id| {
            if *id == variation {
                json!({"id": id, "available_quantity": req.quantity})
            } else {
                json!({"id": id})
            }
        })
        .collect();
    let reply = match put(agent, req, &path, &json!({"variations": variations}), None) {
        Ok(r) => r,
        Err(step) => return step,
    };
    if !ok(&reply) {
        return failure(&reply);
    }
    let remote = reply.json().and_then(|b| {
        b.get("variations")?
            .as_array()?
            .iter()
            .find(|v| v.get("id").and_then(Value::as_i64) == Some(variation))?
            .get("available_quantity")?
            .as_i64()
    });
    (PushKind::Applied { remote }, Some(reply.status))
}

/// GET the stock for its `x-version`, then PUT with it; a 409 means someone wrote in between:
/// read again and retry, a few times.
fn push_user_product(agent: &ureq::Agent, req: &PushRequest) -> Step {
    let path = format!("/user-products/{}/stock", req.external_id);
    let mut last = None;
    for _ in 0..3 {
        let current = match get(agent, req, &path) {
            Ok(r) if ok(&r) => r,
            Ok(r) => return failure(&r),
            Err(step) => return step,
        };
        let Some(version) = current.x_version.clone() else {
            return (
                PushKind::Retry {
                    error: "user-products stock reply without x-version".into(),
                    retry_after: None,
                },
                Some(current.status),
            );
        };
        let reply = match put(
            agent,
            req,
            &format!("{path}/type/selling_address"),
            &json!({"quantity": req.quantity}),
            Some(&version),
        ) {
            Ok(r) => r,
            Err(step) => return step,
        };
        if reply.status == 409 {
            last = Some(reply);
            continue;
        }
        if !ok(&reply) {
            return failure(&reply);
        }
        // 204: no body; the write is versioned, so what we sent is what it holds.
        let remote = reply
            .json()
            .and_then(|b| b.get("quantity").and_then(Value::as_i64))
            .or(Some(req.quantity));
        return (PushKind::Applied { remote }, Some(reply.status));
    }
    let status = last.as_ref().map(|r| r.status);
    (
        PushKind::Retry {
            error: "user-products stock kept changing (409 three times)".into(),
            retry_after: None,
        },
        status,
    )
}

/// A MercadoLibre order (`GET /orders/{id}`): one line per item and variation.
pub fn order_from_json(v: &Value) -> Result<Order, String> {
    let cancelled = v.get("status").and_then(Value::as_str) == Some("cancelled");
    super::events::order(v, "id", cancelled, "order_items", |l| {
        let item = super::webhooks::id_text(l.pointer("/item/id")).ok_or("an order item has no item id")?;
        let variation = super::webhooks::id_text(l.pointer("/item/variation_id"));
        let line_id = format!("{item}-{}", variation.as_deref().unwrap_or("0"));
        Ok(OrderLine {
            quantity: super::events::line_quantity(l, "quantity", &line_id)?,
            line_id,
            external_id: Some(item),
            variation_id: variation,
            sku: super::events::text(l, "/item/seller_sku"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_product_ids_are_recognised() {
        assert!(looks_like_user_product("MLBU206642488"));
        assert!(!looks_like_user_product("MLB206642488"));
        assert!(!looks_like_user_product("MLBU"));
        assert!(!looks_like_user_product("mlbu123"));
    }

    #[test]
    fn listing_settings() {
        assert_eq!(listing_kind("MLM1", &json!({})), Ok(ListingKind::Item));
        assert_eq!(
            listing_kind("MLM1", &json!({"variation_id": 7})),
            Ok(ListingKind::Variation(7))
        );
        assert_eq!(
            listing_kind("MLM1", &json!({"variation_id": "7"})),
            Ok(ListingKind::Variation(7))
        );
        assert_eq!(listing_kind("MLMU1", &json!({})), Ok(ListingKind::UserProduct));
        assert_eq!(
            listing_kind("X1", &json!({"kind": "user_product"})),
            Ok(ListingKind::UserProduct)
        );
        assert!(listing_kind("MLM1", &json!({"kind": "bundle"})).is_err());
        assert!(listing_kind("MLM1", &json!({"variation": 1}))
            .unwrap_err()
            .contains("unknown key"));
        assert!(listing_kind("MLMU1", &json!({"variation_id": 1})).is_err());
        assert!(listing_kind("MLM1", &json!(3)).is_err());
    }

    #[test]
    fn credentials_are_split_and_checked() {
        let c = MercadoLibre
            .split_credentials(&json!({"client_id": 123, "client_secret": "s", "refresh_token": "TG-1", "access_token": "APP-1", "expires_in": 21600, "user_id": 9}))
            .unwrap();
        assert_eq!(c.identifier("client_id").as_deref(), Some("123"));
        assert_eq!(c.identifier("user_id").as_deref(), Some("9"));
        assert_eq!(c.secret("refresh_token"), Some("TG-1"));
        assert!(!serde_json::to_string(&c.identifiers).unwrap().contains("TG-1"));
        assert_eq!(c.expires_in, Some(21600));
        let err = MercadoLibre
            .split_credentials(&json!({"client_id": 1, "client_secret": "s"}))
            .unwrap_err();
        assert!(err.contains("refresh_token"), "{err}");
        let err = MercadoLibre
            .split_credentials(&json!({"client_id": 1, "client_secret": "s", "refresh_token": "r", "pasword": 1}))
            .unwrap_err();
        assert!(err.contains("unknown key \"pasword\""), "{err}");
        assert!(MercadoLibre.split_credentials(&json!("x")).is_err());
        assert!(MercadoLibre
            .split_credentials(&json!({"client_id": 1, "client_secret": "", "refresh_token": "r"}))
            .is_err());
    }

    #[test]
    fn token_replies() {
        let ok = Reply {
            status: 200,
            body: r#"{"access_token":"A","refresh_token":"R","expires_in":21600}"#.into(),
            retry_after: None,
            x_version: None,
        };
        let g = parse_token_reply(&ok).unwrap();
        assert_eq!(
            (g.access_token.as_str(), g.refresh_token.as_deref(), g.expires_in),
            ("A", Some("R"), Some(21600))
        );
        let dead = Reply {
            status: 400,
            body: r#"{"cause":[],"error":"invalid_grant","error_description":"Error validating grant.","status":400}"#
                .into(),
            retry_after: None,
            x_version: None,
        };
        assert!(matches!(parse_token_reply(&dead), Err(RefreshError::InvalidGrant(_))));
        let down = Reply {
            status: 503,
            body: String::new(),
            retry_after: None,
            x_version: None,
        };
        assert!(matches!(parse_token_reply(&down), Err(RefreshError::Transient(_))));
    }
}
