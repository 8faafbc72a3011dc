//! Chaos soak (issue 22): four marketplaces, 50 tenants (tenant i on marketplace i % 4, each with
//! 4 listings of its own EGDC products), and for some minutes a steady stream of EGDC stock
//! changes and marketplace orders (some cancelled later), while the sandbox injects faults on
//! every marketplace (5xx, timeouts, dropped answers; 429s from the marketplaces' own rate limits,
//! set tight) and PostgreSQL's postmaster is killed with SIGKILL and restarted at random moments.
//! Orders are made with `"send": false`: the soak hands each delivery to `integ.receive_webhook`
//! itself and keeps it, retrying, until it is answered, as a marketplace would (some are handed
//! twice on purpose). Every stock change is recorded in `soak_changes` in its own transaction, so
//! a commit in doubt across a crash is counted exactly.
//! A sale is made only of what the marketplace shows in stock, as a marketplace would.
//! Then, faults cleared and the queue drained: no drift (sandbox = EGDC, 0 where EGDC's stock went
//! below 0 because a sale outran another channel's update; and `integ.reconcile`
//! finds nothing to do), every order's lines in `integ.order_lines` exactly once, EGDC's stock
//! exactly initial + changes - orders, no secret in the log or tables, nothing dead.
//! `bench/run soak [minutes]` (default 3, or `BENCH_SOAK_MINUTES`); `BENCH_SOAK_SEED` fixes the
//! soak's own random choices (printed; the sandbox's faults are drawn by the sandbox);
//! `BENCH_SOAK_429=0` leaves out the tight rate limits (no 429s or Shopify THROTTLED).

use crate::env_number;
use e2e::*;
use postgres::{Client, NoTls};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod checks;
mod crash;
mod streams;
use checks::*;
use crash::*;
use streams::*;

const MARKETPLACES: [&str; 4] = ["mercadolibre", "shopify", "tiktok", "shein"];
const TENANTS: usize = 50;
const PER_TENANT: usize = 4;
const INITIAL: i64 = 100;
/// One stock change every 50 ms, one order (or cancellation) every 250 ms.
const STOCK_EVERY: Duration = Duration::from_millis(50);
const ORDER_EVERY: Duration = Duration::from_millis(250);
/// A tenth of the order stream cancels an earlier order; 3% of answered deliveries are handed
/// over again.
const CANCEL_SHARE: f64 = 0.1;
const RESEND_SHARE: f64 = 0.03;

/// The soak's length in minutes: the CLI argument after `soak`, else `BENCH_SOAK_MINUTES`, else 3.
pub fn minutes(arg: Option<&str>) -> f64 {
    arg.map(str::to_string)
        .or_else(|| std::env::var("BENCH_SOAK_MINUTES").ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|m| *m > 0.0 && m.is_finite())
        .unwrap_or(3.0)
}

struct Tenant {
    name: String,
    marketplace: &'static str,
    /// MercadoLibre seller id, Shopify shop, TikTok Shop cipher or SHEIN openKeyId.
    account: String,
    /// TikTok Shop: the shop's access token, to read its orders' lines at the end.
    token: Option<String>,
    /// (EGDC product, the listing's id on the marketplace)
    listings: Vec<(String, String)>,
}

impl Tenant {
    fn product_of(&self, external: &str) -> String {
        self.listings
            .iter()
            .find(|(_, e)| e == external)
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| format!("(unknown listing {external})"))
    }
}

/// An order line: (line id, EGDC product, quantity).
type Line = (String, String, i64);

/// An order the soak made: its lines, sorted.
#[derive(Clone, Debug)]
struct Order {
    marketplace: &'static str,
    tenant: usize,
    id: String,
    lines: Vec<Line>,
    cancelled: bool,
    /// When it was made in the sandbox (and cancelled there), in Unix seconds.
    made_at: f64,
    cancelled_at: Option<f64>,
}

/// A delivery the marketplace keeps until it is answered.
#[derive(Clone)]
struct Delivery {
    marketplace: &'static str,
    headers: Value,
    body: Vec<u8>,
    resent: bool,
}

#[derive(Default)]
struct StockStats {
    committed: u64,
    /// Changes that would have made the stock negative (not made).
    refused: u64,
    /// Calls that failed (PostgreSQL down or going): not made, or committed in doubt.
    failed: u64,
}

#[derive(Default)]
struct Handover {
    orders: BTreeMap<&'static str, u64>,
    cancellations: BTreeMap<&'static str, u64>,
    handed: u64,
    resent: u64,
    answers: BTreeMap<String, u64>,
    /// Attempts at handing a delivery over that failed (no connection, or the call failed): the
    /// delivery was kept for another try.
    retries: u64,
    rejected: Vec<String>,
    left: usize,
    /// Sales not made: the tenant showed nothing in stock.
    sold_out: u64,
}

/// Sets `stop` when dropped (and `abort` when dropped by a panic).
struct StopOnDrop<'a>(&'a AtomicBool, &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.1.store(true, Ordering::Relaxed);
        }
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Kill {
    at: f64,
    /// Until the killed server's last process was gone.
    orphans_s: f64,
    down_s: f64,
    forced: usize,
}

pub fn soak(minutes: f64) {
    let seed: u64 = env_number("BENCH_SOAK_SEED", 22);
    println!("SOAK {minutes} minutes, seed {seed} (BENCH_SOAK_SEED)");
    let mut env = Env::with_conf(
        "bench-soak",
        "integ.max_attempts = 1000\ninteg.backoff_base = 20\ninteg.backoff_max = 500\ninteg.reconcile_interval = 0",
    );
    let setup_started = Instant::now();
    let tenants = setup(&mut env);
    env.db()
        .batch_execute(&format!(
            "UPDATE inventory SET qty = {INITIAL} WHERE tenant_id <> '{TENANT}';
             CREATE TABLE soak_changes (id bigserial PRIMARY KEY, tenant text NOT NULL, product text NOT NULL,
                                        delta integer NOT NULL, at timestamptz NOT NULL DEFAULT now());"
        ))
        .expect("initial stock");
    env.wait_idle(300, "the initial stock to reach every listing");
    let listings: usize = tenants.iter().map(|t| t.listings.len()).sum();
    let per_marketplace: Vec<String> = MARKETPLACES
        .iter()
        .map(|m| format!("{} {m}", tenants.iter().filter(|t| t.marketplace == *m).count()))
        .collect();
    println!(
        "SOAK setup: {} tenants ({}), {listings} listings at stock {INITIAL}, synced in {:.1} s",
        tenants.len(),
        per_marketplace.join(", "),
        setup_started.elapsed().as_secs_f64()
    );
    let stale: Vec<String> = drift(&env, &tenants).into_iter().map(|d| d.3).collect();
    assert!(stale.is_empty(), "the initial stock did not reach: {stale:?}");

    let counters_before = env.sim.get("/stats")["counters"].clone();
    let log_before = env.scalar_i64("SELECT coalesce(max(id), 0) FROM integ.sync_log");
    let products: Vec<(String, String)> = tenants
        .iter()
        .flat_map(|t| t.listings.iter().map(|(p, _)| (t.name.clone(), p.clone())))
        .collect();
    // BENCH_SOAK_429=0 leaves the marketplaces' rate limits alone (no 429 / THROTTLED)
    let throttle = !matches!(std::env::var("BENCH_SOAK_429").as_deref(), Ok("0" | "off" | "no"));
    println!(
        "SOAK faults on every marketplace: 5% errors, 2% timeouts, 3% dropped answers{}",
        if throttle {
            "; 429s from tight rate limits (3 requests/s per seller, shop and supplier; Shopify: a 40-point bucket)"
        } else {
            "; no 429s (BENCH_SOAK_429=0)"
        }
    );
    inject_faults(&env.sim, throttle);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let started_unix = unix_now();
    let end = start + Duration::from_secs_f64(minutes * 60.0);
    let mut kill_rng = StdRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let abort = AtomicBool::new(false);
    let (stock, (mut orders, handover), kills) = std::thread::scope(|s| {
        let (sim, port, stop, products, tenants) = (&env.sim, env.pg.port, &stop, &products, &tenants);
        // a panic here (a restart that fails) stops the streams, so the scope can end
        let _stop = StopOnDrop(stop, &abort);
        let abort = &abort;
        let stock = s.spawn(move || stock_stream(port, products, seed, stop));
        let orders = s.spawn(move || order_stream(sim, port, tenants, seed.wrapping_add(1), stop, abort));
        let mut kills = Vec::new();
        let mut next_kill = start + Duration::from_secs(kill_rng.gen_range(20..=60));
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if now >= next_kill {
                let k = crash_and_restart(&env, &mut kill_rng, start);
                println!(
                    "SOAK postmaster killed at {:.1} s: its processes gone after {:.2} s, back after {:.2} s",
                    k.at, k.orphans_s, k.down_s
                );
                kills.push(k);
                next_kill = Instant::now() + Duration::from_secs(kill_rng.gen_range(20..=60));
                continue;
            }
            std::thread::sleep((next_kill.min(end) - now).min(Duration::from_millis(200)));
        }
        stop.store(true, Ordering::Relaxed);
        clear_faults(sim);
        (
            stock.join().expect("the stock stream"),
            orders.join().expect("the order stream"),
            kills,
        )
    });
    let streamed = start.elapsed().as_secs_f64();

    // drain: every delivery applied, every change captured and pushed
    let drain_started = Instant::now();
    let left = drain(&env, 180);
    let drained = drain_started.elapsed().as_secs_f64();

    // TikTok Shop's lines are one per unit with ids of its own: read them back from the shop
    tiktok_lines(&env.sim, &tenants, &mut orders);

    // ---- the report ------------------------------------------------------------------------
    let changes = env.scalar_i64("SELECT count(*) FROM soak_changes");
    println!(
        "SOAK stream: {streamed:.0} s; {changes} stock changes committed ({} answered, {} committed in doubt across a crash, \
         {} calls failed while PostgreSQL was down, {} not made: the stock would go negative)",
        stock.committed,
        changes - stock.committed as i64,
        stock.failed,
        stock.refused
    );
    let made: Vec<String> = MARKETPLACES
        .iter()
        .map(|m| {
            format!(
                "{m} {} (+{} cancelled)",
                handover.orders.get(m).unwrap_or(&0),
                handover.cancellations.get(m).unwrap_or(&0)
            )
        })
        .collect();
    println!(
        "SOAK orders made: {}; {} not made: the tenant showed nothing in stock",
        made.join(", "),
        handover.sold_out
    );
    let answers: Vec<String> = handover.answers.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "SOAK deliveries: {} handed over ({} of them again on purpose), answers {}; {} attempts failed (PostgreSQL down) and were retried",
        handover.handed,
        handover.resent,
        answers.join(", "),
        handover.retries
    );
    let downs: Vec<String> = kills.iter().map(|k| format!("{:.0} s", k.at)).collect();
    println!(
        "SOAK postmaster kills: {} (at {}), down {:.1} s in all, {} leftover processes killed by hand",
        kills.len(),
        downs.join(", "),
        kills.iter().map(|k| k.down_s).sum::<f64>(),
        kills.iter().map(|k| k.forced).sum::<usize>()
    );
    print_activity(&env, &counters_before, log_before);
    if left.is_empty() {
        println!("SOAK drain: {drained:.1} s after the stream stopped");
    } else {
        println!("SOAK drain: NOT drained {drained:.0} s after the stream stopped");
    }

    // ---- the checks ------------------------------------------------------------------------
    let mut failed = Vec::new();
    let mut check = |name: &str, problems: Vec<String>| {
        if problems.is_empty() {
            println!("SOAK check {name}: ok");
        } else {
            println!("SOAK check {name}: FAILED ({} problems)", problems.len());
            for p in problems.iter().take(15) {
                println!("SOAK   {p}");
            }
            failed.push(name.to_string());
        }
    };
    check("0 the queue drains after the stream (within 180 s)", left);
    let drifted = drift(&env, &tenants);
    let mut problems: Vec<String> = drifted.iter().map(|d| d.3.clone()).collect();
    if !problems.is_empty() {
        let by: Vec<String> = MARKETPLACES
            .iter()
            .map(|m| format!("{m} {}", drifted.iter().filter(|d| d.1 == *m).count()))
            .collect();
        problems.insert(0, format!("drifted listings by marketplace: {}", by.join(", ")));
    }
    check(
        &format!("1a every listing's sandbox stock = what EGDC publishes ({listings} listings)"),
        problems,
    );
    // what happened to the first few, to tell the extension's doing from the soak's
    for (tenant, _, product, _) in drifted.iter().take(3) {
        for line in history(&env, &tenants, &orders, tenant, product, started_unix) {
            println!("SOAK   history {tenant} {product}: {line}");
        }
    }
    check(
        "1b integ.reconcile finds nothing to repair on any connection",
        reconcile_all(&env, &tenants),
    );
    let mut problems = ledger(&env, &tenants, &orders);
    if handover.left > 0 {
        problems.push(format!("{} deliveries were never answered", handover.left));
    }
    problems.extend(handover.rejected.iter().map(|r| format!("rejected: {r}")));
    check(
        &format!(
            "2 every order's lines applied exactly once ({} orders, {} lines)",
            orders.len(),
            orders.iter().map(|o| o.lines.len()).sum::<usize>()
        ),
        problems,
    );
    check(
        "3 EGDC stock = initial + soak_changes - orders not cancelled, per product",
        stock_arithmetic(&env, &tenants, &orders),
    );
    let secrets = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.assert_no_secrets()));
    check(
        "4 no secret in the server log or any table",
        match secrets {
            Ok(()) => Vec::new(),
            Err(e) => vec![e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "assert_no_secrets failed".into())],
        },
    );
    let mut dead = Vec::new();
    for r in env
        .db()
        .query(
            "SELECT format('job %s listing %s %s %s: %s', id, listing_id, tenant_id, marketplace, left(last_error, 160))
               FROM integ.sync_jobs WHERE state = 'dead'
             UNION ALL
             SELECT format('delivery %s %s %s %s: %s', id, marketplace, tenant_id, topic, left(error, 160))
               FROM integ.webhooks WHERE state = 'dead'",
            &[],
        )
        .expect("dead")
    {
        dead.push(r.get::<_, String>(0));
    }
    check("5 no job and no delivery dead", dead);
    println!(
        "SOAK result: {}",
        if failed.is_empty() {
            "every check passed".to_string()
        } else {
            format!("FAILED: {}", failed.join("; "))
        }
    );
    if !failed.is_empty() {
        println!("SOAK server log tail:\n{}", tail(&env.pg.log(), 40));
        panic!("the chaos soak failed: {}", failed.join("; "));
    }
}

/// The sandbox's counters since `before` (requests, faults by kind, 429s), the sync log's rows
/// since `log_before` by operation and outcome, and the deliveries by status and state.
fn print_activity(env: &Env, counters_before: &Value, log_before: i64) {
    let counters = env.sim.get("/stats")["counters"].clone();
    let delta = |name: &str| counters[name].as_u64().unwrap_or(0) - counters_before[name].as_u64().unwrap_or(0);
    for m in MARKETPLACES {
        let mut line = format!(
            "SOAK {m}: {} requests; faults error {}, timeout {}, drop {}; 429 {}",
            delta(&format!("{m} requests")),
            delta(&format!("{m} faults error")),
            delta(&format!("{m} faults timeout")),
            delta(&format!("{m} faults drop")),
            delta(&format!("{m} 429"))
        );
        if m == "shopify" {
            line.push_str(&format!(", throttled {}", delta("shopify throttled")));
        }
        println!("{line}");
    }
    for r in env
        .db()
        .query(
            "SELECT operation, outcome, count(*) FROM integ.sync_log WHERE id > $1 GROUP BY 1, 2 ORDER BY 1, 2",
            &[&log_before],
        )
        .expect("sync log")
    {
        println!(
            "SOAK sync_log {} {}: {}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, i64>(2)
        );
    }
    for r in env
        .db()
        .query(
            "SELECT status, state, count(*) FROM integ.webhooks GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .expect("webhooks")
    {
        println!(
            "SOAK webhooks {}/{}: {}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, i64>(2)
        );
    }
}

/// Waits at most `secs` until no job is pending or in flight (or owes a recheck), no delivery
/// is pending or failed, and the capture has read every change committed so far. Empty when
/// drained; otherwise what is left, and the connections whose circuit is not closed.
fn drain(env: &Env, secs: u64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let busy = "SELECT (SELECT count(*) FROM integ.sync_jobs WHERE state IN ('pending', 'in_flight') OR recheck)
                     + (SELECT count(*) FROM integ.webhooks WHERE state IN ('pending', 'failed'))";
    while Instant::now() < deadline {
        if env.scalar_i64(busy) == 0 {
            let lsn = env.scalar_text("SELECT pg_current_wal_lsn()::text");
            let unread = format!(
                "SELECT count(*) FROM integ.capture WHERE mode = 'message' AND coalesce(applied_upto, '0/0') < '{lsn}'"
            );
            while env.scalar_i64(&unread) > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if env.scalar_i64(&unread) == 0 && env.scalar_i64(busy) == 0 {
                return Vec::new();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut left = Vec::new();
    for sql in [
        "SELECT format('%s jobs pending or in flight, %s owing a recheck; %s deliveries pending or failed',
                (SELECT count(*) FROM integ.sync_jobs WHERE state IN ('pending', 'in_flight')),
                (SELECT count(*) FROM integ.sync_jobs WHERE recheck),
                (SELECT count(*) FROM integ.webhooks WHERE state IN ('pending', 'failed')))",
        "SELECT format('connection %s %s: circuit %s, %s jobs queued', tenant_id, marketplace, circuit, queue_depth)
           FROM integ.status WHERE circuit <> 'closed' ORDER BY tenant_id",
        "SELECT format('job %s %s %s listing %s: %s, %s attempts, due %s ago, last error %s', id, tenant_id, marketplace,
                       listing_id, state, attempts, date_trunc('second', now() - next_attempt_at), coalesce(left(last_error, 80), '-'))
           FROM integ.sync_jobs WHERE state IN ('pending', 'in_flight') OR recheck ORDER BY id LIMIT 8",
        "SELECT format('delivery %s %s %s: %s, %s attempts, %s', id, marketplace, topic, state, attempts, left(error, 80))
           FROM integ.webhooks WHERE state IN ('pending', 'failed') ORDER BY id LIMIT 8",
    ] {
        for r in env.db().query(sql, &[]).expect("what is left") {
            left.push(r.get::<_, String>(0));
        }
    }
    left
}

/// 50 tenants, tenant i on marketplace i % 4, each with PER_TENANT listings at stock 0.
fn setup(env: &mut Env) -> Vec<Tenant> {
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let marketplace = MARKETPLACES[i % MARKETPLACES.len()];
        let name = format!("t{i:02}");
        let mut t = Tenant {
            name: name.clone(),
            marketplace,
            account: String::new(),
            token: None,
            listings: Vec::new(),
        };
        match marketplace {
            "mercadolibre" => {
                let seller = 20_000 + i as u64;
                env.add_tenant(&name, seller, json!({}));
                t.account = seller.to_string();
                t.listings = env.listings_for(&name, seller, 3_000_000 + i * 10, PER_TENANT);
            }
            "shopify" => {
                let shop = format!("soak-{i}.myshopify.com");
                env.add_shopify_tenant(&name, &shop, json!({}));
                for k in 0..PER_TENANT {
                    let item = 500_000 + (i * 10 + k) as u64;
                    let product = format!("p{k}");
                    env.shopify_listing(&name, &shop, &product, item);
                    t.listings.push((product, item.to_string()));
                }
                t.account = shop;
            }
            "tiktok" => {
                let cipher = format!("SOAK-CIPHER-{i}");
                let grant = env.add_tiktok_tenant(&name, &cipher, json!({}));
                t.token = grant["access_token"].as_str().map(str::to_string);
                for k in 0..PER_TENANT {
                    let (product, product_id, sku) = (format!("p{k}"), format!("TP{i}-{k}"), format!("TS{i}-{k}"));
                    env.tiktok_listing(&name, &cipher, &product, &product_id, &sku);
                    t.listings.push((product, sku));
                }
                t.account = cipher;
            }
            _ => {
                let key = env.add_shein_tenant(&name, 30_000 + i as u64, json!({}));
                for k in 0..PER_TENANT {
                    let (product, code) = (format!("p{k}"), format!("SH{i}-{k}"));
                    env.shein_listing(&name, &key, &product, &code);
                    t.listings.push((product, code));
                }
                t.account = key;
            }
        }
        tenants.push(t);
    }
    tenants
}

/// Faults on every marketplace's API (never on the admin API): errors, answers too late for
/// the client (`integ.http_timeout` is 1 s) and answers cut off, both after the request was
/// processed; and 429s from each marketplace's own limit, set tight (Shopify: a small cost
/// bucket, answered THROTTLED as Shopify's GraphQL does).
fn inject_faults(sim: &Sim, throttle: bool) {
    for (m, status) in [("mercadolibre", 503), ("shopify", 502), ("tiktok", 500), ("shein", 503)] {
        sim.post(
            "/faults",
            json!({"marketplace": m, "error_rate": 0.05, "error_status": status, "latency_ms": 5,
                   "timeout_rate": 0.02, "timeout_ms": 1_500, "drop_rate": 0.03}),
        );
    }
    if !throttle {
        return;
    }
    for m in ["mercadolibre", "tiktok", "shein"] {
        sim.post(
            &format!("/{m}/config"),
            json!({"rate_limit_per_minute": 3, "rate_window_s": 1}),
        );
    }
    sim.post("/shopify/config", json!({"bucket_max": 40, "restore_rate": 10}));
}

fn clear_faults(sim: &Sim) {
    sim.delete("/faults");
    for m in ["mercadolibre", "tiktok", "shein"] {
        sim.post(&format!("/{m}/config"), json!({"rate_limit_per_minute": null}));
    }
    sim.post("/shopify/config", json!({"bucket_max": 2000, "restore_rate": 100}));
}
