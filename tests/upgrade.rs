//! Upgrade in place: a database filled by the previous release (every kind of state the
//! extension keeps, jobs in flight when the server stops) keeps all of it through a new build,
//! a restart and `ALTER EXTENSION integration UPDATE`; the new library waits for the ALTER;
//! and the upgraded schema equals a fresh install's.

use e2e::installs::{build_path, install_tree, remove_installed, RestoreCurrentBuild};
use e2e::*;
use marketplace_signing as signing;
use postgres::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SHOP: &str = "upgrade-mx.myshopify.com";
const ITEMS: usize = 12;
const UPDATE_HINT: &str = "run ALTER EXTENSION integration UPDATE";

fn extversion(db: &mut Client) -> String {
    db.query_one("SELECT extversion FROM pg_extension WHERE extname = 'integration'", &[])
        .expect("extversion")
        .get(0)
}

/// A signed Shopify orders/create delivery of `order`, handed to integ.receive_webhook.
fn deliver_order(env: &Env, order: &str, delivery_id: &str) -> Value {
    let body = order.as_bytes();
    let headers = json!({"X-Shopify-Hmac-Sha256": signing::shopify_webhook(SHOPIFY_CLIENT_SECRET, body),
        "X-Shopify-Topic": "orders/create", "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Webhook-Id": delivery_id, "X-Shopify-API-Version": "2026-10"});
    env.db()
        .query_one("SELECT integ.receive_webhook('shopify', $1, $2)", &[&headers, &body])
        .expect("receive_webhook")
        .get(0)
}

/// Rows in every table of schema integ.
fn row_counts(db: &mut impl postgres::GenericClient) -> BTreeMap<String, i64> {
    let tables: Vec<String> = db
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'integ' AND c.relkind = 'r' ORDER BY 1",
            &[],
        )
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let n: i64 = db
                .query_one(&format!("SELECT count(*) FROM integ.{t}"), &[])
                .expect("count")
                .get(0);
            (t, n)
        })
        .collect()
}

/// Everything of schema integ a fresh install and an upgrade must agree on, one line each.
const SCHEMA_SNAPSHOT: &str = r#"
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'integ'),
     ext AS (SELECT oid FROM pg_extension WHERE extname = 'integration')
SELECT 'schema acl=' || coalesce(nspacl::text, '') FROM pg_namespace WHERE oid = (SELECT oid FROM ns)
UNION ALL
SELECT format('relation %s kind=%s rls=%s force_rls=%s acl=%s options=%s persistence=%s',
              relname, relkind, relrowsecurity, relforcerowsecurity, relacl, reloptions, relpersistence)
  FROM pg_class WHERE relnamespace = (SELECT oid FROM ns)
UNION ALL
SELECT format('column %s.%s #%s %s not_null=%s default=%s identity=%s generated=%s acl=%s collation=%s',
              c.relname, a.attname, row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
              format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
              a.attidentity, a.attgenerated, a.attacl, a.attcollation)
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.relnamespace = (SELECT oid FROM ns) AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT format('constraint %s on %s: %s deferrable=%s', conname, conrelid::regclass, pg_get_constraintdef(oid),
              condeferrable)
  FROM pg_constraint WHERE connamespace = (SELECT oid FROM ns)
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = (SELECT oid FROM ns)
UNION ALL
SELECT format('policy %s on %s cmd=%s permissive=%s roles=%s using=%s check=%s', p.polname, p.polrelid::regclass,
              p.polcmd, p.polpermissive, (SELECT array_agg(r::regrole::text ORDER BY r::regrole::text) FROM unnest(p.polroles) r),
              pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE c.relnamespace = (SELECT oid FROM ns)
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = (SELECT oid FROM ns) AND NOT t.tgisinternal
UNION ALL
SELECT format('view %s: %s', c.relname, pg_get_viewdef(c.oid))
  FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM ns) AND c.relkind IN ('v', 'm')
UNION ALL
SELECT format('sequence %s type=%s increment=%s min=%s max=%s cache=%s cycle=%s', s.seqrelid::regclass,
              s.seqtypid::regtype, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = (SELECT oid FROM ns)
UNION ALL
SELECT format('function %s returns %s kind=%s language=%s security_definer=%s config=%s volatility=%s strict=%s
               parallel=%s leakproof=%s cost=%s rows=%s acl=%s binary=%s source_md5=%s',
              p.oid::regprocedure, pg_get_function_result(p.oid), p.prokind, l.lanname, p.prosecdef, p.proconfig,
              p.provolatile, p.proisstrict, p.proparallel, p.proleakproof, p.procost, p.prorows, p.proacl,
              p.probin, md5(p.prosrc))
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = (SELECT oid FROM ns)
UNION ALL
SELECT format('function %s argument defaults %s', p.oid::regprocedure, pg_get_expr(p.proargdefaults, 0))
  FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM ns) AND p.proargdefaults IS NOT NULL
UNION ALL
SELECT format('type %s kind=%s', t.typname, t.typtype)
  FROM pg_type t WHERE t.typnamespace = (SELECT oid FROM ns)
UNION ALL
SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_depend d WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = (SELECT oid FROM ext)
   AND d.deptype = 'e'
UNION ALL
SELECT format('comment %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
  FROM pg_description d JOIN pg_depend m ON m.classid = d.classoid AND m.objid = d.objoid
 WHERE m.refobjid = (SELECT oid FROM ext) AND m.deptype = 'e'
UNION ALL
SELECT format('configuration tables %s conditions %s', extconfig::regclass[], extcondition)
  FROM pg_extension WHERE oid = (SELECT oid FROM ext)
"#;

fn schema_snapshot(db: &mut Client) -> Vec<String> {
    let mut lines: Vec<String> = db
        .query(SCHEMA_SNAPSHOT, &[])
        .expect("schema snapshot")
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect();
    lines.sort();
    lines
}

#[test]
fn an_upgraded_database_keeps_everything_and_equals_a_fresh_install() {
    let started = Instant::now();
    let _restore = RestoreCurrentBuild::new();
    let previous = build_path("INTEG_PREV_BUILD");
    let current = build_path("INTEG_CURRENT_BUILD");
    remove_installed();
    install_tree(&previous);

    // --- the previous release, with every kind of state -----------------------------------
    let mut env = Env::new("upgrade");
    let old_version = extversion(&mut env.db());
    assert_ne!(
        old_version,
        e2e_library_version(&current),
        "INTEG_PREV_BUILD is not an earlier release"
    );
    let ls = env.listings(ITEMS);
    // a settings key 0.1.0 stored and ignored (0.2.0 refuses it in integ.connect)
    let key_id = env.add_shein_tenant(TENANT, 910, json!({"colour": "red"}));
    env.shein_listing(TENANT, &key_id, "sku-0", "SH-1");
    env.add_tiktok_tenant(TENANT, "CIPHER-U", json!({}));
    env.tiktok_listing(TENANT, "CIPHER-U", "sku-0", "P-1", "SKU-1");
    env.add_shopify_tenant(TENANT, SHOP, json!({"conflict_strategy": "manual"}));
    env.shopify_listing(TENANT, SHOP, "sku-0", 3001);
    env.shopify_listing(TENANT, SHOP, "sku-1", 3002);
    env.set_stock("sku-0", 20);
    env.set_stock("sku-1", 10);
    env.wait_idle(20, "first stock everywhere (done jobs)");
    assert_eq!(env.tiktok_quantity("SKU-1"), Some(20));

    // an order, applied once: a webhook row and a ledger row
    let order = json!({"id": 7_700_001, "line_items": [{"id": 1, "sku": "sku-0", "quantity": 2}]}).to_string();
    assert_eq!(deliver_order(&env, &order, "up-1")["status"], "accepted");
    env.wait_for(15, "the order to take 2", || env.egdc_stock(TENANT, "sku-0") == 18);
    // a merchant's edit on Shopify under the manual strategy: an open conflict
    let edit = env
        .sim
        .post("/shopify/levels/3002/1/bump", json!({"available": 7, "send": false}));
    let d = &edit["delivery"];
    let a: Value = env
        .db()
        .query_one(
            "SELECT integ.receive_webhook('shopify', $1, convert_to($2, 'UTF8'))",
            &[&d["headers"], &d["body"].as_str().unwrap_or("")],
        )
        .expect("receive the edit")
        .get(0);
    assert_eq!(a["status"], "accepted", "{a}");
    env.wait_for(15, "an open conflict", || {
        env.scalar_i64("SELECT count(*) FROM integ.conflicts WHERE status = 'open'") == 1
    });
    // a listing the marketplace does not have: a dead job
    env.db()
        .execute("INSERT INTO inventory VALUES ($1, 'ghost', 3)", &[&TENANT])
        .expect("ghost");
    env.db()
        .query_one(
            "SELECT integ.map_product($1, 'mercadolibre', 'ghost', 'MLM999999')",
            &[&TENANT],
        )
        .expect("map ghost");
    env.wait_for(20, "a dead job", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'") == 1
    });
    // a seller who revoked the app: needs re-authorization, one alert
    env.add_tenant("lapsed", 5002, json!({}));
    env.listings_for("lapsed", 5002, 200_000, 1);
    env.wait_idle(20, "the lapsed seller's first push");
    env.sim.post("/mercadolibre/sellers/5002/revoke", json!({}));
    env.db()
        .batch_execute(
            "UPDATE integ.credential_store SET access_expires_at = now() - interval '1 minute' WHERE tenant_id = 'lapsed'",
        )
        .expect("expire");
    env.set_stock_of("lapsed", "sku-0", 4);
    env.wait_for(20, "an alert", || {
        env.scalar_i64("SELECT count(*) FROM integ.alerts") == 1
    });
    // an application registered for OAuth, and a seller half-way through authorizing it
    env.db()
        .execute(
            "SELECT integ.register_app('mercadolibre', $1, $2)",
            &[
                &json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
                &json!({"base_url": env.sim.base_url("mercadolibre")}),
            ],
        )
        .expect("register_app");
    let authorize_url: String = env
        .db()
        .query_one(
            "SELECT integ.authorize_url('newcomer', 'mercadolibre', 'https://egdc.example/callback')",
            &[],
        )
        .expect("authorize_url")
        .get(0);
    // slow MercadoLibre, then the server stops with pushes pending and in flight
    env.sim
        .post("/faults", json!({"marketplace": "mercadolibre", "latency_ms": 400}));
    for (i, (sku, _)) in ls.iter().enumerate().skip(2) {
        env.set_stock(sku, 7000 + i as i32);
    }
    env.wait_for(10, "pushes in flight", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'in_flight'") > 0
    });
    let states_at_stop = env.scalar_text(
        "SELECT string_agg(format('%s %s', state, n), ', ' ORDER BY state) FROM
           (SELECT state, count(*) n FROM integ.sync_jobs GROUP BY state) s",
    );
    env.pg.stop("immediate");
    env.sim.delete("/faults");

    // --- the new build, before ALTER EXTENSION: everything waits, nothing breaks ------------
    remove_installed();
    install_tree(&current);
    env.pg.pg_ctl_start();
    env.reconnect();
    assert_eq!(extversion(&mut env.db()), old_version);
    std::thread::sleep(Duration::from_secs(1)); // pushes the stop cut off finish in the sandbox
    let writes = |env: &Env| -> u64 { ls.iter().map(|(_, item)| env.sim.item_writes(item)).sum() };
    let waiting_jobs = "SELECT count(*) FROM integ.sync_jobs WHERE state IN ('pending', 'in_flight')";
    let settled = "SELECT (SELECT count(*) FROM integ.sync_log) + (SELECT count(*) FROM integ.sync_jobs WHERE state <> 'pending')";
    let (writes_before, settled_before) = (writes(&env), env.scalar_i64(settled));
    assert!(
        env.scalar_i64(waiting_jobs) > 0,
        "jobs were pending or in flight at the stop: {states_at_stop}"
    );
    // a change made in the meantime is kept for later
    env.set_stock("sku-1", 31);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(writes(&env), writes_before, "the new library pushed before the update");
    assert_eq!(
        env.scalar_i64(settled),
        settled_before,
        "jobs were claimed or logged before the update"
    );
    assert!(
        env.scalar_i64(
            "SELECT count(*) FROM integ.sync_jobs j JOIN integ.listings l ON l.id = j.listing_id
              WHERE l.tenant_id = 'acme' AND l.product_id = 'sku-1'
                AND j.state = 'pending'"
        ) >= 2,
        "the change made while waiting has its jobs"
    );
    let log = env.pg.log();
    assert_eq!(
        log.matches(UPDATE_HINT).count(),
        1,
        "the DBA is told once what to do:\n{}",
        tail(&log, 30)
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.status"),
        5,
        "integ.status answers"
    );
    let remote: Vec<(String, Option<i64>)> = env
        .db()
        .query(
            "SELECT marketplace, remote_stock FROM integ.remote_stock('acme', 'sku-0') ORDER BY 1",
            &[],
        )
        .expect("remote_stock on the old schema")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(remote.len(), 4, "{remote:?}");
    assert!(remote.iter().all(|(_, s)| *s == Some(18)), "{remote:?}");

    // --- ALTER EXTENSION integration UPDATE -------------------------------------------------
    let (before, after) = {
        let mut db = env.db();
        let mut tx = db.transaction().expect("begin");
        let before = row_counts(&mut tx);
        tx.batch_execute("ALTER EXTENSION integration UPDATE").expect("update");
        let after = row_counts(&mut tx);
        tx.commit().expect("commit");
        (before, after)
    };
    println!(
        "UPGRADE {old_version} -> {} rows per table before/after:",
        extversion(&mut env.db())
    );
    for (t, n) in &after {
        let was = before.get(t).map_or("(new)".to_string(), i64::to_string);
        println!("UPGRADE   {t}: {was} / {n}");
    }
    let kept: BTreeMap<String, i64> = after.into_iter().filter(|(t, _)| before.contains_key(t)).collect();
    assert_eq!(before, kept, "the update lost or added rows (or dropped a table)");
    assert_eq!(extversion(&mut env.db()), e2e_library_version(&current));
    let log = env.pg.log();
    assert_eq!(
        log.matches("has settings keys integ.connect now refuses: colour")
            .count(),
        1,
        "the unknown settings key is reported once:\n{}",
        tail(&log, 20)
    );

    // pending and in-flight jobs drain, and the change made while waiting arrives
    for (i, (_, item)) in ls.iter().enumerate().skip(2) {
        env.wait_for(30, "jobs pending at the stop to drain", || {
            env.sim.item_quantity(item) == Some(7000 + i as i64)
        });
    }
    env.wait_for(15, "the change made while waiting", || {
        env.sim.item_quantity(&ls[1].1) == Some(31)
    });
    // the dead job can be retried
    env.sim
        .post("/mercadolibre/items", json!({"id": "MLM999999", "seller_id": SELLER}));
    assert_eq!(env.scalar_i64("SELECT integ.retry_dead('acme', 'mercadolibre')"), 1);
    env.wait_for(20, "the retried job", || env.sim.item_quantity("MLM999999") == Some(3));
    // the ledger still refuses the same order, delivered again under another id
    let lines = env.scalar_i64("SELECT count(*) FROM integ.order_lines");
    assert_eq!(deliver_order(&env, &order, "up-2")["status"], "accepted");
    env.wait_for(15, "the second delivery to be applied", || {
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE event_id = 'up-2' AND state = 'done'") == 1
    });
    assert_eq!(env.egdc_stock(TENANT, "sku-0"), 18, "an order applied twice");
    assert_eq!(env.scalar_i64("SELECT count(*) FROM integ.order_lines"), lines);
    // the open conflict resolves, the alert is acknowledged
    let conflict = env.scalar_i64("SELECT id FROM integ.conflicts WHERE status = 'open'");
    env.db()
        .query_one("SELECT integ.resolve_conflict($1, 'egdc_wins')", &[&conflict])
        .expect("resolve");
    env.wait_for(15, "EGDC's stock back on Shopify", || {
        env.shopify_available(3002) == Some(31)
    });
    let alert = env.scalar_i64("SELECT id FROM integ.alerts");
    env.db()
        .execute("SELECT integ.acknowledge_alert($1)", &[&alert])
        .expect("acknowledge");
    assert_eq!(
        env.scalar_text("SELECT status FROM integ.connections WHERE tenant_id = 'lapsed'"),
        "needs_reauthorization"
    );
    // a new change reaches all four marketplaces: every connection's secrets still decrypt
    env.set_stock("sku-0", 55);
    env.wait_for(20, "55 on every marketplace", || {
        env.sim.item_quantity(&ls[0].1) == Some(55)
            && env.shopify_available(3001) == Some(55)
            && env.tiktok_quantity("SKU-1") == Some(55)
            && env.shein_quantity("SH-1") == Some(55)
    });
    let second_key = env.pg.dir.join("master-2.key");
    std::fs::write(&second_key, "upgrade-test-second-master-key\n").expect("write key");
    let rotated: Value = env
        .db()
        .query_one("SELECT integ.rotate_key($1)", &[&second_key.display().to_string()])
        .expect("every secret decrypts and re-encrypts")
        .get(0);
    assert_eq!(
        (
            &rotated["credential_store"],
            &rotated["apps"],
            &rotated["authorizations"]
        ),
        (&json!(5), &json!(1), &json!(1)),
        "{rotated}"
    );
    // the authorization begun before the upgrade completes (its verifier and the app's secret
    // decrypt under the new key), and the new seller's connection pushes
    let callback = env
        .sim
        .post("/authorize/mercadolibre", json!({"url": authorize_url, "seller": 6001}));
    env.db()
        .query_one("SELECT integ.complete_authorization('mercadolibre', $1)", &[&callback])
        .expect("complete_authorization");
    env.sim
        .post("/mercadolibre/items", json!({"id": "MLM6001", "seller_id": 6001}));
    env.db()
        .batch_execute(
            "INSERT INTO inventory VALUES ('newcomer', 'P1', 4);
             SELECT integ.map_product('newcomer', 'mercadolibre', 'P1', 'MLM6001');",
        )
        .expect("newcomer's listing");
    env.wait_for(15, "the newcomer's push", || {
        env.sim.item_quantity("MLM6001") == Some(4)
    });

    // --- the upgraded schema equals a fresh install's -------------------------------------
    env.db()
        .batch_execute("CREATE DATABASE fresh")
        .expect("create database");
    let mut fresh = postgres::Client::connect(
        &format!("host=127.0.0.1 port={} user=postgres dbname=fresh", env.pg.port),
        postgres::NoTls,
    )
    .expect("connect fresh");
    fresh
        .batch_execute("CREATE EXTENSION integration CASCADE")
        .expect("fresh install");
    let (upgraded, installed) = (schema_snapshot(&mut env.db()), schema_snapshot(&mut fresh));
    let only_upgraded: Vec<_> = upgraded.iter().filter(|l| !installed.contains(l)).collect();
    let only_fresh: Vec<_> = installed.iter().filter(|l| !upgraded.contains(l)).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "upgraded and fresh schemas differ\nonly upgraded:\n{only_upgraded:#?}\nonly fresh:\n{only_fresh:#?}"
    );
    assert!(
        upgraded.len() > 200,
        "the snapshot saw the schema ({} lines)",
        upgraded.len()
    );
    println!("UPGRADE schema: {} catalog lines equal", upgraded.len());

    // an unknown version: PostgreSQL's own error; downgrades have no path either
    let unknown = env.db().batch_execute("ALTER EXTENSION integration UPDATE TO '99.0.0'");
    let message = unknown.err().map(|e| format!("{e:?}")).unwrap_or_default();
    assert!(message.contains("no update path"), "{message}");
    let down = env
        .db()
        .batch_execute(&format!("ALTER EXTENSION integration UPDATE TO '{old_version}'"));
    assert!(down.is_err(), "a downgrade path exists");
    env.assert_no_secrets();
    println!("UPGRADE took {:.0} s", started.elapsed().as_secs_f64());
}

/// The version of a build's control file.
fn e2e_library_version(build: &std::path::Path) -> String {
    let control = std::fs::read_to_string(build.join("usr/share/postgresql/15/extension/integration.control"))
        .expect("control file");
    control
        .lines()
        .find_map(|l| l.strip_prefix("default_version"))
        .map(|v| v.trim_start_matches([' ', '=']).trim().trim_matches('\'').to_string())
        .expect("default_version")
}
