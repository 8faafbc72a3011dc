//! Price rules (`settings.price_rules`) on any price, the decimal readers of prices from outside,
//! and the price writers of each marketplace (their text reads back as the amount rounded).

use super::*;
use crate::marketplaces::{catalog, decimal_of, mercadolibre_prices, shein_prices, shopify_prices};
use crate::price_rules::{decimal, effective, validate, PriceRules, Refusal, Round};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::json;
use std::str::FromStr;

const MAX_PRICE: i64 = 1_000_000_000;

/// Decimal text from `mantissa` and `scale` (e.g. 12345, 2 → "123.45").
fn text(mantissa: i64, scale: u32) -> String {
    Decimal::new(mantissa, scale.min(28)).to_string()
}

/// A price EGDC may hold: any non-negative decimal, from 0 to `Decimal::MAX`, with up to 28
/// decimals; mostly money-like.
fn price() -> BoxedStrategy<Decimal> {
    prop_oneof![
        4 => (0i64..100_000_000, 0u32..=2).prop_map(|(m, s)| Decimal::new(m, s)),
        2 => (0i64..=i64::MAX, 0u32..=28).prop_map(|(m, s)| Decimal::new(m, s)),
        2 => (any::<u32>(), any::<u32>(), any::<u32>(), 0u32..=28)
            .prop_map(|(lo, mid, hi, s)| Decimal::from_parts(lo, mid, hi, false, s)),
        1 => prop::sample::select(vec![Decimal::ZERO, Decimal::MAX, Decimal::new(1, 28), Decimal::from(MAX_PRICE)]),
    ]
    .boxed()
}

/// A number written as JSON or as text, from `mantissa` and `scale`.
fn written(mantissa: i64, scale: u32, as_text: bool) -> Value {
    let t = text(mantissa, scale);
    if as_text {
        Value::String(t)
    } else {
        serde_json::from_str(&t).unwrap_or(Value::Null)
    }
}

fn amount(lo: i64, hi: i64) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (lo..=hi, 0u32..=2, any::<bool>()).prop_map(|(m, s, t)| written(m, s, t)),
        2 => (lo.saturating_mul(10_000)..=hi.saturating_mul(10_000), 0u32..=6, any::<bool>())
            .prop_map(|(m, s, t)| written(m, s, t)),
        1 => json_number(),
        1 => json_leaf(),
    ]
    .boxed()
}

fn round() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => prop::sample::select(vec!["none", "cents", "whole", "ends_99"]).prop_map(Value::from),
        3 => (1i64..=10_000_000, 0u32..=4).prop_map(|(m, s)| json!(format!("multiple:{}", text(m, s)))),
        1 => (any::<i64>(), 0u32..=8).prop_map(|(m, s)| json!(format!("multiple:{}", text(m, s)))),
        1 => json_leaf(),
    ]
    .boxed()
}

fn currency() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => prop::sample::select(vec!["MXN", "USD", "BRL"]).prop_map(Value::from),
        1 => json_leaf(),
    ]
    .boxed()
}

/// `price_rules` near valid ones: every key, values in and out of range.
fn rules() -> BoxedStrategy<Value> {
    let object = (
        prop::option::of(amount(-150, 1_500)),
        prop::option::of(amount(-2 * MAX_PRICE, 2 * MAX_PRICE)),
        prop::option::of(round()),
        prop::option::of(amount(-10, 2 * MAX_PRICE)),
        prop::option::of(amount(-10, 2 * MAX_PRICE)),
        prop::option::of(currency()),
        prop::option::of((key(), json_leaf())),
    )
        .prop_map(|(markup, add, round, min, max, currency, extra)| {
            let mut o = super::object_of([
                ("markup_percent", markup),
                ("add", add),
                ("round", round),
                ("min", min),
                ("max", max),
                ("currency", currency),
            ]);
            if let Some((k, v)) = extra {
                o.insert(k, v);
            }
            Value::Object(o)
        });
    prop_oneof![6 => object, 1 => json_value()].boxed()
}

/// Valid `price_rules` (min at most max), often with no min or max.
fn valid_rules() -> BoxedStrategy<Value> {
    let dec = |lo: i64, hi: i64| (lo..=hi, 0u32..=4, any::<bool>()).prop_map(|(m, s, t)| written(m, s, t));
    (
        prop::option::of(dec(-999_999, 10_000_000)),
        prop::option::of(prop_oneof![dec(-100_000, 100_000), dec(-MAX_PRICE, MAX_PRICE)]),
        prop::option::of(prop_oneof![
            prop::sample::select(vec!["none", "cents", "whole", "ends_99"]).prop_map(Value::from),
            (1i64..=10_000_000, 0u32..=4).prop_map(|(m, s)| json!(format!("multiple:{}", text(m, s)))),
        ]),
        prop::option::of(prop_oneof![0i64..=100_000, 0i64..=MAX_PRICE]),
        prop::option::of(prop_oneof![0i64..=100_000, 0i64..=MAX_PRICE]),
        prop::option::of(prop::sample::select(vec!["MXN", "USD"])),
    )
        .prop_map(|(markup, add, round, min, max, currency)| {
            // the markup was drawn in ten-thousandths of a percent: -99.9999 to 1,000
            let markup = markup.and_then(|m| decimal(&m)).map(|m| {
                let m = (m / Decimal::from(10_000)).round_dp(4);
                json!(m.to_string())
            });
            let (min, max) = match (min, max) {
                (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
                other => other,
            };
            let o = super::object_of([
                ("markup_percent", markup),
                ("add", add),
                ("round", round),
                ("min", min.map(Value::from)),
                ("max", max.map(Value::from)),
                ("currency", currency.map(Value::from)),
            ]);
            json!({ "price_rules": o })
        })
        .boxed()
}

fn settings() -> BoxedStrategy<Value> {
    prop_oneof![
        5 => rules().prop_map(|r| json!({ "price_rules": r })),
        1 => json_value(),
    ]
    .boxed()
}

/// Whether `q` keeps its rounding rule (`q` not moved by 0, min or max).
fn rounded(r: &PriceRules, q: Decimal) -> bool {
    let hundred = Decimal::from(100);
    match &r.round {
        Round::None | Round::Cents => (q * hundred).fract().is_zero(),
        Round::Whole => q.fract().is_zero(),
        Round::Ends99 => q.fract() == Decimal::new(99, 2),
        Round::Multiple(n) => (q % n).is_zero(),
    }
}

/// Where `apply` may meet `multiple:<n>`'s division overflow (`bug_price_rules_multiple_*`):
/// the generators keep prices below it.
fn safe_for_multiple(r: &PriceRules, p: Decimal) -> bool {
    !matches!(r.round, Round::Multiple(_)) || p <= Decimal::from(10_000_000_000_000_000_i64)
}

proptest! {
    #![proptest_config(config())]

    /// Any settings: price rules validated or refused with a reason; the merge says the same.
    #[test]
    fn any_price_rules_are_validated_or_refused(conn in settings(), listing in settings()) {
        if let Err(e) = validate(&conn) {
            prop_assert!(e.starts_with("price_rules"), "{e}");
        }
        match effective(&conn, &listing) {
            Ok(r) => prop_assert!(r.min.is_none_or(|lo| r.max.is_none_or(|hi| lo <= hi))),
            Err(e) => prop_assert!(e.starts_with("price_rules"), "{e}"),
        }
    }

    /// Accepted rules on any non-negative price: a price from 0 to 1,000,000,000 within min and
    /// max, or `TooHigh`; never a panic. Where 0, min or max did not move it, the rounding rule
    /// holds: `cents`/`none` two decimals at most, `whole` none, `ends_99` ending in .99,
    /// `multiple:n` a multiple of n.
    #[test]
    fn accepted_rules_publish_a_bounded_rounded_price(
        conn in prop_oneof![4 => valid_rules(), 1 => settings()],
        listing in prop_oneof![1 => valid_rules(), 3 => Just(json!({}))],
        p in price(),
    ) {
        let Ok(r) = effective(&conn, &listing) else { return Ok(()) };
        if !safe_for_multiple(&r, p) {
            return Ok(());
        }
        match r.apply(Some(p), None) {
            Ok(q) => {
                prop_assert!(q >= Decimal::ZERO && q <= Decimal::from(MAX_PRICE), "{r:?} on {p}: {q}");
                prop_assert!(r.min.is_none_or(|lo| q >= lo) && r.max.is_none_or(|hi| q <= hi), "{r:?} on {p}: {q}");
                let clamped = q.is_zero() || Some(q) == r.min || Some(q) == r.max;
                prop_assert!(clamped || rounded(&r, q), "{r:?} on {p}: {q}");
            }
            Err(Refusal::TooHigh(_)) => {}
            Err(other) => prop_assert!(false, "{r:?} on {p}: {other:?}"),
        }
        // the currency gate: EGDC's currency must be the channel's (any case)
        if let Some(c) = &r.currency {
            prop_assert!(matches!(r.apply(Some(p), Some("XXX")), Err(Refusal::Currency { .. })) || c == "XXX", "{c}");
            let lower = c.to_ascii_lowercase();
            prop_assert!(!matches!(r.apply(Some(p), Some(&lower)), Err(Refusal::Currency { .. })), "{lower}");
        }
        prop_assert_eq!(r.apply(None, None), Err(Refusal::Missing));
        if !p.is_zero() {
            prop_assert_eq!(r.apply(Some(-p), None), Err(Refusal::Negative(-p)));
        }
    }

    /// A price from outside (a JSON number or text), read by the rules' and the connectors'
    /// readers: never a panic; any decimal written as text reads back exactly; as a JSON
    /// number, exactly up to 15 significant digits (serde_json keeps non-integers as f64).
    #[test]
    fn prices_from_outside_read_exactly(
        v in prop_oneof![json_value(), raw_number().prop_map(Value::String), raw_number().prop_filter_map("JSON", |t| serde_json::from_str::<Value>(&t).ok())],
        m in -999_999_999_999_999i64..=999_999_999_999_999,
        s in 0u32..=15,
        big in (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>(), 0u32..=28),
    ) {
        let _ = (decimal(&v), catalog::price(Some(&v)), decimal_of(Some(&v)));
        if let Some(d) = catalog::price(Some(&v)) {
            prop_assert!(!d.is_sign_negative() || d.is_zero());
        }
        let exact = Decimal::from_parts(big.0, big.1, big.2, big.3, big.4);
        for d in [Decimal::new(m, s), exact] {
            prop_assert_eq!(decimal(&Value::String(d.to_string())), Some(d));
            prop_assert_eq!(decimal_of(Some(&Value::String(d.to_string()))), Some(d));
        }
        let d = Decimal::new(m, s);
        let number: Value = serde_json::from_str(&d.to_string()).expect("a JSON number");
        prop_assert_eq!(decimal(&number), Some(d), "{}", d);
        prop_assert_eq!(catalog::price(Some(&number)), (!d.is_sign_negative() || d.is_zero()).then_some(d));
    }

    /// What each marketplace is sent for an amount reads back as that amount rounded (halves
    /// away from zero) to the decimals it takes: MercadoLibre's JSON number (0 decimals on
    /// CLP/COP/PYG sites, else 2), SHEIN's JSON number and Shopify's two-decimal money text.
    #[test]
    fn price_writers_round_trip(m in 0i64..=10_000_000_000_000, s in 0u32..=4, site in prop::sample::select(vec!["MLM", "MLB", "MLC", "MCO", "MPY", "MLA", "X", ""])) {
        let amount = Decimal::new(m, s);
        let round = |dp| amount.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
        let id = format!("{site}123");
        let ml = mercadolibre_prices::amount_text(&id, amount);
        let dp = mercadolibre_prices::decimals(&id);
        prop_assert!(serde_json::from_str::<Value>(&ml).is_ok_and(|v| v.is_number()), "{ml}");
        prop_assert_eq!(Decimal::from_str(&ml).ok(), Some(round(dp)));
        let shein = shein_prices::amount_text(amount);
        prop_assert!(serde_json::from_str::<Value>(&shein).is_ok_and(|v| v.is_number()), "{shein}");
        prop_assert_eq!(Decimal::from_str(&shein).ok(), Some(round(2)));
        let shopify = shopify_prices::money(amount);
        prop_assert_eq!(shopify.split_once('.').map(|(_, f)| f.len()), Some(2), "{}", shopify);
        prop_assert_eq!(Decimal::from_str(&shopify).ok(), Some(round(2)));
    }
}

/// Regression, now fixed (found by `accepted_rules_publish_a_bounded_rounded_price` on huge prices):
/// `PriceRules::apply` with `round: "multiple:<n>"` computes `(q / n).round_dp(0) * n` with the
/// panicking operators: the minimal case the property finds, `{"round": "multiple:149.84"}` on
/// EGDC's price `Decimal::MAX` (79228162514264337593543950335), panics with "Multiplication
/// overflowed"; `multiple:0.0001` on 1e25 panics with "Division overflowed". Every other step
/// uses `checked_mul`/`checked_add` and refuses such a price as `TooHigh`. Fix: `checked_div`
/// and `checked_mul`, None → `Refusal::TooHigh(p)`. The property keeps prices ≤ 1e19 when the
/// rule is `multiple`.
#[test]
fn regression_price_rules_multiple_overflows_on_huge_prices() {
    for (n, p) in [
        ("149.84", Decimal::MAX),
        ("0.0001", Decimal::from_str("10000000000000000000000000").expect("1e25")),
    ] {
        let r =
            effective(&json!({"price_rules": {"round": format!("multiple:{n}")}}), &json!({})).expect("valid rules");
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.apply(Some(p), None)));
        assert!(
            matches!(got, Ok(Err(Refusal::TooHigh(_)))),
            "multiple:{n} on {p}: refused as too high, not a panic"
        );
    }
}
