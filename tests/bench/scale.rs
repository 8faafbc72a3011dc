//! Scale: 100, 1,000 and 10,000 connections with 100 listings each (up to 1,000,000 listings),
//! mostly idle, and a sync log of 1,000 rows per connection spread over the last day (10 million
//! at 10,000 connections) rolled up into health: the workers' idle CPU, the time of
//! `integ.status`, `integ.health` and `integ.metrics()`, each worker's memory, and then a
//! reconciliation cycle (its pace, its cost, and pushes' latency meanwhile), at each size.
//! `BENCH_SCALE_SIZES=100,1000` picks the sizes; `BENCH_SCALE_LOG_ROWS` the rows per connection;
//! `BENCH_SCALE_HOLD=<seconds>` keeps each cluster up afterwards (for a profiler or psql).

use crate::{bench_conf, env_number, print_statements, reset_statements, worker_rss_kib};
use e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};

pub fn scale() {
    let sizes: Vec<i64> = std::env::var("BENCH_SCALE_SIZES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let per_connection: i64 = env_number("BENCH_SCALE_LOG_ROWS", 1000);
    for n in sizes {
        one(n, per_connection);
    }
}

/// The median of `runs` timings of `sql`, in ms: every row fetched, as a client reads them.
fn time_ms(env: &Env, sql: &str, runs: usize) -> f64 {
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let rows = env.db().query(sql, &[]).expect(sql);
            assert!(!rows.is_empty(), "{sql}: no rows");
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    ms[ms.len() / 2]
}

fn one(n: i64, per_connection: i64) {
    let env = Env::with_conf(
        &format!("bench-scale-{n}"),
        &format!(
            "integ.max_limiters = 20000\ninteg.reconcile_interval = 0\nshared_buffers = '1GB'\nwork_mem = '64MB'\n{}",
            bench_conf()
        ),
    );
    let base = env.sim.base_url("mercadolibre");
    let setup = Instant::now();
    // sandbox sellers and their items (at stock 0, as EGDC's), so reads and pushes are answered;
    // connections whose tokens never need a refresh
    let (mut access, mut refresh) = (Vec::new(), Vec::new());
    for i in 1..=n {
        let grant = env.sim.post(
            "/mercadolibre/sellers",
            json!({"user_id": 700_000 + i, "client_id": CLIENT_ID}),
        );
        access.push(grant["access_token"].as_str().expect("access token").to_string());
        refresh.push(grant["refresh_token"].as_str().expect("refresh token").to_string());
    }
    env.db()
        .query_one(
            "SELECT count(integ.connect('t' || i, 'mercadolibre',
                     jsonb_build_object('client_id', $3::text, 'client_secret', $4::text, 'access_token', ($1::text[])[i],
                                        'refresh_token', ($2::text[])[i], 'expires_in', 315360000, 'user_id', 700000 + i),
                     jsonb_build_object('base_url', $5::text)))
               FROM generate_series(1, $6::int8) i",
            &[&access, &refresh, &CLIENT_ID, &CLIENT_SECRET, &base, &n],
        )
        .expect("connections");
    for row in env
        .db()
        .query(
            "SELECT id, substr(tenant_id, 2)::int8 FROM integ.connections WHERE tenant_id <> 'acme'",
            &[],
        )
        .expect("connections")
    {
        let (id, i): (i64, i64) = (row.get(0), row.get(1));
        env.sim.post(
            "/mercadolibre/items/bulk",
            json!({"prefix": "MLM", "from": id * 1000, "count": 100, "seller_id": 700_000 + i}),
        );
    }
    env.db()
        .batch_execute(&format!(
            "INSERT INTO inventory SELECT 't' || i, 'p-' || k, 0 FROM generate_series(1, {n}) i, generate_series(0, 99) k;"
        ))
        .expect("inventory");
    // the capture applies the inserts before the listings exist, so they enqueue nothing
    env.wait_for(3600, "the capture to apply the inventory", || {
        env.scalar_i64("SELECT messages_applied FROM integ.capture") >= n * 100
    });
    env.db()
        .batch_execute(
            "INSERT INTO integ.listings (connection_id, tenant_id, marketplace, product_id, external_id, desired_stock,
                                         last_pushed_stock, remote_stock)
             SELECT c.id, c.tenant_id, 'mercadolibre', 'p-' || k, 'MLM' || (c.id * 1000 + k), 0, 0, 0
               FROM integ.connections c, generate_series(0, 99) k WHERE c.tenant_id <> 'acme';",
        )
        .expect("listings");
    // the sync log of a day's work: every connection's rows spread over the last 24 hours
    let rows = n * per_connection;
    env.db()
        .batch_execute(&format!(
            "INSERT INTO integ.sync_log (at, tenant_id, marketplace, connection_id, listing_id, product_id, external_id,
                                         operation, outcome, stock, remote_stock, http_status, latency_ms, calls, egdc_stock)
             SELECT now() - (random() * interval '1 day'), c.tenant_id, 'mercadolibre', c.id, NULL, 'p-' || (k % 100), NULL,
                    'push', CASE WHEN k % 50 = 0 THEN 'retry' ELSE 'success' END, 0, 0,
                    CASE WHEN k % 50 = 0 THEN 503 ELSE 200 END, 20 + random() * 200, 1, 0
               FROM integ.connections c, generate_series(1, {per_connection}) k WHERE c.tenant_id <> 'acme'"
        ))
        .expect("sync log");
    env.db().batch_execute("VACUUM ANALYZE").expect("vacuum");
    println!(
        "BENCH scale {n}: {n} connections, {} listings, {rows} sync-log rows set up in {:.0} s",
        n * 100,
        setup.elapsed().as_secs_f64()
    );
    env.wait_for(600, "no job left", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state IN ('pending', 'in_flight') OR recheck") == 0
    });
    let rolled = Instant::now();
    env.wait_for(3600, "the roll-up to count the sync log", || {
        env.scalar_i64("SELECT (SELECT watermark FROM integ.rollup_state WHERE source = 'sync_log') - (SELECT max(id) FROM integ.sync_log)")
            >= 0
    });
    let buckets = env.scalar_i64("SELECT count(*) FROM integ.health_buckets");
    println!(
        "BENCH scale {n}: roll-up of {rows} rows in {:.1} s ({:.0} rows/s); {buckets} health buckets",
        rolled.elapsed().as_secs_f64(),
        rows as f64 / rolled.elapsed().as_secs_f64()
    );
    env.db().batch_execute("VACUUM ANALYZE").expect("vacuum");

    // idle: nothing changes for a minute
    std::thread::sleep(Duration::from_secs(5));
    let cpu0 = worker_cpu_seconds(&env);
    let capture0 = capture_cpu_seconds(&env);
    let idle = Duration::from_secs(60);
    std::thread::sleep(idle);
    let cpu = (worker_cpu_seconds(&env) - cpu0) / idle.as_secs_f64() * 100.0;
    let capture = (capture_cpu_seconds(&env) - capture0) / idle.as_secs_f64() * 100.0;
    println!("BENCH scale {n}: idle CPU of the capture worker alone {capture:.2}% of one core");
    if std::env::var("BENCH_SCALE_EXPLAIN").is_ok() {
        for sql in [
            "SELECT sum(length(s::text)) FROM integ.status s",
            "SELECT sum(length(h::text)) FROM integ.health h",
            "SELECT length(integ.metrics())",
        ] {
            for r in env
                .db()
                .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), &[])
                .expect("explain")
            {
                println!("BENCH scale explain: {}", r.get::<_, String>(0));
            }
        }
    }
    // every row and column fetched (a count(*) lets the planner drop the joins that compute them)
    let status = time_ms(&env, "SELECT * FROM integ.status", 5);
    let health = time_ms(&env, "SELECT * FROM integ.health", 5);
    let metrics = time_ms(&env, "SELECT integ.metrics()", 5);
    let size = env.scalar_i64("SELECT length(integ.metrics())::bigint");
    println!(
        "BENCH scale {n}: idle workers {cpu:.2}% of one core (goal < 2%); integ.status {status:.1} ms, integ.health {health:.1} ms, \
         integ.metrics() {metrics:.1} ms for {size} bytes (goal < 100 ms each); worker memory {}",
        worker_memory(&env)
    );
    reconcile_cycle(&env, n);
    // BENCH_SCALE_HOLD=<seconds> keeps the cluster up for a profiler or psql
    if let Some(hold) = std::env::var("BENCH_SCALE_HOLD")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        println!(
            "BENCH scale {n}: holding for {hold} s: psql -h {} -p {} -U postgres",
            env.pg.dir.display(),
            env.pg.port
        );
        std::thread::sleep(Duration::from_secs(hold));
    }
}

/// The first worker's reconciliation of every listing (`integ.reconcile_interval` turned on):
/// how fast a cycle goes, what it costs the workers, and how much later pushes arrive meanwhile
/// (pushes come first: reconciliation takes only the spare budget).
fn reconcile_cycle(env: &Env, n: i64) {
    let idle: Vec<f64> = (0..10).map(|r| push_latency_ms(env, n, r)).collect();
    reset_statements(env);
    // rows past this one are the cycle's (the log holds up to 10 million: no scan of all of it)
    let first_id = env.scalar_i64("SELECT coalesce(max(id), 0) FROM integ.sync_log");
    let cpu0 = worker_cpu_seconds(env);
    let started = Instant::now();
    env.db()
        .simple_query("ALTER SYSTEM SET integ.reconcile_interval = 3600")
        .expect("reconcile on");
    env.db().simple_query("SELECT pg_reload_conf()").expect("reload");
    let logged = || {
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.sync_log WHERE id > {first_id} AND operation = 'reconcile'"
        ))
    };
    env.wait_for(60, "the first reconciliation", || logged() > 0);
    let mut during = Vec::new();
    // the cycle, or its first minute at the largest sizes
    while logged() < n + 1 && started.elapsed() < Duration::from_secs(90) {
        if during.len() < 20 {
            during.push(push_latency_ms(env, n, 10 + during.len() as i64));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let cpu = (worker_cpu_seconds(env) - cpu0) / started.elapsed().as_secs_f64() * 100.0;
    let row = env
        .db()
        .query_one(
            "SELECT count(*), coalesce(sum((error::jsonb->>'checked')::int8), 0)::int8,
                    coalesce(sum((error::jsonb->>'repaired')::int8 + (error::jsonb->>'errors')::int8), 0)::int8,
                    coalesce(sum(calls), 0)::int8, extract(epoch FROM max(at) - min(at))::float8
               FROM integ.sync_log WHERE id > $1 AND operation = 'reconcile'",
            &[&first_id],
        )
        .expect("reconcile log");
    let (connections, checked, repaired_or_failed, calls, span): (i64, i64, i64, i64, f64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    print_statements(env);
    assert_eq!(
        repaired_or_failed, 0,
        "the listings are in sync: nothing to repair, nothing failing"
    );
    let rate = checked as f64 / span.max(0.001);
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let (idle, during) = (sorted(idle), sorted(during));
    println!(
        "BENCH scale {n}: reconciliation {connections} connections, {checked} listings in {span:.1} s ({rate:.0} listings/s, {calls} calls): \
         a cycle of all {} listings takes {:.0} s (interval 3600 s); workers {cpu:.0}% of one core meanwhile; \
         push latency p50/max idle {:.1}/{:.1} ms, while reconciling {:.1}/{:.1} ms; worker memory after it {}",
        n * 100,
        (n * 100) as f64 / rate,
        percentile(&idle, 50.0),
        idle[idle.len() - 1],
        percentile(&during, 50.0),
        during.last().copied().unwrap_or(f64::NAN),
        worker_memory(env)
    );
}

/// Each worker's RssAnon, "16.6 MB, ...".
fn worker_memory(env: &Env) -> String {
    worker_rss_kib(env)
        .iter()
        .map(|k| format!("{:.1} MB", *k as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Changes one product's stock on 10 connections spread over all of them: ms until the 10
/// listings are pushed.
fn push_latency_ms(env: &Env, n: i64, round: i64) -> f64 {
    let tenants: Vec<String> = (0..10)
        .map(|k| format!("t{}", 1 + (k * n / 10 + round * 7) % n))
        .collect();
    let sku = format!("p-{}", round % 100);
    let stock = 1000 + round as i32;
    let start = Instant::now();
    env.db()
        .execute(
            "UPDATE inventory SET qty = $3 WHERE tenant_id = ANY($1) AND sku = $2",
            &[&tenants, &sku, &stock],
        )
        .expect("probe update");
    loop {
        let pushed = env
            .db()
            .query_one(
                "SELECT count(*) FROM integ.listings WHERE tenant_id = ANY($1) AND product_id = $2 AND last_pushed_stock = $3",
                &[&tenants, &sku, &stock],
            )
            .expect("probe")
            .get::<_, i64>(0);
        if pushed >= tenants.len() as i64 {
            return start.elapsed().as_secs_f64() * 1000.0;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the probe's pushes");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// CPU seconds of the capture worker alone (`worker_cpu_seconds` counts it too).
fn capture_cpu_seconds(env: &Env) -> f64 {
    process_cpu_seconds(env.capture_pid())
}
