//! Tenant isolation and roles: an application session scoped to tenant A sees and changes only
//! A's rows in every table and view and cannot act for B; neither role reads the encrypted
//! credentials; base_url overrides are confined to allowed hosts; hostile text arguments do
//! nothing; no secret or the master key reaches a table, view, log or pg_stat_statements.

use e2e::*;
use postgres::{Client, NoTls};
use serde_json::json;

const SHOP_A: &str = "tenant-a.myshopify.com";

fn login(env: &Env, role: &str) -> Client {
    Client::connect(
        &format!("host=127.0.0.1 port={} user={role} dbname=postgres", env.pg.port),
        NoTls,
    )
    .expect("connect as role")
}

/// Two tenants with rows in every table: connections, credentials, listings, jobs, log,
/// webhooks, order lines and a conflict.
fn two_tenants() -> Env {
    let mut env = Env::with_conf(
        "security",
        "shared_preload_libraries = 'integration,pg_stat_statements'\npg_stat_statements.track = all",
    );
    env.db()
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .expect("pgss");
    env.add_tenant("B", 5002, json!({"conflict_strategy": "manual"}));
    let a = env.listings(2);
    let b = env.listings_for("B", 5002, 200_000, 2);
    env.add_shopify_tenant(TENANT, SHOP_A, json!({}));
    env.shopify_listing(TENANT, SHOP_A, &a[0].0, 1001);
    for (sku, _) in &a {
        env.set_stock(sku, 10);
    }
    for (sku, _) in &b {
        env.set_stock_of("B", sku, 10);
    }
    env.wait_idle(10, "initial stock");
    // a Shopify order for A, a drift conflict for B
    let made = env.sim.post(
        "/shopify/orders",
        json!({"shop": SHOP_A, "send": false,
               "lines": [{"inventory_item_id": 1001, "location_id": 1, "sku": a[0].0, "quantity": 1}]}),
    );
    let d = &made["delivery"];
    env.db()
        .query_one(
            "SELECT integ.receive_webhook('shopify', $1, convert_to($2, 'UTF8'))",
            &[&d["headers"], &d["body"].as_str().unwrap_or("")],
        )
        .expect("receive");
    env.sim.post(
        &format!("/mercadolibre/items/{}/edit", b[0].1),
        json!({"available_quantity": 3, "send": false}),
    );
    env.db()
        .query_one("SELECT integ.reconcile('B')", &[])
        .expect("reconcile B");
    env.wait_for(10, "A's order applied", || {
        env.scalar_i64("SELECT count(*) FROM integ.order_lines") == 1
    });
    env.db()
        .batch_execute(
            "CREATE ROLE app_a LOGIN IN ROLE integ_application;
             CREATE ROLE ops LOGIN IN ROLE integ_operator;
             GRANT SELECT, UPDATE ON inventory TO app_a;",
        )
        .expect("roles");
    env
}

/// Every relation of schema integ the role may select from, with whether it has a tenant_id.
fn relations(c: &mut Client) -> Vec<(String, bool)> {
    c.query(
        "SELECT format('integ.%I', cl.relname),
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = cl.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
           FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
          WHERE n.nspname = 'integ' AND cl.relkind IN ('r', 'v')
            AND has_table_privilege(cl.oid, 'SELECT')
          ORDER BY 1",
        &[],
    )
    .expect("relations")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[test]
fn a_tenant_session_sees_and_changes_only_its_own_rows() {
    let env = two_tenants();
    let mut app = login(&env, "app_a");
    app.batch_execute("SET integ.tenant_id = 'acme'").expect("scope");
    let rels = relations(&mut app);
    let names: Vec<&str> = rels.iter().map(|r| r.0.as_str()).collect();
    for expected in [
        "integ.connections",
        "integ.listings",
        "integ.sync_jobs",
        "integ.sync_log",
        "integ.webhooks",
        "integ.order_lines",
        "integ.conflicts",
        "integ.status",
        "integ.rate_limits",
        "integ.credentials",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} readable by the application: {names:?}"
        );
    }
    assert!(
        !names.contains(&"integ.credential_store"),
        "the encrypted secrets are not readable"
    );
    let mut own_rows = 0;
    for (rel, tenant_keyed) in &rels {
        if !tenant_keyed {
            continue;
        }
        let r = app
            .query_one(
                &format!("SELECT count(*) FILTER (WHERE tenant_id IS DISTINCT FROM 'acme'), count(*) FROM {rel}"),
                &[],
            )
            .expect(rel);
        let (foreign, all): (i64, i64) = (r.get(0), r.get(1));
        assert_eq!(foreign, 0, "{rel} shows another tenant's rows");
        own_rows += all;
    }
    assert!(own_rows > 10, "the application sees its own rows ({own_rows})");
    // B's rows exist (an operator sees them) ...
    let mut ops = login(&env, "ops");
    let b_rows: i64 = ops
        .query_one("SELECT count(*) FROM integ.listings WHERE tenant_id = 'B'", &[])
        .unwrap()
        .get(0);
    assert_eq!(b_rows, 2);
    let conflicts: i64 = ops
        .query_one("SELECT count(*) FROM integ.conflicts", &[])
        .unwrap()
        .get(0);
    assert_eq!(conflicts, 1, "B's drift became a conflict (manual)");
    // ... but A cannot act for B, change B's rows, or configure anything
    for sql in [
        "SELECT * FROM integ.sync_product('B', 'sku-0')",
        "SELECT * FROM integ.remote_stock('B', 'sku-0')",
        "SELECT integ.reconcile('B')",
    ] {
        let e = app.query(sql, &[]).expect_err(sql);
        assert!(format!("{e:?}").contains("scoped to another tenant"), "{sql}: {e:?}");
    }
    for sql in [
        "SELECT integ.connect('B', 'mercadolibre', '{}', '{}')",
        "SELECT integ.pause('B', 'mercadolibre')",
        "SELECT integ.retry_dead()",
        "SELECT integ.resolve_conflict(1, 'dismiss')",
        "SELECT * FROM integ.credential_store",
        "SELECT integ.limiter_usage()",
    ] {
        let e = app.query(sql, &[]).expect_err(sql);
        assert!(format!("{e:?}").contains("permission denied"), "{sql}: {e:?}");
    }
    let changed = app
        .execute("UPDATE integ.listings SET remote_stock = 0 WHERE tenant_id = 'B'", &[])
        .map_or(0, |n| n);
    assert_eq!(changed, 0);
    // A's own calls work: a push now, and the webhook endpoint (any tenant's deliveries)
    let rows = app
        .query(
            "SELECT status FROM integ.sync_product('acme', 'sku-0', 'mercadolibre')",
            &[],
        )
        .expect("own sync_product");
    assert_eq!(rows[0].get::<_, String>(0), "success");
    let a: serde_json::Value = app
        .query_one("SELECT integ.receive_webhook('shopify', '{}', 'x')", &[])
        .expect("receive")
        .get(0);
    assert_eq!(a["http_status"], 400);
    // without a scope the application sees nothing
    let mut unscoped = login(&env, "app_a");
    let n: i64 = unscoped
        .query_one("SELECT count(*) FROM integ.listings", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let n: i64 = unscoped
        .query_one("SELECT count(*) FROM integ.status", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // the operator configures but cannot read secrets either
    let e = ops
        .query("SELECT secrets FROM integ.credential_store", &[])
        .expect_err("secrets");
    assert!(format!("{e:?}").contains("permission denied"));
    ops.query_one("SELECT integ.pause('B', 'mercadolibre')", &[])
        .expect("operator pauses B");
    let meta = ops
        .query(
            "SELECT tenant_id, marketplace, key_version FROM integ.credentials ORDER BY 1, 2",
            &[],
        )
        .expect("metadata");
    assert_eq!(meta.len(), 3);
    env.assert_no_secrets();
}

#[test]
fn hostile_arguments_do_nothing_and_base_urls_stay_on_allowed_hosts() {
    let env = two_tenants();
    let before =
        env.scalar_i64("SELECT count(*) FROM integ.listings") + env.scalar_i64("SELECT count(*) FROM inventory");
    let hostile = [
        "acme'; DROP TABLE inventory; --",
        "x') OR 1=1 --",
        "acme\" OR \"1\"=\"1",
        "'; SELECT pg_sleep(10); --",
        "$1; DELETE FROM integ.listings",
        "../../../etc/passwd",
        "%s%s%s%n",
    ];
    // every function of the extension, each text argument in turn hostile (the others benign)
    let functions: Vec<(String, Vec<String>)> = env
        .db()
        .query(
            "SELECT p.proname::text, array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t)
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'integ' AND p.prokind = 'f' AND p.prorettype <> 'trigger'::regtype
                AND p.proname NOT IN ('rotate_key', 'track_inventory', 'untrack_inventory')",
            &[],
        )
        .expect("functions")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut calls = 0;
    for (name, types) in &functions {
        for (i, t) in types.iter().enumerate() {
            if t != "text" {
                continue;
            }
            let args: Vec<String> = types
                .iter()
                .enumerate()
                .map(|(j, t)| match (j == i, t.as_str()) {
                    (true, _) => "$1".to_string(),
                    (_, "text") => "'acme'".into(),
                    (_, "jsonb") => "'{}'::jsonb".into(),
                    (_, "bytea") => "'x'::bytea".into(),
                    (_, "bigint" | "integer" | "numeric") => "1".into(),
                    (_, "interval") => "'1 second'::interval".into(),
                    (_, other) => format!("NULL::{other}"),
                })
                .collect();
            let sql = format!("SELECT * FROM integ.{name}({})", args.join(", "));
            for h in hostile {
                // an error or an answer, never an effect
                let _ = env.db().query(&sql, &[&h]);
                calls += 1;
            }
        }
    }
    assert!(calls > 100, "{calls} hostile calls");
    let after =
        env.scalar_i64("SELECT count(*) FROM integ.listings") + env.scalar_i64("SELECT count(*) FROM inventory");
    assert_eq!(before, after, "nothing was created, changed or dropped");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.connections WHERE status = 'paused'"),
        0
    );
    // base_url: only the marketplace's hosts and integ.allowed_hosts (127.0.0.1 here)
    for url in [
        "http://169.254.169.254/latest",
        "http://localhost:5432",
        "https://api.mercadolibre.com.evil.example",
    ] {
        let e = env
            .db()
            .query_one(
                "SELECT integ.connect('acme', 'mercadolibre', '{\"client_id\": 1, \"client_secret\": \"s\", \"refresh_token\": \"r\"}', $1)",
                &[&json!({ "base_url": url })],
            )
            .expect_err(url);
        assert!(format!("{e:?}").contains("integ.allowed_hosts"), "{url}: {e:?}");
    }
    env.assert_no_secrets();
}
