//! A marketplace's catalog in one shape: every listing unit `integ.map_product` can take (an
//! item, a variation, a SKU at a location), read a page at a time and resumable from a cursor.

use rust_decimal::Decimal;
use serde_json::Value;
use std::str::FromStr;
use std::time::Duration;

/// One listing unit as the marketplace describes it, keyed as `integ.map_product` takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteListing {
    pub external_id: String,
    /// The listing settings `integ.map_product` wants for this unit (`{"variation_id": ..}`,
    /// `{"location_id": ..}`, ...).
    pub settings: Value,
    /// Part of the key where the marketplace has variations under one external id; else "".
    pub variation: String,
    pub seller_sku: Option<String>,
    pub title: Option<String>,
    pub price: Option<Decimal>,
    pub currency: Option<String>,
    pub stock: Option<i64>,
    pub status: Option<String>,
    pub url: Option<String>,
    /// The marketplace's own fields for this unit, bounded (`RAW_MAX` bytes as JSON).
    pub raw: Value,
}

/// One page of a listing pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CatalogPage {
    pub listings: Vec<RemoteListing>,
    /// Where the pass goes on (None: this was its last page).
    pub next: Option<String>,
    /// How many listings (the marketplace's own unit: items, products) it says there are.
    pub total: Option<i64>,
    /// How many of those this page went through (for progress against `total`).
    pub discovered: i64,
    /// Calls this page made.
    pub calls: u32,
    /// How long the import should wait before its next call (a cost budget it shares with
    /// pushes is refilling); other imports and pushes go on meanwhile.
    pub pause: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CatalogError {
    /// The cursor (scroll id, page token) is no longer valid: start the pass again.
    CursorExpired(String),
    Throttled {
        error: String,
        retry_after: Option<Duration>,
    },
    /// This import's call does not fit the marketplace's budget now, though pushes still do
    /// (Shopify's cost bucket): the import alone waits.
    Wait(Duration),
    /// The access token was refused.
    Unauthorized(String),
    /// Try again later (network, 5xx).
    Transient(String),
    /// Will not work as it is (another 4xx, an answer we cannot read).
    Failed(String),
    /// This marketplace's catalog cannot be read by the extension yet.
    Unsupported,
}

/// Largest `raw` kept per unit, as JSON text.
pub const RAW_MAX: usize = 4_096;

/// `v` if its JSON is at most `RAW_MAX` bytes, else a note saying it was left out.
pub fn bounded_raw(v: Value) -> Value {
    let len = v.to_string().len();
    if len <= RAW_MAX {
        v
    } else {
        serde_json::json!({"omitted": format!("{len} bytes, more than {RAW_MAX}")})
    }
}

/// A price as the marketplace wrote it: a JSON number or a decimal string, never through a float.
pub fn price(v: Option<&Value>) -> Option<Decimal> {
    let text = match v? {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
        .filter(|d| !d.is_sign_negative())
}

/// What a failed catalog call means, from its reply.
pub fn failure(reply: &super::http::Reply) -> CatalogError {
    match super::http::classify_failure(reply) {
        super::PushKind::Unauthorized { error } => CatalogError::Unauthorized(error),
        super::PushKind::Throttled { error, retry_after } => CatalogError::Throttled { error, retry_after },
        super::PushKind::Retry { error, .. } => CatalogError::Transient(error),
        other => CatalogError::Failed(other.error().unwrap_or("refused").to_string()),
    }
}

/// `s` as a URL query value (unreserved characters kept, every other byte %-escaped).
pub fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A non-empty string value, borrowed.
pub fn text_ref(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.trim().is_empty())
}

/// A non-empty trimmed string.
pub fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prices_are_read_exactly() {
        assert_eq!(price(Some(&json!(1299.5))), Decimal::from_str("1299.5").ok());
        assert_eq!(price(Some(&json!("19.99"))), Decimal::from_str("19.99").ok());
        assert_eq!(price(Some(&json!(0.1))).map(|d| d.to_string()), Some("0.1".into()));
        assert_eq!(price(Some(&json!(100))), Decimal::from_str("100").ok());
        assert_eq!(price(Some(&json!("abc"))), None);
        assert_eq!(price(Some(&json!(-1))), None);
        assert_eq!(price(None), None);
    }

    #[test]
    fn raw_is_bounded() {
        let small = json!({"a": 1});
        assert_eq!(bounded_raw(small.clone()), small);
        let big = json!({"a": "x".repeat(RAW_MAX)});
        assert!(bounded_raw(big).get("omitted").is_some());
    }
}
