//! Operations: usage for billing and health over time are exact, survive an immediate stop, and
//! do not change when the sync log is pruned.

use e2e::*;
use postgres::fallible_iterator::FallibleIterator;
use serde_json::{json, Value};

/// Waits until the roll-up has counted every sync-log and webhook row written so far.
fn wait_rolled_up(env: &Env) {
    env.wait_for(20, "the roll-up to count every row", || {
        env.scalar_i64(
            "SELECT count(*) FROM integ.rollup_state s
              WHERE s.source IN ('sync_log', 'webhooks')
                AND s.watermark < coalesce(CASE s.source WHEN 'sync_log' THEN (SELECT max(id) FROM integ.sync_log)
                                                          ELSE (SELECT max(id) FROM integ.webhooks) END, 0)",
        ) == 0
            // a gap whose row exists is a transaction committed after the watermark passed it;
            // one without is a transaction the immediate stop rolled back
            && env.scalar_i64(
                "SELECT count(*) FROM integ.rollup_gaps g
                  WHERE EXISTS (SELECT 1 FROM integ.sync_log l WHERE g.source = 'sync_log' AND l.id = g.id)
                     OR EXISTS (SELECT 1 FROM integ.webhooks w WHERE g.source = 'webhooks' AND w.id = g.id)",
            ) == 0
    });
}

/// The tenant's usage over every hour, one number per column.
fn usage(env: &Env) -> Value {
    let v: Value = env
        .db()
        .query_one(
            "SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM (
                SELECT key AS k, sum(value::bigint) AS v
                  FROM integ.usage_report($1, '-infinity', 'infinity') r, jsonb_each_text(to_jsonb(r) - 'marketplace')
                 GROUP BY key) s",
            &[&TENANT],
        )
        .expect("usage_report")
        .get(0);
    v
}

/// Health of the tenant's MercadoLibre connection over the last hour.
fn health(env: &Env) -> Value {
    env.db()
        .query_one(
            "SELECT to_jsonb(h) - 'oldest_pending_age' - 'backlog_eta' FROM integ.health h
              WHERE tenant_id = $1 AND marketplace = 'mercadolibre' AND \"window\" = '1h'",
            &[&TENANT],
        )
        .expect("health")
        .get(0)
}

/// `integ.metrics()` read by Python's `prometheus_client` text parser (strict: it raises on
/// anything malformed): one object per sample.
fn metrics(env: &Env) -> Vec<Value> {
    let text = env.scalar_text("SELECT integ.metrics()");
    let script = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families\n\
                  print(json.dumps([{'name': s.name, 'labels': s.labels, 'value': s.value}\n\
                  for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]))";
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup installs python3-prometheus-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "the parser refused integ.metrics():\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("samples")
}

/// A sale of one unit on MercadoLibre, its notification delivered by hand.
fn sell(env: &Env, item: &str) {
    let made = env.sim.post(
        "/mercadolibre/orders",
        json!({"seller": SELLER, "send": false, "items": [{"item_id": item, "quantity": 1}]}),
    );
    let d = &made["delivery"];
    let body = d["body"].as_str().unwrap_or("").as_bytes().to_vec();
    let a: Value = env
        .db()
        .query_one(
            "SELECT integ.receive_webhook('mercadolibre', $1, $2)",
            &[&d["headers"], &body],
        )
        .expect("receive")
        .get(0);
    assert_eq!(a["status"], "accepted", "{a}");
}

fn work(env: &Env, ls: &[(String, String)], qty: i32, sales: usize) {
    for (sku, _) in ls {
        env.set_stock(sku, qty);
    }
    env.wait_idle(20, "the pushes");
    for (_, item) in ls.iter().take(sales) {
        sell(env, item);
    }
    env.wait_for(20, "the sales applied", || {
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE state <> 'done'") == 0
    });
    env.wait_idle(20, "the pushes after the sales");
    let r: Value = env
        .db()
        .query_one("SELECT integ.reconcile($1)", &[&TENANT])
        .expect("reconcile")
        .get(0);
    assert_eq!(r["checked"], ls.len(), "{r}");
}

#[test]
fn usage_and_health_count_every_call_across_an_immediate_stop_and_pruning() {
    let env = Env::new("ops-usage");
    let ls = env.listings(30);
    work(&env, &ls, 7, 5);
    // stopped at once with rows the roll-up may not have counted yet; the work goes on after
    env.pg.stop("immediate");
    env.pg.pg_ctl_start();
    env.reconnect();
    work(&env, &ls, 9, 3);
    wait_rolled_up(&env);

    let u = usage(&env);
    let sim = |name: &str| env.sim.counter(name) as i64;
    let puts = sim("mercadolibre PUT /items/{id}");
    // a reconciliation reads the items (multiget) and MercadoLibre's missed notifications
    let reads = sim("mercadolibre GET /items?ids") + sim("mercadolibre GET /missed_feeds");
    let fetches = sim("mercadolibre GET /orders/{id}");
    println!("OPERATIONS usage {u}; sandbox: {puts} PUTs, {reads} reads, {fetches} order reads");
    assert!(puts >= 60 && reads >= 4, "the work made calls: {puts} {reads}");
    assert_eq!(u["push_calls"], puts, "{u}");
    assert_eq!(u["read_calls"], reads, "{u}");
    assert_eq!(u["order_fetch_calls"], fetches, "{u}");
    assert_eq!(
        (u["order_fetch_calls"].clone(), u["orders_applied"].clone()),
        (json!(8), json!(8)),
        "{u}"
    );
    assert_eq!(
        (u["webhooks_received"].clone(), u["webhooks_accepted"].clone()),
        (json!(8), json!(8)),
        "{u}"
    );
    assert_eq!(
        u["api_calls"],
        sim(&format!("mercadolibre seller {SELLER} requests")),
        "{u}"
    );
    assert_eq!(
        u["pushes"],
        env.scalar_i64("SELECT count(*) FROM integ.sync_log WHERE operation = 'push' AND outcome = 'success'"),
        "{u}"
    );
    let h = health(&env);
    assert_eq!(h["calls"], u["api_calls"], "{h}");
    assert_eq!(h["successes"], h["calls"], "{h}");
    assert_eq!(
        (h["failures"].clone(), h["success_rate"].clone()),
        (json!(0), json!(100.00)),
        "{h}"
    );
    assert_eq!(
        (h["webhooks_received"].clone(), h["webhooks_processed"].clone()),
        (json!(8), json!(8)),
        "{h}"
    );
    assert!(
        h["latency_p50_ms"].as_f64().is_some() && h["webhook_ms_mean"].as_f64().is_some(),
        "{h}"
    );

    // the Prometheus exposition parses strictly and says what health says
    let m = metrics(&env);
    let sample = |name: &str, want: &[(&str, &str)]| -> f64 {
        m.iter()
            .filter(|s| s["name"] == name && want.iter().all(|(k, v)| s["labels"][*k] == *v))
            .map(|s| s["value"].as_f64().unwrap_or(f64::NAN))
            .sum()
    };
    let ours = [("tenant", TENANT), ("marketplace", "mercadolibre")];
    for (outcome, column) in [
        ("success", "successes"),
        ("failure", "failures"),
        ("throttled", "throttled"),
    ] {
        let mut labels = ours.to_vec();
        labels.push(("outcome", outcome));
        assert_eq!(
            sample("integ_api_calls_total", &labels),
            h[column].as_f64().unwrap_or(-1.0),
            "{outcome}"
        );
    }
    assert_eq!(sample("integ_webhooks_processed_total", &ours), 8.0);
    assert_eq!(
        sample("integ_queue_pending", &ours),
        h["backlog"].as_f64().unwrap_or(-1.0)
    );
    let mut inf = ours.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        sample("integ_api_latency_ms_bucket", &inf),
        sample("integ_api_latency_ms_count", &ours)
    );
    assert!(sample("integ_api_latency_ms_count", &ours) > 0.0);

    // pruning every counted row changes no figure
    let pruned = env.scalar_i64("SELECT integ.prune_sync_log('0 seconds', 1000000)");
    assert!(pruned > 100, "{pruned} rows pruned");
    assert_eq!(env.scalar_i64("SELECT count(*) FROM integ.sync_log"), 0);
    env.db().batch_execute("SELECT integ.roll_up()").expect("roll up");
    assert_eq!(usage(&env), u);
    assert_eq!(health(&env), h);
}

#[test]
fn usage_report_refuses_bad_input_and_other_tenants() {
    let env = Env::new("ops-bad");
    env.listings(1);
    let refused = |sql: &str| format!("{:?}", env.db().batch_execute(sql).expect_err(sql));
    let e = refused("SELECT * FROM integ.usage_report('nobody', now() - interval '1 day', now())");
    assert!(e.contains("unknown tenant \\\"nobody\\\""), "{e}");
    let e = refused("SELECT * FROM integ.usage_report('acme', now(), now() - interval '1 day')");
    assert!(e.contains("is after to"), "{e}");
    let e = refused("SELECT * FROM integ.usage_report('acme', NULL, now())");
    assert!(e.contains("are required"), "{e}");
    env.db()
        .batch_execute("CREATE ROLE app_b LOGIN IN ROLE integ_application")
        .expect("role");
    let mut b = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=app_b dbname=postgres options='-c integ.tenant_id=b'",
            env.pg.port
        ),
        postgres::NoTls,
    )
    .expect("connect as b");
    let e = format!(
        "{:?}",
        b.batch_execute("SELECT * FROM integ.usage_report('acme', '-infinity', 'infinity')")
            .expect_err("another tenant's usage")
    );
    assert!(e.contains("permission denied"), "{e}");
    assert_eq!(
        b.query_one("SELECT count(*) FROM integ.health", &[])
            .expect("health")
            .get::<_, i64>(0),
        0,
        "b sees none of acme's health"
    );
}

/// (raised, resolved) alerts of `kind` for tenant acme's MercadoLibre connection.
fn alerts(env: &Env, kind: &str) -> (i64, i64) {
    alerts_of(env, TENANT, kind)
}

fn alerts_of(env: &Env, tenant: &str, kind: &str) -> (i64, i64) {
    let r = env
        .db()
        .query_one(
            "SELECT count(*), count(resolved_at) FROM integ.alerts WHERE kind = $1 AND tenant_id = $2",
            &[&kind, &tenant],
        )
        .expect("alerts");
    (r.get(0), r.get(1))
}

fn notifications(listener: &mut postgres::Client) -> Vec<Value> {
    listener.batch_execute("SELECT 1").expect("poll");
    let mut out = Vec::new();
    let mut n = listener.notifications();
    let mut it = n.iter();
    while let Ok(Some(m)) = it.next() {
        out.push(serde_json::from_str(m.payload()).unwrap_or(Value::Null));
    }
    out
}

/// Changes every listing's stock every 200 ms for `secs` seconds (calls for the rules to judge).
fn traffic(env: &Env, ls: &[(String, String)], secs: u64, mut until: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut q = 0;
    while std::time::Instant::now() < end && !until() {
        q += 1;
        for (sku, _) in ls {
            env.set_stock(sku, 100 + q % 50);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn an_error_rate_above_the_threshold_raises_one_alert_that_resolves_itself() {
    let env = Env::with_conf("ops-error-rate", "integ.alert_window = 20\ninteg.alert_min_calls = 20");
    let ls = env.listings(20);
    env.wait_idle(20, "the first pushes");
    let mut listener = env.pg.client();
    listener.batch_execute("LISTEN integ_alerts").expect("listen");
    // every 10th request fails: 10% of calls
    env.sim.post(
        "/faults",
        json!({"marketplace": "mercadolibre", "error_every": 10, "error_status": 503}),
    );
    traffic(&env, &ls, 40, || alerts(&env, "error_rate").0 > 0);
    assert_eq!(alerts(&env, "error_rate"), (1, 0), "raised within 40 s");
    traffic(&env, &ls, 6, || false);
    assert_eq!(alerts(&env, "error_rate"), (1, 0), "raised once while it lasts");
    let message = env.scalar_text("SELECT message FROM integ.alerts WHERE kind = 'error_rate'");
    assert!(
        message.starts_with("error rate ") && message.contains("alert above 5%"),
        "{message}"
    );

    // back to 0%: resolved on its own once clear for a window
    env.sim.delete("/faults");
    traffic(&env, &ls, 60, || alerts(&env, "error_rate").1 > 0);
    assert_eq!(alerts(&env, "error_rate"), (1, 1), "resolved within 60 s");
    let sent = notifications(&mut listener);
    let ours: Vec<&Value> = sent.iter().filter(|n| n["kind"] == "error_rate").collect();
    assert_eq!(ours.len(), 2, "one NOTIFY raising, one resolving: {sent:?}");
    assert_eq!(
        (ours[0]["resolved"].clone(), ours[1]["resolved"].clone()),
        (Value::Null, json!(true))
    );

    // 4%: under the threshold, nothing is raised
    env.sim.post(
        "/faults",
        json!({"marketplace": "mercadolibre", "error_every": 25, "error_status": 503}),
    );
    traffic(&env, &ls, 30, || alerts(&env, "error_rate").0 > 1);
    assert_eq!(alerts(&env, "error_rate"), (1, 1), "4% raises nothing");
    let h: Value = env
        .db()
        .query_one(
            "SELECT to_jsonb(h) FROM integ.health h WHERE tenant_id = $1 AND \"window\" = '5m'",
            &[&TENANT],
        )
        .expect("health")
        .get(0);
    let failed = h["failures"].as_f64().unwrap_or(0.0) / h["calls"].as_f64().unwrap_or(1.0);
    println!("OPERATIONS error-rate alert raised and resolved once; health 5m {h}");
    assert!(failed > 0.02 && failed < 0.12, "health shows the faults: {h}");
}

#[test]
fn a_waiting_backlog_and_an_open_circuit_raise_their_alerts_and_resolve() {
    let mut env = Env::with_conf(
        "ops-backlog",
        "integ.alert_window = 10\ninteg.alert_backlog_age = 4\ninteg.alert_circuit_open = 4",
    );
    let ls = env.listings(3);
    env.add_shopify_tenant("shop", "circuit.myshopify.com", json!({}));
    env.shopify_listing("shop", "circuit.myshopify.com", "S1", 4001);
    env.wait_idle(20, "the first pushes");

    // a paused connection's change waits: backlog_age
    env.db()
        .batch_execute(&format!("SELECT integ.pause('{TENANT}', 'mercadolibre')"))
        .expect("pause");
    env.set_stock(&ls[0].0, 3);
    env.wait_for(20, "the backlog alert", || alerts(&env, "backlog_age").0 == 1);
    env.db()
        .batch_execute(&format!("SELECT integ.resume('{TENANT}', 'mercadolibre')"))
        .expect("resume");
    env.wait_for(40, "the backlog alert resolved", || {
        alerts(&env, "backlog_age") == (1, 1)
    });

    // a marketplace failing every call: the circuit opens and stays open: circuit_open
    env.sim.post(
        "/faults",
        json!({"marketplace": "shopify", "error_rate": 1.0, "error_status": 503}),
    );
    env.set_stock_of("shop", "S1", 5);
    env.wait_for(30, "the circuit alert", || {
        alerts_of(&env, "shop", "circuit_open").0 == 1
    });
    env.sim.delete("/faults");
    env.wait_for(20, "the stock through", || env.shopify_available(4001) == Some(5));
    env.wait_for(40, "the circuit alert resolved", || {
        alerts_of(&env, "shop", "circuit_open") == (1, 1)
    });
    assert_eq!(alerts(&env, "backlog_age"), (1, 1), "no second backlog episode");
    assert_eq!(alerts(&env, "circuit_open"), (0, 0), "acme's circuit never opened");
}

fn ml_price(env: &Env, item: &str) -> String {
    let v = env.sim.get(&format!("/mercadolibre/items/{item}/prices"));
    let text = v["price"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v["price"].to_string());
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn all_at(env: &Env, ls: &[(String, String)], q: i64) -> bool {
    ls.iter().all(|(_, item)| env.sim.item_quantity(item) == Some(q))
}

/// A bad import set 500 products to 0 (and 5 prices to 1.00) and it reached the marketplace:
/// `integ.revert` (a dry run first) puts back every previous value and holds the listings, so
/// EGDC's values wait; EGDC's fix and `integ.release` end in sync.
#[test]
fn a_bad_bulk_change_is_reverted_held_and_released_in_sync() {
    let env = Env::new("ops-revert");
    let ls = env.listings(500);
    env.db()
        .batch_execute(
            "CREATE TABLE prices (tenant_id text, sku text, price numeric(12,2), PRIMARY KEY (tenant_id, sku));
             SELECT integ.track_prices('prices', 'tenant_id', 'sku', 'price');
             INSERT INTO prices SELECT 'acme', 'sku-' || i, 100.00 FROM generate_series(0, 4) i;
             UPDATE inventory SET qty = 20 WHERE tenant_id = 'acme';",
        )
        .expect("stock and prices");
    env.wait_for(60, "the good values", || all_at(&env, &ls, 20));
    env.wait_idle(30, "recorded");
    assert_eq!(ml_price(&env, &ls[0].1), "100");
    let since: std::time::SystemTime = env.db().query_one("SELECT now()", &[]).expect("now").get(0);
    std::thread::sleep(std::time::Duration::from_millis(20));

    // the bad import
    env.db()
        .batch_execute("UPDATE inventory SET qty = 0 WHERE tenant_id = 'acme'; UPDATE prices SET price = 1;")
        .expect("bad import");
    env.wait_for(60, "the bad values everywhere", || all_at(&env, &ls, 0));
    env.wait_idle(30, "recorded");
    assert_eq!(ml_price(&env, &ls[0].1), "1");

    let revert = |dry: bool| -> Value {
        env.db()
            .query_one("SELECT integ.revert('acme', $1, NULL, $2)", &[&since, &dry])
            .expect("revert")
            .get(0)
    };
    let plan = revert(true);
    let m = &plan["marketplaces"]["mercadolibre"];
    assert_eq!(
        (
            m["listings_changed"].clone(),
            m["stock_reverts"].clone(),
            m["price_reverts"].clone(),
            m["would_hold"].clone()
        ),
        (json!(500), json!(500), json!(5), json!(500)),
        "{plan}"
    );
    assert_eq!(m["samples"][0]["stock"], json!([0, 20]), "{plan}");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.listings WHERE held_since IS NOT NULL"),
        0,
        "a dry run changes nothing"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(all_at(&env, &ls, 0));

    let done = revert(false);
    assert_eq!(done["marketplaces"]["mercadolibre"]["held"], 500, "{done}");
    env.wait_for(60, "the previous values back", || all_at(&env, &ls, 20));
    env.wait_for(20, "the previous prices back", || ml_price(&env, &ls[4].1) == "100");
    println!("OPERATIONS revert: {done}");

    // EGDC's values wait while held; its fix goes out on release
    env.db()
        .batch_execute("UPDATE inventory SET qty = 25 WHERE tenant_id = 'acme'; UPDATE prices SET price = 110;")
        .expect("the fix");
    env.wait_captured(10, "the fix recorded");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(all_at(&env, &ls, 20), "held listings wait");
    assert_eq!(ml_price(&env, &ls[0].1), "100");
    let sync: String = env
        .db()
        .query_one("SELECT status FROM integ.sync_product('acme', 'sku-3')", &[])
        .expect("sync_product")
        .get(0);
    assert_eq!(sync, "held");
    let released = env.scalar_i64("SELECT integ.release('acme')");
    assert_eq!(released, 500);
    env.wait_for(60, "EGDC's fix everywhere", || all_at(&env, &ls, 25));
    env.wait_for(20, "EGDC's price", || ml_price(&env, &ls[2].1) == "110");

    // hold alone, and bad input
    assert_eq!(env.scalar_i64("SELECT integ.hold('acme', 'mercadolibre', 'sku-7')"), 1);
    env.set_stock("sku-7", 3);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(env.sim.item_quantity(&ls[7].1), Some(25));
    assert_eq!(env.scalar_i64("SELECT integ.release('acme', NULL, 'sku-7')"), 1);
    env.wait_for(20, "sku-7 released", || env.sim.item_quantity(&ls[7].1) == Some(3));
    let refused = |sql: &str| format!("{:?}", env.db().batch_execute(sql).expect_err(sql));
    assert!(refused("SELECT integ.revert('acme', now() + interval '1 hour')").contains("is in the future"));
    assert!(
        refused("SELECT integ.revert('nobody', now())").contains("tenant \\\"nobody\\\" has no marketplace connection")
    );
    assert!(refused("SELECT integ.hold('acme', 'ebay')").contains("unknown marketplace \\\"ebay\\\""));
    assert!(refused("SELECT integ.release('acme', NULL, 'no-such')").contains("is not mapped"));
    assert!(refused("SELECT integ.revert('acme', NULL)").contains("are required"));
}

/// How many rows of `integ.health_windows` differ from their windows recomputed from the buckets
/// now, and which ("0 " when none).
const WINDOWS_OFF_THEIR_BUCKETS: &str = "
    WITH e AS (
        SELECT h.connection_id, h.name, sum(h.calls) AS calls, sum(h.successes) AS successes,
               sum(h.failures) AS failures, sum(h.pushes) AS pushes, integ.histogram_sum(h.latency_ms) AS latency_ms,
               max(h.latency_max_ms) AS latency_max_ms
          FROM (SELECT '5m'::text AS name, b.* FROM integ.health_buckets b
                 WHERE b.width_s = 60 AND b.start >= date_trunc('minute', now() - interval '5 minutes')
                UNION ALL
                SELECT '1h', b.* FROM integ.health_buckets b
                 WHERE b.width_s = 60 AND b.start >= date_trunc('minute', now() - interval '1 hour')
                UNION ALL
                SELECT '1d', b.* FROM integ.health_buckets b
                 WHERE b.width_s = 3600 AND b.start >= date_trunc('hour', now() - interval '1 day')) h
         GROUP BY 1, 2)
    SELECT count(*)::bigint || ' ' || coalesce(string_agg(concat_ws(' ', e.connection_id, e.name, e.calls, e.latency_ms, e.latency_max_ms,
                                                          w.connection_id, w.\"window\", w.calls, w.latency_ms, w.latency_max_ms), '; '), '')
      FROM e FULL JOIN integ.health_windows w ON w.connection_id = e.connection_id AND w.\"window\" = e.name
     WHERE coalesce(w.calls, 0) <> coalesce(e.calls, 0) OR coalesce(w.successes, 0) <> coalesce(e.successes, 0)
        OR coalesce(w.failures, 0) <> coalesce(e.failures, 0) OR coalesce(w.pushes, 0) <> coalesce(e.pushes, 0)
        OR integ.histogram_add(w.latency_ms, array_fill(0::bigint, ARRAY[12]))
           IS DISTINCT FROM integ.histogram_add(e.latency_ms, array_fill(0::bigint, ARRAY[12]))
        OR (e.calls > 0 AND w.latency_max_ms IS DISTINCT FROM e.latency_max_ms)";

#[test]
fn health_windows_lose_the_buckets_that_leave_them_as_a_recount_would() {
    let mut env = Env::new("ops-windows");
    env.add_tenant("beta", SELLER + 1, json!({}));
    // per connection: calls that leave the 5-minute and the 1-hour window within 20-80 s, and
    // calls that stay; acme's slowest call leaves (its window is recounted), beta's stays (the
    // leaving buckets are taken off)
    env.db()
        .batch_execute(
            "INSERT INTO integ.sync_log (at, tenant_id, marketplace, connection_id, operation, outcome, stock,
                                         http_status, latency_ms, calls)
             SELECT now() - x.age, c.tenant_id, 'mercadolibre', c.id, 'push', x.outcome, 5, x.status,
                    CASE WHEN c.tenant_id = 'acme' THEN x.acme_ms ELSE x.beta_ms END, 1
               FROM integ.connections c,
                    (VALUES (interval '4 minutes 40 seconds', 'success', 200, 900.0, 20.0),
                            (interval '4 minutes 40 seconds', 'retry', 503, 30.0, 30.0),
                            (interval '59 minutes 40 seconds', 'success', 200, 700.0, 40.0),
                            (interval '1 minute', 'success', 200, 50.0, 800.0),
                            (interval '30 minutes', 'success', 200, 60.0, 70.0)) x(age, outcome, status, acme_ms, beta_ms)",
        )
        .expect("sync log");
    wait_rolled_up(&env);
    let calls = |window: &str| {
        env.scalar_i64(&format!(
            "SELECT coalesce(sum(calls), 0)::bigint FROM integ.health WHERE \"window\" = '{window}'"
        ))
    };
    assert_eq!((calls("5m"), calls("1h"), calls("1d")), (6, 10, 10));
    assert_eq!(env.scalar_text(WINDOWS_OFF_THEIR_BUCKETS), "0 ");
    env.wait_for(
        150,
        "the oldest calls to leave the 5-minute and the 1-hour windows",
        || calls("5m") == 2 && calls("1h") == 8,
    );
    assert_eq!(
        env.scalar_text(WINDOWS_OFF_THEIR_BUCKETS),
        "0 ",
        "windows differ from a recount"
    );
    let max = |tenant: &str| {
        env.scalar_text(&format!(
            "SELECT coalesce(latency_max_ms::bigint::text, 'none') FROM integ.health
              WHERE tenant_id = '{tenant}' AND \"window\" = '5m'"
        ))
    };
    assert_eq!(
        (max("acme"), max("beta")),
        ("50".to_string(), "800".to_string()),
        "{}",
        env.scalar_text("SELECT string_agg(h::text, E'\n') FROM integ.health h")
    );
}
