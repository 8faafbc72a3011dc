//! Marketplace connectors: plain Rust, no pgrx. They build requests from plain data and parse
//! responses into plain data, so they run on HTTP threads and are unit-tested without Postgres.

pub mod authorize;
pub mod catalog;
pub mod events;
pub mod http;
pub mod mercadolibre;
pub mod mercadolibre_catalog;
pub mod mercadolibre_prices;
pub mod shein;
pub mod shein_catalog;
pub mod shein_prices;
pub mod shopify;
pub mod shopify_catalog;
pub mod shopify_prices;
pub mod shopify_subscriptions;
pub mod subscriptions;
pub mod tiktok;
pub mod tiktok_catalog;
pub mod tiktok_prices;
pub mod tiktok_subscriptions;
pub mod webhooks;

use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Marketplace {
    MercadoLibre,
    Shopify,
    TikTok,
    Shein,
}

impl Marketplace {
    pub const ALL: [Marketplace; 4] = [
        Marketplace::MercadoLibre,
        Marketplace::Shopify,
        Marketplace::TikTok,
        Marketplace::Shein,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Marketplace::MercadoLibre => "mercadolibre",
            Marketplace::Shopify => "shopify",
            Marketplace::TikTok => "tiktok",
            Marketplace::Shein => "shein",
        }
    }
}

impl fmt::Display for Marketplace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Marketplace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Marketplace::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            format!(
                "unknown marketplace \"{}\" (expected one of: mercadolibre, shopify, tiktok, shein)",
                s.chars().take(64).collect::<String>()
            )
        })
    }
}

/// Credentials split into what may be stored readable (routing identifiers) and what must be
/// encrypted (secrets). Both are JSON objects. Debug shows only the secrets' names.
#[derive(Clone, Default, PartialEq)]
pub struct Credentials {
    pub identifiers: Map<String, Value>,
    pub secrets: Map<String, Value>,
    /// Seconds until the access token expires, when the caller told us.
    pub expires_in: Option<i64>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identifiers", &self.identifiers)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl Credentials {
    pub fn secret(&self, key: &str) -> Option<&str> {
        self.secrets.get(key).and_then(Value::as_str)
    }
    pub fn identifier(&self, key: &str) -> Option<String> {
        match self.identifiers.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// A new token pair from a refresh.
#[derive(Clone, PartialEq)]
pub struct TokenGrant {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<i64>,
}

impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenGrant {{ expires_in: {:?}, .. }}", self.expires_in)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum RefreshError {
    /// The grant is dead for good: the seller must authorize again.
    InvalidGrant(String),
    /// Network trouble or a 5xx: try again later.
    Transient(String),
}

/// One stock write, in plain data. Never printed: it carries the connection's secrets.
#[derive(Clone)]
pub struct PushRequest {
    pub base_url: String,
    pub external_id: String,
    pub listing_settings: Value,
    pub quantity: i64,
    pub access_token: String,
    /// The connection's identifiers and secrets (signing marketplaces need more than a token).
    pub credentials: Credentials,
    /// The same for every retry of the same write (the job and the quantity), so a marketplace
    /// that honours idempotency keys never applies it twice.
    pub idempotency_key: String,
    /// What the marketplace last said it holds for this listing (compare-and-set), if known.
    pub last_known: Option<i64>,
    /// The connection's settings (API version, conflict strategy, ...).
    pub connection_settings: Value,
    /// A price to write (`push_prices`): the channel's price, after its price rules.
    pub price: Option<PriceWrite>,
    /// A read (`read_listings`) wants the listing's price too (its price is tracked).
    pub read_price: bool,
}

/// What a read found for a listing: its stock (None: the marketplace does not say) and, when
/// asked and the connector reads prices, its price.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteRead {
    pub stock: Option<i64>,
    pub price: Option<rust_decimal::Decimal>,
}

/// A price given as a JSON number or decimal text, read from its text (never through a float).
pub fn decimal_of(v: Option<&Value>) -> Option<rust_decimal::Decimal> {
    let text = match v? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    text.parse::<rust_decimal::Decimal>()
        .ok()
        .or_else(|| rust_decimal::Decimal::from_scientific(&text).ok())
}

/// A price write: the amount in the channel's currency, and whether `quantity` goes in the same
/// call (marketplaces that take both at once, `Connector::writes_price_with_stock`).
#[derive(Clone, Debug, PartialEq)]
pub struct PriceWrite {
    pub amount: rust_decimal::Decimal,
    pub currency: Option<String>,
    pub with_stock: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PushKind {
    /// The marketplace accepted the write and reports holding `remote` (when it says).
    Applied { remote: Option<i64> },
    /// Try again later (network, timeout, 5xx, 429).
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// The marketplace asked us to slow down (429, THROTTLED, SHEIN 832213): the connection's
    /// limiter pauses and slows; the job waits without burning an attempt.
    Throttled {
        error: String,
        retry_after: Option<Duration>,
    },
    /// The access token was refused: refresh and try again.
    Unauthorized { error: String },
    /// Will never succeed as it is (other 4xx).
    Permanent { error: String },
}

impl PushKind {
    /// The error text of a failure (None for Applied).
    pub fn error(&self) -> Option<&str> {
        match self {
            PushKind::Applied { .. } => None,
            PushKind::Retry { error, .. }
            | PushKind::Throttled { error, .. }
            | PushKind::Unauthorized { error }
            | PushKind::Permanent { error } => Some(error),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PushResult {
    pub kind: PushKind,
    pub http_status: Option<u16>,
    pub latency_ms: f64,
    /// Listing settings the call found out and the listing keeps (e.g. Shopify's variant and
    /// product of an inventory item), merged into `integ.listings.settings`; a null removes a key.
    pub learned: Option<Map<String, Value>>,
}

impl PushResult {
    /// A result for a request no call was made for.
    pub fn without_call(kind: PushKind) -> PushResult {
        PushResult {
            kind,
            http_status: None,
            latency_ms: 0.0,
            learned: None,
        }
    }

    /// Whether a request went out (answered or not): what usage counts.
    pub fn made_a_call(&self) -> bool {
        self.http_status.is_some() || self.latency_ms > 0.0
    }

    /// Refused before any call, for good.
    pub fn refused(error: impl Into<String>) -> PushResult {
        Self::without_call(PushKind::Permanent { error: error.into() })
    }
}

/// What every marketplace module provides.
pub trait Connector: Send + Sync {
    fn marketplace(&self) -> Marketplace;
    fn default_base_url(&self) -> &'static str;
    /// Validates a credentials document given to `integ.connect` and splits it.
    fn split_credentials(&self, input: &Value) -> Result<Credentials, String>;
    /// Validates an external id and listing settings given to `integ.map_product`.
    fn check_listing(&self, external_id: &str, settings: &Value) -> Result<(), String>;
    /// One step of a pass through the account's catalog, from `cursor` (None: a new pass): one
    /// call, so an import takes one request at a time from the connection's budget.
    fn catalog_page(
        &self,
        _http: &ureq::Agent,
        _req: &PushRequest,
        _cursor: Option<&str>,
    ) -> Result<catalog::CatalogPage, catalog::CatalogError> {
        Err(catalog::CatalogError::Unsupported)
    }
    /// This marketplace's own connection settings keys, beyond `COMMON_SETTINGS`.
    fn own_setting_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// Checks the values of this marketplace's own connection settings.
    fn check_own_settings(&self, _settings: &Map<String, Value>) -> Result<(), String> {
        Ok(())
    }
    fn push_stock(&self, http: &ureq::Agent, req: &PushRequest) -> PushResult;
    /// Listings of one connection the marketplace takes in a single call (1: no batching).
    fn max_batch(&self) -> usize {
        1
    }
    /// Several writes of one connection (at most `max_batch`), one result per request, in order.
    fn push_batch(&self, http: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
        reqs.iter().map(|r| self.push_stock(http, r)).collect()
    }
    /// Whether this connector writes prices at all (`push_prices`).
    fn writes_prices(&self) -> bool {
        false
    }
    /// Whether `push_prices` can carry a listing's stock in the same call (`PriceWrite::with_stock`).
    fn writes_price_with_stock(&self) -> bool {
        false
    }
    /// Listings of one connection whose prices one `push_prices` call takes.
    fn max_price_batch(&self) -> usize {
        1
    }
    /// Price writes of different groups never share a call (TikTok Shop: one product per call;
    /// SHEIN managed shops: one SPU per call); one `push_prices` call is one HTTP call.
    fn price_call_group(&self, _connection_settings: &Value, _listing_settings: &Value) -> String {
        String::new()
    }
    /// Writes each request's `price` (and its quantity, when `with_stock`), one result per
    /// request, in order. `Applied { remote }` reports the stock when it was written too.
    fn push_prices(&self, _http: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
        let error = format!("syncing prices to {} is not supported yet", self.marketplace());
        reqs.iter().map(|_| PushResult::refused(error.as_str())).collect()
    }
    /// The quantity the marketplace holds for a listing now (None: it does not say).
    fn read_stock(&self, _http: &ureq::Agent, _req: &PushRequest) -> Result<Option<i64>, String> {
        Err(format!(
            "reading stock from {} is not supported yet",
            self.marketplace()
        ))
    }
    /// Listings of one connection whose stock one call reads (1: no multi-get).
    fn max_read_batch(&self) -> usize {
        1
    }
    /// The calls `read_stocks` makes for these requests (what the rate limit must allow).
    fn read_calls(&self, reqs: &[PushRequest]) -> usize {
        reqs.len()
    }
    /// What the marketplace holds for several listings of one connection (at most
    /// `max_read_batch`), one answer per request, in order.
    fn read_stocks(&self, http: &ureq::Agent, reqs: &[PushRequest]) -> Vec<Result<Option<i64>, String>> {
        reqs.iter().map(|r| self.read_stock(http, r)).collect()
    }
    /// Whether `read_listings` reads prices (of requests with `read_price`).
    fn reads_prices(&self) -> bool {
        false
    }
    /// What the marketplace holds for several listings of one connection (at most
    /// `max_read_batch`): stock, and price where asked and read; one answer per request, in
    /// order. `read_calls` counts the calls, the price reads included.
    fn read_listings(&self, http: &ureq::Agent, reqs: &[PushRequest]) -> Vec<Result<RemoteRead, String>> {
        self.read_stocks(http, reqs)
            .into_iter()
            .map(|r| r.map(|stock| RemoteRead { stock, price: None }))
            .collect()
    }
    /// An order the marketplace only pointed at (`order_id`), read with the connection's
    /// token (`req` carries the connection; its listing fields are unused).
    fn read_order(&self, _http: &ureq::Agent, _req: &PushRequest, _order_id: &str) -> Result<events::Order, String> {
        Err(format!("{} deliveries carry their orders", self.marketplace()))
    }
    /// Notifications the marketplace could not deliver and still keeps (MercadoLibre's missed
    /// feeds), as their original bodies.
    fn missed_notifications(&self, _http: &ureq::Agent, _req: &PushRequest) -> Result<Vec<Value>, String> {
        Ok(Vec::new())
    }
    /// The webhook topics the extension applies, named as this marketplace's subscription API names
    /// them (empty: subscriptions are configured per application in the marketplace's console).
    fn webhook_topics(&self) -> &'static [&'static str] {
        &[]
    }
    /// The connection's webhook subscriptions, every page (`req` carries the connection: base_url,
    /// access_token, credentials, connection_settings; its listing fields are unused). Each page
    /// is one call, for the rate limit.
    fn list_subscriptions(
        &self,
        _http: &ureq::Agent,
        _req: &PushRequest,
    ) -> Result<Vec<subscriptions::RemoteSubscription>, subscriptions::SubscriptionError> {
        Err(subscriptions::SubscriptionError::Unsupported)
    }
    /// Points `topic` at `address`: updates `remote_id` when given (Shopify), else creates (or,
    /// where the API has one address per topic, sets) it; the subscription as it now stands.
    fn subscribe(
        &self,
        _http: &ureq::Agent,
        _req: &PushRequest,
        _topic: &str,
        _address: &str,
        _remote_id: Option<&str>,
    ) -> Result<subscriptions::RemoteSubscription, subscriptions::SubscriptionError> {
        Err(subscriptions::SubscriptionError::Unsupported)
    }
    /// Whether access tokens expire and are refreshed (false: permanent signing keys).
    fn refreshes_tokens(&self) -> bool {
        true
    }
    fn refresh(&self, http: &ureq::Agent, base_url: &str, creds: &Credentials) -> Result<TokenGrant, RefreshError>;
}

/// The one result of a batch of one (what a batching connector's push_stock returns).
pub fn only_result(results: Vec<PushResult>) -> PushResult {
    results.into_iter().next().unwrap_or_else(|| PushResult {
        kind: PushKind::Retry {
            error: "the connector returned no result".into(),
            retry_after: None,
        },
        http_status: None,
        latency_ms: 0.0,
        learned: None,
    })
}

/// The one answer of a read of one listing.
pub fn only_read(answers: Vec<Result<RemoteRead, String>>) -> Result<RemoteRead, String> {
    answers
        .into_iter()
        .next()
        .unwrap_or_else(|| Err("the connector returned no answer".into()))
}

/// The connector of a marketplace, or an error naming what is not supported yet.
pub fn connector(m: Marketplace) -> Result<&'static dyn Connector, String> {
    match m {
        Marketplace::MercadoLibre => Ok(&mercadolibre::MercadoLibre),
        Marketplace::Shein => Ok(&shein::Shein),
        Marketplace::TikTok => Ok(&tiktok::TikTok),
        Marketplace::Shopify => Ok(&shopify::Shopify),
    }
}

/// The hosts each marketplace's API really lives on (a `base_url` override may point at these
/// without being listed in `integ.allowed_hosts`).
fn real_host(m: Marketplace, host: &str) -> bool {
    match m {
        Marketplace::MercadoLibre => host == "api.mercadolibre.com",
        Marketplace::Shopify => host.ends_with(".myshopify.com"),
        Marketplace::TikTok => ["open-api.tiktokglobalshop.com", "auth.tiktok-shops.com"].contains(&host),
        Marketplace::Shein => ["openapi.sheincorp.com", "openapi-sem.sheincorp.com"].contains(&host),
    }
}

/// Validates connection settings and returns the base URL to use. An override must name one of
/// the marketplace's own hosts or one listed in `allowed` (`host` or `host:port`), so a
/// tenant's settings cannot send the workers (and the credentials) anywhere else.
pub fn base_url(connector: &dyn Connector, settings: &Value, allowed: &[String]) -> Result<String, String> {
    let obj = settings
        .as_object()
        .ok_or_else(|| "settings must be a JSON object".to_string())?;
    match obj.get("base_url") {
        None | Some(Value::Null) => Ok(connector.default_base_url().to_string()),
        Some(Value::String(u)) => {
            let u = u.trim_end_matches('/');
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"))
                .ok_or_else(|| "settings.base_url must start with http:// or https://".to_string())?;
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("").to_ascii_lowercase();
            if authority.is_empty()
                || rest.contains(char::is_whitespace)
                || authority.contains('@')
                || authority.contains('\\')
            {
                return Err("settings.base_url is not a valid URL".into());
            }
            let host = match authority.rsplit_once(':') {
                Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
                _ => authority.as_str(),
            };
            let listed = allowed.iter().any(|a| *a == authority || *a == host);
            if !listed && !real_host(connector.marketplace(), host) {
                return Err(format!(
                    "settings.base_url: host \"{}\" is not {}'s and not in integ.allowed_hosts",
                    http::truncate(&authority, 80),
                    connector.marketplace()
                ));
            }
            Ok(u.to_string())
        }
        Some(_) => Err("settings.base_url must be a string".into()),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Object keys must come from `allowed`; names the first that does not.
/// Connection settings every marketplace takes (checked where they are understood: base_url
/// here, the rest by the extension's rules, conflict and limit code).
pub const COMMON_SETTINGS: [&str; 5] = [
    "base_url",
    "conflict_strategy",
    "price_rules",
    "rate_limit",
    "stock_rules",
];

/// A connection's settings keys: unknown ones are refused, so a misspelt key is never stored
/// and silently ignored.
pub fn check_setting_keys(connector: &dyn Connector, settings: &Map<String, Value>) -> Result<(), String> {
    let allowed: Vec<&str> = COMMON_SETTINGS
        .iter()
        .chain(connector.own_setting_keys())
        .copied()
        .collect();
    check_keys(settings, &allowed, &format!("{} settings", connector.marketplace()))?;
    connector.check_own_settings(settings)
}

pub fn check_keys(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "{what}: unknown key \"{}\" (allowed: {})",
            k.chars().take(64).collect::<String>(),
            allowed.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn marketplace_names_round_trip() {
        for m in Marketplace::ALL {
            assert_eq!(m.as_str().parse::<Marketplace>(), Ok(m));
        }
        let err = "amazon".parse::<Marketplace>().unwrap_err();
        assert!(err.contains("unknown marketplace \"amazon\""), "{err}");
    }

    #[test]
    fn base_url_validation() {
        let c = &mercadolibre::MercadoLibre;
        let loopback = vec!["127.0.0.1".to_string()];
        assert_eq!(base_url(c, &json!({}), &[]).unwrap(), "https://api.mercadolibre.com");
        assert_eq!(
            base_url(c, &json!({"base_url": "http://127.0.0.1:9/"}), &loopback).unwrap(),
            "http://127.0.0.1:9"
        );
        assert!(base_url(c, &json!({"base_url": "ftp://x"}), &loopback).is_err());
        assert!(base_url(c, &json!({"base_url": 5}), &loopback).is_err());
        assert!(base_url(c, &json!([1]), &loopback).is_err());
    }

    #[test]
    fn base_url_overrides_must_be_real_or_allowed_hosts() {
        let c = &mercadolibre::MercadoLibre;
        let url = |u: &str| json!({ "base_url": u });
        // nothing listed: only MercadoLibre's own host
        assert!(base_url(c, &url("https://api.mercadolibre.com"), &[]).is_ok());
        for bad in [
            "http://127.0.0.1:9",
            "http://169.254.169.254/latest",
            "http://localhost",
            "https://api.mercadolibre.com.evil.example",
            "https://api.mercadolibre.com@10.0.0.1/",
            "http://10.0.0.1:80#api.mercadolibre.com",
        ] {
            let e = base_url(c, &url(bad), &[]).unwrap_err();
            assert!(
                e.contains("integ.allowed_hosts") || e.contains("not a valid URL"),
                "{bad}: {e}"
            );
        }
        // a listed host, with any port or the listed one only
        assert!(base_url(c, &url("http://127.0.0.1:8700/mercadolibre"), &["127.0.0.1".into()]).is_ok());
        assert!(base_url(c, &url("http://127.0.0.1:8700"), &["127.0.0.1:8700".into()]).is_ok());
        assert!(base_url(c, &url("http://127.0.0.1:8701"), &["127.0.0.1:8700".into()]).is_err());
        // each marketplace's own hosts
        assert!(base_url(&shopify::Shopify, &url("https://acme.myshopify.com"), &[]).is_ok());
        assert!(base_url(&shopify::Shopify, &url("https://myshopify.com.evil"), &[]).is_err());
        assert!(base_url(&shein::Shein, &url("https://openapi.sheincorp.com"), &[]).is_ok());
        assert!(base_url(&tiktok::TikTok, &url("https://open-api.tiktokglobalshop.com"), &[]).is_ok());
    }

    #[test]
    fn token_grant_debug_hides_tokens() {
        let g = TokenGrant {
            access_token: "APP_USR-secret".into(),
            refresh_token: Some("TG-secret".into()),
            expires_in: Some(5),
        };
        assert!(!format!("{g:?}").contains("secret"));
    }
}
