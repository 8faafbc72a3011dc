//! Channel price rules: the price a channel is shown is computed from EGDC's price. Set per
//! connection in `settings.price_rules`, overridable per listing key by key (like stock rules):
//!
//! - `markup_percent` P: price × (1 + P / 100) (P from -99.99 to 1,000; negative is a discount);
//! - `add` A: plus a fixed amount (negative subtracts);
//! - `round`: `cents` (default: 2 decimals, halves away from zero), `none` (cents too, at the
//!   connector: marketplaces take at most 2 decimals), `whole`, `ends_99` (up to the next price
//!   ending in .99: ⌈price⌉ − 0.01, so 112.00 → 111.99 and 111.50 → 111.99), `multiple:<n>` (the
//!   nearest multiple of n, halves up);
//! - `min` / `max`: the published price is kept within them;
//! - `currency`: the channel's currency; an EGDC price in another currency is not published
//!   (no conversion).
//!
//! Applied in that order. Decimals throughout: money never passes through a float.

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{Map, Value};
use std::str::FromStr;

const KEYS: [&str; 6] = ["markup_percent", "add", "round", "min", "max", "currency"];
/// The largest price the extension publishes (and the largest `add`, `min` or `max`).
const MAX_PRICE: i64 = 1_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    None,
    Cents,
    Whole,
    Ends99,
    Multiple(Decimal),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceRules {
    pub markup_percent: Option<Decimal>,
    pub add: Option<Decimal>,
    pub round: Round,
    pub min: Option<Decimal>,
    pub max: Option<Decimal>,
    pub currency: Option<String>,
}

impl Default for PriceRules {
    fn default() -> PriceRules {
        PriceRules {
            markup_percent: None,
            add: None,
            round: Round::Cents,
            min: None,
            max: None,
            currency: None,
        }
    }
}

/// Why a price is not published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Negative(Decimal),
    Currency { egdc: String, channel: String },
    TooHigh(Decimal),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Missing => write!(f, "EGDC's price is NULL: nothing is published"),
            Refusal::Negative(p) => write!(f, "EGDC's price {p} is negative: it is never published"),
            Refusal::Currency { egdc, channel } => write!(
                f,
                "EGDC's price is in {egdc} and this channel sells in {channel} (price_rules.currency): prices are not converted"
            ),
            Refusal::TooHigh(p) => write!(f, "the price {p} is above {MAX_PRICE}: not published"),
        }
    }
}

fn rules_object(settings: &Value) -> Result<Option<&Map<String, Value>>, String> {
    match settings.get("price_rules") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| !KEYS.contains(&k.as_str())) {
                return Err(format!(
                    "price_rules: unknown key \"{}\" (allowed: {})",
                    k.chars().take(64).collect::<String>(),
                    KEYS.join(", ")
                ));
            }
            Ok(Some(o))
        }
        Some(_) => Err("price_rules must be a JSON object".into()),
    }
}

/// A decimal written as a JSON number or a string, never read through a float.
pub fn decimal(v: &Value) -> Option<Decimal> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .ok()
}

fn amount(o: &Map<String, Value>, k: &str, lowest: Decimal) -> Result<Option<Decimal>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => decimal(v)
            .filter(|d| *d >= lowest && *d <= Decimal::from(MAX_PRICE) && d.scale() <= 4)
            .map(Some)
            .ok_or_else(|| {
                format!("price_rules.{k} must be a number from {lowest} to {MAX_PRICE} with at most 4 decimals")
            }),
    }
}

fn round(o: &Map<String, Value>) -> Result<Option<Round>, String> {
    let bad = || {
        "price_rules.round must be \"none\", \"cents\", \"whole\", \"ends_99\" or \"multiple:<n>\" (n a positive number such as 5 or 0.05)"
            .to_string()
    };
    match o.get("round") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(match s.as_str() {
            "none" => Round::None,
            "cents" => Round::Cents,
            "whole" => Round::Whole,
            "ends_99" => Round::Ends99,
            other => {
                let n = other
                    .strip_prefix("multiple:")
                    .and_then(|n| Decimal::from_str(n.trim()).ok())
                    .filter(|n| *n > Decimal::ZERO && *n <= Decimal::from(MAX_PRICE) && n.scale() <= 4)
                    .ok_or_else(bad)?;
                Round::Multiple(n)
            }
        })),
        Some(_) => Err(bad()),
    }
}

fn currency(o: &Map<String, Value>) -> Result<Option<String>, String> {
    match o.get("currency") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(c)) if is_currency(c) => Ok(Some(c.clone())),
        Some(_) => Err("price_rules.currency must be a 3-letter ISO 4217 code such as \"MXN\"".into()),
    }
}

pub fn is_currency(c: &str) -> bool {
    c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())
}

fn read(o: &Map<String, Value>) -> Result<PriceRules, String> {
    let hundred = Decimal::from(100);
    let markup_percent = match o.get("markup_percent") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            decimal(v)
                .filter(|p| *p > -hundred && *p <= Decimal::from(1_000) && p.scale() <= 4)
                .ok_or("price_rules.markup_percent must be a number above -100 and at most 1000 (such as 12.5)")?,
        ),
    };
    let rules = PriceRules {
        markup_percent,
        add: amount(o, "add", -Decimal::from(MAX_PRICE))?,
        round: round(o)?.unwrap_or(Round::Cents),
        min: amount(o, "min", Decimal::ZERO)?,
        max: amount(o, "max", Decimal::ZERO)?,
        currency: currency(o)?,
    };
    if let (Some(lo), Some(hi)) = (rules.min, rules.max) {
        if lo > hi {
            return Err(format!("price_rules.min ({lo}) is above price_rules.max ({hi})"));
        }
    }
    Ok(rules)
}

/// Checks the `price_rules` of a connection's or listing's settings.
pub fn validate(settings: &Value) -> Result<(), String> {
    match rules_object(settings)? {
        Some(o) => read(o).map(|_| ()),
        None => Ok(()),
    }
}

/// The rules in force for a listing: the connection's, each key overridden by the listing's.
/// Both were validated when stored; a merge whose min ends up above its max is an error.
pub fn effective(connection_settings: &Value, listing_settings: &Value) -> Result<PriceRules, String> {
    let mut merged = Map::new();
    for s in [connection_settings, listing_settings] {
        if let Some(o) = rules_object(s)? {
            merged.extend(o.clone());
        }
    }
    read(&merged)
}

impl PriceRules {
    /// The price to publish for EGDC's `price` (in `egdc_currency`, when EGDC says).
    pub fn apply(&self, price: Option<Decimal>, egdc_currency: Option<&str>) -> Result<Decimal, Refusal> {
        let p = price.ok_or(Refusal::Missing)?;
        if p.is_sign_negative() && !p.is_zero() {
            return Err(Refusal::Negative(p));
        }
        if let (Some(channel), Some(egdc)) = (&self.currency, egdc_currency) {
            if !egdc.eq_ignore_ascii_case(channel) {
                return Err(Refusal::Currency {
                    egdc: egdc.chars().take(8).collect(),
                    channel: channel.clone(),
                });
            }
        }
        let hundred = Decimal::from(100);
        let mut q = p;
        if let Some(m) = self.markup_percent {
            q = q
                .checked_mul(hundred + m)
                .and_then(|x| x.checked_div(hundred))
                .ok_or(Refusal::TooHigh(p))?;
        }
        if let Some(a) = self.add {
            q = q.checked_add(a).ok_or(Refusal::TooHigh(p))?;
        }
        let half_up = RoundingStrategy::MidpointAwayFromZero;
        q = match &self.round {
            Round::None | Round::Cents => q.round_dp_with_strategy(2, half_up),
            Round::Whole => q.round_dp_with_strategy(0, half_up),
            Round::Ends99 => q.ceil() - Decimal::new(1, 2),
            Round::Multiple(n) => q
                .checked_div(*n)
                .map(|k| k.round_dp_with_strategy(0, half_up))
                .and_then(|k| k.checked_mul(*n))
                .ok_or(Refusal::TooHigh(p))?,
        };
        q = q.max(Decimal::ZERO);
        if let Some(lo) = self.min {
            q = q.max(lo);
        }
        if let Some(hi) = self.max {
            q = q.min(hi);
        }
        if q > Decimal::from(MAX_PRICE) {
            return Err(Refusal::TooHigh(q));
        }
        Ok(q.round_dp_with_strategy(4, half_up).normalize().max(Decimal::ZERO))
    }
}

/// Listing settings as the connector sees them: without `price_rules`.
pub fn without_rules(listing_settings: &Value) -> Value {
    match listing_settings {
        Value::Object(o) if o.contains_key("price_rules") => {
            let mut o = o.clone();
            o.remove("price_rules");
            Value::Object(o)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    fn rules(v: Value) -> PriceRules {
        effective(&json!({ "price_rules": v }), &json!({})).expect("rules")
    }

    fn publish(v: Value, price: &str) -> String {
        rules(v).apply(Some(d(price)), None).expect("published").to_string()
    }

    #[test]
    fn the_issues_examples() {
        // EGDC 100.00: MercadoLibre markup 12% ends_99, Shopify as is, TikTok +5
        assert_eq!(
            publish(json!({"markup_percent": 12, "round": "ends_99"}), "100.00"),
            "111.99"
        );
        assert_eq!(publish(json!({}), "100.00"), "100");
        assert_eq!(publish(json!({"add": 5}), "100.00"), "105");
    }

    #[test]
    fn rules_apply_in_order() {
        assert_eq!(publish(json!({"markup_percent": 12.5}), "99.99"), "112.49");
        assert_eq!(publish(json!({"markup_percent": "-10"}), "10"), "9");
        assert_eq!(publish(json!({"round": "none"}), "10.005"), "10.01");
        assert_eq!(publish(json!({"round": "whole"}), "10.5"), "11");
        assert_eq!(publish(json!({"round": "ends_99"}), "111.50"), "111.99");
        assert_eq!(publish(json!({"round": "ends_99"}), "111.99"), "111.99");
        assert_eq!(publish(json!({"round": "ends_99"}), "112.01"), "112.99");
        assert_eq!(publish(json!({"round": "multiple:5"}), "102.4"), "100");
        assert_eq!(publish(json!({"round": "multiple:5"}), "102.5"), "105");
        assert_eq!(publish(json!({"round": "multiple:0.05"}), "1.23"), "1.25");
        // markup, add, round, then min and max
        assert_eq!(
            publish(
                json!({"markup_percent": 10, "add": 1, "round": "whole", "max": 11}),
                "20"
            ),
            "11"
        );
        assert_eq!(publish(json!({"add": -50, "min": 5}), "20"), "5");
        assert_eq!(publish(json!({"add": -50}), "20"), "0");
        assert_eq!(publish(json!({}), "0"), "0");
    }

    #[test]
    fn prices_that_are_not_published_say_why() {
        let r = rules(json!({"currency": "MXN"}));
        assert_eq!(r.apply(None, None), Err(Refusal::Missing));
        assert_eq!(r.apply(Some(d("-1")), None), Err(Refusal::Negative(d("-1"))));
        let e = r.apply(Some(d("10")), Some("USD")).unwrap_err();
        assert!(e.to_string().contains("in USD and this channel sells in MXN"), "{e}");
        assert_eq!(r.apply(Some(d("10")), Some("mxn")), Ok(d("10")));
        assert_eq!(
            r.apply(Some(d("10")), None),
            Ok(d("10")),
            "no EGDC currency: the channel's"
        );
        assert!(matches!(
            rules(json!({"markup_percent": 1000})).apply(Some(d("500000000")), None),
            Err(Refusal::TooHigh(_))
        ));
    }

    #[test]
    fn a_listing_overrides_key_by_key() {
        let conn = json!({"price_rules": {"markup_percent": 12, "round": "ends_99"}});
        let listing = json!({"price_rules": {"round": "whole"}, "variation_id": 1});
        let e = effective(&conn, &listing).expect("rules");
        assert_eq!((e.markup_percent, e.round), (Some(d("12")), Round::Whole));
        assert_eq!(without_rules(&listing), json!({"variation_id": 1}));
        let clash = effective(
            &json!({"price_rules": {"min": 10}}),
            &json!({"price_rules": {"max": 5}}),
        );
        assert!(clash.unwrap_err().contains("min (10) is above price_rules.max (5)"));
    }

    #[test]
    fn bad_rules_are_named() {
        let e = |v: Value| validate(&json!({ "price_rules": v })).unwrap_err();
        assert!(e(json!({"markup": 1})).contains("unknown key \"markup\""));
        assert!(e(json!({"markup_percent": -100})).contains("markup_percent"));
        assert!(e(json!({"markup_percent": "abc"})).contains("markup_percent"));
        assert!(e(json!({"round": "ends_98"})).contains("price_rules.round"));
        assert!(e(json!({"round": "multiple:0"})).contains("price_rules.round"));
        assert!(e(json!({"min": -1})).contains("price_rules.min"));
        assert!(e(json!({"max": 1e12})).contains("price_rules.max"));
        assert!(e(json!({"add": 0.00001})).contains("at most 4 decimals"));
        assert!(e(json!({"currency": "usd"})).contains("price_rules.currency"));
        assert!(e(json!({"min": 9, "max": 1})).contains("is above"));
        assert!(validate(&json!({"price_rules": 5})).is_err());
        assert!(validate(
            &json!({"price_rules": {"markup_percent": 12.5, "add": "0.5", "round": "multiple:5",
                                                "min": 1, "max": 999, "currency": "MXN"}})
        )
        .is_ok());
    }
}
