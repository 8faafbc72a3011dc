//! Replies that reach their parser through a call, served by the loopback: stock reads (each
//! marketplace's stock level, taken exactly as written or not at all), orders read from a
//! pointer, token refreshes and exchanges, stock and price writes.

use super::*;
use crate::marketplaces::authorize::{exchange, App, Pending};
use crate::marketplaces::mercadolibre::MercadoLibre;
use crate::marketplaces::tiktok::TikTok;
use crate::marketplaces::{
    connector, Connector, Credentials, Marketplace, PriceWrite, PushKind, PushRequest, RefreshError,
};
use rust_decimal::Decimal;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::OnceLock;

fn cases() -> Config {
    config_with_default_cases(48)
}

fn marketplace() -> BoxedStrategy<Marketplace> {
    prop::sample::select(Marketplace::ALL.to_vec()).boxed()
}

/// The listings each marketplace reads in one batch (every kind it has).
fn listings(m: Marketplace, base: &str) -> Vec<PushRequest> {
    let ids: Vec<(&str, Value)> = match m {
        Marketplace::MercadoLibre => vec![
            ("MLM1", json!({})),
            ("MLM2", json!({"variation_id": 3})),
            ("MLMU1", json!({})),
        ],
        Marketplace::Shopify => vec![
            ("11", json!({"location_id": 905684977})),
            (
                "12",
                json!({"location_id": 905684977, "variant_id": 2, "product_id": 5}),
            ),
        ],
        Marketplace::TikTok => vec![
            ("1729", json!({"product_id": "1", "warehouse_id": "W1"})),
            ("1730", json!({"product_id": "1", "warehouse_id": "W1"})),
        ],
        Marketplace::Shein => vec![
            ("SKU-1", json!({"warehouse_code": "WH"})),
            ("SKU-2", json!({"spu_name": "M1", "skc_name": "s1"})),
        ],
    };
    ids.into_iter()
        .map(|(id, s)| {
            let mut r = request(base, id, s);
            r.price = Some(PriceWrite {
                amount: Decimal::new(12_345, 2),
                currency: Some("MXN".into()),
                with_stock: true,
            });
            if m == Marketplace::Shein {
                r.connection_settings = json!({"site": "shein-mx", "shop_mode": "self_operated"});
            }
            r
        })
        .collect()
}

fn kind_ok(k: &PushKind) -> Result<(), TestCaseError> {
    if let Some(e) = k.error() {
        prop_assert!(!e.is_empty());
        prop_assert!(e.len() <= 1_000, "{} bytes", e.len());
    }
    if let PushKind::Retry { retry_after, .. } | PushKind::Throttled { retry_after, .. } = k {
        prop_assert!(retry_after.is_none_or(|d| d.as_secs() <= 86_400));
    }
    Ok(())
}

/// A stock-level reply for `m` whose quantity is the raw text `q`, and the listing it is for.
fn stock_reply(m: Marketplace, q: &str) -> (Vec<Canned>, &'static str, Value) {
    match m {
        Marketplace::MercadoLibre => (
            vec![Canned::new(
                200,
                format!("{{\"id\":\"MLM1\",\"available_quantity\":{q},\"price\":10}}"),
            )],
            "MLM1",
            json!({}),
        ),
        Marketplace::Shopify => (
            vec![Canned::new(
                200,
                format!("{{\"data\":{{\"inventoryItem\":{{\"inventoryLevel\":{{\"quantities\":[{{\"name\":\"available\",\"quantity\":{q}}}]}}}}}}}}"),
            )],
            "11",
            json!({"location_id": 905684977}),
        ),
        Marketplace::TikTok => (
            vec![Canned::new(
                200,
                format!("{{\"code\":0,\"data\":{{\"inventory\":[{{\"skus\":[{{\"id\":\"1729\",\"warehouse_inventory\":[{{\"warehouse_id\":\"W1\",\"available_quantity\":{q}}}]}}]}}]}}}}"),
            )],
            "1729",
            json!({"product_id": "1", "warehouse_id": "W1"}),
        ),
        Marketplace::Shein => (
            vec![Canned::new(
                200,
                format!("{{\"code\":\"0\",\"info\":[{{\"goodsInventory\":[{{\"skuList\":[{{\"skuCode\":\"SKU-1\",\"totalUsableInventory\":{q}}}]}}]}}]}}"),
            )],
            "SKU-1",
            json!({}),
        ),
    }
}

/// MercadoLibre's multiget (`GET /items?ids=`) with an item and a variation holding `q`.
fn multiget_reply(q: &str) -> Canned {
    Canned::new(
        200,
        format!(
            "[{{\"code\":200,\"body\":{{\"id\":\"MLM1\",\"available_quantity\":{q},\"price\":10}}}},\
              {{\"code\":200,\"body\":{{\"id\":\"MLM2\",\"variations\":[{{\"id\":4,\"available_quantity\":1}},{{\"id\":3,\"available_quantity\":{q}}}]}}}}]"
        ),
    )
}

/// A MercadoLibre user product's stock reply with quantity `q`.
fn user_product_reply(q: &str) -> Canned {
    Canned::new(
        200,
        format!("{{\"locations\":[{{\"type\":\"selling_address\",\"quantity\":{q}}},{{\"type\":\"meli_facility\",\"quantity\":1}}]}}"),
    )
}

/// A token reply: the fields every marketplace's refresh reads, with values of any kind.
fn token_reply() -> BoxedStrategy<Canned> {
    let expiry = prop_oneof![
        3 => (-1_000_000_000i64..=4_000_000_000).prop_map(Value::from),
        1 => json_leaf(),
        1 => (-(1i64 << 62)..=i64::MAX).prop_map(Value::from),
    ]
    // far from i64::MIN: see bug_tiktok_refresh_expiry_near_i64_min_overflows
    .prop_map(|v| {
        if v.as_i64().is_some_and(|n| n < -(1i64 << 62)) {
            json!(0)
        } else {
            v
        }
    });
    let fields = (
        prop_oneof![".{0,8}".prop_map(Value::from), json_leaf()],
        json_leaf(),
        expiry.clone(),
        expiry,
        odd_number(),
    )
        .prop_map(|(access, refresh, expires_in, at, code)| {
            let data = json!({"access_token": access, "refresh_token": refresh, "expires_in": expires_in,
                              "access_token_expire_in": at});
            let mut top = data.clone();
            top["code"] = if code.is_number() { json!(0) } else { code };
            top["data"] = data;
            top
        });
    prop_oneof![
        3 => (prop::sample::select(vec![200u16, 200, 400, 401, 403, 429, 500]), fields).prop_map(|(s, v)| Canned::new(s, v.to_string())),
        1 => canned(),
    ].boxed()
}

proptest! {
    #![proptest_config(cases())]

    /// Each marketplace's stock level: the quantity exactly as written when it is a whole JSON
    /// number that fits i64 (the bounds are `integ.max_stock`'s, checked where it is applied),
    /// "not said" when it is anything else, an error when the reply is not JSON; never wrapped,
    /// clamped or rounded.
    #[test]
    fn stock_levels_are_exact_or_absent(m in marketplace(), q in raw_number()) {
        let server = STOCK.get_or_init(Loopback::start);
        let (replies, id, settings) = stock_reply(m, &q);
        server.answer(replies.clone());
        let req = request(&server.base, id, settings);
        let got = connector(m).expect("a connector").read_stock(&agent(), &req);
        let valid = serde_json::from_str::<Value>(&replies[0].body).is_ok();
        let want = json_integer(&q).filter(|n| (i64::MIN as i128..=i64::MAX as i128).contains(n)).map(|n| n as i64);
        match got {
            Ok(stock) => {
                prop_assert!(valid, "{q}: read {stock:?} from a reply that is not JSON");
                prop_assert_eq!(stock, want, "{} {}", m, q);
            }
            Err(e) => prop_assert!(!valid, "{q}: {e}"),
        }
        if m == Marketplace::MercadoLibre {
            // a user product's stock is read from its selling address alone
            server.answer(vec![user_product_reply(&q)]);
            let req = request(&server.base, "MLMU1", json!({}));
            if let Ok(stock) = MercadoLibre.read_stock(&agent(), &req) {
                prop_assert_eq!(stock, want);
            }
            // items and variations, 20 a call: each its own quantity
            server.answer(vec![multiget_reply(&q)]);
            let reqs = [request(&server.base, "MLM1", json!({})), request(&server.base, "MLM2", json!({"variation_id": 3}))];
            for r in MercadoLibre.read_listings(&agent(), &reqs) {
                match r {
                    Ok(read) => prop_assert_eq!(read.stock, want),
                    Err(e) => prop_assert!(!valid, "{q}: {e}"),
                }
            }
        }
    }

    /// Batched reads (stock and price) with any replies: one answer per listing, never a panic.
    #[test]
    fn batched_reads_answer_every_listing(m in marketplace(), replies in prop::collection::vec(canned(), 1..5)) {
        let server = READS.get_or_init(Loopback::start);
        server.answer(replies);
        let reqs = listings(m, &server.base);
        let got = connector(m).expect("a connector").read_listings(&agent(), &reqs);
        prop_assert_eq!(got.len(), reqs.len());
        for r in got {
            if let Err(e) = r {
                prop_assert!(!e.is_empty());
            }
        }
    }

    /// Orders read from a pointer (MercadoLibre, TikTok Shop): any reply gives a well-formed
    /// order (positive quantities, ids) or an error.
    #[test]
    fn fetched_orders_are_well_formed(
        tiktok in any::<bool>(),
        reply in prop_oneof![
            canned(),
            (json_object(), prop::collection::vec(json_object(), 0..3), odd_number()).prop_map(|(mut o, mut lines, q)| {
                for l in &mut lines {
                    l["quantity"] = q.clone();
                    l["item"] = json!({"id": "MLM1"});
                    l["id"] = json!("L1");
                }
                o["id"] = json!("5001");
                o["order_items"] = Value::Array(lines.clone());
                o["line_items"] = Value::Array(lines);
                Canned::new(200, json!({"code": 0, "data": {"orders": [o.clone()]}, "id": "5001", "order_items": o["order_items"]}).to_string())
            }),
        ],
    ) {
        let server = ORDERS.get_or_init(Loopback::start);
        server.answer(vec![reply]);
        let (c, req): (&dyn Connector, _) = if tiktok {
            (&TikTok, request(&server.base, "", Value::Null))
        } else {
            (&MercadoLibre, request(&server.base, "", Value::Null))
        };
        match c.read_order(&agent(), &req, "5001") {
            Ok(o) => {
                prop_assert_eq!(o.id.as_str(), "5001");
                prop_assert!(o.lines.iter().all(|l| l.quantity >= 1 && !l.line_id.is_empty()));
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
        if !tiktok {
            let _ = MercadoLibre.missed_notifications(&agent(), &req);
        }
    }

    /// Token refreshes: any reply gives a grant with a token, or a transient or final refusal;
    /// TikTok Shop's absolute expiry becomes seconds from now, never negative.
    #[test]
    fn token_refreshes_are_read_or_refused(m in marketplace(), reply in token_reply()) {
        let server = TOKENS.get_or_init(Loopback::start);
        server.answer(vec![reply]);
        let req = request(&server.base, "", Value::Null);
        match connector(m).expect("a connector").refresh(&agent(), &server.base, &req.credentials) {
            Ok(g) => {
                prop_assert!(!g.access_token.is_empty());
                if m == Marketplace::TikTok {
                    prop_assert!(g.expires_in.is_none_or(|e| e >= 0), "{:?}", g.expires_in);
                }
            }
            Err(RefreshError::InvalidGrant(e) | RefreshError::Transient(e)) => prop_assert!(!e.is_empty()),
        }
    }

    /// Connecting a seller: the token endpoint's reply (then TikTok Shop's authorized shops)
    /// becomes credentials that `integ.connect` checks, or an error; never a panic.
    #[test]
    fn exchanges_become_credentials_or_errors(m in marketplace(), first in token_reply(), shops in canned(), secret in prop::option::of(".{0,40}")) {
        let server = EXCHANGE.get_or_init(Loopback::start);
        let mut first = first;
        if m == Marketplace::Shein {
            // get-by-token: the supplier's secret key, encrypted with the app's
            let key = "698E4F20DFBA4B85B2291C2BCB7381C5";
            let enc = secret.as_ref().map(|s| marketplace_signing::shein_encrypt(key, s).expect("a key"));
            first = Canned::new(first.status, json!({"code": "0", "info": {"secretKey": enc, "openKeyId": "K", "supplierId": 7}}).to_string());
        }
        server.answer(vec![first, shops]);
        let mut creds = Credentials::default();
        for (k, v) in [("client_id", "c"), ("app_key", "k"), ("appid", "app1")] {
            creds.identifiers.insert(k.into(), json!(v));
        }
        for (k, v) in [("client_secret", "s"), ("app_secret", "s"), ("app_secret_key", "698E4F20DFBA4B85B2291C2BCB7381C5")] {
            creds.secrets.insert(k.into(), json!(v));
        }
        let app = App { creds, settings: json!({}) };
        let options = json!({"shop": "acme.myshopify.com"});
        let p = Pending { state: "st", redirect_uri: "https://x/cb", options: &options, code_verifier: Some("v") };
        let callback: BTreeMap<String, String> =
            [("code", "c1"), ("tempToken", "t1")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match exchange(m, &agent(), &app, &p, &callback, &server.base) {
            Ok(v) => {
                let _ = connector(m).expect("a connector").split_credentials(&v);
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    /// Stock writes with any replies: one result per listing, in order; never a panic.
    #[test]
    fn stock_writes_answer_every_listing(
        m in marketplace(),
        replies in prop::collection::vec(prop_oneof![
            canned(),
            (
                prop::collection::vec((json_value(), prop_oneof![word(), Just("CHANGE_FROM_QUANTITY_STALE".to_string())], word()), 0..3),
                prop::collection::vec(prop_oneof![word(), Just("SKU-1".to_string())], 0..3),
            ).prop_map(|(errors, failed)| {
                let errors: Vec<Value> = errors.into_iter().map(|(f, c, m)| json!({"field": f, "code": c, "message": m})).collect();
                let failed: Vec<Value> = failed.into_iter().map(|s| json!({"skuCode": s, "reason": "r"})).collect();
                Canned::new(200, json!({"code": "0", "data": {"inventorySetQuantities": {"userErrors": errors}},
                                        "info": {"failedList": failed}}).to_string())
            }),
        ], 1..4),
    ) {
        let server = WRITES.get_or_init(Loopback::start);
        server.answer(replies);
        let reqs = listings(m, &server.base);
        let c = connector(m).expect("a connector");
        let got = c.push_batch(&agent(), &reqs);
        prop_assert_eq!(got.len(), reqs.len());
        for r in &got {
            kind_ok(&r.kind)?;
        }
        let one = c.push_stock(&agent(), &reqs[0]);
        kind_ok(&one.kind)?;
    }

    /// Price writes with any replies (Shopify's lookup and bulk update, SHEIN's per-SKU
    /// answers, TikTok Shop's envelope, MercadoLibre's item): one result per listing.
    #[test]
    fn price_writes_answer_every_listing(m in marketplace(), replies in prop::collection::vec(canned(), 1..4), known in any::<bool>()) {
        let server = PRICES.get_or_init(Loopback::start);
        server.answer(replies);
        let mut reqs = listings(m, &server.base);
        if !known && m == Marketplace::Shopify {
            // no kept variant: the first call looks it up
            reqs[1].listing_settings = json!({"location_id": 905684977});
        }
        let got = connector(m).expect("a connector").push_prices(&agent(), &reqs);
        prop_assert_eq!(got.len(), reqs.len());
        for r in &got {
            kind_ok(&r.kind)?;
            if let Some(l) = &r.learned {
                prop_assert!(l.keys().all(|k| k == "variant_id" || k == "product_id"), "{l:?}");
            }
        }
    }
}

// one server per property, started by its first case (the cases of a property run one by one)
static STOCK: OnceLock<Loopback> = OnceLock::new();
static READS: OnceLock<Loopback> = OnceLock::new();
static ORDERS: OnceLock<Loopback> = OnceLock::new();
static TOKENS: OnceLock<Loopback> = OnceLock::new();
static EXCHANGE: OnceLock<Loopback> = OnceLock::new();
static WRITES: OnceLock<Loopback> = OnceLock::new();
static PRICES: OnceLock<Loopback> = OnceLock::new();

/// Regression, now fixed (found by `token_refreshes_are_read_or_refused` with expiries of any i64): TikTok
/// Shop's token refresh turns `data.access_token_expire_in` into seconds from now with
/// `(at - unix_now()).max(0)`, which overflows for `at` near i64::MIN: "attempt to subtract with
/// overflow" (a panic in the worker) in debug builds, and in release a wrapped value near
/// i64::MAX seconds, which `credentials::store_refreshed` cannot turn into an interval (the
/// refreshed tokens are then not stored). Fix: `at.saturating_sub(now).max(0)` and an upper bound.
#[test]
fn regression_tiktok_refresh_expiry_near_i64_min_overflows() {
    let server = Loopback::start();
    let body =
        json!({"code": 0, "data": {"access_token": "A", "refresh_token": "R", "access_token_expire_in": i64::MIN}});
    server.answer(vec![Canned::new(200, body.to_string())]);
    let req = request(&server.base, "", Value::Null);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        TikTok.refresh(&agent(), &server.base, &req.credentials)
    }));
    let grant = got.expect("no panic").expect("a grant");
    assert_eq!(grant.expires_in, Some(0), "an expiry in the past is 0 seconds from now");
}

#[test]
fn the_stock_reply_templates_are_json() {
    for m in Marketplace::ALL {
        let (replies, _, _) = stock_reply(m, "7");
        assert!(serde_json::from_str::<Value>(&replies[0].body).is_ok(), "{m}");
    }
    assert!(serde_json::from_str::<Value>(&user_product_reply("7").body).is_ok());
    assert!(serde_json::from_str::<Value>(&multiget_reply("7").body).is_ok());
}

/// Found by the chaos soak: a stale compare's re-read answered THROTTLED was a retry that burned
/// an attempt and counted toward the circuit; it is a throttle (the connection slows down).
#[test]
fn a_throttled_reread_after_a_stale_compare_is_a_throttle() {
    let server = Loopback::start();
    let stale = json!({"data": {"inventorySetQuantities": {"inventoryAdjustmentGroup": null, "userErrors": [
        {"code": "CHANGE_FROM_QUANTITY_STALE", "field": ["input", "quantities", "0"], "message": "stale"}]}}});
    let throttled = json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
        "extensions": {"cost": {"requestedQueryCost": 2, "actualQueryCost": null,
        "throttleStatus": {"maximumAvailable": 40.0, "currentlyAvailable": 0.0, "restoreRate": 5.0}}}});
    server.answer(vec![
        Canned::new(200, stale.to_string()),
        Canned::new(200, throttled.to_string()),
    ]);
    let mut req = request(&server.base, "808950810", json!({"location_id": 905684977}));
    req.last_known = Some(10);
    req.connection_settings = json!({"location_id": 905684977, "api_version": "2026-10"});
    let got = connector(Marketplace::Shopify)
        .expect("shopify")
        .push_stock(&agent(), &req);
    assert_eq!(server.served(), 2, "a write, then a read");
    assert!(matches!(got.kind, PushKind::Throttled { .. }), "{:?}", got.kind);
}
