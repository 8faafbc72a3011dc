//! Stock changes the capture had not applied when its replication slot went away — a standby
//! promoted after the primary died, a base backup restored, the slot dropped by hand — still
//! reach the marketplaces: the capture finds the slot missing while `integ.capture_state` says
//! it was capturing, reads EGDC's stock again and raises one alert. Reconciliation repairs a
//! listing whose EGDC stock went stale however it happened.

use e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn capture_pid(env: &Env) -> i32 {
    env.db()
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'integration capture'",
            &[],
        )
        .expect("the capture worker runs")
        .get(0)
}

/// `n` synced listings (stock 5), captured by message.
fn capturing(env: &Env, n: usize) -> Vec<(String, String)> {
    let ls = env.listings(n);
    env.wait_for(10, "capture by message", || {
        env.scalar_text("SELECT mode FROM integ.capture") == "message"
    });
    for (sku, _) in &ls {
        env.set_stock(sku, 5);
    }
    env.wait_idle(20, "initial sync");
    ls
}

fn resync_alerts(env: &Env) -> i64 {
    env.scalar_i64("SELECT count(*) FROM integ.alerts WHERE kind = 'capture_resynced'")
}

/// Replaces the environment's cluster (its old one is stopped and removed) and reconnects.
fn move_to(env: &mut Env, cluster: Cluster) {
    drop(std::mem::replace(&mut env.pg, cluster));
    env.reconnect();
}

#[test]
fn a_change_committed_before_a_failover_reaches_the_marketplace_from_the_promoted_standby() {
    let mut env = Env::new("failover");
    let ls = capturing(&env, 3);
    let standby = Cluster::base_backup_of(&env.pg, "failover-standby", true);
    standby.pg_ctl_start();
    env.wait_for(20, "the standby to stream", || {
        env.scalar_i64("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == 1
    });
    // the capture is slow (stopped): the change commits, is replayed, never applied
    let capture = capture_pid(&env);
    signal(capture, "STOP");
    env.set_stock(&ls[0].0, 77);
    let committed = env.scalar_text("SELECT pg_current_wal_lsn()::text");
    let mut replica = standby.client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica
        .query_one(&format!("SELECT pg_last_wal_replay_lsn() >= '{committed}'"), &[])
        .map(|r| !r.get::<_, bool>(0))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the standby did not replay the change");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(replica);
    assert_eq!(
        env.scalar_i64("SELECT desired_stock::bigint FROM integ.listings WHERE product_id = 'sku-0'"),
        5,
        "the capture applied the change before the primary died"
    );
    assert_eq!(env.sim.item_quantity(&ls[0].1), Some(5), "pushed before the failover");
    signal(env.pg.postmaster_pid(), "KILL");
    signal(capture, "KILL");
    standby.promote();
    let promoted = Instant::now();
    move_to(&mut env, standby);
    env.wait_for(15, "the change committed before the failover", || {
        env.sim.item_quantity(&ls[0].1) == Some(77)
    });
    println!(
        "FAILOVER the change reached the sandbox {} ms after the promotion",
        promoted.elapsed().as_millis()
    );
    assert_eq!(resync_alerts(&env), 1, "one alert");
    let log = env.pg.log();
    assert!(
        log.contains("replication slot integ_capture is missing"),
        "{}",
        tail(&log, 30)
    );
    // the new primary captures by message from its own slot: a later change arrives
    env.wait_for(10, "capture by message on the new primary", || {
        env.scalar_text("SELECT mode FROM integ.capture") == "message"
    });
    env.set_stock(&ls[1].0, 78);
    env.wait_for(15, "a change after the promotion", || {
        env.sim.item_quantity(&ls[1].1) == Some(78)
    });
    assert_eq!(env.sim.item_quantity(&ls[2].1), Some(5));
    assert_eq!(resync_alerts(&env), 1, "still one alert");
    env.assert_no_secrets();
}

#[test]
fn a_base_backup_taken_with_unapplied_changes_restores_them() {
    let mut env = Env::new("restore");
    let ls = capturing(&env, 4);
    let capture = capture_pid(&env);
    signal(capture, "STOP");
    for (i, (sku, _)) in ls.iter().enumerate() {
        env.set_stock(sku, 40 + i as i32);
    }
    let backup = Cluster::base_backup_of(&env.pg, "restore-backup", false);
    // the old cluster is gone
    signal(env.pg.postmaster_pid(), "KILL");
    signal(capture, "KILL");
    backup.pg_ctl_start();
    move_to(&mut env, backup);
    for (i, (_, item)) in ls.iter().enumerate() {
        env.wait_for(15, "every product's stock from the restored cluster", || {
            env.sim.item_quantity(item) == Some(40 + i as i64)
        });
    }
    assert_eq!(resync_alerts(&env), 1);
}

#[test]
fn a_slot_dropped_by_hand_with_unapplied_changes_loses_nothing() {
    let env = Env::new("slot-dropped");
    let ls = capturing(&env, 3);
    let capture = capture_pid(&env);
    signal(capture, "STOP");
    for (i, (sku, _)) in ls.iter().enumerate() {
        env.set_stock(sku, 60 + i as i32);
    }
    env.db()
        .batch_execute("SELECT pg_drop_replication_slot('integ_capture')")
        .expect("drop the slot");
    signal(capture, "CONT");
    for (i, (_, item)) in ls.iter().enumerate() {
        env.wait_for(15, "every product's stock", || {
            env.sim.item_quantity(item) == Some(60 + i as i64)
        });
    }
    env.wait_for(10, "the resync's alert", || resync_alerts(&env) == 1);
    env.wait_for(10, "capture by message again", || {
        env.scalar_text("SELECT mode FROM integ.capture") == "message"
    });
    env.set_stock(&ls[0].0, 66);
    env.wait_for(15, "a later change", || env.sim.item_quantity(&ls[0].1) == Some(66));
    assert_eq!(resync_alerts(&env), 1);
}

#[test]
fn reconciliation_repairs_a_stale_listing_from_the_inventory_table() {
    let env = Env::new("stale-desired");
    let ls = capturing(&env, 2);
    env.set_stock(&ls[0].0, 40);
    env.wait_idle(15, "40 synced");
    // the listing and the marketplace agree on 12; EGDC's table says 40
    env.db()
        .batch_execute(&format!(
            "UPDATE integ.listings SET desired_stock = 12 WHERE product_id = '{}'",
            ls[0].0
        ))
        .expect("stale listing");
    env.sim.post(
        "/mercadolibre/items",
        json!({"id": ls[0].1, "seller_id": SELLER, "available_quantity": 12}),
    );
    let report: serde_json::Value = env
        .db()
        .query_one("SELECT integ.reconcile($1)", &[&TENANT])
        .expect("reconcile")
        .get(0);
    env.wait_for(15, "EGDC's table value on the marketplace", || {
        env.sim.item_quantity(&ls[0].1) == Some(40)
    });
    assert_eq!(env.sim.item_quantity(&ls[1].1), Some(5), "{report}");
    assert_eq!(
        env.scalar_i64(&format!(
            "SELECT desired_stock::bigint FROM integ.listings WHERE product_id = '{}'",
            ls[0].0
        )),
        40
    );
}
