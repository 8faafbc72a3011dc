//! Capture by logical message: the application's transaction writes nothing but a WAL message,
//! the capture worker turns it into outbox work, and neither switching capture paths nor a
//! crash loses a change or lets an older one overwrite a newer one.

use e2e::*;
use postgres::Client;
use std::time::Duration;

fn mode(env: &Env) -> String {
    env.scalar_text("SELECT mode FROM integ.capture")
}

fn applied(env: &Env) -> i64 {
    env.scalar_i64("SELECT messages_applied FROM integ.capture")
}

fn slots(env: &Env) -> i64 {
    env.scalar_i64("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'integ_capture'")
}

fn desired(env: &Env, sku: &str) -> i64 {
    env.scalar_i64(&format!(
        "SELECT coalesce(desired_stock, -1)::bigint FROM integ.listings WHERE product_id = '{sku}'"
    ))
}

fn session(env: &Env) -> Client {
    env.pg.client()
}

/// Whether the capture worker is waiting for a row or transaction lock.
fn capture_waits_on_a_lock(env: &Env) -> bool {
    env.scalar_i64(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'integration capture' AND wait_event_type = 'Lock'",
    ) == 1
}

/// `n` synced listings, with capture by message running.
fn capturing(env: &Env, n: usize) -> Vec<(String, String)> {
    let ls = env.listings(n);
    env.wait_for(10, "capture by message to start", || mode(env) == "message");
    env.wait_idle(20, "initial sync");
    ls
}

#[test]
fn the_application_transaction_writes_only_a_message_and_the_change_arrives() {
    let env = Env::new("capture_message");
    let ls = capturing(&env, 2);
    let before = applied(&env);
    let jobs_before = env.scalar_i64("SELECT count(*) FROM integ.sync_jobs");
    let (sku, item) = ls[0].clone();
    {
        let mut db = env.db();
        let mut tx = db.transaction().unwrap();
        tx.execute("UPDATE inventory SET qty = 11 WHERE sku = $1", &[&sku])
            .unwrap();
        // inside the application's transaction: no listing written, no job created
        let jobs: i64 = tx
            .query_one("SELECT count(*) FROM integ.sync_jobs", &[])
            .unwrap()
            .get(0);
        let desired: Option<i32> = tx
            .query_one(
                "SELECT desired_stock FROM integ.listings WHERE product_id = $1",
                &[&sku],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            jobs, jobs_before,
            "the trigger created a job in the application's transaction"
        );
        assert_ne!(
            desired,
            Some(11),
            "the trigger wrote the listing in the application's transaction"
        );
        tx.commit().unwrap();
    }
    env.wait_for(10, "the captured change to reach the sandbox", || {
        env.sim.item_quantity(&item) == Some(11)
    });
    assert_eq!(applied(&env) - before, 1, "one message for one update");
    // a rolled-back change is never applied
    {
        let mut db = env.db();
        let mut tx = db.transaction().unwrap();
        tx.execute("UPDATE inventory SET qty = 99 WHERE sku = $1", &[&sku])
            .unwrap();
        tx.rollback().unwrap();
    }
    env.set_stock(&ls[1].0, 12);
    env.wait_for(10, "the next change to arrive", || {
        env.sim.item_quantity(&ls[1].1) == Some(12)
    });
    env.wait_idle(10, "the queue to drain");
    assert_eq!(env.sim.item_quantity(&item), Some(11));
    assert_eq!(desired(&env, &sku), 11);
    // the slot keeps little: the worker logs running-transaction records so it can move on
    let retained = env.scalar_i64("SELECT retained_bytes FROM integ.capture");
    println!("CAPTURE retained WAL after the test: {retained} bytes");

    // DROP EXTENSION takes the slot with it
    env.db().batch_execute("DROP EXTENSION integration CASCADE").unwrap();
    env.wait_for(10, "the slot to be dropped with the extension", || slots(&env) == 0);
}

#[test]
fn switching_paths_drains_the_slot_and_an_older_message_never_overwrites_a_newer_change() {
    let env = Env::new("capture_switch");
    let ls = capturing(&env, 1);
    let (sku, item) = ls[0].clone();

    // A emits a message (5) and stays open; H is an older transaction that also stays open.
    let mut a = session(&env);
    let mut h = session(&env);
    a.batch_execute("BEGIN").unwrap();
    a.execute("UPDATE inventory SET qty = 5 WHERE sku = $1", &[&sku])
        .unwrap();
    h.batch_execute("BEGIN; SELECT pg_current_xact_id()").unwrap();
    env.db()
        .batch_execute("ALTER SYSTEM SET integ.logical_capture = off")
        .unwrap();
    env.db().batch_execute("SELECT pg_reload_conf()").unwrap();
    env.wait_for(10, "the trigger to go back to the table path", || mode(&env) == "table");
    let before = applied(&env);
    a.batch_execute("COMMIT").unwrap();
    // a newer change by the table path: written in its own transaction, synchronously
    env.set_stock(&sku, 7);
    assert_eq!(desired(&env, &sku), 7);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        slots(&env),
        1,
        "the slot was dropped while an older transaction was still open"
    );
    h.batch_execute("COMMIT").unwrap();
    env.wait_for(10, "the slot to be drained and dropped", || slots(&env) == 0);
    assert_eq!(
        applied(&env) - before,
        1,
        "A's message was not read before the slot was dropped"
    );
    env.wait_idle(20, "the queue to drain");
    assert_eq!(desired(&env, &sku), 7, "an older message overwrote a newer change");
    env.wait_for(10, "the sandbox to hold the newest stock", || {
        env.sim.item_quantity(&item) == Some(7)
    });

    // and back: a new slot, changes by message again
    env.db()
        .batch_execute("ALTER SYSTEM RESET integ.logical_capture")
        .unwrap();
    env.db().batch_execute("SELECT pg_reload_conf()").unwrap();
    env.wait_for(10, "capture by message to resume", || {
        mode(&env) == "message" && slots(&env) == 1
    });
    env.set_stock(&sku, 8);
    env.wait_for(10, "a change by message after the switch back", || {
        env.sim.item_quantity(&item) == Some(8)
    });
}

#[test]
fn killing_the_capture_worker_loses_no_change() {
    let env = Env::new("capture_crash");
    let ls = capturing(&env, 20);
    let pid = env.capture_pid();
    for (i, (sku, _)) in ls.iter().enumerate() {
        env.set_stock(sku, 500 + i as i32);
        if i == 9 {
            // SIGKILL: the postmaster resets every process; unread messages stay in the slot
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(1));
            env.reconnect();
        }
    }
    // the changes made before the kill may or may not have been read; all must arrive
    for (i, (_, item)) in ls.iter().enumerate() {
        env.wait_for(60, "every change to arrive after the capture worker was killed", || {
            env.sim.item_quantity(item) == Some(500 + i as i64)
        });
    }
    env.wait_idle(20, "the queue to drain");
    assert_eq!(mode(&env), "message");
}

#[test]
fn subtransactions_aborts_and_prepared_transactions_are_followed() {
    let env = Env::with_conf("capture_xacts", "max_prepared_transactions = 5");
    let ls = capturing(&env, 3);
    let qty = |i: usize| env.sim.item_quantity(&ls[i].1);
    let sku = |i: usize| ls[i].0.clone();
    let mut db = session(&env);
    // a released savepoint commits with its parent; a rolled-back one does not; more than 64
    // subtransactions (PostgreSQL then logs their assignment separately) are all followed
    let mut script = format!(
        "BEGIN; UPDATE inventory SET qty = 1 WHERE sku = '{0}';
         SAVEPOINT a; UPDATE inventory SET qty = 2 WHERE sku = '{1}'; RELEASE a;
         SAVEPOINT b; UPDATE inventory SET qty = 3 WHERE sku = '{0}'; ROLLBACK TO b;",
        sku(0),
        sku(1)
    );
    for i in 0..70 {
        script.push_str(&format!(
            "SAVEPOINT s{i}; UPDATE inventory SET qty = {} WHERE sku = '{}';",
            100 + i,
            sku(2)
        ));
    }
    script.push_str("COMMIT;");
    db.batch_execute(&script).unwrap();
    env.wait_for(10, "the committed subtransactions to arrive", || {
        qty(0) == Some(1) && qty(1) == Some(2) && qty(2) == Some(169)
    });
    // an aborted transaction changes nothing
    db.batch_execute(&format!(
        "BEGIN; UPDATE inventory SET qty = 50 WHERE sku = '{}'; ROLLBACK",
        sku(0)
    ))
    .unwrap();
    // prepared transactions count when (and only if) COMMIT PREPARED comes
    db.batch_execute(&format!("BEGIN; UPDATE inventory SET qty = 7 WHERE sku = '{}'", sku(0)))
        .unwrap();
    // p1's message is already in the WAL, before this position
    let after_message: String = db
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .unwrap()
        .get(0);
    db.batch_execute("PREPARE TRANSACTION 'p1'").unwrap();
    db.batch_execute(&format!(
        "BEGIN; UPDATE inventory SET qty = 8 WHERE sku = '{}'; PREPARE TRANSACTION 'p2'",
        sku(1)
    ))
    .unwrap();
    env.wait_idle(20, "the capture to read past the prepared transactions");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (qty(0), qty(1)),
        (Some(1), Some(2)),
        "a prepared transaction was applied before its commit"
    );
    assert_eq!(
        env.scalar_i64(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'integ_capture' AND restart_lsn < '{after_message}'"
        )),
        1,
        "the slot moved past messages whose transaction is still prepared"
    );
    db.batch_execute("ROLLBACK PREPARED 'p2'").unwrap();
    db.batch_execute("COMMIT PREPARED 'p1'").unwrap();
    env.wait_for(10, "COMMIT PREPARED to arrive", || qty(0) == Some(7));
    env.wait_idle(20, "the queue to drain");
    assert_eq!((qty(0), qty(1), qty(2)), (Some(7), Some(2), Some(169)));
    assert_eq!(
        desired(&env, &sku(1)),
        2,
        "a rolled-back prepared transaction was applied"
    );
}

/// The capture's apply and a worker's claim of the listing's pending job run at once: the apply
/// sees the job pending (and so creates none), the worker claims it and reads the listing
/// before the apply commits, and pushes the older stock. The newer one must still reach the
/// marketplace: the worker's recording of the push waits for the apply's lock on the listing,
/// sees the newer stock and enqueues it. The apply is held open by a second tenant's job that
/// the test inserts and does not commit yet.
#[test]
fn a_change_applied_while_its_job_is_being_claimed_still_arrives() {
    let mut env = Env::new("capture_claim_race");
    let ls = capturing(&env, 1);
    let (sku, item) = ls[0].clone();
    let blocker = "zz-blocker";
    env.add_tenant(blocker, SELLER + 1, serde_json::json!({}));
    let (blocked_sku, _) = env.listings_for(blocker, SELLER + 1, 200_000, 1)[0].clone();
    env.wait_idle(20, "both listings synced");
    env.db()
        .batch_execute(&format!(
            "SELECT integ.pause('{TENANT}', 'mercadolibre'); SELECT integ.pause('{blocker}', 'mercadolibre')"
        ))
        .unwrap();
    env.set_stock(&sku, 1);
    env.wait_captured(10, "the first change");
    let desired_here = format!(
        "SELECT desired_stock::bigint FROM integ.listings WHERE tenant_id = '{TENANT}' AND product_id = '{sku}'"
    );
    assert_eq!(env.scalar_i64(&desired_here), 1);
    // a job for the blocker's listing, not committed: the next apply, which must create one
    // (none is pending), waits for it after it has updated every listing
    let mut holder = session(&env);
    let mut hold = holder.transaction().unwrap();
    hold.execute(
        "INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace)
         SELECT id, connection_id, tenant_id, marketplace FROM integ.listings WHERE tenant_id = $1",
        &[&blocker],
    )
    .unwrap();
    env.db()
        .execute(
            "UPDATE inventory SET qty = 2 WHERE (tenant_id = $1 AND sku = $2) OR (tenant_id = $3 AND sku = $4)",
            &[&TENANT, &sku, &blocker, &blocked_sku],
        )
        .unwrap();
    env.wait_for(10, "the capture's apply to wait for the blocker's job", || {
        capture_waits_on_a_lock(&env)
    });
    // the worker claims the pending job now and reads the listing before the apply commits
    env.db()
        .batch_execute(&format!("SELECT integ.resume('{TENANT}', 'mercadolibre')"))
        .unwrap();
    env.wait_for(10, "the older stock to be pushed", || {
        env.sim.item_quantity(&item) == Some(1)
    });
    hold.commit().unwrap();
    env.wait_for(10, "the newer stock to be pushed", || {
        env.sim.item_quantity(&item) == Some(2)
    });
    env.wait_for(10, "the tenant's queue to settle", || {
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.sync_jobs WHERE tenant_id = '{TENANT}' AND state <> 'done'"
        )) == 0
    });
    assert_eq!(env.scalar_i64(&desired_here), 2);
    assert_eq!(env.sim.item_quantity(&item), Some(2));
}

/// The capture applies a batch in one statement, whose snapshot can be older than a worker's
/// claim: a listing whose pending job was claimed, pushed and recorded while the statement was
/// held up (here by a lock on another listing of the same batch) has no pending job any more
/// when the statement reaches it, and must get a new one. Only ON CONFLICT knows; a check
/// against the statement's snapshot lost the change.
#[test]
fn a_change_applied_after_its_pending_job_was_claimed_and_recorded_is_pushed() {
    let env = Env::new("capture_claim_race");
    let ls = capturing(&env, 2);
    let ((held_sku, _), (sku, item)) = (ls[0].clone(), ls[1].clone());
    for s in [&held_sku, &sku] {
        env.set_stock(s, 5);
    }
    env.wait_for(10, "the first stock", || env.sim.item_quantity(&item) == Some(5));
    env.wait_idle(20, "the first pushes recorded");
    env.db()
        .batch_execute(&format!("SELECT integ.pause('{TENANT}', 'mercadolibre')"))
        .unwrap();
    let job = env.scalar_i64(&format!(
        "INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace)
         SELECT id, connection_id, tenant_id, marketplace FROM integ.listings WHERE product_id = '{sku}'
         RETURNING id"
    ));
    let mut holder = session(&env);
    let mut hold = holder.transaction().unwrap();
    hold.execute(
        "SELECT 1 FROM integ.listings WHERE product_id = $1 FOR UPDATE",
        &[&held_sku],
    )
    .unwrap();
    // one transaction changes both, the held listing first: the capture's statement takes its
    // snapshot (the job pending) and waits for the held listing
    env.db()
        .batch_execute(&format!(
            "BEGIN; UPDATE inventory SET qty = 9 WHERE sku = '{held_sku}';
                    UPDATE inventory SET qty = 9 WHERE sku = '{sku}'; COMMIT;"
        ))
        .unwrap();
    env.wait_for(10, "the capture's apply to wait for the held listing", || {
        capture_waits_on_a_lock(&env)
    });
    // the worker claims the job, finds the marketplace holding 5, and records that
    env.db()
        .batch_execute(&format!("SELECT integ.resume('{TENANT}', 'mercadolibre')"))
        .unwrap();
    env.wait_for(10, "the claimed job to be recorded", || {
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.sync_jobs WHERE id = {job} AND state = 'done' AND NOT recheck"
        )) == 1
    });
    hold.rollback().unwrap();
    env.wait_for(10, "the change applied after the claim to be pushed", || {
        env.sim.item_quantity(&item) == Some(9)
    });
}

/// A worker claims a listing's pending job and finds nothing to push (the marketplace holds the
/// stock it reads) while a transaction that found that job pending, and so enqueued nothing,
/// is still writing a new stock into the listing. The worker's "did the stock move?" check
/// must look again once that transaction has committed, and enqueue the new stock. (Table
/// path, so the test holds the writing transaction open; the capture's apply meets the same
/// check.)
#[test]
fn a_stock_written_while_its_pending_job_is_skipped_is_pushed() {
    let env = Env::with_conf("skip_race", "integ.logical_capture = off");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    env.set_stock(&sku, 5);
    env.wait_for(10, "the first stock", || env.sim.item_quantity(&item) == Some(5));
    env.wait_idle(10, "the first push to be recorded");
    env.db()
        .batch_execute(&format!(
            "SELECT integ.pause('{TENANT}', 'mercadolibre');
             INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace)
             SELECT id, connection_id, tenant_id, marketplace FROM integ.listings WHERE product_id = '{sku}';"
        ))
        .unwrap();
    // the application's transaction: the listing gets 7, the pending job above absorbs it
    let mut app = session(&env);
    let mut tx = app.transaction().unwrap();
    tx.execute("UPDATE inventory SET qty = 7 WHERE sku = $1", &[&sku])
        .unwrap();
    let skips = || env.scalar_i64("SELECT count(*) FROM integ.sync_log WHERE outcome = 'skipped'");
    let skipped_before = skips();
    env.db()
        .batch_execute(&format!("SELECT integ.resume('{TENANT}', 'mercadolibre')"))
        .unwrap();
    // the worker claims the job, reads 5 (the update is not committed), skips, and checks again
    env.wait_for(10, "the worker to skip the job, or to wait for the open transaction", || {
        skips() > skipped_before
            || env.scalar_i64(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'integration worker' AND wait_event_type = 'Lock'",
            ) > 0
    });
    tx.commit().unwrap();
    env.wait_for(10, "the new stock to reach the marketplace", || {
        env.sim.item_quantity(&item) == Some(7)
    });
}

/// The look a skipped or dead-lettered job owes its listing is kept in the job row, not in the
/// worker's memory: one left flagged by a worker that stopped before looking (made here by
/// hand: a done job flagged with the stock it pushed, and a listing whose stock moved on with no
/// job) is taken up by a running worker, and the newer stock is pushed.
#[test]
fn a_recheck_left_by_a_stopped_worker_is_still_made() {
    let env = Env::with_conf("recheck_left", "integ.logical_capture = off");
    let (sku, item) = env.listings(1)[0].clone();
    env.set_stock(&sku, 5);
    env.wait_for(10, "the first stock", || env.sim.item_quantity(&item) == Some(5));
    env.wait_idle(10, "the first push to be recorded");
    env.db()
        .batch_execute(&format!(
            "UPDATE integ.listings SET desired_stock = 9 WHERE product_id = '{sku}';
             INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace, state, pushed_stock,
                                          recheck, recheck_stock)
             SELECT id, connection_id, tenant_id, marketplace, 'done', 5, true, 5
               FROM integ.listings WHERE product_id = '{sku}';"
        ))
        .unwrap();
    env.wait_for(20, "the flagged job's listing to be looked at and pushed", || {
        env.sim.item_quantity(&item) == Some(9)
    });
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE recheck"),
        0,
        "the flag is cleared once looked at"
    );
}

#[test]
fn the_capture_workers_writes_reach_the_statistics_autovacuum_reads() {
    let env = Env::new("capture_stats");
    let ls = capturing(&env, 5);
    env.db()
        .batch_execute(&format!("SELECT integ.pause('{TENANT}', 'mercadolibre')"))
        .unwrap();
    // this session's own writes to the listings (the mapping) are counted when it ends
    env.reconnect();
    let updates = || {
        env.scalar_i64("SELECT n_tup_upd FROM pg_stat_user_tables WHERE schemaname = 'integ' AND relname = 'listings'")
    };
    let before = updates();
    let rounds = 4;
    for round in 1..=rounds {
        for (sku, _) in &ls {
            env.set_stock(sku, 100 + round);
        }
        env.wait_for(10, "the changes to be captured", || {
            ls.iter().all(|(sku, _)| desired(&env, sku) == 100 + round as i64)
        });
    }
    // the capture worker updated each listing once per round; nothing else writes them while
    // the connection is paused, and this session changed only the inventory
    let made = (rounds as usize * ls.len()) as i64;
    env.wait_for(15, "the capture worker's updates to be counted", || {
        updates() - before >= made
    });
}

/// A heavy stream earns the capture a wait between reads (`integ.capture_cpu_percent`, here 1%
/// of a core so that the wait is seconds long); once the stream pauses the wait ends, and a
/// change committed after it is applied at once instead of waiting the wait out.
#[test]
fn a_change_after_a_heavy_stream_is_not_held_back_by_its_pace() {
    let env = Env::with_conf(
        "capture_pace",
        "integ.capture_cpu_percent = 1\ninteg.capture_max_delay = '60s'",
    );
    env.wait_for(10, "capture by message to start", || mode(&env) == "message");
    let n = 10_000;
    env.db()
        .batch_execute(&format!(
            "INSERT INTO inventory SELECT '{TENANT}', 'p' || i, 0 FROM generate_series(1, {n}) i;
             SELECT integ.map_product('{TENANT}', 'mercadolibre', 'p' || i, 'MLM' || i) FROM generate_series(1, {n}) i;
             SELECT integ.pause('{TENANT}', 'mercadolibre');"
        ))
        .expect("setup");
    env.wait_captured(120, "the setup to be captured");
    // consecutive reads of 10,000 changes each: each costs tens of milliseconds, and the
    // next read waits a hundred times that
    for _ in 0..4 {
        env.db()
            .batch_execute("UPDATE inventory SET qty = qty + 1")
            .expect("update");
    }
    env.wait_captured(180, "the stream to be captured");
    assert_eq!(desired(&env, "p1"), 4);
    std::thread::sleep(Duration::from_millis(300));
    let committed = std::time::Instant::now();
    env.set_stock("p1", 777);
    env.wait_for(60, "the change after the stream", || desired(&env, "p1") == 777);
    let took = committed.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the change after the stream waited {took:?} (the stream's pace would hold it for seconds)"
    );
}
