//! Scale: 100, 1,000 and 10,000 connections with 100 listings each (up to 1,000,000 listings),
//! mostly idle, and a sync log of 1,000 rows per connection spread over the last day (10 million
//! at 10,000 connections) rolled up into health: the workers' idle CPU, the time of
//! `integ.status`, `integ.health` and `integ.metrics()`, and each worker's memory, at each size.
//! `BENCH_SCALE_SIZES=100,1000` picks the sizes; `BENCH_SCALE_LOG_ROWS` the rows per connection;
//! `BENCH_SCALE_HOLD=<seconds>` keeps each cluster up afterwards (for a profiler or psql).

use crate::worker_rss_kib;
use e2e::*;
use std::time::{Duration, Instant};

pub fn scale() {
    let sizes: Vec<i64> = std::env::var("BENCH_SCALE_SIZES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let per_connection: i64 = std::env::var("BENCH_SCALE_LOG_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
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
        "integ.max_limiters = 20000\ninteg.reconcile_interval = 0\nshared_buffers = '1GB'\nwork_mem = '64MB'",
    );
    let base = env.sim.base_url("mercadolibre");
    let setup = Instant::now();
    // connections that never need a token refresh, each with 100 listings and their stock
    env.db()
        .batch_execute(&format!(
            "SELECT count(integ.connect('t' || i, 'mercadolibre',
                     jsonb_build_object('client_id', 'app', 'client_secret', 'app-secret', 'access_token', 'APP_USR-' || i,
                                        'refresh_token', 'TG-' || i, 'expires_in', 315360000, 'user_id', 700000 + i),
                     jsonb_build_object('base_url', '{base}')))
               FROM generate_series(1, {n}) i;
             INSERT INTO inventory SELECT 't' || i, 'p-' || k, 5 FROM generate_series(1, {n}) i, generate_series(0, 99) k;"
        ))
        .expect("connections and inventory");
    // the capture applies the inserts before the listings exist, so they enqueue nothing
    env.wait_for(3600, "the capture to apply the inventory", || {
        env.scalar_i64("SELECT messages_applied FROM integ.capture") >= n * 100
    });
    env.db()
        .batch_execute(
            "INSERT INTO integ.listings (connection_id, tenant_id, marketplace, product_id, external_id, desired_stock,
                                         last_pushed_stock, remote_stock)
             SELECT c.id, c.tenant_id, 'mercadolibre', 'p-' || k, 'MLM' || (c.id * 1000 + k), 5, 5, 5
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
                    'push', CASE WHEN k % 50 = 0 THEN 'retry' ELSE 'success' END, 5, 5,
                    CASE WHEN k % 50 = 0 THEN 503 ELSE 200 END, 20 + random() * 200, 1, 5
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
    let rss: Vec<String> = worker_rss_kib(&env)
        .iter()
        .map(|k| format!("{:.1} MB", *k as f64 / 1024.0))
        .collect();
    println!(
        "BENCH scale {n}: idle workers {cpu:.2}% of one core (goal < 2%); integ.status {status:.1} ms, integ.health {health:.1} ms, \
         integ.metrics() {metrics:.1} ms for {size} bytes (goal < 100 ms each); worker memory {}",
        rss.join(", ")
    );
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

/// CPU seconds of the capture worker alone (`worker_cpu_seconds` counts it too).
fn capture_cpu_seconds(env: &Env) -> f64 {
    let pid = env.scalar_i64("SELECT pid::bigint FROM pg_stat_activity WHERE backend_type = 'integration capture'");
    process_cpu_seconds(pid as i32)
}
