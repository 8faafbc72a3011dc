//! integ.receive_webhook: verified, de-duplicated, recorded deliveries with the HTTP status the
//! application's endpoint should answer; integ.verify_webhook, the pure check.

use e2e::*;
use marketplace_signing as signing;
use serde_json::{json, Value};
use std::time::Instant;

const SHOP: &str = "hooks-mx.myshopify.com";

fn receive(env: &Env, market: &str, headers: &Value, body: &[u8]) -> Value {
    env.db()
        .query_one("SELECT integ.receive_webhook($1, $2, $3)", &[&market, headers, &body])
        .expect("receive_webhook")
        .get(0)
}

fn shopify_headers(secret: &str, body: &[u8], webhook_id: &str, shop: &str) -> Value {
    json!({"X-Shopify-Hmac-Sha256": signing::shopify_webhook(secret, body), "X-Shopify-Topic": "orders/create",
           "x-shopify-shop-domain": shop, "X-SHOPIFY-WEBHOOK-ID": webhook_id, "X-Shopify-API-Version": "2026-10"})
}

#[test]
fn shopify_deliveries_are_verified_deduplicated_and_recorded() {
    let mut env = Env::new("hooks-shopify");
    env.add_shopify_tenant("s1", SHOP, json!({}));
    let body = br#"{"id":820982911946154508,"line_items":[{"sku":"p0","quantity":1}]}"#;
    let mut h = shopify_headers(SHOPIFY_CLIENT_SECRET, body, "wh-1", SHOP);
    // a topic the workers do not apply yet, so the row stays as received
    h["X-Shopify-Topic"] = json!("inventory_levels/update");
    let a = receive(&env, "shopify", &h, body);
    assert_eq!(a["status"], "accepted", "{a}");
    assert_eq!(a["http_status"], 200);
    assert_eq!(a["tenant_id"], "s1");
    assert_eq!(a["event_id"], "wh-1");
    // the same delivery again
    let again = receive(&env, "shopify", &h, body);
    assert_eq!(
        (again["status"].clone(), again["http_status"].clone()),
        (json!("duplicate"), json!(200))
    );
    // a tampered body
    let bad = receive(&env, "shopify", &h, br#"{"id":1}"#);
    assert_eq!(
        (bad["status"].clone(), bad["http_status"].clone()),
        (json!("rejected"), json!(401))
    );
    // an unknown shop, a missing header, a body over the limit
    let other = shopify_headers(SHOPIFY_CLIENT_SECRET, body, "wh-2", "nobody.myshopify.com");
    assert_eq!(receive(&env, "shopify", &other, body)["http_status"], 404);
    assert_eq!(
        receive(&env, "shopify", &json!({"X-Shopify-Shop-Domain": SHOP}), body)["http_status"],
        400
    );
    let big = vec![b'x'; 2 * 1024 * 1024];
    let r = receive(
        &env,
        "shopify",
        &shopify_headers(SHOPIFY_CLIENT_SECRET, &big, "wh-3", SHOP),
        &big,
    );
    assert_eq!(r["http_status"], 413);
    // what was recorded: one accepted row with its body; rejected ones without
    let rows = env
        .db()
        .query(
            "SELECT status, http_status, body IS NOT NULL, state FROM integ.webhooks ORDER BY id",
            &[],
        )
        .unwrap();
    let got: Vec<(String, i32, bool, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        got,
        vec![
            ("accepted".into(), 200, true, "pending".into()),
            ("duplicate".into(), 200, false, "ignored".into()),
            ("rejected".into(), 401, false, "ignored".into()),
            ("rejected".into(), 404, false, "ignored".into()),
            ("rejected".into(), 400, false, "ignored".into()),
            ("rejected".into(), 413, false, "ignored".into()),
        ]
    );
    // receiving answers in milliseconds
    let mut ms = Vec::new();
    for i in 0..200 {
        let h = shopify_headers(SHOPIFY_CLIENT_SECRET, body, &format!("t-{i}"), SHOP);
        let start = Instant::now();
        assert_eq!(receive(&env, "shopify", &h, body)["status"], "accepted");
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "WEBHOOK receive_webhook round trip over 200 deliveries: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&ms, 50.0),
        percentile(&ms, 99.0)
    );
    env.assert_no_secrets();
}

#[test]
fn a_rotated_shopify_secret_verifies_with_either_during_the_window() {
    let mut env = Env::new("hooks-rotation");
    let g = env.add_shopify_tenant("s1", SHOP, json!({}));
    let creds = json!({"shop": SHOP, "access_token": g["access_token"], "webhook_secret": "new-webhook-secret",
                       "previous_webhook_secret": "old-webhook-secret"});
    env.db()
        .query_one(
            "SELECT integ.connect('s1', 'shopify', $1, $2)",
            &[&creds, &json!({"base_url": env.sim.base_url("shopify")})],
        )
        .unwrap();
    let body = b"{}";
    for (secret, id, want) in [
        ("new-webhook-secret", "r1", 200),
        ("old-webhook-secret", "r2", 200),
        ("neither", "r3", 401),
    ] {
        let a = receive(&env, "shopify", &shopify_headers(secret, body, id, SHOP), body);
        assert_eq!(a["http_status"], want, "{secret}: {a}");
    }
    // integ.rotate_webhook_secret: the replaced secret verifies for the overlap, then not
    env.db()
        .execute(
            "SELECT integ.rotate_webhook_secret('s1', 'shopify', 'newest-webhook-secret', '2 seconds')",
            &[],
        )
        .unwrap();
    for (secret, id, want) in [
        ("newest-webhook-secret", "r4", 200),
        ("new-webhook-secret", "r5", 200),
        ("old-webhook-secret", "r6", 401),
    ] {
        let a = receive(&env, "shopify", &shopify_headers(secret, body, id, SHOP), body);
        assert_eq!(a["http_status"], want, "during the overlap, {secret}: {a}");
    }
    std::thread::sleep(std::time::Duration::from_millis(3_100));
    for (secret, id, want) in [("newest-webhook-secret", "r7", 200), ("new-webhook-secret", "r8", 401)] {
        let a = receive(&env, "shopify", &shopify_headers(secret, body, id, SHOP), body);
        assert_eq!(a["http_status"], want, "after the overlap, {secret}: {a}");
    }
    let e = env
        .db()
        .execute(
            "SELECT integ.rotate_webhook_secret('s1', 'tiktok', 'whatever-secret')",
            &[],
        )
        .unwrap_err();
    assert!(format!("{e:?}").contains("app's own secret"), "{e:?}");
    env.secrets
        .extend(["newest-webhook-secret".to_string(), "new-webhook-secret".to_string()]);
    env.assert_no_secrets();
}

#[test]
fn tiktok_and_mercadolibre_deliveries() {
    let mut env = Env::new("hooks-tiktok");
    env.db()
        .batch_execute("UPDATE integ.credential_store SET identifiers = identifiers || '{\"client_id\": \"7001\"}'")
        .unwrap();
    env.add_tiktok_tenant("tt", "CIPHER-H", json!({}));
    // the connection learns its shop id (as the authorization flow will record it)
    env.db()
        .batch_execute("UPDATE integ.credential_store SET identifiers = identifiers || '{\"shop_id\": \"7494726673780148744\"}' WHERE marketplace = 'tiktok'")
        .unwrap();
    let body = br#"{"type":1,"shop_id":"7494726673780148744","timestamp":1664095733,"tts_notification_id":"n-1","data":{"order_id":"576684019603311365","order_status":"AWAITING_SHIPMENT","update_time":1664095610}}"#;
    let auth = signing::tiktok_webhook(TIKTOK_APP_KEY, TIKTOK_APP_SECRET, body);
    let a = receive(&env, "tiktok", &json!({"Authorization": auth}), body);
    assert_eq!(
        (a["status"].clone(), a["tenant_id"].clone(), a["event_id"].clone()),
        (json!("accepted"), json!("tt"), json!("n-1"))
    );
    let forged = receive(&env, "tiktok", &json!({"Authorization": "00".repeat(32)}), body);
    assert_eq!(forged["http_status"], 401);
    // authorization expiring (type 7) and the seller deauthorizing the app (type 6): alerts, and
    // the connection waits for re-authorization
    for (n, t) in [(7, "n-7"), (6, "n-6")] {
        let b = format!(
            r#"{{"type":{n},"shop_id":"7494726673780148744","timestamp":1664095733,"tts_notification_id":"{t}","data":{{"expire_time":1700000000}}}}"#
        );
        let auth = signing::tiktok_webhook(TIKTOK_APP_KEY, TIKTOK_APP_SECRET, b.as_bytes());
        let a = receive(&env, "tiktok", &json!({"Authorization": auth}), b.as_bytes());
        assert_eq!(a["status"], "accepted", "{a}");
    }
    env.wait_for(10, "two alerts", || {
        env.scalar_i64("SELECT count(*) FROM integ.alerts") == 2
    });
    assert_eq!(
        env.scalar_text("SELECT string_agg(kind, ',' ORDER BY kind) FROM integ.alerts"),
        "authorization_expiring,needs_reauthorization"
    );
    assert_eq!(
        env.scalar_text("SELECT status FROM integ.connections WHERE tenant_id = 'tt'"),
        "needs_reauthorization"
    );

    // MercadoLibre: unsigned; the application and the seller must match a connection
    let note =
        json!({"_id": "f9f08571-1f65-4c46-9e0a-c0f43faac1c5", "resource": "/orders/2195160686", "user_id": SELLER,
                      "topic": "orders_v2", "application_id": 7001, "attempts": 1})
        .to_string();
    let a = receive(&env, "mercadolibre", &json!({}), note.as_bytes());
    assert_eq!(
        (a["status"].clone(), a["tenant_id"].clone()),
        (json!("accepted"), json!(TENANT)),
        "{a}"
    );
    let other_app = note.replace("7001", "9999");
    assert_eq!(
        receive(&env, "mercadolibre", &json!({}), other_app.as_bytes())["http_status"],
        404
    );
    let verified: bool = env
        .db()
        .query_one(
            "SELECT verified FROM integ.webhooks WHERE marketplace = 'mercadolibre' AND status = 'accepted'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!verified, "an unsigned notification is accepted but not verified");

    // the pure check
    let ok: bool = env
        .db()
        .query_one(
            "SELECT integ.verify_webhook('tiktok', $1, $2, $3)",
            &[
                &json!({"authorization": signing::tiktok_webhook("k", "s", b"x")}),
                &b"x".as_slice(),
                &json!({"app_key": "k", "app_secret": "s"}),
            ],
        )
        .unwrap()
        .get(0);
    assert!(ok);
}

/// A Shopify order takes EGDC stock once per line (even delivered twice), the new stock reaches
/// the other channels, and a cancellation gives it back once.
#[test]
fn an_order_takes_stock_exactly_once_and_a_cancellation_gives_it_back() {
    let mut env = Env::new("hooks-orders");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    env.add_shopify_tenant(TENANT, SHOP, json!({}));
    env.shopify_listing(TENANT, SHOP, &sku, 4242);
    env.set_stock(&sku, 10);
    env.wait_for(10, "10 everywhere", || {
        env.sim.item_quantity(&item) == Some(10) && env.shopify_available(4242) == Some(10)
    });
    let order = json!({"id": 450789469, "line_items": [{"id": 466157049, "sku": sku, "quantity": 3},
                                                       {"id": 466157050, "sku": "", "quantity": 1}]})
    .to_string();
    let send = |topic: &str, delivery: &str| {
        let mut h = shopify_headers(SHOPIFY_CLIENT_SECRET, order.as_bytes(), delivery, SHOP);
        h["X-Shopify-Topic"] = json!(topic);
        let a = receive(&env, "shopify", &h, order.as_bytes());
        assert_eq!(a["status"], "accepted", "{a}");
    };
    send("orders/create", "d-1");
    env.wait_for(10, "the order to take 3", || env.egdc_stock(TENANT, &sku) == 7);
    env.wait_for(10, "7 on MercadoLibre and Shopify", || {
        env.sim.item_quantity(&item) == Some(7) && env.shopify_available(4242) == Some(7)
    });
    // the same order again, as another delivery: nothing more is taken
    send("orders/create", "d-2");
    env.wait_for(10, "the second delivery to be applied", || {
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE state = 'done'") == 2
    });
    assert_eq!(env.egdc_stock(TENANT, &sku), 7);
    // cancelled (twice): given back once
    send("orders/cancelled", "d-3");
    send("orders/cancelled", "d-4");
    env.wait_for(10, "the cancellations to be applied", || {
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE state = 'done'") == 4
    });
    assert_eq!(env.egdc_stock(TENANT, &sku), 10);
    env.wait_for(10, "10 again on MercadoLibre", || {
        env.sim.item_quantity(&item) == Some(10)
    });
    let note: String = env
        .db()
        .query_one("SELECT error FROM integ.webhooks WHERE event_id = 'd-1'", &[])
        .unwrap()
        .get(0);
    assert_eq!(note, "line 466157050: no listing matches (no sku)");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.order_lines WHERE cancelled_at IS NOT NULL"),
        1
    );
}

/// A signed order is still checked: a line whose quantity is not a positive whole number of at
/// most integ.max_order_quantity, or that would take EGDC's stock out of its column's range,
/// makes the whole delivery dead at once (not retried), naming the line, and nothing of the
/// order is applied.
#[test]
fn implausible_order_quantities_are_dead_and_apply_nothing() {
    let mut env = Env::new("hooks-quantities");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    env.add_shopify_tenant(TENANT, SHOP, json!({}));
    env.set_stock(&sku, 10);
    env.wait_for(10, "10 on MercadoLibre", || env.sim.item_quantity(&item) == Some(10));
    let mut orders = 0;
    let mut send = |second_line: Value| -> String {
        orders += 1;
        let body =
            json!({"id": 7000 + orders, "line_items": [{"id": 1, "sku": sku, "quantity": 1}, second_line]}).to_string();
        let delivery = format!("q-{orders}");
        let a = receive(
            &env,
            "shopify",
            &shopify_headers(SHOPIFY_CLIENT_SECRET, body.as_bytes(), &delivery, SHOP),
            body.as_bytes(),
        );
        assert_eq!(a["status"], "accepted", "{a}");
        delivery
    };
    let bad = [
        (
            json!({"id": 2, "sku": sku, "quantity": 1_000_000_000_000i64}),
            "quantity 1000000000000 is more than integ.max_order_quantity (10000)",
        ),
        (
            json!({"id": 2, "sku": sku, "quantity": 10_001}),
            "quantity 10001 is more than integ.max_order_quantity",
        ),
        (
            json!({"id": 2, "sku": sku, "quantity": 0}),
            "quantity 0 is not positive",
        ),
        (
            json!({"id": 2, "sku": sku, "quantity": -3}),
            "quantity -3 is not positive",
        ),
        (
            json!({"id": 2, "sku": sku, "quantity": 1.5}),
            "quantity 1.5 is not a whole number",
        ),
        (
            json!({"id": 2, "sku": sku, "quantity": 2.0}),
            "quantity 2.0 is not a whole number",
        ),
        (
            json!({"id": 2, "sku": sku, "quantity": "2"}),
            "quantity \"2\" is not a number",
        ),
        (json!({"id": 2, "sku": sku}), "quantity is missing"),
    ];
    let sent: Vec<(String, &str)> = bad.iter().map(|(line, why)| (send(line.clone()), *why)).collect();
    env.wait_for(15, "every implausible delivery dead", || {
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE state = 'dead'") == sent.len() as i64
    });
    for (delivery, why) in &sent {
        let (error, attempts): (String, i32) = {
            let r = env
                .db()
                .query_one(
                    "SELECT error, attempts FROM integ.webhooks WHERE event_id = $1",
                    &[delivery],
                )
                .expect("delivery");
            (r.get(0), r.get(1))
        };
        assert!(
            error.starts_with("line 2: ") && error.contains(why),
            "{delivery}: {error}"
        );
        assert_eq!(attempts, 1, "{delivery} was retried");
    }
    assert_eq!(env.egdc_stock(TENANT, &sku), 10, "a line of a dead order was applied");
    assert_eq!(env.scalar_i64("SELECT count(*) FROM integ.order_lines"), 0);

    // stock arithmetic never wraps: an order taking EGDC's stock below the column's range
    env.set_stock(&sku, i32::MIN + 5);
    let delivery = send(json!({"id": 2, "sku": sku, "quantity": 9}));
    env.wait_for(15, "the out-of-range order dead", || {
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.webhooks WHERE event_id = '{delivery}' AND state = 'dead'"
        )) == 1
    });
    let error = env.scalar_text(&format!(
        "SELECT error FROM integ.webhooks WHERE event_id = '{delivery}'"
    ));
    assert!(
        error.contains("would leave the range of public.inventory.qty"),
        "{error}"
    );
    assert_eq!(env.egdc_stock(TENANT, &sku), i32::MIN as i64 + 5);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.order_lines"),
        0,
        "a ledger row of a dead order"
    );

    // the limit is a reload setting: 10,001 units apply once it allows them
    env.set_stock(&sku, 20_000);
    env.db()
        .batch_execute("ALTER SYSTEM SET integ.max_order_quantity = 20000")
        .expect("alter system");
    env.db().batch_execute("SELECT pg_reload_conf()").expect("reload");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let delivery = send(json!({"id": 2, "sku": sku, "quantity": 10_001}));
    env.wait_for(15, "the larger order applied", || {
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.webhooks WHERE event_id = '{delivery}' AND state = 'done'"
        )) == 1
    });
    assert_eq!(env.egdc_stock(TENANT, &sku), 20_000 - 10_002);
}

/// A remote stock outside 0..=integ.max_stock (a Shopify stock edit of 10^12, or negative) is a
/// conflict to review whatever the strategy, never adopted: EGDC keeps its stock, and the
/// conflict cannot be resolved by taking the marketplace's number.
#[test]
fn an_implausible_remote_stock_is_a_conflict_never_adopted() {
    let mut env = Env::new("hooks-max-stock");
    env.add_shopify_tenant(TENANT, SHOP, json!({"conflict_strategy": "marketplace_wins"}));
    env.shopify_listing(TENANT, SHOP, "P1", 5151);
    env.set_stock("P1", 10);
    env.wait_for(10, "10 on Shopify", || env.shopify_available(5151) == Some(10));
    let edit = |available: Value, delivery: &str| {
        let body = json!({"inventory_item_id": 5151, "location_id": 1, "available": available,
                          "updated_at": "2099-01-01T00:00:00Z"})
        .to_string();
        let mut h = shopify_headers(SHOPIFY_CLIENT_SECRET, body.as_bytes(), delivery, SHOP);
        h["X-Shopify-Topic"] = json!("inventory_levels/update");
        let a = receive(&env, "shopify", &h, body.as_bytes());
        assert_eq!(a["status"], "accepted", "{a}");
    };
    edit(json!(1_000_000_000_000i64), "big-1");
    env.wait_for(10, "the edit applied as a conflict", || {
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE event_id = 'big-1' AND state = 'done'") == 1
    });
    assert_eq!(env.egdc_stock(TENANT, "P1"), 10, "an absurd stock was adopted");
    let (id, remote, reason): (i64, i64, String) = {
        let r = env
            .db()
            .query_one(
                "SELECT id, remote_stock, reason FROM integ.conflicts WHERE status = 'open'",
                &[],
            )
            .expect("an open conflict");
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(remote, 1_000_000_000_000);
    assert!(reason.contains("outside 0..=10000000 (integ.max_stock)"), "{reason}");
    let refused = env
        .db()
        .query_one("SELECT integ.resolve_conflict($1, 'marketplace_wins')", &[&id]);
    assert!(format!("{:?}", refused.err()).contains("cannot be adopted"));
    env.db()
        .query_one("SELECT integ.resolve_conflict($1, 'egdc_wins')", &[&id])
        .expect("egdc_wins");
    // a negative stock the same way; a plausible edit is still taken (marketplace_wins)
    edit(json!(-5), "neg-1");
    env.wait_for(10, "the negative edit recorded", || {
        env.scalar_i64("SELECT count(*) FROM integ.conflicts WHERE status = 'open' AND remote_stock = -5") == 1
    });
    assert_eq!(env.egdc_stock(TENANT, "P1"), 10);
    edit(json!(7), "ok-1");
    env.wait_for(10, "a plausible edit taken", || env.egdc_stock(TENANT, "P1") == 7);
}
