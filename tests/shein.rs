//! End to end against the sandbox's SHEIN: signed calls, batches of up to 100 SKUs, per-SKU
//! failures with SHEIN's own message, throttling by business code, refused keys.

use e2e::*;
use serde_json::json;
use std::time::Duration;

/// One EGDC product on MercadoLibre and on SHEIN: a stock change reaches both.
#[test]
fn a_tracked_product_reaches_mercadolibre_and_shein() {
    let mut env = Env::new("shein-both");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    let key_id = env.add_shein_tenant(TENANT, 880, json!({}));
    env.shein_listing(TENANT, &key_id, &sku, "SH-SKU-1");
    env.set_stock(&sku, 23);
    env.wait_for(10, "MercadoLibre to hold 23", || {
        env.sim.item_quantity(&item) == Some(23)
    });
    env.wait_for(10, "SHEIN to hold 23", || env.shein_quantity("SH-SKU-1") == Some(23));
    let logged = env.scalar_i64(
        "SELECT count(*) FROM integ.sync_log WHERE marketplace = 'shein' AND outcome = 'success' AND stock = 23",
    );
    assert_eq!(logged, 1);
    assert_eq!(env.sim.counter("shein bad signature"), 0);
    env.assert_no_secrets();
}

/// 250 SHEIN listings changed in one transaction go out in calls of up to 100 SKUs; a SKU SHEIN
/// does not know is dead-lettered with SHEIN's message, verbatim, and the others land.
#[test]
fn shein_batches_and_reports_failed_skus() {
    let mut env = Env::new("shein-batch");
    let key_id = env.add_shein_tenant("sh", 881, json!({"rate_limit": "1000/s:1000"}));
    let n = 250;
    for i in 0..n {
        env.shein_listing("sh", &key_id, &format!("p{i}"), &format!("SKU-{i}"));
    }
    // a listing whose SKU the sandbox does not have
    env.db()
        .batch_execute(
            "INSERT INTO inventory VALUES ('sh', 'ghost', 0);
             SELECT integ.map_product('sh', 'shein', 'ghost', 'SKU-GHOST');",
        )
        .unwrap();
    env.wait_idle(30, "initial sync");
    let calls_before = env.sim.counter("shein change-inventory calls");
    env.db()
        .batch_execute("UPDATE inventory SET qty = 8 WHERE tenant_id = 'sh'")
        .unwrap();
    for i in 0..n {
        let code = format!("SKU-{i}");
        env.wait_for(30, "every SKU to hold 8", || env.shein_quantity(&code) == Some(8));
    }
    env.wait_idle(30, "the queue to drain");
    let calls = env.sim.counter("shein change-inventory calls") - calls_before;
    println!("SHEIN {} SKUs changed -> {calls} change-inventory calls", n + 1);
    assert!(calls <= 10, "{calls} calls for {} SKUs: not batched", n + 1);
    assert_eq!(env.sim.counter("shein idempotent replays"), 0);
    let dead: String = env
        .db()
        .query_one(
            "SELECT j.last_error FROM integ.sync_jobs j JOIN integ.listings l ON l.id = j.listing_id
              WHERE l.product_id = 'ghost' AND j.state = 'dead' ORDER BY j.id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dead, "SHEIN refused SKU SKU-GHOST: SKU不存在或不属于该供应商");
}

/// SHEIN's throttling code 832213 (HTTP 200) slows the connection; nothing burns attempts or
/// dies, and everything lands.
#[test]
fn shein_throttling_by_business_code_waits() {
    let mut env = Env::with_conf("shein-throttle", "integ.max_attempts = 2");
    let key_id = env.add_shein_tenant("sh", 882, json!({"rate_limit": "50/s"}));
    for i in 0..6 {
        env.shein_listing("sh", &key_id, &format!("p{i}"), &format!("SKU-{i}"));
    }
    env.wait_idle(30, "initial sync");
    // the sandbox allows 2 calls per second, answering 832213 beyond; we are told 50/s
    env.sim.post(
        "/shein/config",
        json!({"rate_limit_per_minute": 2, "rate_window_s": 1.0, "throttle_with_code": true}),
    );
    for i in 0..6 {
        env.set_stock_of("sh", &format!("p{i}"), 30 + i);
        std::thread::sleep(Duration::from_millis(30));
    }
    for i in 0..6 {
        let code = format!("SKU-{i}");
        env.wait_for(30, "every SKU to land", || {
            env.shein_quantity(&code) == Some(30 + i as i64)
        });
    }
    let throttled = env.sim.counter("shein 429");
    println!("SHEIN throttled {throttled} calls with 832213");
    assert!(throttled >= 1, "the sandbox never throttled: the test proved nothing");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'"),
        0
    );
    let remote: i64 = env
        .scalar_i64("SELECT remote_throttled FROM integ.rate_limits WHERE tenant_id = 'sh' AND marketplace = 'shein'");
    assert!(remote >= 1);
}

/// Keys SHEIN refuses (openapi00001) cannot be refreshed: the connection needs
/// re-authorization and its jobs wait, none dead.
#[test]
fn refused_shein_keys_need_reauthorization() {
    let mut env = Env::new("shein-keys");
    let key_id = env.add_shein_tenant("sh", 883, json!({}));
    env.shein_listing("sh", &key_id, "p0", "SKU-0");
    env.wait_idle(30, "initial sync");
    // the stored secret no longer matches what SHEIN holds
    env.db()
        .query_one(
            "SELECT integ.connect('sh', 'shein', $1, $2)",
            &[
                &json!({"open_key_id": key_id, "secret_key": "WRONG-SECRET-0000", "appid": SHEIN_APPID}),
                &json!({"base_url": env.sim.base_url("shein")}),
            ],
        )
        .unwrap();
    env.set_stock_of("sh", "p0", 4);
    env.wait_for(20, "the connection to need re-authorization", || {
        env.scalar_i64(
            "SELECT count(*) FROM integ.connections WHERE tenant_id = 'sh' AND status = 'needs_reauthorization'",
        ) == 1
    });
    assert!(env.sim.counter("shein bad signature") >= 1);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'"),
        0
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs j JOIN integ.listings l ON l.id = j.listing_id WHERE l.product_id = 'p0' AND j.state = 'pending'"),
        1
    );
}
