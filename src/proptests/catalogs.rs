//! Catalog pages (`*_catalog::page`) over the loopback: any reply, any stored cursor, and the
//! cursors each page writes read back by the next page.

use super::*;
use crate::marketplaces::catalog::{CatalogError, CatalogPage, RAW_MAX};
use crate::marketplaces::shein::Shein;
use crate::marketplaces::shopify::Shopify;
use crate::marketplaces::{mercadolibre_catalog, shein_catalog, shopify_catalog, Connector};
use serde_json::json;
use std::time::Duration;

fn cases() -> Config {
    config_with_default_cases(64)
}

/// What every page and failure satisfies.
fn check(got: &Result<CatalogPage, CatalogError>) -> Result<(), TestCaseError> {
    match got {
        Ok(page) => {
            prop_assert!(page.calls <= 1);
            prop_assert!(page.discovered >= 0);
            prop_assert!(
                page.pause.is_none_or(|d| d <= Duration::from_secs(60)),
                "{:?}",
                page.pause
            );
            for u in &page.listings {
                prop_assert!(!u.external_id.is_empty());
                prop_assert!(u.raw.to_string().len() <= RAW_MAX);
                prop_assert!(u.price.is_none_or(|p| !p.is_sign_negative() || p.is_zero()));
            }
        }
        Err(CatalogError::Wait(d)) => prop_assert!(*d <= Duration::from_secs(60), "{d:?}"),
        Err(CatalogError::Unsupported) => prop_assert!(false, "unsupported"),
        Err(_) => {}
    }
    Ok(())
}

fn shopify_node() -> BoxedStrategy<Value> {
    let gid = |kind: &'static str| {
        prop_oneof![
            "[0-9]{1,22}".prop_map(move |n| json!(format!("gid://shopify/{kind}/{n}"))),
            json_leaf(),
        ]
    };
    (
        gid("ProductVariant"),
        gid("InventoryItem"),
        gid("Product"),
        odd_number(),
        odd_number(),
        json_leaf(),
    )
        .prop_map(|(v, i, p, price, qty, sku)| {
            json!({"id": v, "sku": sku, "price": price, "inventoryQuantity": qty, "inventoryItem": {"id": i},
                   "product": {"id": p, "title": "T", "status": "ACTIVE"}})
        })
        .boxed()
}

/// A productVariants reply of any shape: nodes, page info, bucket, errors.
fn shopify_reply() -> BoxedStrategy<Canned> {
    let bucket = (odd_number(), odd_number(), odd_number(), odd_number()).prop_map(|(need, max, have, rate)| {
        json!({"cost": {"requestedQueryCost": need,
            "throttleStatus": {"maximumAvailable": max, "currentlyAvailable": have, "restoreRate": rate}}})
    });
    let errors = prop::option::of(
        (
            prop::sample::select(vec!["THROTTLED", "MAX_COST_EXCEEDED", "BAD_REQUEST"]),
            word(),
        )
            .prop_map(|(code, m)| json!([{"message": format!("{m} cursor"), "extensions": {"code": code}}])),
    );
    let data = (
        prop::collection::vec(shopify_node(), 0..4),
        json_leaf(),
        json_leaf(),
        json_leaf(),
    )
        .prop_map(|(nodes, more, end, currency)| {
            json!({"shop": {"currencyCode": currency},
            "productVariants": {"pageInfo": {"hasNextPage": more, "endCursor": end}, "nodes": nodes}})
        });
    prop_oneof![
        3 => (data, prop::option::of(bucket), errors).prop_map(|(d, b, e)| {
            let mut v = json!({"data": d});
            if let Some(b) = b {
                v["extensions"] = b;
            }
            if let Some(e) = e {
                v["errors"] = e;
            }
            Canned::new(200, v.to_string())
        }),
        1 => canned(),
    ]
    .boxed()
}

fn cursor_text() -> BoxedStrategy<Option<String>> {
    prop::option::of(prop_oneof![
        json_value().prop_map(|v| v.to_string()),
        (json_leaf(), odd_number()).prop_map(|(a, f)| json!({"after": a, "first": f}).to_string()),
        ".{0,20}",
    ])
    .boxed()
}

/// A SHEIN pass's stored cursor, near one the extension writes (counts kept realistic: see
/// `bug_shein_cursor_counts_overflow`).
fn shein_cursor() -> BoxedStrategy<Option<String>> {
    let spu = (
        "[A-Za-z0-9 ]{0,6}",
        prop::collection::vec("[a-z0-9]{0,4}", 0..3),
        0usize..200,
    )
        .prop_map(|(name, skcs, skus)| json!({"name": name, "skcs": skcs, "skus": skus}));
    let unit = ("[A-Z0-9]{1,6}", prop::option::of("[0-9.]{1,6}"))
        .prop_map(|(id, price)| json!({"id": id, "sku": null, "title": null, "price": price, "currency": null, "spu": "M1", "skc": "s1"}));
    prop::option::of(prop_oneof![
        3 => (0u32..1_000_000, any::<bool>(), prop::collection::vec(spu, 0..3), prop::collection::vec(unit, 0..120))
            .prop_map(|(pages, last, spus, units)| json!({"pages": pages, "last": last, "spus": spus, "units": units}).to_string()),
        1 => json_value().prop_map(|v| v.to_string()),
    ]).boxed()
}

/// A SHEIN reply for any of the pass's steps.
fn shein_reply() -> BoxedStrategy<Canned> {
    let query = prop::collection::vec(
        (
            "[A-Za-z0-9 ]{0,5}",
            "[a-z0-9]{0,3}",
            prop::collection::vec("[A-Z0-9]{1,4}", 0..4),
        )
            .prop_map(|(spu, skc, skus)| json!({"spuName": spu, "skcName": skc, "skuCodeList": skus})),
        0..60,
    )
    .prop_map(|data| json!({"data": data}));
    let spu = prop::collection::vec(
        (
            "[a-z0-9]{0,3}",
            prop::collection::vec(
                ("[A-Z0-9]{1,4}", "[A-Za-z0-9 -]{0,6}", odd_number(), odd_number()),
                0..3,
            ),
        )
            .prop_map(|(skc, skus)| {
                let skus: Vec<Value> = skus
                    .into_iter()
                    .map(|(code, sku, base, special)| {
                        json!({"skuCode": code, "supplierSku": sku,
                        "priceInfoList": [{"basePrice": base, "specialPrice": special, "currency": "MXN"}]})
                    })
                    .collect();
                json!({"skcName": skc, "skuInfoList": skus})
            }),
        0..3,
    )
    .prop_map(
        |skcs| json!({"productMultiNameList": [{"language": "en", "productName": "Dress"}], "skcInfoList": skcs}),
    );
    let stock = prop::collection::vec(
        ("[A-Z0-9]{1,4}", odd_number(), prop::option::of("[A-Za-z0-9 -]{0,5}"))
            .prop_map(|(code, n, wh)| json!({"skuCode": code, "totalUsableInventory": n, "warehouseInventoryList": [{"warehouseCode": wh}]})),
        0..4,
    )
    .prop_map(|skus| json!([{"goodsInventory": [{"skuList": skus}]}]));
    prop_oneof![
        3 => (prop_oneof![query, spu, stock, json_value()], prop::sample::select(vec!["0", "0", "0", "20401", "832213", "400"]))
            .prop_map(|(info, code)| Canned::new(200, json!({"code": code, "msg": "m", "info": info}).to_string())),
        1 => canned(),
    ].boxed()
}

fn ml_scan() -> BoxedStrategy<Canned> {
    prop_oneof![
        3 => (prop::collection::vec(prop_oneof!["[A-Z0-9]{1,8}".prop_map(Value::from), json_leaf()], 0..30), json_leaf(), odd_number())
            .prop_map(|(ids, scroll, total)| Canned::new(200, json!({"results": ids, "scroll_id": scroll, "paging": {"total": total}}).to_string())),
        1 => canned(),
    ].boxed()
}

fn ml_details() -> BoxedStrategy<Canned> {
    let item = (
        json_object(),
        prop::option::of(prop::collection::vec(json_object(), 0..3)),
        odd_number(),
    )
        .prop_map(|(mut item, vars, code)| {
            item["id"] = json!("MLM1");
            if let Some(v) = vars {
                item["variations"] = Value::Array(v);
            }
            json!({"code": if code.is_number() { json!(200) } else { code }, "body": item})
        });
    prop_oneof![
        3 => prop::collection::vec(item, 0..4).prop_map(|items| Canned::new(200, Value::Array(items).to_string())),
        1 => canned(),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(cases())]

    /// Shopify: any stored cursor and any reply give a page or a failure; a page's units are
    /// ones `map_product` takes, its pause at most a minute, and its cursor reads back.
    #[test]
    fn shopify_catalog_pages(cursor in cursor_text(), first in shopify_reply(), second in shopify_reply()) {
        let server = SHOPIFY.get_or_init(Loopback::start);
        server.answer(vec![first, second]);
        let req = request(&server.base, "1", json!({}));
        let got = shopify_catalog::page(&agent(), &req, cursor.as_deref());
        check(&got)?;
        if let Ok(page) = got {
            for u in &page.listings {
                prop_assert!(Shopify.check_listing(&u.external_id, &u.settings).is_ok(), "{u:?}");
            }
            if let Some(next) = page.next {
                let again = shopify_catalog::page(&agent(), &req, Some(&next));
                check(&again)?;
                prop_assert!(!matches!(&again, Err(CatalogError::CursorExpired(e)) if e.contains("not readable")), "{next}");
            }
        }
    }

    /// MercadoLibre: a scan, then the details of what it found; any replies, any cursor.
    #[test]
    fn mercadolibre_catalog_pages(cursor in cursor_text(), scan in ml_scan(), details in ml_details()) {
        let server = MERCADOLIBRE.get_or_init(Loopback::start);
        server.answer(vec![scan, details]);
        let req = request(&server.base, "MLM1", json!({}));
        let got = mercadolibre_catalog::page(&agent(), &req, cursor.as_deref());
        check(&got)?;
        let mut next = got.ok().and_then(|p| p.next);
        for _ in 0..2 {
            let Some(c) = next else { break };
            let again = mercadolibre_catalog::page(&agent(), &req, Some(&c));
            check(&again)?;
            prop_assert!(!matches!(again, Err(CatalogError::CursorExpired(ref e)) if e.contains("not one of this version")), "{c}");
            next = again.ok().and_then(|p| p.next);
        }
    }

    /// SHEIN: a few steps of a pass from any stored cursor, each answered with any reply; the
    /// cursor each step writes is read by the next.
    #[test]
    fn shein_catalog_pages(cursor in shein_cursor(), replies in prop::collection::vec(shein_reply(), 4)) {
        let server = SHEIN.get_or_init(Loopback::start);
        server.answer(replies);
        let req = request(&server.base, "SKU1", json!({}));
        let mut at = cursor;
        for step in 0..4 {
            let got = shein_catalog::page(&agent(), &req, at.as_deref());
            check(&got)?;
            let Ok(page) = got else {
                if step > 0 {
                    prop_assert!(!matches!(got, Err(CatalogError::CursorExpired(_))), "a cursor we wrote was refused");
                }
                break;
            };
            for u in &page.listings {
                prop_assert!(u.settings.is_object());
                for k in ["spu_name", "skc_name", "warehouse_code"] {
                    prop_assert!(u.settings.get(k).is_none_or(Value::is_string));
                }
                // (not asserted: see bug_catalog_units_that_map_product_refuses)
                let _ = Shein.check_listing(&u.external_id, &u.settings);
            }
            match page.next {
                Some(n) => at = Some(n),
                None => break,
            }
        }
    }
}

// one server per property, started by its first case (the cases of a property run one by one)
static SHOPIFY: std::sync::OnceLock<Loopback> = std::sync::OnceLock::new();
static MERCADOLIBRE: std::sync::OnceLock<Loopback> = std::sync::OnceLock::new();
static SHEIN: std::sync::OnceLock<Loopback> = std::sync::OnceLock::new();

/// Regression, now fixed (low: needs a stored cursor nobody wrote): SHEIN's catalog cursor is read without bounds
/// on its counts, and `shein_catalog` adds to them unchecked: a cursor with `pages` 4294967295
/// panics in `next_call` (`at.pages + 1`, "attempt to add with overflow" in debug builds; in
/// release it asks for page 0); an SPU's `skus` near usize::MAX overflows `waiting + s.skus`
/// the same way. The property keeps cursors realistic; fix with `saturating_add` (or
/// `checked_add` → `CursorExpired`).
#[test]
fn regression_shein_cursor_counts_overflow() {
    let server = Loopback::start();
    server.answer(vec![Canned::new(200, r#"{"code":"0","info":{"data":[]}}"#)]);
    let req = request(&server.base, "SKU1", json!({}));
    let panicked = [
        r#"{"pages":4294967295,"last":false,"spus":[],"units":[]}"#.to_string(),
        format!(
            r#"{{"pages":1,"last":false,"spus":[{{"name":"M1","skcs":[],"skus":{}}}],"units":[{{"id":"I1","sku":null,"title":null,"price":null,"currency":null,"spu":null,"skc":null}}]}}"#,
            usize::MAX
        ),
    ]
    .into_iter()
    .filter(|cursor| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            shein_catalog::page(&agent(), &req, Some(cursor)).is_ok()
        }))
        .is_err()
    })
    .collect::<Vec<_>>();
    assert!(panicked.is_empty(), "panicked on {panicked:?}");
}

/// Regression, now fixed (found by `shein_catalog_pages` and `catalog_units_are_well_formed` when they also ask
/// each unit's `check_listing`): MercadoLibre's and SHEIN's catalog pages return units that
/// `integ.map_product` refuses, where TikTok Shop's and Shopify's keep only units that pass
/// `check_listing`. `integ.link_by_sku` maps every linked unit with `map_product` in one loop
/// with no handler, so one such unit makes the whole `link_by_sku` call fail. Minimal inputs:
/// a MercadoLibre variation id above i64::MAX (`{"id": "MLM1", "variations": [{"id":
/// 18446744073709551615}]}`: settings `{"variation_id": "18446744073709551615"}`, "must be an
/// integer"), an item id with a space (`{"id": "MLM 1"}`), and a SHEIN `spuName` with a space
/// (`"M 1"`: settings `{"spu_name": "M 1"}`, "1 to 100 printable characters, no spaces").
/// Fix: filter the units with the connector's `check_listing` as the other two pages do.
#[test]
fn regression_catalog_units_that_map_product_refuses() {
    use crate::marketplaces::mercadolibre::MercadoLibre;
    let mut refused = Vec::new();
    for item in [
        json!({"id": "MLM1", "variations": [{"id": u64::MAX}]}),
        json!({"id": "MLM 1"}),
    ] {
        for u in mercadolibre_catalog::units(&item) {
            if MercadoLibre.check_listing(&u.external_id, &u.settings).is_err() {
                refused.push(format!("mercadolibre {} {}", u.external_id, u.settings));
            }
        }
    }
    // SHEIN: a page naming SPU "M 1" (the last page: it is short), its SKUs, their stock
    let server = Loopback::start();
    server.answer(vec![
        Canned::new(
            200,
            r#"{"code":"0","info":{"data":[{"spuName":"M 1","skcName":"s1","skuCodeList":["I1"]}]}}"#,
        ),
        Canned::new(
            200,
            r#"{"code":"0","info":{"skcInfoList":[{"skcName":"s1","skuInfoList":[{"skuCode":"I1"}]}]}}"#,
        ),
        Canned::new(200, r#"{"code":"0","info":[]}"#),
    ]);
    let req = request(&server.base, "SKU1", json!({}));
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let page = shein_catalog::page(&agent(), &req, cursor.as_deref()).expect("a page");
        for u in &page.listings {
            if Shein.check_listing(&u.external_id, &u.settings).is_err() {
                refused.push(format!("shein {} {}", u.external_id, u.settings));
            }
        }
        cursor = page.next;
    }
    assert!(refused.is_empty(), "units map_product refuses: {refused:?}");
}
