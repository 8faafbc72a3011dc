//! The marketplaces' replies, read without a call: statuses and envelopes (`classify_failure`,
//! `error_text`, `Retry-After`, Shopify's THROTTLED, SHEIN's codes, TikTok's `classify`), price
//! write answers (Shopify's `product_answer`/`found`, SHEIN's `entry_outcome`/`answer_for`) and
//! the catalogs' units.

use super::*;
use crate::marketplaces::catalog::{self, CatalogError, RAW_MAX};
use crate::marketplaces::http::{classify_failure, error_text, parse_retry_after, Reply};
use crate::marketplaces::{
    mercadolibre_catalog, shein, shein_prices, shopify, shopify_prices, tiktok, tiktok_catalog, Connector, PushKind,
};
use serde_json::json;
use std::time::Duration;

fn reply() -> BoxedStrategy<Reply> {
    (status(), reply_body(), prop::option::of(0u64..100_000))
        .prop_map(|(s, b, r)| {
            let mut reply = Reply::new(s, b);
            reply.retry_after = r.map(Duration::from_millis);
            reply
        })
        .boxed()
}

/// An error text: the status, then at most 500 bytes in all (and the ellipsis).
fn bounded_error(e: &str) -> bool {
    e.len() <= 500 + '…'.len_utf8()
}

fn kind_ok(k: &PushKind) -> Result<(), TestCaseError> {
    match k {
        PushKind::Applied { .. } => {}
        PushKind::Retry { error, retry_after } | PushKind::Throttled { error, retry_after } => {
            prop_assert!(!error.is_empty() && bounded_error(error), "{error}");
            prop_assert!(retry_after.is_none_or(|d| d <= Duration::from_secs(86_400)));
        }
        PushKind::Unauthorized { error } | PushKind::Permanent { error } => {
            prop_assert!(!error.is_empty() && bounded_error(error), "{error}")
        }
    }
    Ok(())
}

/// A Shopify THROTTLED reply with any numbers for the bucket.
fn throttled() -> BoxedStrategy<Reply> {
    (odd_number(), odd_number(), odd_number()).prop_map(|(need, have, rate)| {
        let body = json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                          "extensions": {"cost": {"requestedQueryCost": need,
                                                  "throttleStatus": {"currentlyAvailable": have, "restoreRate": rate}}}});
        Reply::new(200, body.to_string())
    }).boxed()
}

proptest! {
    #![proptest_config(config())]

    /// `Retry-After`: seconds from 0 to a day, or nothing.
    #[test]
    fn retry_after_is_bounded(v in prop_oneof![".{0,20}", raw_number(), "[0-9]{1,30}(\\.[0-9]{0,12})?"]) {
        if let Some(d) = parse_retry_after(&v) {
            prop_assert!(d <= Duration::from_secs(86_400), "{v}: {d:?}");
        }
    }

    /// Any reply's status maps to a decision, and its error text is short and starts with the
    /// status.
    #[test]
    fn any_failure_is_classified(r in reply()) {
        let e = error_text(&r);
        prop_assert!(e.starts_with(&format!("HTTP {}", r.status)), "{e}");
        prop_assert!(bounded_error(&e), "{} bytes", e.len());
        let k = classify_failure(&r);
        kind_ok(&k)?;
        match r.status {
            401 => prop_assert!(matches!(k, PushKind::Unauthorized { .. }), "{k:?}"),
            429 => prop_assert!(matches!(k, PushKind::Throttled { .. }), "{k:?}"),
            408 | 425 | 500..=599 => prop_assert!(matches!(k, PushKind::Retry { .. }), "{k:?}"),
            _ => prop_assert!(matches!(k, PushKind::Permanent { .. }), "{k:?}"),
        }
        let c = catalog::failure(&r);
        prop_assert!(!matches!(c, CatalogError::CursorExpired(_) | CatalogError::Unsupported | CatalogError::Wait(_)));
    }

    /// Shopify's envelope: HTTP errors, GraphQL errors and THROTTLED, whose wait is from 0.1 s
    /// to a minute whatever the bucket says.
    #[test]
    fn shopify_envelopes_are_classified(r in prop_oneof![reply(), throttled()]) {
        match shopify::call_failure(&r) {
            None => {
                prop_assert_eq!(r.status, 200);
                prop_assert!(r.json().is_some_and(|v| !v.get("errors").is_some_and(Value::is_array)));
            }
            Some(k) => {
                kind_ok(&k)?;
                if let PushKind::Throttled { retry_after: Some(d), .. } = k {
                    if r.status == 200 {
                        prop_assert!(d >= Duration::from_millis(100) && d <= Duration::from_secs(60), "{d:?}");
                    }
                }
            }
        }
    }

    /// SHEIN's envelope (`code` "0" is success) and its per-SKU failures.
    #[test]
    fn shein_envelopes_are_classified(
        r in prop_oneof![
            reply(),
            (prop::sample::select(vec!["0", "832213", "openapi00001", "400", ""]), word(), json_value())
                .prop_map(|(c, m, info)| Reply::new(200, json!({"code": c, "msg": m, "info": info}).to_string())),
        ],
    ) {
        match shein::call_failure(&r) {
            None => prop_assert!(r.status == 200 && r.json().is_some_and(|v| v["code"] == "0")),
            Some(k) => kind_ok(&k)?,
        }
        for (sku, reason) in shein::failed_skus(&r) {
            prop_assert!(r.body.contains(&sku.replace('"', "")) || sku.is_empty() || !sku.is_ascii(), "{sku}: {reason}");
        }
    }

    /// TikTok Shop's envelope: applied exactly when HTTP 200 carries code 0.
    #[test]
    fn tiktok_envelopes_are_classified(
        r in prop_oneof![
            reply(),
            (status(), odd_number(), word()).prop_map(|(s, c, m)| Reply::new(s, json!({"code": c, "message": m}).to_string())),
        ],
    ) {
        let k = tiktok::classify(&r);
        kind_ok(&k)?;
        let code = r.json().and_then(|v| v.get("code").and_then(Value::as_i64));
        prop_assert_eq!(matches!(k, PushKind::Applied { .. }), r.status == 200 && code == Some(0));
        if r.status == 429 {
            prop_assert!(matches!(k, PushKind::Throttled { .. }), "{k:?}");
        }
    }

    /// Shopify's answer to a product's price writes: one outcome per member, whatever
    /// `userErrors` names (an index out of range, a field of any shape).
    #[test]
    fn shopify_price_answers_have_one_outcome_per_member(
        payload in prop_oneof![
            json_value(),
            prop::collection::vec(
                (prop_oneof![json_value(), (word(), odd_number()).prop_map(|(f, i)| json!(["variants", i, f]))], word(), word())
                    .prop_map(|(field, message, code)| json!({"field": field, "message": message, "code": code})),
                0..4,
            ).prop_map(|errors| json!({"productVariants": [], "userErrors": errors})),
        ],
        members in 0usize..300,
    ) {
        let kinds = shopify_prices::product_answer(&payload, members);
        prop_assert_eq!(kinds.len(), members);
        for k in &kinds {
            kind_ok(k)?;
        }
        let errors = payload.get("userErrors").and_then(Value::as_array).map_or(0, Vec::len);
        if errors == 0 && !payload.is_null() {
            prop_assert!(kinds.iter().all(|k| matches!(k, PushKind::Applied { .. })), "{kinds:?}");
        }
    }

    /// Shopify's variant lookup: a target only for a single variant with numeric ids.
    #[test]
    fn shopify_variant_lookups_are_read_or_refused(
        data in prop_oneof![
            json_object(),
            (prop::collection::vec(json_object(), 0..3), odd_number(), odd_number()).prop_map(|(mut nodes, v, p)| {
                if let Some(Value::Object(first)) = nodes.first_mut() {
                    first.insert("id".into(), v);
                    first.insert("product".into(), json!({ "id": p }));
                }
                json!({"i0": {"variants": {"nodes": nodes}}, "i1": {"variant": nodes.first()}})
            }),
        ],
        i in 0usize..3,
        item in "[0-9]{1,6}",
    ) {
        match shopify_prices::found(&data, i, &item) {
            Ok(t) => {
                let t = format!("{t:?}");
                prop_assert!(t.contains("learned: true"), "{t}");
            }
            Err(k) => {
                kind_ok(&k)?;
                prop_assert!(!matches!(k, PushKind::Applied { .. }), "{k:?}");
            }
        }
    }

    /// SHEIN's per-SKU answers to price and cost writes: applied only when its entry says
    /// `success: true`.
    #[test]
    fn shein_price_answers_are_per_sku(
        r in prop_oneof![
            reply(),
            (prop::collection::vec((prop::sample::select(vec!["A", "B", "I1-0"]), odd_number().prop_map(|v| if v.is_number() { json!(v.as_i64() == Some(1)) } else { v }), word()), 0..4), any::<bool>())
                .prop_map(|(entries, cost)| {
                    let key = if cost { "skuCode" } else { "productCode" };
                    let data: Vec<Value> = entries.into_iter().map(|(s, ok, m)| json!({key: s, "success": ok, "message": m})).collect();
                    Reply::new(200, json!({"code": "0", "info": {"data": data}}).to_string())
                }),
        ],
        sku in prop::sample::select(vec!["A", "B", "I1-0", ""]),
    ) {
        for (k, got) in [
            ("productCode", shein_prices::entry_outcome(&r, sku)),
            ("skuCode", shein_prices::answer_for(&r, "skuCode", sku, "the supply cost")),
        ] {
            kind_ok(&got)?;
            let first = r.json().and_then(|v| {
                v.pointer("/info/data")?.as_array()?.iter().find(|e| e.get(k).and_then(Value::as_str) == Some(sku)).cloned()
            });
            let applied = first.is_some_and(|e| e.get("success") == Some(&json!(true)));
            prop_assert_eq!(matches!(got, PushKind::Applied { .. }), applied);
        }
    }

    /// TikTok Shop's product search as a catalog page: units only that `map_product` takes,
    /// prices never negative, `raw` bounded; failures classified.
    #[test]
    fn tiktok_catalog_pages_are_read_or_refused(
        r in prop_oneof![
            reply(),
            (prop::collection::vec(json_object(), 0..4), odd_number(), json_leaf()).prop_map(|(products, total, next)| {
                let body = json!({"code": 0, "message": "Success", "data": {"products": products, "total_count": total, "next_page_token": next}});
                Reply::new(200, body.to_string())
            }),
        ],
        with_cursor in any::<bool>(),
    ) {
        match tiktok_catalog::parse(&r, with_cursor) {
            Ok(page) => {
                prop_assert_eq!(page.calls, 1);
                prop_assert!(page.discovered >= 0);
                prop_assert!(page.next.as_deref().is_none_or(|n| !n.trim().is_empty()));
                for u in &page.listings {
                    prop_assert!(crate::marketplaces::tiktok::TikTok.check_listing(&u.external_id, &u.settings).is_ok());
                    prop_assert!(u.price.is_none_or(|p| !p.is_sign_negative() || p.is_zero()));
                    prop_assert!(u.raw.to_string().len() <= RAW_MAX);
                }
            }
            Err(CatalogError::CursorExpired(_)) => prop_assert!(with_cursor),
            Err(e) => prop_assert!(!matches!(e, CatalogError::Unsupported | CatalogError::Wait(_)), "{e:?}"),
        }
    }

    /// TikTok Shop products and MercadoLibre items of any shape become well-formed units.
    #[test]
    fn catalog_units_are_well_formed(
        product in json_object(),
        skus in prop::collection::vec(json_object_of(prop_oneof![json_leaf(), json_value(), prop::collection::vec(json_object(), 0..3).prop_map(Value::Array)]), 0..4),
        variations in prop::option::of(prop::collection::vec(json_object(), 0..4)),
    ) {
        let mut p = product;
        p["skus"] = Value::Array(skus);
        if p.get("id").is_none() {
            p["id"] = json!("1729");
        }
        for u in tiktok_catalog::units(&p) {
            prop_assert!(!u.external_id.is_empty());
            prop_assert!(u.raw.to_string().len() <= RAW_MAX);
        }
        if let Some(v) = variations {
            p["variations"] = Value::Array(v);
        }
        for u in mercadolibre_catalog::units(&p) {
            prop_assert!(!u.external_id.trim().is_empty());
            prop_assert!(u.price.is_none_or(|d| !d.is_sign_negative() || d.is_zero()));
            prop_assert!(u.raw.to_string().len() <= RAW_MAX);
            prop_assert_eq!(u.settings.get("variation_id").is_some(), !u.variation.is_empty());
        }
    }

    /// `raw` is kept whole up to RAW_MAX bytes of JSON, else replaced by a short note.
    #[test]
    fn raw_is_bounded(v in json_value(), pad in 0usize..6000) {
        let big = json!({"v": v, "pad": "x".repeat(pad)});
        let kept = catalog::bounded_raw(big.clone());
        prop_assert!(kept.to_string().len() <= RAW_MAX);
        prop_assert_eq!(kept == big, big.to_string().len() <= RAW_MAX);
    }
}
