//! Shopify: GraphQL Admin API `inventorySetQuantities` (`name: "available"`), an
//! `@idempotent(key:)` made from the jobs so a retried call is not applied twice, and
//! compare-and-set against the quantity we last saw (`changeFromQuantity` from 2026-04,
//! `compareQuantity` before). A `*_STALE` userError re-reads the level and is resolved by the
//! connection's `conflict_strategy` (`egdc_wins`, the default, writes again from what Shopify
//! holds; `manual` dead-letters the listing for review) instead of overwriting blindly.
//! `THROTTLED` (HTTP 200) and the cost extension feed the limiter. Up to 250 quantities per call.

use super::http::{self, elapsed_ms, Reply};
use super::subscriptions::{RemoteSubscription, SubscriptionError};
use super::{
    check_keys, Connector, Credentials, Marketplace, PushKind, PushRequest, PushResult, RefreshError, RemoteRead,
    TokenGrant,
};
use serde_json::{json, Map, Value};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

pub struct Shopify;

pub const DEFAULT_API_VERSION: &str = "2026-10";
const MAX_QUANTITIES: usize = 250;
/// The shop's own host when no base_url override is set.
const SHOP_BASE: &str = "https://{shop}";

pub(super) fn api_version(req: &PushRequest) -> String {
    req.connection_settings
        .get("api_version")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_API_VERSION)
        .to_string()
}

fn modern(version: &str) -> bool {
    version >= "2026-04"
}

fn shop_base(base_url: &str, creds: &Credentials) -> String {
    base_url.replace("{shop}", &creds.identifier("shop").unwrap_or_default())
}

pub(super) fn gid(kind: &str, id: &str) -> String {
    if id.starts_with("gid://") {
        id.to_string()
    } else {
        format!("gid://shopify/{kind}/{id}")
    }
}

fn location(req: &PushRequest) -> String {
    gid(
        "Location",
        req.listing_settings
            .get("location_id")
            .map_or(String::new(), |v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .as_str(),
    )
}

/// One key for a call: a single write keeps its own, a batch hashes its members'.
fn call_key(reqs: &[&PushRequest]) -> String {
    if let [one] = reqs {
        return one.idempotency_key.clone();
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in reqs {
        r.idempotency_key.hash(&mut h);
    }
    format!("integ-batch-{:016x}-{}", h.finish(), reqs.len())
}

pub(super) fn graphql(agent: &ureq::Agent, req: &PushRequest, query: &str, variables: Value) -> Result<Reply, String> {
    let url = format!(
        "{}/admin/api/{}/graphql.json",
        shop_base(&req.base_url, &req.credentials),
        api_version(req)
    );
    http::read(
        agent
            .post(url)
            .header("content-type", "application/json")
            .header("x-shopify-access-token", &req.access_token)
            .send(json!({"query": query, "variables": variables}).to_string().as_bytes()),
    )
    .map_err(|e| e.0)
}

/// A reply that is not a mutation payload: THROTTLED, HTTP errors, GraphQL errors.
pub(crate) fn call_failure(reply: &Reply) -> Option<PushKind> {
    if reply.status != 200 {
        return Some(http::classify_failure(reply));
    }
    let Some(v) = reply.json() else {
        return Some(PushKind::Retry {
            error: "Shopify answered with a body that is not JSON".into(),
            retry_after: None,
        });
    };
    let errors = v.get("errors").and_then(Value::as_array)?;
    let first = errors.first().cloned().unwrap_or(Value::Null);
    let message = first.get("message").and_then(Value::as_str).unwrap_or("GraphQL error");
    if first.pointer("/extensions/code").and_then(Value::as_str) == Some("THROTTLED") {
        // wait until the bucket holds what the query costs
        let cost = v.pointer("/extensions/cost");
        let f = |p: &str| cost.and_then(|c| c.pointer(p)).and_then(Value::as_f64);
        let wait = match (
            f("/requestedQueryCost"),
            f("/throttleStatus/currentlyAvailable"),
            f("/throttleStatus/restoreRate"),
        ) {
            (Some(need), Some(have), Some(rate)) if rate > 0.0 => ((need - have) / rate).max(0.1),
            _ => 1.0,
        };
        return Some(PushKind::Throttled {
            error: "Shopify THROTTLED".into(),
            retry_after: Some(Duration::from_secs_f64(wait.min(60.0))),
        });
    }
    Some(PushKind::Permanent {
        error: http::truncate(&format!("Shopify GraphQL error: {message}"), 500),
    })
}

const SET_MUTATION: &str = "mutation SetAvailable($input: InventorySetQuantitiesInput!) {
  inventorySetQuantities(input: $input) @idempotent(key: \"KEY\") {
    inventoryAdjustmentGroup { id changes { name delta quantityAfterChange } }
    userErrors { code field message }
  }
}";

const LEVEL_QUERY: &str = "query Level($id: ID!, $locationId: ID!) {
  inventoryItem(id: $id) {
    inventoryLevel(locationId: $locationId) { quantities(names: [\"available\"]) { name quantity } }
  }
}";

/// A quantity entry; `compare` is what we believe Shopify holds (None: no compare).
fn quantity(req: &PushRequest, version: &str, compare: Option<i64>) -> Value {
    let mut q = json!({
        "inventoryItemId": gid("InventoryItem", &req.external_id),
        "locationId": location(req),
        "quantity": req.quantity.clamp(0, 1_000_000_000),
    });
    if modern(version) {
        q["changeFromQuantity"] = compare.map_or(Value::Null, Value::from);
    } else if let Some(c) = compare {
        q["compareQuantity"] = Value::from(c);
    }
    q
}

/// Per-request outcome of one mutation call; `None` for a request that must be sent again
/// (another quantity of the same all-or-nothing call was refused).
enum Answer {
    Done(PushKind),
    Stale,
    Resend,
}

fn set(agent: &ureq::Agent, reqs: &[&PushRequest], compares: &[Option<i64>], key: &str) -> (Vec<Answer>, Option<u16>) {
    let version = api_version(reqs[0]);
    let quantities: Vec<Value> = reqs
        .iter()
        .zip(compares)
        .map(|(r, c)| quantity(r, &version, *c))
        .collect();
    let mut input = json!({"name": "available", "reason": "correction",
                           "referenceDocumentUri": format!("gid://integration/Sync/{key}"), "quantities": quantities});
    if !modern(&version) && compares.iter().any(Option::is_none) {
        input["ignoreCompareQuantity"] = Value::Bool(true);
    }
    let all = |kind: PushKind| reqs.iter().map(|_| Answer::Done(kind.clone())).collect();
    // keys are [A-Za-z0-9-] (ours), safe inside the string literal
    let query = SET_MUTATION.replace("KEY", key);
    let reply = match graphql(agent, reqs[0], &query, json!({ "input": input })) {
        Ok(r) => r,
        Err(e) => {
            return (
                all(PushKind::Retry {
                    error: e,
                    retry_after: None,
                }),
                None,
            )
        }
    };
    if let Some(kind) = call_failure(&reply) {
        return (all(kind), Some(reply.status));
    }
    let v = reply.json().unwrap_or(Value::Null);
    let errors = v
        .pointer("/data/inventorySetQuantities/userErrors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if errors.is_empty() {
        let answers = reqs
            .iter()
            .map(|r| {
                Answer::Done(PushKind::Applied {
                    remote: Some(r.quantity.clamp(0, 1_000_000_000)),
                })
            })
            .collect();
        return (answers, Some(reply.status));
    }
    // nothing was applied: errors name their quantity by index
    let mut answers: Vec<Answer> = reqs.iter().map(|_| Answer::Resend).collect();
    for e in &errors {
        let code = e.get("code").and_then(Value::as_str).unwrap_or("");
        let message = e.get("message").and_then(Value::as_str).unwrap_or("");
        let index = e
            .get("field")
            .and_then(Value::as_array)
            .and_then(|f| f.get(2))
            .and_then(Value::as_str)
            .and_then(|i| i.parse::<usize>().ok());
        let answer = if code.ends_with("_STALE") {
            Answer::Stale
        } else {
            Answer::Done(PushKind::Permanent {
                error: http::truncate(&format!("Shopify {code}: {message}"), 500),
            })
        };
        match index {
            Some(i) if i < answers.len() => answers[i] = answer,
            // an error about the whole input refuses every quantity
            _ => {
                if let Answer::Done(kind) = answer {
                    return (all(kind), Some(reply.status));
                }
            }
        }
    }
    (answers, Some(reply.status))
}

/// The quantity Shopify holds now for a listing (None: not stocked there).
fn read_level(agent: &ureq::Agent, req: &PushRequest) -> Result<Option<i64>, String> {
    read_level_kind(agent, req).map_err(|kind| kind.error().unwrap_or("unexpected reply").to_string())
}

/// The level's available quantity, or what the failed read means (THROTTLED stays Throttled: it
/// slows the connection instead of burning an attempt and counting toward its circuit).
fn read_level_kind(agent: &ureq::Agent, req: &PushRequest) -> Result<Option<i64>, PushKind> {
    let reply = graphql(
        agent,
        req,
        LEVEL_QUERY,
        json!({"id": gid("InventoryItem", &req.external_id), "locationId": location(req)}),
    )
    .map_err(|error| PushKind::Retry {
        error,
        retry_after: None,
    })?;
    if let Some(kind) = call_failure(&reply) {
        return Err(kind);
    }
    let v = reply.json().unwrap_or(Value::Null);
    Ok(v.pointer("/data/inventoryItem/inventoryLevel/quantities")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|q| q.get("name").and_then(Value::as_str) == Some("available"))
        .and_then(|q| q.get("quantity").and_then(Value::as_i64)))
}

/// A stale compare: re-read and apply the connection's conflict strategy.
fn resolve_stale(agent: &ureq::Agent, req: &PushRequest) -> PushKind {
    let strategy = req
        .connection_settings
        .get("conflict_strategy")
        .and_then(Value::as_str)
        .unwrap_or("egdc_wins");
    for _ in 0..3 {
        let holds = match read_level_kind(agent, req) {
            Ok(Some(h)) => h,
            Ok(None) => {
                return PushKind::Permanent {
                    error: "Shopify: the item is not stocked at this location".into(),
                }
            }
            Err(kind) => return kind,
        };
        // egdc_wins and most_recent (the change being pushed is EGDC's newest) write again;
        // manual and marketplace_wins leave Shopify's value (its edit reaches EGDC as a webhook
        // or through reconciliation)
        if matches!(strategy, "manual" | "marketplace_wins") {
            return PushKind::Permanent {
                error: format!(
                    "conflict: Shopify holds {holds} where we expected {}; EGDC has {} (conflict_strategy {strategy}: review it)",
                    req.last_known.map_or("nothing known".to_string(), |k| k.to_string()),
                    req.quantity
                ),
            };
        }
        let key = format!("{}-from-{holds}", req.idempotency_key);
        let (answers, _) = set(agent, &[req], &[Some(holds)], &key);
        match answers.into_iter().next() {
            Some(Answer::Done(kind)) => return kind,
            Some(Answer::Stale) => continue, // moved again between read and write
            _ => break,
        }
    }
    PushKind::Retry {
        error: "Shopify: the quantity kept moving while we resolved a conflict".into(),
        retry_after: None,
    }
}

/// A Shopify Admin API version: `YYYY-MM`, released quarterly (01, 04, 07, 10).
fn is_api_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 7
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && matches!(&v[5..], "01" | "04" | "07" | "10")
}

impl Connector for Shopify {
    fn own_setting_keys(&self) -> &'static [&'static str] {
        &["api_version", "location_id"]
    }

    /// `location_id`: the location whose stock EGDC syncs, where imported listings are mapped.
    fn check_own_settings(&self, settings: &serde_json::Map<String, Value>) -> Result<(), String> {
        match settings.get("api_version") {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) if is_api_version(v) => {}
            Some(_) => return Err("settings.api_version must be a Shopify API version such as \"2026-10\"".into()),
        }
        match settings.get("location_id") {
            None | Some(Value::Null) => Ok(()),
            Some(loc) => self
                .check_listing("1", &json!({ "location_id": loc }))
                .map_err(|_| "settings.location_id must be a number or gid://shopify/Location/<number>".into()),
        }
    }

    fn webhook_topics(&self) -> &'static [&'static str] {
        super::shopify_subscriptions::TOPICS
    }

    fn list_subscriptions(
        &self,
        agent: &ureq::Agent,
        req: &PushRequest,
    ) -> Result<Vec<RemoteSubscription>, SubscriptionError> {
        super::shopify_subscriptions::list(agent, req)
    }

    fn subscribe(
        &self,
        agent: &ureq::Agent,
        req: &PushRequest,
        topic: &str,
        address: &str,
        remote_id: Option<&str>,
    ) -> Result<RemoteSubscription, SubscriptionError> {
        super::shopify_subscriptions::subscribe(agent, req, topic, address, remote_id)
    }

    fn catalog_page(
        &self,
        agent: &ureq::Agent,
        req: &PushRequest,
        cursor: Option<&str>,
    ) -> Result<super::catalog::CatalogPage, super::catalog::CatalogError> {
        super::shopify_catalog::page(agent, req, cursor)
    }

    fn marketplace(&self) -> Marketplace {
        Marketplace::Shopify
    }

    fn default_base_url(&self) -> &'static str {
        SHOP_BASE
    }

    /// `{"shop", "access_token"}` plus, for expiring offline tokens, `"client_id"`,
    /// `"client_secret"`, `"refresh_token"`, `"expires_in"`.
    fn split_credentials(&self, input: &Value) -> Result<Credentials, String> {
        let obj = input.as_object().ok_or("shopify credentials must be a JSON object")?;
        check_keys(
            obj,
            &[
                "shop",
                "access_token",
                "client_id",
                "client_secret",
                "refresh_token",
                "expires_in",
                "webhook_secret",
                "previous_webhook_secret",
            ],
            "shopify credentials",
        )?;
        let text = |k: &str| match obj.get(k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(format!("shopify credentials: \"{k}\" must be a non-empty string")),
        };
        let shop = text("shop")?.ok_or("shopify credentials: \"shop\" is required (e.g. acme.myshopify.com)")?;
        let shop_ok = shop.len() <= 255
            && shop.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && shop.ends_with(".myshopify.com");
        if !shop_ok {
            return Err("shopify credentials: \"shop\" must be a *.myshopify.com domain".into());
        }
        let access = text("access_token")?.ok_or("shopify credentials: \"access_token\" is required")?;
        let refresh = text("refresh_token")?;
        let (client_id, client_secret) = (text("client_id")?, text("client_secret")?);
        if refresh.is_some() && (client_id.is_none() || client_secret.is_none()) {
            return Err("shopify credentials: a refresh_token needs client_id and client_secret".into());
        }
        let mut identifiers = Map::new();
        identifiers.insert("shop".into(), Value::String(shop));
        if let Some(c) = client_id {
            identifiers.insert("client_id".into(), Value::String(c));
        }
        let mut secrets = Map::new();
        secrets.insert("access_token".into(), Value::String(access));
        // webhooks are signed with the app secret (client_secret) unless a webhook_secret is
        // given; during a rotation the previous one still verifies
        let (webhook, previous) = (text("webhook_secret")?, text("previous_webhook_secret")?);
        for (k, v) in [
            ("client_secret", client_secret),
            ("refresh_token", refresh),
            ("webhook_secret", webhook),
            ("previous_webhook_secret", previous),
        ] {
            if let Some(v) = v {
                secrets.insert(k.into(), Value::String(v));
            }
        }
        let expires_in = match obj.get("expires_in") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .filter(|s| *s >= 0)
                    .ok_or("shopify credentials: \"expires_in\" must be a non-negative integer")?,
            ),
        };
        Ok(Credentials {
            identifiers,
            secrets,
            expires_in,
        })
    }

    /// The external id is the inventory item (number or gid); settings name the `location_id`.
    fn check_listing(&self, external_id: &str, settings: &Value) -> Result<(), String> {
        let numeric_or_gid = |s: &str, kind: &str| {
            let tail = s.strip_prefix(&format!("gid://shopify/{kind}/")).unwrap_or(s);
            !tail.is_empty() && tail.len() <= 20 && tail.bytes().all(|b| b.is_ascii_digit())
        };
        if !numeric_or_gid(external_id, "InventoryItem") {
            return Err(format!(
                "invalid shopify inventory item \"{}\": a number or gid://shopify/InventoryItem/<number>",
                external_id.chars().take(64).collect::<String>()
            ));
        }
        let obj = settings.as_object().ok_or("listing settings must be a JSON object")?;
        check_keys(
            obj,
            &["location_id", "variant_id", "product_id"],
            "shopify listing settings",
        )?;
        let loc = match obj.get("location_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err("shopify listing settings: \"location_id\" is required".into()),
        };
        if !numeric_or_gid(&loc, "Location") {
            return Err(
                "shopify listing settings: \"location_id\" must be a number or gid://shopify/Location/<number>".into(),
            );
        }
        // the variant and product a price is written to (found from the inventory item at the
        // first price write and kept, or given): both or neither
        let id_of = |key: &str, kind: &str| match obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if numeric_or_gid(s, kind) => Ok(Some(())),
            Some(Value::Number(n)) if numeric_or_gid(&n.to_string(), kind) => Ok(Some(())),
            Some(_) => Err(format!(
                "shopify listing settings: \"{key}\" must be a number or gid://shopify/{kind}/<number>"
            )),
        };
        match (id_of("variant_id", "ProductVariant")?, id_of("product_id", "Product")?) {
            (Some(_), None) | (None, Some(_)) => Err(
                "shopify listing settings: \"variant_id\" and \"product_id\" go together (or leave both out: they are looked up)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    fn push_stock(&self, agent: &ureq::Agent, req: &PushRequest) -> PushResult {
        super::only_result(self.push_batch(agent, std::slice::from_ref(req)))
    }

    fn max_batch(&self) -> usize {
        MAX_QUANTITIES
    }

    fn writes_prices(&self) -> bool {
        true
    }

    fn max_price_batch(&self) -> usize {
        super::shopify_prices::MAX_PRICES
    }

    fn push_prices(&self, agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
        super::shopify_prices::push(agent, reqs)
    }

    fn push_batch(&self, agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
        let start = Instant::now();
        let batch: Vec<&PushRequest> = reqs.iter().take(MAX_QUANTITIES).collect();
        if batch.is_empty() {
            return Vec::new();
        }
        let compares: Vec<Option<i64>> = batch.iter().map(|r| r.last_known).collect();
        let (mut answers, mut status) = set(agent, &batch, &compares, &call_key(&batch));
        // the call was refused as a whole because of some quantities: send the others again once
        let resend: Vec<usize> = (0..answers.len())
            .filter(|i| matches!(answers[*i], Answer::Resend))
            .collect();
        if !resend.is_empty() && resend.len() < batch.len() {
            let again: Vec<&PushRequest> = resend.iter().map(|i| batch[*i]).collect();
            let cmp: Vec<Option<i64>> = again.iter().map(|r| r.last_known).collect();
            let (second, s) = set(agent, &again, &cmp, &format!("{}-resend", call_key(&again)));
            status = s.or(status);
            for (i, a) in resend.into_iter().zip(second) {
                answers[i] = a;
            }
        }
        let mut out: Vec<PushResult> = batch
            .iter()
            .zip(answers)
            .map(|(r, a)| {
                let kind = match a {
                    Answer::Done(k) => k,
                    Answer::Stale => resolve_stale(agent, r),
                    Answer::Resend => PushKind::Retry {
                        error: "Shopify refused the call for another quantity; sent again later".into(),
                        retry_after: None,
                    },
                };
                PushResult {
                    kind,
                    http_status: status,
                    latency_ms: elapsed_ms(start),
                    learned: None,
                }
            })
            .collect();
        out.extend(reqs.iter().skip(MAX_QUANTITIES).map(|_| PushResult {
            kind: PushKind::Retry {
                error: "more quantities than one call carries".into(),
                retry_after: None,
            },
            http_status: None,
            latency_ms: 0.0,
            learned: None,
        }));
        out
    }

    fn read_stock(&self, agent: &ureq::Agent, req: &PushRequest) -> Result<Option<i64>, String> {
        read_level(agent, req)
    }

    /// The level per listing, then the prices of those that ask in one query.
    fn reads_prices(&self) -> bool {
        true
    }

    fn read_calls(&self, reqs: &[PushRequest]) -> usize {
        reqs.len() + usize::from(reqs.iter().any(|r| r.read_price))
    }

    fn read_listings(&self, agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<Result<RemoteRead, String>> {
        let priced: Vec<&PushRequest> = reqs.iter().filter(|r| r.read_price).collect();
        let mut prices = super::shopify_prices::read(agent, &priced).into_iter();
        reqs.iter()
            .map(|r| {
                let price = if r.read_price { prices.next() } else { None };
                let stock = read_level(agent, r)?;
                Ok(RemoteRead {
                    stock,
                    price: price.transpose()?.flatten(),
                })
            })
            .collect()
    }

    fn refresh(&self, agent: &ureq::Agent, base_url: &str, creds: &Credentials) -> Result<TokenGrant, RefreshError> {
        let Some(refresh_token) = creds.secret("refresh_token") else {
            return Err(RefreshError::InvalidGrant(
                "Shopify refused a non-expiring access token; the shop must install the app again".into(),
            ));
        };
        let client_id = creds.identifier("client_id").unwrap_or_default();
        let client_secret = creds.secret("client_secret").unwrap_or_default();
        let reply = http::read(
            agent
                .post(format!("{}/admin/oauth/access_token", shop_base(base_url, creds)))
                .header("content-type", "application/json")
                .send(
                    json!({"client_id": client_id, "client_secret": client_secret,
                           "refresh_token": refresh_token, "grant_type": "refresh_token"})
                    .to_string()
                    .as_bytes(),
                ),
        )
        .map_err(|e| RefreshError::Transient(e.0))?;
        if reply.status >= 500 || reply.status == 429 {
            return Err(RefreshError::Transient(http::error_text(&reply)));
        }
        let v = reply.json().unwrap_or(Value::Null);
        if reply.status != 200 {
            let e = v.get("error").and_then(Value::as_str).unwrap_or("error");
            let d = v.get("error_description").and_then(Value::as_str).unwrap_or("");
            return Err(RefreshError::InvalidGrant(http::truncate(
                &format!("Shopify {e}: {d}"),
                300,
            )));
        }
        let access = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| RefreshError::Transient("Shopify token reply without access_token".into()))?;
        Ok(TokenGrant {
            access_token: access.to_string(),
            refresh_token: v.get("refresh_token").and_then(Value::as_str).map(str::to_string),
            expires_in: v.get("expires_in").and_then(Value::as_i64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply::new(status, body)
    }

    #[test]
    fn throttled_waits_for_the_bucket() {
        let body = r#"{"errors":[{"message":"Throttled","extensions":{"code":"THROTTLED"}}],
            "extensions":{"cost":{"requestedQueryCost":10,"actualQueryCost":0,
            "throttleStatus":{"maximumAvailable":2000,"currentlyAvailable":4,"restoreRate":100}}}}"#;
        match call_failure(&reply(200, body)) {
            Some(PushKind::Throttled { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs_f64(0.1)))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(call_failure(&reply(200, r#"{"data":{}}"#)), None);
        assert!(matches!(
            call_failure(&reply(401, "{}")),
            Some(PushKind::Unauthorized { .. })
        ));
        assert!(matches!(
            call_failure(&reply(200, r#"{"errors":[{"message":"Field x doesn't exist"}]}"#)),
            Some(PushKind::Permanent { .. })
        ));
    }

    #[test]
    fn credentials_listings_and_keys() {
        let c = Shopify
            .split_credentials(&json!({"shop": "acme.myshopify.com", "access_token": "shpat_x",
                                       "client_id": "c", "client_secret": "s", "refresh_token": "r", "expires_in": 3600}))
            .unwrap();
        assert_eq!(shop_base(SHOP_BASE, &c), "https://acme.myshopify.com");
        assert!(c.identifiers.get("access_token").is_none());
        assert!(Shopify
            .split_credentials(&json!({"shop": "evil.com", "access_token": "x"}))
            .is_err());
        assert!(Shopify
            .split_credentials(&json!({"shop": "a.myshopify.com", "access_token": "x", "refresh_token": "r"}))
            .is_err());
        assert!(Shopify
            .check_listing("808950810", &json!({"location_id": 905684977}))
            .is_ok());
        assert!(Shopify
            .check_listing(
                "gid://shopify/InventoryItem/1",
                &json!({"location_id": "gid://shopify/Location/2"})
            )
            .is_ok());
        assert!(Shopify.check_listing("abc", &json!({"location_id": 1})).is_err());
        assert!(Shopify.check_listing("1", &json!({})).is_err());
        // the variant and product of a price: both or neither, numbers or gids
        let with = |v: Value, p: Value| {
            Shopify.check_listing("1", &json!({"location_id": 1, "variant_id": v, "product_id": p}))
        };
        assert!(with(json!(4), json!("gid://shopify/Product/5")).is_ok());
        assert!(
            with(json!("gid://shopify/Product/4"), json!(5)).is_err(),
            "a product gid as the variant"
        );
        assert!(with(json!("x"), json!(5)).is_err());
        let one = Shopify
            .check_listing("1", &json!({"location_id": 1, "variant_id": 4}))
            .unwrap_err();
        assert!(one.contains("go together"), "{one}");
        assert_eq!(gid("Location", "5"), "gid://shopify/Location/5");
        assert!(modern("2026-04") && modern("2026-10") && !modern("2025-10"));
    }
}
