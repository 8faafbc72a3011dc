//! Inbound end to end: sales on each marketplace reach EGDC once (through the application's
//! webhook endpoint, `Receiver`) and flow to the other channels; duplicates change nothing; the
//! four conflict strategies; reconciliation repairs drift and recovers missed notifications;
//! deliveries made while PostgreSQL is down are recovered after it restarts.

use e2e::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const SHOP: &str = "sales-mx.myshopify.com";

fn hooks(env: &Env, r: &Receiver, marketplace: &str, delays: &[u64]) {
    app_hooks(&env.sim, marketplace, &r.url(marketplace), delays);
}

/// All four marketplaces on one product, each sending its orders to the receiver.
fn four(name: &str) -> (Env, Receiver, String, String) {
    let mut env = Env::new(name);
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    let key_id = env.add_shein_tenant(TENANT, 900, json!({"webhook_path": "/hooks/shein"}));
    env.shein_listing(TENANT, &key_id, &sku, "SH-1");
    env.add_tiktok_tenant(TENANT, "CIPHER-1", json!({}));
    env.tiktok_listing(TENANT, "CIPHER-1", &sku, "P-1", "SKU-1");
    env.add_shopify_tenant(TENANT, SHOP, json!({}));
    env.shopify_listing(TENANT, SHOP, &sku, 1001);
    let r = Receiver::start(env.pg.port);
    for m in ["mercadolibre", "shopify", "tiktok", "shein"] {
        hooks(&env, &r, m, &[200, 400, 800]);
    }
    env.set_stock(&sku, 20);
    env.wait_idle(15, "initial stock everywhere");
    (env, r, sku, item)
}

fn everywhere(env: &Env, sku: &str, item: &str, q: i64) {
    env.wait_for(15, &format!("EGDC at {q}"), || env.egdc_stock(TENANT, sku) == q);
    env.wait_for(15, "MercadoLibre", || env.sim.item_quantity(item) == Some(q));
    env.wait_for(15, "SHEIN", || env.shein_quantity("SH-1") == Some(q));
    env.wait_for(15, "TikTok Shop", || env.tiktok_quantity("SKU-1") == Some(q));
    env.wait_for(15, "Shopify", || env.shopify_available(1001) == Some(q));
}

#[test]
fn a_sale_on_each_marketplace_lowers_egdc_once_and_reaches_the_other_three() {
    let (env, r, sku, item) = four("sales");
    everywhere(&env, &sku, &item, 20);
    env.sim.post(
        "/shopify/orders",
        json!({"shop": SHOP, "lines": [{"inventory_item_id": 1001, "location_id": 1, "sku": sku, "quantity": 2}]}),
    );
    everywhere(&env, &sku, &item, 18);
    env.sim.post(
        "/mercadolibre/orders",
        json!({"seller": SELLER, "items": [{"item_id": item, "quantity": 1}]}),
    );
    everywhere(&env, &sku, &item, 17);
    let tiktok = env.sim.post(
        "/tiktok/orders",
        json!({"shop_cipher": "CIPHER-1", "lines": [{"sku_id": "SKU-1", "quantity": 3}]}),
    );
    everywhere(&env, &sku, &item, 14);
    env.sim.post(
        "/shein/orders",
        json!({"open_key_id": env.scalar_text("SELECT identifiers ->> 'open_key_id' FROM integ.credentials WHERE marketplace = 'shein'"),
               "lines": [{"sku_code": "SH-1", "quantity": 4}]}),
    );
    everywhere(&env, &sku, &item, 10);
    // the TikTok buyer cancels: the 3 units come back once
    let id = tiktok["event"]["order_id"].as_str().expect("order id").to_string();
    env.sim.post(&format!("/tiktok/orders/{id}/cancel"), json!({}));
    everywhere(&env, &sku, &item, 13);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.order_lines"),
        1 + 1 + 3 + 1,
        "one ledger row per order line (TikTok: one per unit)"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.order_lines WHERE cancelled_at IS NOT NULL"),
        3
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE state <> 'done'"),
        0,
        "every delivery applied"
    );
    assert_eq!(r.refused.load(std::sync::atomic::Ordering::Relaxed), 0);
    println!(
        "INBOUND 5 orders on 4 marketplaces applied once each; deliveries answered 2xx: {}",
        r.accepted.load(std::sync::atomic::Ordering::Relaxed)
    );
    env.assert_no_secrets();
}

#[test]
fn the_same_delivery_five_times_at_once_changes_stock_once() {
    let mut env = Env::new("dup5");
    env.add_shopify_tenant(TENANT, SHOP, json!({}));
    env.shopify_listing(TENANT, SHOP, "P1", 1001);
    env.set_stock_of(TENANT, "P1", 10);
    env.wait_idle(10, "initial stock");
    let made = env.sim.post(
        "/shopify/orders",
        json!({"shop": SHOP, "send": false,
               "lines": [{"inventory_item_id": 1001, "location_id": 1, "sku": "P1", "quantity": 4}]}),
    );
    let d = &made["delivery"];
    let port = env.pg.port;
    let threads: Vec<_> = (0..5)
        .map(|_| {
            let (headers, body) = (
                d["headers"].clone(),
                d["body"].as_str().unwrap_or("").as_bytes().to_vec(),
            );
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(
                    &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
                    postgres::NoTls,
                )
                .expect("connect");
                let a: Value = c
                    .query_one("SELECT integ.receive_webhook('shopify', $1, $2)", &[&headers, &body])
                    .expect("receive")
                    .get(0);
                a["status"].as_str().unwrap_or("").to_string()
            })
        })
        .collect();
    let mut statuses: Vec<String> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        vec!["accepted", "duplicate", "duplicate", "duplicate", "duplicate"]
    );
    env.wait_for(10, "the order applied", || env.egdc_stock(TENANT, "P1") == 6);
    // MercadoLibre delivering one notification five times over: also once
    let r = Receiver::start(env.pg.port);
    hooks(&env, &r, "mercadolibre", &[100]);
    env.sim.post("/webhooks", json!({"copies": 5}));
    let ls = env.listings(1);
    env.set_stock(&ls[0].0, 10);
    env.wait_idle(10, "ML stock");
    env.sim.post(
        "/mercadolibre/orders",
        json!({"seller": SELLER, "items": [{"item_id": ls[0].1, "quantity": 2}]}),
    );
    env.wait_for(10, "five deliveries", || {
        r.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 5
    });
    env.wait_for(10, "the ML order applied", || env.egdc_stock(TENANT, &ls[0].0) == 8);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.egdc_stock(TENANT, &ls[0].0), 8, "taken once");
    assert_eq!(
        env.scalar_i64(
            "SELECT count(*) FROM integ.webhooks WHERE marketplace = 'mercadolibre' AND status = 'duplicate'"
        ),
        4
    );
    assert_eq!(env.egdc_stock(TENANT, "P1"), 6);
}

/// One Shopify shop per strategy; the merchant edits the level in Shopify's admin.
#[test]
fn the_four_conflict_strategies() {
    let mut env = Env::new("conflicts");
    let r = Receiver::start(env.pg.port);
    hooks(&env, &r, "shopify", &[200, 400]);
    let strategies = ["egdc_wins", "marketplace_wins", "most_recent", "manual"];
    for (i, s) in strategies.iter().enumerate() {
        let (tenant, shop) = (format!("t-{s}"), format!("{s}.myshopify.com").replace('_', "-"));
        env.add_shopify_tenant(&tenant, &shop, json!({"conflict_strategy": s}));
        env.shopify_listing(&tenant, &shop, "P1", 2001 + i as u64);
        env.set_stock_of(&tenant, "P1", 10);
    }
    env.wait_idle(10, "initial stock");
    for i in 0..4u64 {
        env.sim
            .post(&format!("/shopify/levels/{}/1/bump", 2001 + i), json!({"available": 7}));
    }
    // egdc_wins: 10 goes back to Shopify
    env.wait_for(10, "egdc_wins pushes back", || env.shopify_available(2001) == Some(10));
    assert_eq!(env.egdc_stock("t-egdc_wins", "P1"), 10);
    // marketplace_wins: EGDC takes the change
    env.wait_for(10, "marketplace_wins", || {
        env.egdc_stock("t-marketplace_wins", "P1") == 7
    });
    // most_recent: the merchant's edit is newer than EGDC's last change
    env.wait_for(10, "most_recent", || env.egdc_stock("t-most_recent", "P1") == 7);
    // manual: a conflict to review, nothing changed
    env.wait_for(10, "a conflict", || {
        env.scalar_i64("SELECT count(*) FROM integ.conflicts WHERE status = 'open'") == 1
    });
    env.wait_idle(10, "settled");
    assert_eq!(env.egdc_stock("t-manual", "P1"), 10);
    assert_eq!(env.shopify_available(2004), Some(7));
    assert_eq!(env.shopify_available(2002), Some(7));
    let c = env
        .db()
        .query_one(
            "SELECT id, egdc_stock, remote_stock, known_remote, source FROM integ.conflicts WHERE status = 'open'",
            &[],
        )
        .expect("conflict");
    let (id, egdc_stock, remote, known, source): (i64, Option<i32>, i64, Option<i32>, String) =
        (c.get(0), c.get(1), c.get(2), c.get(3), c.get(4));
    assert_eq!(
        (egdc_stock, remote, known, source.as_str()),
        (Some(10), 7, Some(10), "webhook")
    );
    let resolved: Value = env
        .db()
        .query_one("SELECT integ.resolve_conflict($1, 'egdc_wins')", &[&id])
        .expect("resolve")
        .get(0);
    assert_eq!(resolved["resolution"], "egdc_wins");
    env.wait_for(10, "manual resolved for EGDC", || {
        env.shopify_available(2004) == Some(10)
    });
    let again = env
        .db()
        .query_one("SELECT integ.resolve_conflict($1, 'egdc_wins')", &[&id]);
    assert!(again.is_err(), "a resolved conflict cannot be resolved twice");
    // most_recent, EGDC newer: a delivery made before EGDC's latest change loses to it
    let stale = env
        .sim
        .post("/shopify/levels/2003/1/bump", json!({"available": 3, "send": false}));
    std::thread::sleep(Duration::from_millis(50));
    env.set_stock_of("t-most_recent", "P1", 9);
    env.wait_for(10, "EGDC's 9 pushed", || env.shopify_available(2003) == Some(9));
    let d = &stale["delivery"];
    let a: Value = env
        .db()
        .query_one(
            "SELECT integ.receive_webhook('shopify', $1, convert_to($2, 'UTF8'))",
            &[&d["headers"], &d["body"].as_str().unwrap_or("")],
        )
        .expect("receive")
        .get(0);
    assert_eq!(a["status"], "accepted");
    env.wait_for(10, "stale edit applied", || {
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE state IN ('pending', 'failed')") == 0
    });
    assert_eq!(env.egdc_stock("t-most_recent", "P1"), 9, "EGDC's later change wins");
    assert_eq!(env.shopify_available(2003), Some(9));
    let bad = env.db().query_one("SELECT integ.resolve_conflict($1, 'both')", &[&id]);
    assert!(format!("{:?}", bad.err()).contains("unknown resolution"));
}

#[test]
fn reconciliation_repairs_drift_and_recovers_missed_notifications() {
    let mut env = Env::new("reconcile");
    env.add_tenant("t-market", 5002, json!({"conflict_strategy": "marketplace_wins"}));
    let mine = env.listings(2);
    let theirs = env.listings_for("t-market", 5002, 200_000, 1);
    env.set_stock(&mine[0].0, 10);
    env.set_stock(&mine[1].0, 10);
    env.set_stock_of("t-market", &theirs[0].0, 10);
    env.wait_idle(10, "initial stock");
    // drift made directly in the sandbox, no notification
    env.sim.post(
        &format!("/mercadolibre/items/{}/edit", mine[0].1),
        json!({"available_quantity": 4, "send": false}),
    );
    env.sim.post(
        &format!("/mercadolibre/items/{}/edit", theirs[0].1),
        json!({"available_quantity": 6, "send": false}),
    );
    // and an order whose notification was lost while we were down
    env.sim.post(
        "/mercadolibre/orders",
        json!({"seller": SELLER, "lose": true, "items": [{"item_id": mine[1].1, "quantity": 3}]}),
    );
    let report: Value = env
        .db()
        .query_one("SELECT integ.reconcile($1)", &[&TENANT])
        .expect("reconcile")
        .get(0);
    println!("RECONCILE {report}");
    // the lost order is received again; until the workers apply it, differences on this
    // connection may be its doing, so nothing is repaired yet
    assert_eq!(report["checked"], 2);
    assert_eq!(report["missed_notifications"], 1, "{report}");
    assert_eq!(report["skipped"], 2, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    env.wait_for(10, "the missed order applied", || {
        env.egdc_stock(TENANT, &mine[1].0) == 7
    });
    env.wait_for(10, "7 pushed", || env.sim.item_quantity(&mine[1].1) == Some(7));
    let multigets = env.sim.counter("mercadolibre GET /items?ids");
    let report: Value = env
        .db()
        .query_one("SELECT integ.reconcile($1)", &[&TENANT])
        .expect("reconcile")
        .get(0);
    assert_eq!(
        env.sim.counter("mercadolibre GET /items?ids"),
        multigets + 1,
        "both listings read in one multiget"
    );
    assert_eq!(report["repaired"], 1, "{report}");
    assert_eq!(report["in_sync"], 1, "{report}");
    assert_eq!(report["missed_notifications"], 0, "already received: {report}");
    env.wait_for(10, "EGDC's 10 back on the drifted item", || {
        env.sim.item_quantity(&mine[0].1) == Some(10)
    });
    let report: Value = env
        .db()
        .query_one("SELECT integ.reconcile('t-market', 'mercadolibre')", &[])
        .expect("reconcile")
        .get(0);
    assert_eq!(report["repaired"], 1, "{report}");
    assert_eq!(
        env.egdc_stock("t-market", &theirs[0].0),
        6,
        "marketplace_wins takes the drift"
    );
    // nothing left to repair
    env.wait_idle(10, "settled");
    let again: Value = env
        .db()
        .query_one("SELECT integ.reconcile($1)", &[&TENANT])
        .expect("reconcile")
        .get(0);
    assert_eq!(
        (
            again["in_sync"].as_i64(),
            again["repaired"].as_i64(),
            again["missed_notifications"].as_i64()
        ),
        (Some(2), Some(0), Some(0)),
        "{again}"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_log WHERE operation = 'reconcile'"),
        4
    );
    let err = env.db().query_one("SELECT integ.reconcile('nobody')", &[]);
    assert!(format!("{:?}", err.err()).contains("has no connection"));
}

#[test]
fn deliveries_made_while_postgres_is_down_are_recovered() {
    let mut env = Env::with_conf("down", "integ.reconcile_interval = 3600");
    env.add_shopify_tenant(TENANT, SHOP, json!({}));
    env.shopify_listing(TENANT, SHOP, "P1", 1001);
    let ls = env.listings(1);
    env.set_stock_of(TENANT, "P1", 10);
    env.set_stock(&ls[0].0, 10);
    env.wait_idle(10, "initial stock");
    let r = Receiver::start(env.pg.port);
    // Shopify keeps retrying for long enough; MercadoLibre gives up fast (its missed feeds keep it)
    hooks(&env, &r, "shopify", &[500, 1_000, 2_000, 4_000, 8_000]);
    hooks(&env, &r, "mercadolibre", &[100, 100]);
    env.pg.stop("fast");
    env.sim.post(
        "/shopify/orders",
        json!({"shop": SHOP, "lines": [{"inventory_item_id": 1001, "location_id": 1, "sku": "P1", "quantity": 2}]}),
    );
    env.sim.post(
        "/mercadolibre/orders",
        json!({"seller": SELLER, "items": [{"item_id": ls[0].1, "quantity": 5}]}),
    );
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        r.refused.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "deliveries refused while down"
    );
    env.pg.pg_ctl_start();
    env.reconnect();
    env.wait_for(30, "the Shopify order, by retry", || env.egdc_stock(TENANT, "P1") == 8);
    env.wait_for(30, "the MercadoLibre order, by reconciliation", || {
        env.egdc_stock(TENANT, &ls[0].0) == 5
    });
    env.wait_for(10, "pushed back out", || {
        env.shopify_available(1001) == Some(8) && env.sim.item_quantity(&ls[0].1) == Some(5)
    });
    assert_eq!(
        env.sim.counter("mercadolibre webhooks given up"),
        1,
        "MercadoLibre's delivery did fail for good"
    );
}

/// MercadoLibre's `items` notification only points at the item: it is read back with the
/// connection's token, and the strategy applies to what it holds.
#[test]
fn a_mercadolibre_items_notification_is_read_back_and_resolved() {
    let mut env = Env::new("ml-items");
    env.add_tenant("t-market", 5002, json!({"conflict_strategy": "marketplace_wins"}));
    let mine = env.listings(1);
    let theirs = env.listings_for("t-market", 5002, 200_000, 1);
    env.set_stock(&mine[0].0, 10);
    env.set_stock_of("t-market", &theirs[0].0, 10);
    env.wait_idle(10, "initial stock");
    let r = Receiver::start(env.pg.port);
    hooks(&env, &r, "mercadolibre", &[200]);
    env.sim.post(
        &format!("/mercadolibre/items/{}/edit", mine[0].1),
        json!({"available_quantity": 3}),
    );
    env.sim.post(
        &format!("/mercadolibre/items/{}/edit", theirs[0].1),
        json!({"available_quantity": 4}),
    );
    env.wait_for(10, "egdc_wins writes 10 back", || {
        env.sim.item_quantity(&mine[0].1) == Some(10)
    });
    env.wait_for(10, "marketplace_wins takes 4", || {
        env.egdc_stock("t-market", &theirs[0].0) == 4
    });
    assert_eq!(env.egdc_stock(TENANT, &mine[0].0), 10);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE topic = 'items' AND state = 'done' AND NOT verified"),
        2,
        "unsigned notifications, applied after reading the item"
    );
    assert!(env.sim.counter("mercadolibre GET /items/{id}") >= 2);
}

/// Found by the chaos soak: a sale applied on a channel, then EGDC's stock back to the number
/// last pushed there, was skipped as "the marketplace already holds this quantity" (it held
/// the number minus the sale). The sale makes the channel's known stock unknown.
#[test]
fn a_sale_then_a_change_back_to_the_old_number_still_reaches_the_channel() {
    let shop = "sale-back.myshopify.com";
    let mut env = Env::new("sale-back");
    env.add_shopify_tenant("s1", shop, json!({"location_id": 1}));
    env.shopify_listing("s1", shop, "B1", 5101);
    env.set_stock_of("s1", "B1", 10);
    env.wait_for(10, "the first push", || env.shopify_available(5101) == Some(10));
    env.db()
        .execute("SELECT integ.pause('s1', 'shopify')", &[])
        .expect("pause");
    let sale = env.sim.post(
        "/shopify/orders",
        json!({"shop": shop, "send": false,
               "lines": [{"inventory_item_id": 5101, "location_id": 1, "sku": "B1", "quantity": 3}]}),
    );
    assert_eq!(env.shopify_available(5101), Some(7));
    let d = &sale["delivery"];
    env.db()
        .query_one(
            "SELECT integ.receive_webhook('shopify', $1, convert_to($2, 'UTF8'))",
            &[&d["headers"], &d["body"].as_str().unwrap_or("")],
        )
        .expect("receive_webhook");
    env.wait_for(10, "the sale applied", || env.egdc_stock("s1", "B1") == 7);
    env.set_stock_of("s1", "B1", 10);
    env.db()
        .execute("SELECT integ.resume('s1', 'shopify')", &[])
        .expect("resume");
    env.wait_for(10, "EGDC's 10 on the channel again", || {
        env.shopify_available(5101) == Some(10)
    });
}

/// The first worker's reconciliation reads from the spare budget as fast as it allows: a cycle
/// over many connections is not paced by the worker's poll interval (it once read one page of
/// 20 listings per turn of an idle loop, a second apart: a cycle of 1,000,000 listings took
/// about 14 hours against an hourly schedule), and a change committed meanwhile is pushed at
/// once (the loop once missed the commit's wake-up until the cycle was over).
#[test]
fn the_workers_reconciliation_cycle_runs_at_the_spare_budgets_pace_and_pushes_go_first() {
    let mut env = Env::with_conf(
        "reconcile-cycle",
        "integ.reconcile_interval = 3600\ninteg.poll_interval = 1000",
    );
    let (tenants, per_tenant) = (30u64, 60usize);
    for t in 0..tenants {
        let tenant = format!("rc{t}");
        env.add_tenant(&tenant, 7_000 + t, json!({}));
        env.listings_for(&tenant, 7_000 + t, 300_000 + t as usize * 100, per_tenant);
    }
    let created = Instant::now();
    let connections = env.scalar_i64("SELECT count(*) FROM integ.connections");
    let reconciled =
        || env.scalar_i64("SELECT count(DISTINCT connection_id) FROM integ.sync_log WHERE operation = 'reconcile'");
    // each call answered after 40 ms: the cycle's ~120 reads take about 5 s on the worker's loop
    env.sim
        .post("/faults", json!({"marketplace": "mercadolibre", "latency_ms": 40}));
    // each connection is scheduled at the next scan of connections (every 10 s), 3 s later
    env.wait_for(20, "the first connection reconciled", || reconciled() > 0);
    // a change made meanwhile is pushed at once, not after the cycle (pushes come first)
    let (sku, item) = (String::from("sku-0"), String::from("MLM302900"));
    let changed = Instant::now();
    env.set_stock_of("rc29", &sku, 7);
    env.wait_for(20, "the change pushed", || env.sim.item_quantity(&item) == Some(7));
    let push_ms = changed.elapsed().as_millis();
    let during = reconciled();
    println!("RECONCILE CYCLE: a push took {push_ms} ms with {during} of {connections} connections reconciled");
    assert!(during < connections, "the push was made while the cycle ran");
    assert!(push_ms < 1_000, "a push waited {push_ms} ms for the reconciliation");
    // at one page per second the 90 pages alone would take 90 s
    env.wait_for(30, "every connection reconciled once", || {
        env.scalar_i64("SELECT count(DISTINCT connection_id) FROM integ.sync_log WHERE operation = 'reconcile'")
            >= connections
    });
    println!(
        "RECONCILE CYCLE: {connections} connections in {:.1} s",
        created.elapsed().as_secs_f64()
    );
    let checked = env.scalar_i64(
        "SELECT sum((error::jsonb->>'checked')::bigint)::bigint FROM integ.sync_log WHERE operation = 'reconcile'",
    );
    assert_eq!(checked, tenants as i64 * per_tenant as i64, "every listing read once");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_log WHERE operation = 'reconcile' AND outcome <> 'success'"),
        0
    );
}
