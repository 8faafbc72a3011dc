//! End to end against the sandbox's Shopify: GraphQL inventorySetQuantities with idempotency
//! keys and compare-and-set, conflicts resolved by strategy, 250 quantities per call, THROTTLED,
//! expiring offline tokens.

use e2e::*;
use serde_json::json;

const SHOP: &str = "acme-mx.myshopify.com";

/// The end-to-end case: one tracked EGDC product on all four marketplaces.
#[test]
fn a_tracked_product_reaches_all_four_marketplaces() {
    let mut env = Env::new("four");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    let key_id = env.add_shein_tenant(TENANT, 900, json!({}));
    env.shein_listing(TENANT, &key_id, &sku, "SH-4");
    env.add_tiktok_tenant(TENANT, "CIPHER-4", json!({}));
    env.tiktok_listing(TENANT, "CIPHER-4", &sku, "P-4", "SKU-4");
    env.add_shopify_tenant(TENANT, SHOP, json!({}));
    env.shopify_listing(TENANT, SHOP, &sku, 808_950_810);
    for qty in [12, 0, 7] {
        env.set_stock(&sku, qty);
        let q = qty as i64;
        env.wait_for(10, "MercadoLibre", || env.sim.item_quantity(&item) == Some(q));
        env.wait_for(10, "SHEIN", || env.shein_quantity("SH-4") == Some(q));
        env.wait_for(10, "TikTok Shop", || env.tiktok_quantity("SKU-4") == Some(q));
        env.wait_for(10, "Shopify", || env.shopify_available(808_950_810) == Some(q));
    }
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'"),
        0
    );
    assert_eq!(
        env.scalar_i64(
            "SELECT count(DISTINCT marketplace) FROM integ.sync_log WHERE outcome = 'success' AND stock = 7"
        ),
        4
    );
    // every connector reads back what its marketplace holds, live; a remote edit shows
    env.sim
        .post("/shopify/levels/808950810/1/bump", json!({"available": 3}));
    let rows = env
        .db()
        .query(
            "SELECT marketplace, remote_stock, egdc_stock, error FROM integ.remote_stock($1, $2) ORDER BY marketplace",
            &[&TENANT, &sku],
        )
        .unwrap();
    let seen: Vec<(String, Option<i64>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for r in &rows {
        assert_eq!(r.get::<_, Option<String>>(3), None);
        assert_eq!(r.get::<_, Option<i32>>(2), Some(7));
    }
    assert_eq!(
        seen,
        vec![
            ("mercadolibre".to_string(), Some(7)),
            ("shein".to_string(), Some(7)),
            ("shopify".to_string(), Some(3)),
            ("tiktok".to_string(), Some(7)),
        ]
    );
    env.assert_no_secrets();
}

/// Another writer changed Shopify's quantity: the compare-and-set fails, the level is read
/// again and EGDC's value written from it (egdc_wins); with `manual` it is held for review.
#[test]
fn a_stale_quantity_is_resolved_by_the_conflict_strategy() {
    let mut env = Env::new("shopify-cas");
    env.add_shopify_tenant("s1", SHOP, json!({}));
    env.shopify_listing("s1", SHOP, "p0", 1001);
    env.wait_idle(20, "initial sync");
    env.set_stock_of("s1", "p0", 10);
    env.wait_for(10, "10 on Shopify", || env.shopify_available(1001) == Some(10));
    env.wait_idle(10, "recorded");
    // a sale in the Shopify admin: 10 -> 9, unknown to us
    env.sim.post("/shopify/levels/1001/1/bump", json!({"available": 9}));
    env.set_stock_of("s1", "p0", 15);
    env.wait_for(10, "EGDC's 15 on Shopify", || env.shopify_available(1001) == Some(15));
    assert!(
        env.sim.counter("shopify stale") >= 1,
        "the compare-and-set never failed"
    );

    // the same with a manual strategy: nothing is overwritten, the listing waits for review
    env.db()
        .batch_execute("UPDATE integ.connections SET settings = settings || '{\"conflict_strategy\": \"manual\"}' WHERE tenant_id = 's1'")
        .unwrap();
    env.wait_idle(10, "recorded");
    env.sim.post("/shopify/levels/1001/1/bump", json!({"available": 14}));
    env.set_stock_of("s1", "p0", 20);
    env.wait_for(10, "the conflict to be held", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'") == 1
    });
    assert_eq!(
        env.shopify_available(1001),
        Some(14),
        "a manual conflict must not overwrite"
    );
    let why: String = env
        .db()
        .query_one("SELECT last_error FROM integ.sync_jobs WHERE state = 'dead'", &[])
        .unwrap()
        .get(0);
    assert!(
        why.starts_with("conflict: Shopify holds 14 where we expected 15; EGDC has 20"),
        "{why}"
    );
}

/// A reply lost after Shopify applied the write: the retry carries the same idempotency key and
/// is not applied twice.
#[test]
fn a_retried_call_is_not_applied_twice() {
    let mut env = Env::new("shopify-idem");
    env.add_shopify_tenant("s1", SHOP, json!({}));
    env.shopify_listing("s1", SHOP, "p0", 2002);
    env.wait_idle(20, "initial sync");
    env.sim
        .post("/faults", json!({"marketplace": "shopify", "drop_rate": 1.0}));
    env.set_stock_of("s1", "p0", 5);
    env.wait_for(10, "the write to land (reply dropped)", || {
        env.shopify_available(2002) == Some(5)
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    env.sim.delete("/faults");
    env.wait_idle(20, "the job to finish");
    assert!(
        env.sim.counter("shopify idempotent replays") >= 1,
        "no retry reached the sandbox"
    );
    let writes = env.sim.get("/shopify/levels/2002/1")["writes"].as_i64().unwrap_or(0);
    assert_eq!(writes, 2, "initial sync + one write; a replay was applied again");
    assert_eq!(env.shopify_available(2002), Some(5));
}

/// 300 listings changed at once go out 250 per call; a small cost bucket answers THROTTLED and
/// everything still lands without burning attempts; an expired token is refreshed once.
#[test]
fn batches_throttling_and_token_refresh() {
    let mut env = Env::with_conf("shopify-batch", "integ.max_attempts = 2");
    env.add_shopify_tenant("s1", SHOP, json!({}));
    for i in 0..300u64 {
        env.shopify_listing("s1", SHOP, &format!("p{i}"), 5_000 + i);
    }
    env.wait_idle(30, "initial sync");
    let calls = env.sim.counter("shopify inventorySetQuantities calls");
    env.db()
        .batch_execute("UPDATE inventory SET qty = 4 WHERE tenant_id = 's1'")
        .unwrap();
    env.wait_for(30, "all 300", || {
        env.shopify_available(5_299) == Some(4) && env.shopify_available(5_000) == Some(4)
    });
    env.wait_idle(30, "drained");
    let used = env.sim.counter("shopify inventorySetQuantities calls") - calls;
    println!("SHOPIFY 300 quantities -> {used} calls");
    assert!(used <= 6, "{used} calls for 300 quantities");

    // a bucket of 25 points restoring 10/s: mutations cost 10
    env.sim
        .post("/shopify/config", json!({"bucket_max": 25, "restore_rate": 10}));
    env.sim.post("/shopify/expire_tokens", json!({}));
    for i in 0..12u64 {
        env.set_stock_of("s1", &format!("p{i}"), 50 + i as i32);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for i in 0..12u64 {
        env.wait_for(30, "every change", || {
            env.shopify_available(5_000 + i) == Some(50 + i as i64)
        });
    }
    assert!(
        env.sim.counter("shopify throttled") >= 1,
        "never throttled: the test proved nothing"
    );
    assert_eq!(env.sim.counter("shopify token refresh ok"), 1);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'"),
        0
    );
    env.assert_no_secrets();
}

/// A wrong secret on one connection (TikTok's app secret) fails that connection visibly, with
/// TikTok's reason in `integ.status`, its jobs kept; the other three marketplaces keep syncing.
#[test]
fn a_wrong_secret_fails_one_connection_visibly_and_only_that_one() {
    let mut env = Env::new("four-wrong");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    let key_id = env.add_shein_tenant(TENANT, 901, json!({}));
    env.shein_listing(TENANT, &key_id, &sku, "SH-5");
    let g = env.add_tiktok_tenant(TENANT, "CIPHER-5", json!({}));
    env.tiktok_listing(TENANT, "CIPHER-5", &sku, "P-5", "SKU-5");
    env.add_shopify_tenant(TENANT, SHOP, json!({}));
    env.shopify_listing(TENANT, SHOP, &sku, 909);
    env.wait_idle(20, "initial sync");
    // the TikTok connection is re-entered with a wrong app secret
    let creds = json!({"app_key": TIKTOK_APP_KEY, "app_secret": "not-the-app-secret", "shop_cipher": "CIPHER-5",
                       "access_token": g["access_token"], "refresh_token": g["refresh_token"]});
    env.db()
        .query_one(
            "SELECT integ.connect($1, 'tiktok', $2, $3)",
            &[&TENANT, &creds, &json!({"base_url": env.sim.base_url("tiktok")})],
        )
        .unwrap();
    for qty in [21, 22] {
        env.set_stock(&sku, qty);
        let q = qty as i64;
        env.wait_for(10, "MercadoLibre", || env.sim.item_quantity(&item) == Some(q));
        env.wait_for(10, "SHEIN", || env.shein_quantity("SH-5") == Some(q));
        env.wait_for(10, "Shopify", || env.shopify_available(909) == Some(q));
    }
    env.wait_for(10, "TikTok's connection to show the failure", || {
        env.scalar_i64(
            "SELECT count(*) FROM integ.status WHERE marketplace = 'tiktok' AND status = 'needs_reauthorization'",
        ) == 1
    });
    let why: String = env
        .db()
        .query_one("SELECT last_error FROM integ.status WHERE marketplace = 'tiktok'", &[])
        .unwrap()
        .get(0);
    assert!(why.contains("36004003"), "{why}");
    assert_eq!(
        env.tiktok_quantity("SKU-5"),
        Some(0),
        "TikTok must not have been written"
    );
    // the change waits for the connection to be fixed: nothing lost
    assert_eq!(
        env.scalar_i64("SELECT queue_depth FROM integ.status WHERE marketplace = 'tiktok'"),
        1
    );
    assert!(env.sim.counter("tiktok bad sign") >= 1);
    env.assert_no_secrets();
}

/// Channel stock rules: each channel shows EGDC's stock through its own rules, and the log
/// records both numbers.
#[test]
fn channel_stock_rules_shape_what_each_channel_shows() {
    let mut env = Env::new("rules");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    env.db()
        .batch_execute(
            "UPDATE integ.connections SET settings = settings || '{\"stock_rules\": {\"buffer\": 2}}'
              WHERE marketplace = 'mercadolibre'",
        )
        .unwrap();
    env.add_shopify_tenant(TENANT, SHOP, json!({"stock_rules": {"allocation_percent": 50}}));
    env.sim.post(
        "/shopify/levels",
        json!({"shop": SHOP, "inventory_item_id": 77, "location_id": 1}),
    );
    // the listing keeps the connection's 50% and adds its own maximum
    env.db()
        .query_one(
            "SELECT integ.map_product($1, 'shopify', $2, '77', '{\"location_id\": 1, \"stock_rules\": {\"max\": 4}}')",
            &[&TENANT, &sku],
        )
        .unwrap();
    let key_id = env.add_shein_tenant(
        TENANT,
        902,
        json!({"stock_rules": {"buffer": 5, "buffer_mode": "zero_below"}}),
    );
    env.shein_listing(TENANT, &key_id, &sku, "SH-R");
    for (egdc, meli, shopify, shein) in [(4, 2, 2, 0), (20, 18, 4, 20), (7, 5, 3, 7)] {
        env.set_stock(&sku, egdc);
        env.wait_for(10, "every channel to show its share", || {
            env.sim.item_quantity(&item) == Some(meli)
                && env.shopify_available(77) == Some(shopify)
                && env.shein_quantity("SH-R") == Some(shein)
        });
    }
    let both = env
        .db()
        .query_one(
            "SELECT stock, egdc_stock FROM integ.sync_log WHERE marketplace = 'mercadolibre' AND outcome = 'success'
              ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap();
    assert_eq!((both.get::<_, i32>(0), both.get::<_, i32>(1)), (5, 7));
    let err = env
        .db()
        .query_one(
            "SELECT integ.map_product($1, 'shopify', $2, '77', '{\"location_id\": 1, \"stock_rules\": {\"bufer\": 1}}')",
            &[&TENANT, &sku],
        )
        .unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(message.contains("unknown key \"bufer\""), "{message}");
}
