//! Channel stock rules: what a channel is shown is computed from EGDC's stock. Set per
//! connection in `settings.stock_rules`, overridable per listing (same key in the listing's
//! settings, key by key):
//!
//! - `buffer` N with `buffer_mode` `subtract` (default: publish stock − N) or `zero_below`
//!   (publish 0 while stock < N, else the stock);
//! - `allocation_percent` P: publish floor(stock × P / 100) of what is left;
//! - `max` M: never publish more than M.
//!
//! Applied in that order; the result is never negative.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StockRules {
    pub buffer: i64,
    pub zero_below: bool,
    pub allocation_percent: Option<i64>,
    pub max: Option<i64>,
}

const KEYS: [&str; 4] = ["buffer", "buffer_mode", "allocation_percent", "max"];

fn rules_object(settings: &Value) -> Result<Option<&Map<String, Value>>, String> {
    match settings.get("stock_rules") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| !KEYS.contains(&k.as_str())) {
                return Err(format!(
                    "stock_rules: unknown key \"{}\" (allowed: {})",
                    k.chars().take(64).collect::<String>(),
                    KEYS.join(", ")
                ));
            }
            Ok(Some(o))
        }
        Some(_) => Err("stock_rules must be a JSON object".into()),
    }
}

fn number(o: &Map<String, Value>, k: &str, range: std::ops::RangeInclusive<i64>) -> Result<Option<i64>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().filter(|n| range.contains(n)).map(Some).ok_or_else(|| {
            format!(
                "stock_rules.{k} must be an integer from {} to {}",
                range.start(),
                range.end()
            )
        }),
    }
}

/// Checks the `stock_rules` of a connection's or listing's settings.
pub fn validate(settings: &Value) -> Result<(), String> {
    let Some(o) = rules_object(settings)? else {
        return Ok(());
    };
    number(o, "buffer", 0..=i32::MAX as i64)?;
    number(o, "allocation_percent", 0..=100)?;
    number(o, "max", 0..=i32::MAX as i64)?;
    match o.get("buffer_mode") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(m)) if m == "subtract" || m == "zero_below" => Ok(()),
        Some(_) => Err("stock_rules.buffer_mode must be \"subtract\" or \"zero_below\"".into()),
    }
}

/// The rules in force for a listing: the connection's, each key overridden by the listing's.
pub fn effective(connection_settings: &Value, listing_settings: &Value) -> StockRules {
    let mut merged = Map::new();
    for s in [connection_settings, listing_settings] {
        if let Ok(Some(o)) = rules_object(s) {
            merged.extend(o.clone());
        }
    }
    let n = |k: &str, r| number(&merged, k, r).ok().flatten();
    StockRules {
        buffer: n("buffer", 0..=i32::MAX as i64).unwrap_or(0),
        zero_below: merged.get("buffer_mode").and_then(Value::as_str) == Some("zero_below"),
        allocation_percent: n("allocation_percent", 0..=100),
        max: n("max", 0..=i32::MAX as i64),
    }
}

impl StockRules {
    /// The quantity to publish for EGDC's `stock`.
    pub fn apply(&self, stock: i32) -> i32 {
        let mut q = stock.max(0) as i64;
        q = if self.zero_below {
            if q < self.buffer {
                0
            } else {
                q
            }
        } else {
            (q - self.buffer).max(0)
        };
        if let Some(p) = self.allocation_percent {
            q = q * p / 100;
        }
        if let Some(m) = self.max {
            q = q.min(m);
        }
        q.clamp(0, i32::MAX as i64) as i32
    }
}

/// Listing settings as the connector sees them: without `stock_rules`.
pub fn without_rules(listing_settings: &Value) -> Value {
    match listing_settings {
        Value::Object(o) if o.contains_key("stock_rules") => {
            let mut o = o.clone();
            o.remove("stock_rules");
            Value::Object(o)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_apply_in_order() {
        let r = |v: Value| effective(&json!({ "stock_rules": v }), &json!({}));
        assert_eq!(r(json!({})).apply(10), 10);
        assert_eq!(r(json!({"buffer": 3})).apply(10), 7);
        assert_eq!(r(json!({"buffer": 3})).apply(2), 0);
        assert_eq!(r(json!({"buffer": 5, "buffer_mode": "zero_below"})).apply(4), 0);
        assert_eq!(r(json!({"buffer": 5, "buffer_mode": "zero_below"})).apply(5), 5);
        // 50% of 7 rounds down
        assert_eq!(r(json!({"allocation_percent": 50})).apply(7), 3);
        // buffer, then allocation, then max
        assert_eq!(r(json!({"buffer": 2, "allocation_percent": 50, "max": 3})).apply(20), 3);
        assert_eq!(
            r(json!({"buffer": 2, "allocation_percent": 50, "max": 30})).apply(20),
            9
        );
        assert_eq!(r(json!({})).apply(-4), 0);
    }

    #[test]
    fn a_listing_overrides_key_by_key() {
        let conn = json!({"stock_rules": {"buffer": 2, "max": 5}});
        let listing = json!({"stock_rules": {"max": 100}, "variation_id": 1});
        let e = effective(&conn, &listing);
        assert_eq!((e.buffer, e.max), (2, Some(100)));
        assert_eq!(without_rules(&listing), json!({"variation_id": 1}));
    }

    #[test]
    fn bad_rules_are_named() {
        assert!(validate(&json!({"stock_rules": {"buffer": -1}})).is_err());
        assert!(validate(&json!({"stock_rules": {"allocation_percent": 101}})).is_err());
        assert!(validate(&json!({"stock_rules": {"buffer_mode": "x"}})).is_err());
        let e = validate(&json!({"stock_rules": {"bufer": 1}})).unwrap_err();
        assert!(e.contains("unknown key \"bufer\""), "{e}");
        assert!(validate(&json!({"stock_rules": 5})).is_err());
        assert!(validate(&json!({"stock_rules": {"buffer": 1, "allocation_percent": 80, "max": 9}})).is_ok());
    }
}
