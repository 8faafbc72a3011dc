//! Benchmark 1, trigger overhead: pgbench UPDATEs of 10,000 mapped products' stock (or price),
//! a tracked table against an identical untracked one. The connection is paused: the number is
//! the cost of the capture (trigger and capture worker), not of pushes competing for the CPU.
//!
//! Each turn runs the tables' pgbenches at once (4 clients each): the untracked table, the
//! tracked one, and a copy under an empty PL/pgSQL trigger. Run side by side they meet the same
//! machine; run one after another they did not (this VM's speed drifts by ±5% between rounds).
//! A side's cost is its backends' and its pgbench's CPU per transaction (`/proc/*/schedstat`),
//! and untracked cost over tracked cost is what the trigger leaves of the application's rate.
//! The host's preemptions still land on random processes (±3.5 points a round), hence 40 turns
//! and the mean's 95% interval.
//!
//! The capture worker's share is measured apart, in a round of the tracked table alone (one
//! turn in four): it is paced by CPU, not per change, so its cost per change is only right at
//! the application's full rate. Kept share of untracked TPS = cost ratio × (1 − capture's
//! share of the machine): on a CPU-bound machine, what the application keeps once the trigger
//! and the capture are paid.

use crate::{
    bench_conf, env_number, machine_busy_seconds, perf_round, pgbench_command, pgbench_figure, pgbench_round,
    stop_perf, Round, TRANSACTIONS_DONE,
};
use e2e::*;
use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What a trigger benchmark updates: EGDC's stock (`inventory.qty`) or its price (a tracked
/// price table's `price`), each beside an identical untracked table.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Subject {
    Stock,
    Price,
}

impl Subject {
    /// The tracked table, its untracked copy, and a copy under an empty PL/pgSQL trigger.
    fn tables(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Subject::Stock => ("inventory", "plain_inventory", "empty_trigger_inventory"),
            Subject::Price => ("prices", "plain_prices", "empty_trigger_prices"),
        }
    }
    /// The columns the tracking trigger fires on.
    fn columns(self) -> &'static str {
        match self {
            Subject::Stock => "tenant_id, sku, qty",
            Subject::Price => "tenant_id, sku, price",
        }
    }
    fn set(self) -> &'static str {
        match self {
            Subject::Stock => "qty = qty + 1",
            Subject::Price => "price = price + 0.01",
        }
    }
    /// Listings whose EGDC value is not their product's last one in the table.
    fn stale(self) -> &'static str {
        match self {
            Subject::Stock => {
                "SELECT count(*) FROM inventory i JOIN integ.listings l ON l.tenant_id = i.tenant_id AND l.product_id = i.sku
                  WHERE l.desired_stock IS DISTINCT FROM i.qty"
            }
            Subject::Price => {
                "SELECT count(*) FROM prices p JOIN integ.listings l ON l.tenant_id = p.tenant_id AND l.product_id = p.sku
                  WHERE l.desired_price IS DISTINCT FROM p.price"
            }
        }
    }
}

const PRODUCTS: u32 = 10_000;
/// Seconds per round.
const ROUND_SECS: u32 = 8;

/// One UPDATE of a random product's stock or price (`what`) in `table`.
fn script(table: &str, what: Subject) -> String {
    format!(
        "\\set id random(1, {PRODUCTS})\nUPDATE {table} SET {} WHERE tenant_id = 'acme' AND sku = 'p' || :id;\n",
        what.set()
    )
}

/// A cluster with 10,000 mapped products (the connection paused), for a price benchmark a
/// tracked price table, and beside the tracked table an untracked copy and a copy under an
/// empty PL/pgSQL trigger of the same kind: what any row trigger costs here.
fn setup(name: &str, conf: &str, subject: Subject) -> Env {
    let env = Env::with_conf(name, &format!("{conf}\n{}", bench_conf()));
    env.db()
        .batch_execute(&format!(
            "INSERT INTO inventory SELECT 'acme', 'p' || i, 0 FROM generate_series(1, {PRODUCTS}) i;
             SELECT integ.map_product('acme', 'mercadolibre', 'p' || i, 'MLM' || i) FROM generate_series(1, {PRODUCTS}) i;
             SELECT integ.pause('acme', 'mercadolibre');
             CREATE TABLE plain_inventory (LIKE inventory INCLUDING ALL);
             INSERT INTO plain_inventory SELECT * FROM inventory;"
        ))
        .expect("setup");
    if subject == Subject::Price {
        env.db()
            .batch_execute(
                "CREATE TABLE prices (tenant_id text, sku text, price numeric(12,2), PRIMARY KEY (tenant_id, sku));
                 INSERT INTO prices SELECT tenant_id, sku, 100.00 FROM inventory;
                 SELECT integ.track_prices('prices', 'tenant_id', 'sku', 'price');
                 CREATE TABLE plain_prices (LIKE prices INCLUDING ALL);
                 INSERT INTO plain_prices SELECT * FROM prices;",
            )
            .expect("price setup");
    }
    let (tracked, _, empty) = subject.tables();
    env.db()
        .batch_execute(&format!(
            "CREATE TABLE {empty} (LIKE {tracked} INCLUDING ALL);
             INSERT INTO {empty} SELECT * FROM {tracked};
             CREATE FUNCTION empty_trigger() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
             CREATE TRIGGER empty AFTER UPDATE OF {} ON {empty} FOR EACH ROW EXECUTE FUNCTION empty_trigger();",
            subject.columns()
        ))
        .expect("empty trigger setup");
    env.db().batch_execute("VACUUM ANALYZE").expect("vacuum");
    env.wait_for(10, "the capture path to be ready", || {
        env.scalar_text("SELECT mode FROM integ.capture") == "message"
    });
    env
}

/// CPU time of a process's live threads, in seconds (`/proc/<pid>/task/*/schedstat`: nanoseconds,
/// where `process_cpu_seconds` reads 10 ms ticks, too coarse for a backend's share of a round;
/// threads that exited are not counted, which does not matter for the single-threaded processes
/// read here); None once it is gone.
fn cpu_seconds(pid: i32) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns = 0u64;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

/// One side of a concurrent round: transactions done, and the CPU its backends and its
/// pgbench used.
struct Side {
    tx: f64,
    cpu_s: f64,
}

impl Side {
    fn cost_us(&self) -> f64 {
        self.cpu_s * 1e6 / self.tx.max(1.0)
    }
}

/// Every script at once, each by its own pgbench of `clients` clients. The processes are read
/// every 20 ms while they run (a backend's CPU is gone with it when pgbench disconnects); every
/// side loses its last few milliseconds alike.
fn concurrent_round(env: &Env, scripts: &[String], clients: u32) -> Vec<Side> {
    let mut runs = Vec::new();
    for (i, script) in scripts.iter().enumerate() {
        let path = env.pg.dir.join(format!("side{i}.sql"));
        std::fs::write(&path, script).expect("write pgbench script");
        let child = pgbench_command(env, &path, ROUND_SECS, clients, 1)
            .arg("postgres")
            .env("PGAPPNAME", format!("bench_side_{i}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pgbench");
        runs.push(child);
    }
    // each side's processes: its pgbench and, once connected, its backends
    let mut processes: Vec<Vec<i32>> = runs.iter().map(|c| vec![c.id() as i32]).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = env
            .db()
            .query(
                "SELECT application_name, pid FROM pg_stat_activity WHERE application_name LIKE 'bench\\_side\\_%'",
                &[],
            )
            .expect("backends");
        let mut backends: Vec<Vec<i32>> = vec![Vec::new(); scripts.len()];
        for row in rows {
            let name: String = row.get(0);
            if let Some(i) = name.strip_prefix("bench_side_").and_then(|i| i.parse::<usize>().ok()) {
                if let Some(side) = backends.get_mut(i) {
                    side.push(row.get(1));
                }
            }
        }
        if backends.iter().all(|b| b.len() == clients as usize) {
            for (side, pids) in processes.iter_mut().zip(backends) {
                side.extend(pids);
            }
            break;
        }
        assert!(Instant::now() < deadline, "pgbench clients did not connect");
        std::thread::sleep(Duration::from_millis(5));
    }
    let perf = perf_round("sides");
    if perf.is_some() {
        // which processes are which side, to read the profile by pid
        eprintln!("perf: processes of each side {processes:?}");
    }
    let mut last: HashMap<i32, f64> = HashMap::new();
    loop {
        for pid in processes.iter().flatten() {
            if let Some(cpu) = cpu_seconds(*pid) {
                last.insert(*pid, cpu);
            }
        }
        let running = runs
            .iter_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .filter(|r| *r)
            .count();
        if running == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_perf(perf);
    runs.into_iter()
        .zip(&processes)
        .map(|(child, pids)| {
            let out = child.wait_with_output().expect("pgbench output");
            Side {
                tx: pgbench_figure(&out, TRANSACTIONS_DONE),
                cpu_s: pids.iter().filter_map(|p| last.get(p)).sum(),
            }
        })
        .collect()
}

/// The capture worker's share of the machine's busy CPU during a round of the tracked table
/// alone, and the round.
fn tracked_round(env: &Env, table: &str, subject: Subject, clients: u32) -> (f64, Round) {
    let pid = env.capture_pid();
    let (capture, busy) = (cpu_seconds(pid).unwrap_or(0.0), machine_busy_seconds());
    let round = pgbench_round(env, &script(table, subject), ROUND_SECS, clients);
    let capture = cpu_seconds(pid).unwrap_or(0.0) - capture;
    (capture / (machine_busy_seconds() - busy).max(1e-9), round)
}

/// Mean, and the half-width of its 95% interval (2 standard errors), of percentages.
fn mean_interval(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, 2.0 * (var / n).sqrt())
}

fn percents(values: &[f64]) -> String {
    let (mean, half) = mean_interval(values);
    let rounds: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
    format!("{mean:.1}% ± {half:.1} (rounds {})", rounds.join(" "))
}

/// `bench/run trigger` and `trigger-price`, with fsync off (as every benchmark here: the CPU
/// cost shows undiluted).
pub(crate) fn overhead(name: &str, label: &str, subject: Subject) {
    let env = setup(name, "", subject);
    let (tracked_table, plain_table, empty_table) = subject.tables();
    let sides = [plain_table, tracked_table, empty_table].map(|t| script(t, subject));
    let turns: usize = env_number("BENCH_TRIGGER_TURNS", 40);
    let clients: u32 = env_number("BENCH_TRIGGER_CLIENTS", 4);
    let (mut trigger_only, mut empty, mut capture_share) = (vec![], vec![], vec![]);
    let (mut costs, mut alone) = (vec![0.0; sides.len()], vec![]);
    let mut retained_max = 0;
    for turn in 0..turns {
        let round = concurrent_round(&env, &sides, clients);
        let ratio = |i: usize| round[0].cost_us() / round[i].cost_us() * 100.0;
        for (total, side) in costs.iter_mut().zip(&round) {
            *total += side.cost_us() / turns as f64;
        }
        trigger_only.push(ratio(1));
        empty.push(ratio(2));
        // the capture's share holds steady (±0.3 points): one tracked round in four measures it
        if turn % 4 == 0 {
            let (share, tracked) = tracked_round(&env, tracked_table, subject, 2 * clients);
            retained_max = retained_max.max(env.scalar_i64("SELECT coalesce(retained_bytes, 0) FROM integ.capture"));
            capture_share.push(share * 100.0);
            alone.push(tracked.tps);
        }
    }
    let (share, _) = mean_interval(&capture_share);
    let kept: Vec<f64> = trigger_only.iter().map(|r| r * (1.0 - share / 100.0)).collect();
    let caught_up = Instant::now();
    env.wait_captured(120, "the capture to catch up");
    let caught_up = caught_up.elapsed().as_secs_f64();
    assert_eq!(
        env.scalar_i64(subject.stale()),
        0,
        "listings whose desired value is not their product's last one"
    );
    let cost_text: Vec<String> = costs.iter().map(|c| format!("{c:.1}")).collect();
    println!(
        "BENCH trigger (message capture, {label}, {clients} clients a table; goal >= 90%): kept {} of untracked TPS; \
         trigger alone {}; capture {} of the machine at the full tracked rate ({:.0} tps); \
         CPU per transaction (backends and pgbench) untracked, tracked, empty trigger: {} us",
        percents(&kept),
        percents(&trigger_only),
        percents(&capture_share),
        alone.iter().sum::<f64>() / alone.len() as f64,
        cost_text.join(", ")
    );
    println!(
        "BENCH trigger reference, an empty PL/pgSQL trigger on a copy of the table (no capture): kept {}",
        percents(&empty)
    );
    println!(
        "BENCH trigger: caught up {caught_up:.2} s after the last round; slot retained at most {retained_max} bytes; 0 listings stale"
    );
    catch_up(&env, tracked_table, subject, 2 * clients);
}

/// The capture worker stopped (SIGSTOP, taken between two reads, so it holds no snapshot back)
/// during three tracked rounds; after SIGCONT, how fast it catches up.
fn catch_up(env: &Env, table: &str, subject: Subject, clients: u32) {
    let pid = env.capture_pid();
    let mut rates = Vec::new();
    for _ in 0..3 {
        loop {
            signal(pid, "STOP");
            let idle = env.scalar_i64(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND backend_xmin IS NULL AND backend_xid IS NULL"
            ));
            if idle == 1 {
                break;
            }
            signal(pid, "CONT");
            std::thread::sleep(Duration::from_millis(5));
        }
        let round = pgbench_round(env, &script(table, subject), ROUND_SECS, clients);
        signal(pid, "CONT");
        let started = Instant::now();
        env.wait_captured(300, "the capture to catch up after a held round");
        rates.push(round.tps * ROUND_SECS as f64 / started.elapsed().as_secs_f64());
    }
    assert_eq!(
        env.scalar_i64(subject.stale()),
        0,
        "listings whose desired value is not their product's last one"
    );
    let rates: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "BENCH trigger, capture stopped for a round then resumed: caught up at {} changes/s",
        rates.join(", ")
    );
}

/// `bench/run trigger-durable`: PostgreSQL's durable defaults, where every commit waits for a
/// WAL flush, so rounds are bound by the flushes they share, not by CPU: untracked and tracked
/// rounds alternate instead of running at once.
pub(crate) fn overhead_durable() {
    let subject = Subject::Stock;
    let env = setup("bench-trigger-durable", "fsync = on\nsynchronous_commit = on", subject);
    let (tracked_table, plain_table, _) = subject.tables();
    let pairs: usize = env_number("BENCH_TRIGGER_PAIRS", 8);
    let clients: u32 = env_number("BENCH_TRIGGER_CLIENTS", 4) * 2;
    let (mut base, mut tracked) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        base.push(pgbench_round(&env, &script(plain_table, subject), ROUND_SECS, clients));
        tracked.push(pgbench_round(
            &env,
            &script(tracked_table, subject),
            ROUND_SECS,
            clients,
        ));
    }
    env.wait_captured(120, "the capture to catch up");
    assert_eq!(
        env.scalar_i64(subject.stale()),
        0,
        "listings whose desired stock is not their product's last stock"
    );
    let ratios: Vec<f64> = base.iter().zip(&tracked).map(|(b, t)| t.tps / b.tps * 100.0).collect();
    let mean = |rounds: &[Round], f: fn(&Round) -> f64| rounds.iter().map(f).sum::<f64>() / rounds.len() as f64;
    println!(
        "BENCH trigger (message capture, fsync on, {clients} clients; goal >= 90%): untracked {:.0} tps, tracked {:.0} tps, \
         kept {:.1}% of the mean; pairs {}; CPU per transaction {:.1} vs {:.1} us, WAL {:.0} vs {:.0} bytes",
        mean(&base, |r| r.tps),
        mean(&tracked, |r| r.tps),
        mean(&tracked, |r| r.tps) / mean(&base, |r| r.tps) * 100.0,
        percents(&ratios),
        mean(&base, |r| r.cpu_us),
        mean(&tracked, |r| r.cpu_us),
        mean(&base, |r| r.wal_bytes),
        mean(&tracked, |r| r.wal_bytes),
    );
}

/// `bench/run lag`: how long after commit the capture applies a change while the application
/// writes at a steady rate (`pgbench -R`, 4 clients) over 10,000 products: every 0.3 s, the
/// time since the commit of the newest change applied to a listing; mean and max of 30 samples
/// per rate. Rates from BENCH_LAG_RATES (default 1000,3000,5000,7000 changes/s).
pub(crate) fn lag() {
    let env = setup("bench-lag", "", Subject::Stock);
    let rates: Vec<u32> = std::env::var("BENCH_LAG_RATES")
        .unwrap_or_else(|_| "1000,3000,5000,7000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let path = env.pg.dir.join("lag.sql");
    std::fs::write(&path, script("inventory", Subject::Stock)).expect("write pgbench script");
    let newest_ms = "SELECT extract(epoch FROM clock_timestamp() - max(desired_at))::float8 * 1000 FROM integ.listings";
    for rate in rates {
        let pgbench = pgbench_command(&env, &path, 13, 4, 2)
            .args(["-R", &rate.to_string(), "postgres"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pgbench");
        std::thread::sleep(Duration::from_secs(2));
        let mut samples = Vec::new();
        for _ in 0..30 {
            let row = env.db().query_one(newest_ms, &[]).expect("lag");
            samples.push(row.get::<_, Option<f64>>(0).unwrap_or(f64::NAN));
            std::thread::sleep(Duration::from_millis(300));
        }
        let out = pgbench.wait_with_output().expect("pgbench output");
        let done = pgbench_figure(&out, TRANSACTIONS_DONE) / 13.0;
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let max = samples.iter().cloned().fold(f64::NAN, f64::max);
        println!(
            "BENCH lag at {rate} changes/s ({done:.0}/s done, pace {}%): applied {mean:.0} ms after commit on average, {max:.0} ms at most",
            env.scalar_text("SHOW integ.capture_cpu_percent")
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}
