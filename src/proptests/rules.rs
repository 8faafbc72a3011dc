//! Stock rules (`settings.stock_rules`): validation of any JSON, and what accepted rules
//! publish for any stock.

use super::*;
use crate::rules::{effective, validate, without_rules, StockRules};
use serde_json::json;

/// A rule value: in range, out of range, fractional, text, null.
fn rule_number() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => (0i64..=200).prop_map(Value::from),
        2 => (0i64..=i32::MAX as i64).prop_map(Value::from),
        2 => json_number(),
        1 => json_leaf(),
    ]
    .boxed()
}

/// A `stock_rules` object near a valid one (or anything at all).
fn rules() -> BoxedStrategy<Value> {
    let mode = prop_oneof![
        3 => prop::sample::select(vec!["subtract", "zero_below"]).prop_map(Value::from),
        1 => json_leaf(),
    ];
    let object = (
        prop::option::of(rule_number()),
        prop::option::of(mode),
        prop::option::of(rule_number()),
        prop::option::of(rule_number()),
        prop::option::of((key(), json_leaf())),
    )
        .prop_map(|(buffer, mode, percent, max, extra)| {
            let mut o = super::object_of([
                ("buffer", buffer),
                ("buffer_mode", mode),
                ("allocation_percent", percent),
                ("max", max),
            ]);
            if let Some((k, v)) = extra {
                o.insert(k, v);
            }
            Value::Object(o)
        });
    prop_oneof![6 => object, 1 => json_value()].boxed()
}

fn settings() -> BoxedStrategy<Value> {
    prop_oneof![
        5 => (rules(), prop::option::of(json_object())).prop_map(|(r, other)| {
            let mut s = other.unwrap_or_else(|| json!({}));
            s["stock_rules"] = r;
            s
        }),
        1 => json_value(),
    ]
    .boxed()
}

/// Settings whose `stock_rules` are valid (or absent).
fn valid_settings() -> BoxedStrategy<Value> {
    let n = |hi: i64| prop_oneof![3 => 0i64..=hi.min(100), 1 => 0i64..=hi].prop_map(Value::from);
    let mode = prop::sample::select(vec![json!("subtract"), json!("zero_below"), Value::Null]);
    (
        prop::option::of(n(i32::MAX as i64)),
        prop::option::of(mode),
        prop::option::of(n(100)),
        prop::option::of(n(i32::MAX as i64)),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(buffer, mode, percent, max, absent)| {
            let o = super::object_of([
                ("buffer", buffer),
                ("buffer_mode", mode),
                ("allocation_percent", percent),
                ("max", max),
            ]);
            if absent {
                json!({"variation_id": 1})
            } else {
                json!({ "stock_rules": o })
            }
        })
        .boxed()
}

/// The documented rules, written again: buffer, then allocation, then max; never negative.
fn model(r: &StockRules, stock: i32) -> i64 {
    let s = i64::from(stock.max(0));
    let mut q = if r.zero_below {
        if s < r.buffer {
            0
        } else {
            s
        }
    } else {
        (s - r.buffer).max(0)
    };
    if let Some(p) = r.allocation_percent {
        q = q * p / 100;
    }
    if let Some(m) = r.max {
        q = q.min(m);
    }
    q
}

proptest! {
    #![proptest_config(config())]

    /// Any settings: validated or refused with a reason; the merge never panics.
    #[test]
    fn any_rules_are_validated_or_refused(conn in settings(), listing in settings(), stock in any::<i32>()) {
        if let Err(e) = validate(&conn) {
            prop_assert!(e.starts_with("stock_rules"), "{e}");
        }
        let r = effective(&conn, &listing);
        let q = r.apply(stock);
        prop_assert!(q >= 0 && q <= stock.max(0), "{r:?} on {stock}: {q}");
        let stripped = without_rules(&listing);
        prop_assert!(stripped.get("stock_rules").is_none());
    }

    /// Accepted rules on any stock from 0 to 10,000,000 publish from 0 to that stock (and to
    /// `max`), never negative, exactly as documented.
    #[test]
    fn accepted_rules_publish_within_the_stock(
        conn in prop_oneof![4 => valid_settings(), 1 => settings()],
        listing in prop_oneof![4 => valid_settings(), 1 => settings()], stock in prop_oneof![0i32..=10_000_000, Just(0), Just(10_000_000)]) {
        // (an early return, not prop_assume: rejects are capped whatever PROPTEST_CASES says)
        if validate(&conn).is_err() || validate(&listing).is_err() {
            return Ok(());
        }
        let r = effective(&conn, &listing);
        prop_assert!(r.buffer >= 0);
        prop_assert!(r.allocation_percent.is_none_or(|p| (0..=100).contains(&p)));
        prop_assert!(r.max.is_none_or(|m| m >= 0));
        let q = r.apply(stock);
        prop_assert!((0..=stock).contains(&q), "{r:?} on {stock}: {q}");
        if let Some(m) = r.max {
            prop_assert!(i64::from(q) <= m);
        }
        prop_assert_eq!(i64::from(q), model(&r, stock), "{:?} on {}", r, stock);
        // a listing's own key wins over the connection's
        for k in ["buffer", "allocation_percent", "max"] {
            if let Some(v) = listing.pointer(&format!("/stock_rules/{k}")).filter(|v| !v.is_null()) {
                let got = match k {
                    "buffer" => Some(r.buffer),
                    "allocation_percent" => r.allocation_percent,
                    _ => r.max,
                };
                prop_assert_eq!(got, v.as_i64(), "{}", k);
            }
        }
    }

    /// More stock never publishes less (the rules are monotone).
    #[test]
    fn rules_are_monotone(conn in prop_oneof![valid_settings(), settings()], a in 0i32..=10_000_000, b in 0i32..=10_000_000) {
        let r = effective(&conn, &json!({}));
        let (lo, hi) = (a.min(b), a.max(b));
        prop_assert!(r.apply(lo) <= r.apply(hi), "{r:?}: {lo} -> {}, {hi} -> {}", r.apply(lo), r.apply(hi));
    }
}
