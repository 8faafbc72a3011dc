//! End-to-end: the EGDC application only writes its inventory table; the extension's workers
//! bring the sandbox's listings to the same stock, through faults, token expiry and crashes.

use e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn item_has(env: &Env, item: &str, qty: i64) -> bool {
    env.sim.item_quantity(item) == Some(qty)
}

#[test]
fn an_update_reaches_the_marketplace_and_latency_is_measured() {
    let env = Env::new("latency");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    env.set_stock(&sku, 17);
    env.wait_for(10, "the first update to reach the sandbox", || {
        item_has(&env, &item, 17)
    });
    // the attempt is in the sync log, with its HTTP status and latency (recorded just after the
    // sandbox answered, so wait for the worker's commit)
    env.wait_idle(10, "the first push to be recorded");
    let logged = env.scalar_i64(
        "SELECT count(*) FROM integ.sync_log WHERE outcome = 'success' AND stock = 17 AND http_status = 200 AND latency_ms > 0",
    );
    assert_eq!(logged, 1);

    // Commit -> sandbox updated, over 200 single updates.
    let mut ms = Vec::new();
    for i in 0..200 {
        let qty = 1000 + i;
        let start = Instant::now();
        env.set_stock(&sku, qty);
        let deadline = start + Duration::from_secs(10);
        while env.sim.item_quantity(&item) != Some(qty as i64) {
            assert!(Instant::now() < deadline, "update {i} did not arrive");
            std::thread::sleep(Duration::from_micros(300));
        }
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "LATENCY commit->sandbox over {} updates: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms[ms.len() - 1]
    );
    // the last push may still be being recorded when the sandbox already holds its value
    env.wait_idle(10, "the last push to be recorded");
    let status = env
        .db()
        .query_one(
            "SELECT queue_depth, dead, last_success IS NOT NULL FROM integ.status",
            &[],
        )
        .unwrap();
    assert_eq!(status.get::<_, i64>(0), 0);
    assert_eq!(status.get::<_, i64>(1), 0);
    assert!(status.get::<_, bool>(2));
    env.assert_no_secrets();

    // Idle workers sleep: nothing due (and then a paused connection) costs no CPU.
    env.wait_idle(10, "the queue to drain");
    for state in ["idle", "paused"] {
        if state == "paused" {
            env.db()
                .batch_execute("SELECT integ.pause('acme', 'mercadolibre')")
                .unwrap();
            env.set_stock(&sku, 5);
        }
        let before = worker_cpu_seconds(&env);
        std::thread::sleep(Duration::from_secs(3));
        let used = worker_cpu_seconds(&env) - before;
        println!("IDLE worker CPU while {state}: {used:.2} s over 3 s");
        assert!(used < 0.3, "workers used {used:.2} s of CPU in 3 s while {state}");
    }
}

#[test]
fn a_burst_of_updates_coalesces() {
    let env = Env::new("burst");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    env.wait_idle(10, "initial sync");
    let before = env.sim.item_writes(&item);
    for q in 1..=1000 {
        env.set_stock(&sku, q);
    }
    env.wait_for(30, "the last value to arrive", || item_has(&env, &item, 1000));
    env.wait_idle(10, "the queue to drain");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        env.sim.item_quantity(&item),
        Some(1000),
        "the sandbox must end with the last value"
    );
    let pushes = env.sim.item_writes(&item) - before;
    println!("BURST 1000 updates of one product -> {pushes} pushes");
    assert!(pushes < 500, "{pushes} pushes for 1000 updates");
    assert!(pushes >= 1);
}

#[test]
fn expired_tokens_are_refreshed_once() {
    let env = Env::new("refresh");
    let ls = env.listings(20);
    env.wait_idle(20, "initial sync");
    assert_eq!(env.sim.counter("mercadolibre token refresh_token"), 0);
    env.sim.post("/mercadolibre/expire_tokens", json!({}));
    // 20 pushes for the same connection, all due at once
    let mut db = env.db();
    let mut tx = db.transaction().unwrap();
    for (i, (sku, _)) in ls.iter().enumerate() {
        tx.execute(
            "UPDATE inventory SET qty = $2 WHERE sku = $1",
            &[sku as &(dyn postgres::types::ToSql + Sync), &(50 + i as i32)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(db);
    for (i, (_, item)) in ls.iter().enumerate() {
        env.wait_for(20, "every push to succeed after the refresh", || {
            item_has(&env, item, 50 + i as i64)
        });
    }
    assert_eq!(
        env.sim.counter("mercadolibre token refresh_token ok"),
        1,
        "exactly one refresh"
    );
    assert_eq!(env.sim.counter("mercadolibre token refresh_token invalid_grant"), 0);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_log WHERE operation = 'refresh' AND outcome = 'success'"),
        1
    );

    // Concurrent synchronous pushes from several backends on an expired token: one refresh.
    env.sim.post("/mercadolibre/expire_tokens", json!({}));
    let port = env.pg.port;
    let handles: Vec<_> = ls
        .iter()
        .take(4)
        .map(|(sku, _)| {
            let sku = sku.clone();
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(
                    &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
                    postgres::NoTls,
                )
                .unwrap();
                let row = c
                    .query_one(
                        "SELECT status, error FROM integ.sync_product($1, $2)",
                        &[&TENANT as &(dyn postgres::types::ToSql + Sync), &sku],
                    )
                    .unwrap();
                (row.get::<_, String>(0), row.get::<_, Option<String>>(1))
            })
        })
        .collect();
    for h in handles {
        let (status, error) = h.join().unwrap();
        assert_eq!(status, "success", "sync_product failed: {error:?}");
    }
    assert_eq!(
        env.sim.counter("mercadolibre token refresh_token ok"),
        2,
        "one more refresh for the second expiry"
    );
    assert_eq!(env.sim.counter("mercadolibre token refresh_token invalid_grant"), 0);

    // A revoked grant: the connection needs re-authorization, jobs wait (not dead), one log row.
    env.sim
        .post(&format!("/mercadolibre/sellers/{SELLER}/revoke"), json!({}));
    env.set_stock(&ls[0].0, 999);
    env.wait_for(20, "needs_reauthorization", || {
        env.db()
            .query_one("SELECT status FROM integ.connections", &[])
            .unwrap()
            .get::<_, String>(0)
            == "needs_reauthorization"
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'"),
        0
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'pending'"),
        1
    );
    assert_eq!(
        env.sim.counter("mercadolibre token refresh_token invalid_grant"),
        1,
        "no retry of a dead grant"
    );
    env.assert_no_secrets();
}

/// A write whose answer never came may have landed: EGDC's stock going back to the value the
/// listing showed before is written, not skipped as "already there" (the 30-minute soak's
/// drift: the listing stayed at the timed-out value).
#[test]
fn a_timed_out_write_that_landed_does_not_hide_a_change_back() {
    let env = Env::new("timed-out-write");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    env.set_stock(&sku, 10);
    env.wait_idle(30, "initial sync");
    assert_eq!(env.sim.item_quantity(&item), Some(10));
    // every answer comes after the worker gave up (integ.http_timeout = 1000), the write applied first
    env.sim.post(
        "/faults",
        json!({"marketplace": "mercadolibre", "timeout_rate": 1.0, "timeout_ms": 1500}),
    );
    env.set_stock(&sku, 11);
    env.wait_for(20, "the write of 11 to land and time out", || {
        env.sim.item_quantity(&item) == Some(11)
            && env.scalar_i64("SELECT count(*) FROM integ.sync_log WHERE outcome = 'retry' AND stock = 11") > 0
    });
    env.set_stock(&sku, 10);
    std::thread::sleep(Duration::from_secs(2));
    env.sim.delete("/faults");
    env.wait_idle(30, "the change back");
    assert_eq!(
        env.sim.item_quantity(&item),
        Some(10),
        "EGDC's 10 written again: {:?}",
        env.db()
            .query(
                "SELECT outcome, stock, remote_stock, error FROM integ.sync_log ORDER BY id",
                &[]
            )
            .map(|rows| rows
                .iter()
                .map(|r| format!(
                    "{} {:?} {:?} {:?}",
                    r.get::<_, String>(0),
                    r.get::<_, Option<i32>>(1),
                    r.get::<_, Option<i32>>(2),
                    r.get::<_, Option<String>>(3)
                ))
                .collect::<Vec<_>>())
    );
}

#[test]
fn faults_do_not_lose_changes_and_bad_requests_dead_letter() {
    let env = Env::new("faults");
    let ls = env.listings(30);
    env.wait_idle(30, "initial sync");
    env.sim.post(
        "/faults",
        json!({"marketplace": "mercadolibre", "error_rate": 0.3, "error_status": 503, "timeout_rate": 0.1, "timeout_ms": 1500, "drop_rate": 0.05}),
    );
    for round in 0..3 {
        for (i, (sku, _)) in ls.iter().enumerate() {
            env.set_stock(sku, (round * 100 + i) as i32);
        }
    }
    for (i, (_, item)) in ls.iter().enumerate() {
        env.wait_for(90, "every listing to reach its final stock", || {
            item_has(&env, item, 200 + i as i64)
        });
    }
    assert!(env.sim.counter("mercadolibre faults error") > 0, "faults were injected");
    let retries = env.scalar_i64("SELECT count(*) FROM integ.sync_log WHERE outcome = 'retry'");
    assert!(retries > 0);
    env.sim.delete("/faults");

    // A listing that does not exist: 404, dead-lettered with the marketplace's reason.
    env.db()
        .execute("INSERT INTO inventory VALUES ($1, 'ghost', 3)", &[&TENANT])
        .unwrap();
    env.db()
        .query_one(
            "SELECT integ.map_product($1, 'mercadolibre', 'ghost', 'MLM999999')",
            &[&TENANT],
        )
        .unwrap();
    env.wait_for(20, "the bad job to be dead", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'") == 1
    });
    let reason: String = env
        .db()
        .query_one("SELECT last_error FROM integ.sync_jobs WHERE state = 'dead'", &[])
        .unwrap()
        .get(0);
    assert!(
        reason.contains("HTTP 404") && reason.contains("MLM999999 not found"),
        "{reason}"
    );
    assert_eq!(env.scalar_i64("SELECT dead FROM integ.status"), 1);
    // Fix it on the marketplace side and retry.
    env.sim
        .post("/mercadolibre/items", json!({"id": "MLM999999", "seller_id": SELLER}));
    assert_eq!(env.scalar_i64("SELECT integ.retry_dead('acme', 'mercadolibre')"), 1);
    env.wait_for(20, "the retried job to succeed", || item_has(&env, "MLM999999", 3));
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'"),
        0
    );
    env.assert_no_secrets();
}

#[test]
fn an_immediate_shutdown_loses_nothing() {
    let env = Env::new("crash");
    let ls = env.listings(40);
    env.wait_idle(30, "initial sync");
    env.sim
        .post("/faults", json!({"marketplace": "mercadolibre", "latency_ms": 400}));
    for (i, (sku, _)) in ls.iter().enumerate() {
        env.set_stock(sku, 7000 + i as i32);
    }
    env.wait_for(10, "pushes to be in flight", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'in_flight'") > 0
    });
    let pending = env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'pending'");
    println!("CRASH stopping with {pending} pending jobs and some in flight");
    env.pg.stop("immediate");
    env.sim.delete("/faults");
    env.pg.pg_ctl_start();
    env.reconnect();
    for (i, (_, item)) in ls.iter().enumerate() {
        env.wait_for(60, "every listing to reach its stock after the crash", || {
            item_has(&env, item, 7000 + i as i64)
        });
    }
    env.wait_idle(20, "no job left in flight");
}

#[test]
fn variations_and_user_products() {
    let env = Env::new("kinds");
    env.sim.post(
        "/mercadolibre/items",
        json!({"id": "MLM777", "seller_id": SELLER, "variations": [{"id": 11, "available_quantity": 1}, {"id": 22, "available_quantity": 2}]}),
    );
    env.sim.post(
        "/mercadolibre/user_products",
        json!({"id": "MLMU555", "seller_id": SELLER, "quantity": 1}),
    );
    env.db()
        .batch_execute("INSERT INTO inventory VALUES ('acme', 'red', 0), ('acme', 'up', 0)")
        .unwrap();
    env.db()
        .query_one(
            "SELECT integ.map_product('acme', 'mercadolibre', 'red', 'MLM777', '{\"variation_id\": 22}')",
            &[],
        )
        .unwrap();
    env.db()
        .query_one("SELECT integ.map_product('acme', 'mercadolibre', 'up', 'MLMU555')", &[])
        .unwrap();
    env.set_stock("red", 9);
    env.set_stock("up", 4);
    env.wait_for(10, "variation stock", || {
        let v = env.sim.get("/mercadolibre/items/MLM777");
        let stock: Vec<(i64, i64)> = v["variations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                (
                    x["id"].as_i64().unwrap_or(-1),
                    x["available_quantity"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        stock == [(11, 1), (22, 9)]
    });
    env.wait_for(10, "user product stock", || {
        env.sim.get("/mercadolibre/user_products/MLMU555")["quantity"] == json!(4)
    });
    // A concurrent writer bumps the version: the push re-reads and still lands.
    env.sim.post("/mercadolibre/user_products/MLMU555/bump", json!({}));
    env.set_stock("up", 6);
    env.wait_for(10, "user product stock after a version bump", || {
        env.sim.get("/mercadolibre/user_products/MLMU555")["quantity"] == json!(6)
    });
    // sync_product pushes now and reports per listing.
    let rows = env
        .db()
        .query(
            "SELECT marketplace, external_id, status, stock, http_status FROM integ.sync_product('acme', 'red')",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(2), "success");
    assert_eq!(rows[0].get::<_, Option<i32>>(3), Some(9));
    assert_eq!(rows[0].get::<_, Option<i32>>(4), Some(200));
}

#[test]
fn connect_without_a_master_key_is_a_clear_error() {
    let pg = Cluster::start("nokey", "", false);
    let mut db = pg.client();
    db.batch_execute("CREATE EXTENSION integration CASCADE").unwrap();
    let err = db
        .query_one(
            "SELECT integ.connect('t', 'mercadolibre', '{\"client_id\": 1, \"client_secret\": \"s\", \"refresh_token\": \"r\"}')",
            &[],
        )
        .unwrap_err();
    let msg = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(msg.contains("no credential master key: set integ.key_file"), "{msg}");
    assert_eq!(
        db.query_one("SELECT count(*) FROM integ.connections", &[])
            .unwrap()
            .get::<_, i64>(0),
        0
    );
}

#[test]
fn workers_survive_bad_jobs_reloads_and_crashes() {
    let env = Env::new("survive");
    let ls = env.listings(3);
    env.wait_idle(20, "initial sync");
    // A 400 (a quantity MercadoLibre refuses) dead-letters with the marketplace's reason; a
    // variation that does not exist is refused before any write; other listings keep syncing.
    env.db()
        .batch_execute(
            "INSERT INTO inventory VALUES ('acme', 'huge', 0), ('acme', 'novar', 0);
             SELECT integ.map_product('acme', 'mercadolibre', 'huge', 'MLM100000');",
        )
        .unwrap();
    env.sim.post(
        "/mercadolibre/items",
        json!({"id": "MLM555", "seller_id": SELLER, "variations": [{"id": 1}]}),
    );
    env.db()
        .batch_execute("SELECT integ.map_product('acme', 'mercadolibre', 'novar', 'MLM555', '{\"variation_id\": 9}')")
        .unwrap();
    env.db()
        .batch_execute("DELETE FROM integ.listings WHERE product_id = 'sku-0'")
        .unwrap();
    env.set_stock("huge", 100_000_000);
    env.set_stock("novar", 5);
    env.set_stock(&ls[1].0, 41);
    env.wait_for(20, "both bad listings dead-lettered", || {
        env.scalar_i64("SELECT count(DISTINCT listing_id) FROM integ.sync_jobs WHERE state = 'dead'") == 2
    });
    let reasons: Vec<String> = env
        .db()
        .query(
            "SELECT last_error FROM integ.sync_jobs WHERE state = 'dead' ORDER BY listing_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("HTTP 400") && r.contains("validation_error")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("variation 9 does not exist")),
        "{reasons:?}"
    );
    env.wait_for(10, "the healthy listing to sync", || item_has(&env, &ls[1].1, 41));

    // SIGHUP: settings are reloaded without a restart.
    env.db()
        .batch_execute("ALTER SYSTEM SET integ.http_concurrency = 4")
        .unwrap();
    env.db().batch_execute("SELECT pg_reload_conf()").unwrap();
    env.wait_for(10, "the worker to reload", || {
        env.pg.log().contains("reloaded its settings")
    });
    env.set_stock(&ls[2].0, 42);
    env.wait_for(10, "a push after the reload", || item_has(&env, &ls[2].1, 42));

    // A worker killed hard: the cluster recovers, the worker comes back, nothing is lost.
    let pid: i32 = env
        .db()
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'integration worker'",
            &[],
        )
        .unwrap()
        .get(0);
    env.sim
        .post("/faults", json!({"marketplace": "mercadolibre", "latency_ms": 300}));
    env.set_stock(&ls[2].0, 43);
    std::thread::sleep(Duration::from_millis(100));
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    env.sim.delete("/faults");
    std::thread::sleep(Duration::from_secs(1));
    env.reconnect();
    env.set_stock(&ls[1].0, 44);
    env.wait_for(60, "pushes after the worker crash", || {
        item_has(&env, &ls[2].1, 43) && item_has(&env, &ls[1].1, 44)
    });
    let new_pid: i32 = env
        .db()
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'integration worker'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_ne!(pid, new_pid);
    env.assert_no_secrets();
}

/// Tokens are refreshed before they expire, with no push waiting; a grant that died raises one
/// alert (a row and a NOTIFY) and the connection waits for re-authorization.
#[test]
fn tokens_are_refreshed_ahead_of_expiry_and_a_dead_grant_raises_one_alert() {
    let env = Env::with_conf("ahead", "integ.refresh_ahead = 3600");
    let ls = env.listings(1);
    env.set_stock(&ls[0].0, 5);
    env.wait_idle(10, "initial sync");
    let generation = || env.scalar_i64("SELECT generation FROM integ.credentials");
    let before = generation();
    // the stored token now expires in 10 minutes: inside the hour refreshed ahead
    env.db()
        .batch_execute("UPDATE integ.credential_store SET access_expires_at = now() + interval '10 minutes'")
        .unwrap();
    env.wait_for(20, "a refresh ahead of expiry", || generation() > before);
    assert_eq!(env.sim.counter("mercadolibre token refresh_token ok"), 1);
    assert!(
        env.scalar_i64("SELECT extract(epoch FROM access_expires_at - now())::bigint FROM integ.credentials") > 20_000,
        "the new token lasts 6 hours"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state <> 'done'"),
        0,
        "no push needed it"
    );

    let mut listener = env.pg.client();
    listener.batch_execute("LISTEN integ_alerts").unwrap();
    env.sim
        .post(&format!("/mercadolibre/sellers/{SELLER}/revoke"), json!({}));
    env.db()
        .batch_execute("UPDATE integ.credential_store SET access_expires_at = now() + interval '10 minutes'")
        .unwrap();
    env.wait_for(20, "needs_reauthorization", || {
        env.scalar_i64("SELECT count(*) FROM integ.connections WHERE status = 'needs_reauthorization'") == 1
    });
    let notes: Vec<String> = {
        use postgres::fallible_iterator::FallibleIterator;
        let mut n = listener.notifications();
        let mut it = n.timeout_iter(std::time::Duration::from_secs(5));
        std::iter::from_fn(|| it.next().ok().flatten().map(|n| n.payload().to_string()))
            .take(2)
            .collect()
    };
    let payload: serde_json::Value = serde_json::from_str(&notes[0]).expect("JSON payload");
    assert_eq!(payload["kind"], "needs_reauthorization");
    assert_eq!(payload["tenant_id"], TENANT);
    assert!(
        payload["message"].as_str().unwrap_or("").contains("invalid_grant")
            || payload["message"].as_str().unwrap_or("").contains("refused")
    );
    // a change waits (no attempt burnt), and no second alert however many times it is noticed
    env.set_stock(&ls[0].0, 6);
    std::thread::sleep(std::time::Duration::from_secs(12));
    assert_eq!(env.scalar_i64("SELECT count(*) FROM integ.alerts"), 1, "one alert");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'pending' AND attempts = 0"),
        1
    );
    let id = env.scalar_i64("SELECT id FROM integ.alerts");
    env.db().execute("SELECT integ.acknowledge_alert($1)", &[&id]).unwrap();
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.alerts WHERE acknowledged_at IS NOT NULL"),
        1
    );
    env.assert_no_secrets();
}
