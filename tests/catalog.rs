//! Catalog imports and linking by SKU (all four marketplaces): a 10,000-unit catalog with variations,
//! missing and duplicated SKUs is imported and linked with exact counts; an import survives an
//! immediate stop, can be cancelled, and starts its pass again when its scroll id expires;
//! `adopt` takes the marketplace's number; bad input is a clear error; tenants are isolated.

use e2e::*;
use postgres::{Client, NoTls};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const FIRST_ID: u64 = 500_000;

/// The sandbox's generation rule: product i has `variations` units when i % every == 0, else
/// one; unit n (from 1) has no SKU when n % missing == 0, else the previous unit's SKU when
/// n % duplicate == 0. Returns every unit's SKU, in order.
fn generated_skus(products: u64, variations: u64, every: u64, missing: u64, duplicate: u64) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = Vec::new();
    for i in 0..products {
        let names: Vec<String> = if every > 0 && variations > 0 && i.is_multiple_of(every) {
            (0..variations).map(|j| format!("SKU-{i}-{j}")).collect()
        } else {
            vec![format!("SKU-{i}")]
        };
        for name in names {
            let n = out.len() as u64 + 1;
            let sku = if missing > 0 && n.is_multiple_of(missing) {
                None
            } else if duplicate > 0 && n.is_multiple_of(duplicate) {
                out.last().cloned().flatten()
            } else {
                Some(name)
            };
            out.push(sku);
        }
    }
    out
}

/// Each seller's items are numbered from its own first id.
fn first_id(seller: u64) -> u64 {
    FIRST_ID + (seller - SELLER) * 100_000
}

/// The item of product `i` of a seller's generated catalog.
fn item(seller: u64, i: u64) -> String {
    format!("MLM{}", first_id(seller) + i)
}

fn catalog(env: &Env, seller: u64, products: u64, extra: Value) -> Value {
    let mut body = json!({"seller_id": seller, "products": products, "first_id": first_id(seller), "stock": 5});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    env.sim.post("/mercadolibre/catalog", body)
}

fn import(env: &Env, tenant: &str) -> i64 {
    import_from(env, tenant, "mercadolibre")
}

fn import_from(env: &Env, tenant: &str, marketplace: &str) -> i64 {
    let ids: Vec<i64> = env
        .db()
        .query_one("SELECT integ.import_catalog($1, $2)", &[&tenant, &marketplace])
        .expect("import_catalog")
        .get(0);
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0]
}

fn import_state(env: &Env, id: i64) -> String {
    env.scalar_text(&format!("SELECT state FROM integ.imports WHERE id = {id}"))
}

fn wait_done(env: &Env, id: i64, secs: u64) {
    env.wait_for(secs, "the import to finish", || {
        let s = import_state(env, id);
        assert!(
            s == "running" || s == "done",
            "import {id} ended {s}: {}",
            import_error(env, id)
        );
        s == "done"
    });
}

fn import_error(env: &Env, id: i64) -> String {
    env.scalar_text(&format!(
        "SELECT coalesce(error, '') FROM integ.imports WHERE id = {id}"
    ))
}

fn link(env: &Env, tenant: &str, options: Value) -> Value {
    link_on(env, tenant, "mercadolibre", options)
}

fn link_on(env: &Env, tenant: &str, marketplace: &str, options: Value) -> Value {
    env.db()
        .query_one(
            "SELECT integ.link_by_sku($1, $2, $3)",
            &[&tenant, &marketplace, &options],
        )
        .expect("link_by_sku")
        .get(0)
}

fn search_calls(env: &Env) -> u64 {
    env.sim.counter("mercadolibre GET /users/{id}/items/search")
}

/// Every catalog test's shape: 4,000 products, every other one with 4 variations (10,000
/// units), each 97th unit without a SKU, each 89th with the previous unit's.
const PLAN: (u64, u64, u64, u64, u64) = (4_000, 4, 2, 97, 89);

fn plan_json() -> Value {
    json!({"products": PLAN.0, "variations": PLAN.1, "variations_every": PLAN.2,
           "missing_sku_every": PLAN.3, "duplicate_sku_every": PLAN.4, "stock": 5})
}

/// Imports `tenant`'s catalog on `marketplace` (made by the sandbox from `PLAN`) and links it,
/// checking every count against the generation rule; returns the import's API calls.
fn import_and_link(env: &Env, tenant: &str, marketplace: &str) -> i64 {
    let skus = generated_skus(PLAN.0, PLAN.1, PLAN.2, PLAN.3, PLAN.4);
    assert_eq!(skus.len(), 10_000);
    // EGDC has every product but each 50th, and five that are listed nowhere
    let mut egdc: BTreeSet<String> = skus.iter().flatten().cloned().collect();
    egdc.retain(|s| {
        let i: u64 = s
            .trim_start_matches("SKU-")
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        !i.is_multiple_of(50)
    });
    egdc.extend((1..=5).map(|i| format!("EXTRA-{i}")));
    let rows: Vec<String> = egdc.iter().cloned().collect();
    env.db()
        .execute(
            "INSERT INTO inventory SELECT $1, sku, 5 FROM unnest($2::text[]) sku ON CONFLICT DO NOTHING",
            &[&tenant, &rows],
        )
        .expect("inventory");
    let started = Instant::now();
    let id = import_from(env, tenant, marketplace);
    wait_done(env, id, 300);
    let took = started.elapsed();
    let (seen, api_calls): (i64, i64) = {
        let r = env
            .db()
            .query_one(
                &format!("SELECT listings_seen, api_calls FROM integ.imports WHERE id = {id}"),
                &[],
            )
            .expect("import");
        (r.get(0), r.get(1))
    };
    let in_cache = |filter: &str| {
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.remote_listings WHERE tenant_id = '{tenant}' AND marketplace = '{marketplace}'
                AND gone_at IS NULL {filter}"
        ))
    };
    assert_eq!(seen, 10_000);
    assert_eq!(in_cache(""), 10_000);
    assert_eq!(
        in_cache("AND price = 100.00 AND currency IS NOT NULL AND remote_stock = 5"),
        10_000
    );
    println!(
        "CATALOG {marketplace} 10,000 units imported in {:.1} s, {api_calls} calls",
        took.as_secs_f64()
    );

    // what linking must find, from the generation rule
    let mut by_sku: BTreeMap<&str, usize> = BTreeMap::new();
    for s in skus.iter().flatten() {
        *by_sku.entry(s).or_default() += 1;
    }
    let without_sku = skus.iter().filter(|s| s.is_none()).count();
    let ambiguous = skus.iter().flatten().filter(|s| by_sku[s.as_str()] > 1).count();
    let unique: Vec<&str> = skus
        .iter()
        .flatten()
        .map(String::as_str)
        .filter(|s| by_sku[s] == 1)
        .collect();
    let linked = unique.iter().filter(|s| egdc.contains(**s)).count();
    let without_product = unique.len() - linked;
    let products_without_listing = egdc.len() - linked;
    let expect = |r: &Value, linked: usize, already: usize| {
        assert_eq!(r["linked"], linked, "{r}");
        assert_eq!(r["already_linked"], already, "{r}");
        assert_eq!(r["ambiguous"], ambiguous, "{r}");
        assert_eq!(r["without_sku"], without_sku, "{r}");
        assert_eq!(r["listings_without_product"], without_product, "{r}");
        assert_eq!(r["products_without_listing"], products_without_listing, "{r}");
    };
    let listings = || {
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.listings WHERE tenant_id = '{tenant}' AND marketplace = '{marketplace}'"
        ))
    };
    let dry = link_on(env, tenant, marketplace, json!({"dry_run": true}));
    expect(&dry, linked, 0);
    assert_eq!(listings(), 0, "a dry run linked");
    let done = link_on(env, tenant, marketplace, json!({}));
    expect(&done, linked, 0);
    assert!(
        !done["samples"]["ambiguous"].as_array().is_none_or(Vec::is_empty),
        "{done}"
    );
    assert_eq!(listings(), linked as i64);
    let again = link_on(env, tenant, marketplace, json!({}));
    expect(&again, 0, linked);
    assert_eq!(listings(), linked as i64);
    assert_eq!(
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.unlinked WHERE kind = 'listing' AND tenant_id = '{tenant}' AND marketplace = '{marketplace}'"
        )),
        (10_000 - linked) as i64
    );
    env.wait_idle(180, "the first sync after linking");
    api_calls
}

#[test]
fn a_ten_thousand_unit_mercadolibre_catalog_is_imported_and_linked_with_exact_counts() {
    let env = Env::new("catalog-ml");
    let made = catalog(&env, SELLER, PLAN.0, plan_json());
    assert_eq!(made["units"], 10_000, "{made}");
    let searches = search_calls(&env);
    let calls = import_and_link(&env, TENANT, "mercadolibre");
    // the fewest calls MercadoLibre's page sizes allow: 40 scans of 100 ids (and the empty last
    // one), 200 details calls of 20
    assert_eq!(search_calls(&env) - searches, 41);
    assert_eq!(calls, 41 + 200);
    // a linked single-unit product (i = 1) and a variation (i = 2, j = 1) follow EGDC
    env.set_stock("SKU-1", 42);
    env.set_stock("SKU-2-1", 17);
    env.wait_for(20, "the linked listings to follow EGDC", || {
        env.sim.item_quantity(&item(SELLER, 1)) == Some(42)
            && env.sim.get(&format!("/mercadolibre/items/{}", item(SELLER, 2)))["variations"]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x["available_quantity"] == 17))
    });
}

#[test]
fn a_ten_thousand_unit_tiktok_catalog_is_imported_and_linked_with_exact_counts() {
    const FIRST: u64 = 1_729_000_000_000_000;
    let mut env = Env::new("catalog-tts");
    env.add_tiktok_tenant("tts", "CIPHER-C", json!({}));
    let mut body = plan_json();
    body["shop_cipher"] = json!("CIPHER-C");
    body["first_id"] = json!(FIRST);
    body["warehouse_id"] = json!("WH-1");
    let made = env.sim.post("/tiktok/catalog", body);
    assert_eq!(made["units"], 10_000, "{made}");
    let calls = import_and_link(&env, "tts", "tiktok");
    assert_eq!(
        calls, 40,
        "4,000 products at 100 a page, the last one saying it is the last"
    );
    // SKU-1 is unit 5 (product 0 has four): SKU id FIRST + 4,000 products + 4
    env.set_stock_of("tts", "SKU-1", 42);
    env.wait_for(20, "the linked SKU to follow EGDC", || {
        env.tiktok_quantity(&(FIRST + 4_000 + 4).to_string()) == Some(42)
    });
}

#[test]
fn a_ten_thousand_unit_shein_catalog_is_imported_and_linked_with_exact_counts() {
    const FIRST: u64 = 1_000_000;
    let mut env = Env::new("catalog-shein");
    let key = env.add_shein_tenant("shn", 920, json!({}));
    let mut body = plan_json();
    body["open_key_id"] = json!(key);
    body["first_id"] = json!(FIRST);
    body["warehouse_code"] = json!("WH-1");
    let made = env.sim.post("/shein/catalog", body);
    assert_eq!(made["units"], 10_000, "{made}");
    let calls = import_and_link(&env, "shn", "shein");
    // the fewest SHEIN's calls allow: 80 pages of 50 SKCs and the short one after them, one
    // spu-info per SPU, stock for 100 SKUs a call
    let fewest = 81 + 4_000 + 100;
    assert!(calls <= fewest * 105 / 100, "{calls} calls, the fewest {fewest}");
    env.set_stock_of("shn", "SKU-1", 42);
    env.wait_for(20, "the linked SKU to follow EGDC", || {
        env.shein_quantity(&format!("I{}-0", FIRST + 1)) == Some(42)
    });
}

#[test]
fn a_ten_thousand_unit_shopify_catalog_is_imported_and_linked_with_exact_counts() {
    const FIRST: u64 = 1_000_000;
    const SHOP: &str = "catalog-s.myshopify.com";
    let mut env = Env::new("catalog-shopify");
    // Shopify's bucket of 2,000 points, refilled ten times faster than a shop's 100 a second so
    // that the test takes seconds (bench/ imports at the real rate)
    env.sim.post("/shopify/config", json!({"restore_rate": 1000}));
    env.add_shopify_tenant("shp", SHOP, json!({"location_id": 1}));
    let mut body = plan_json();
    body["shop"] = json!(SHOP);
    body["first_id"] = json!(FIRST);
    body["location_id"] = json!(1);
    body["price"] = json!("100.00");
    body["currency"] = json!("MXN");
    let made = env.sim.post("/shopify/catalog", body);
    assert_eq!(made["units"], 10_000, "{made}");
    let throttled = env.sim.counter("shopify throttled");
    let calls = import_and_link(&env, "shp", "shopify");
    assert_eq!(calls, 40, "10,000 variants at 250 a page, the fewest");
    assert_eq!(
        env.sim.counter("shopify throttled"),
        throttled,
        "the import waits for the bucket instead of being throttled"
    );
    assert_eq!(
        env.scalar_text("SELECT min(currency) || max(currency) FROM integ.remote_listings WHERE tenant_id = 'shp'"),
        "MXNMXN"
    );
    // SKU-1 is unit 5 (product 0 has four): inventory item FIRST + 4,000 products + 10,000 variants + 4
    env.set_stock_of("shp", "SKU-1", 42);
    env.wait_for(20, "the linked item to follow EGDC", || {
        env.shopify_available(FIRST + 4_000 + 10_000 + 4) == Some(42)
    });
}

#[test]
fn an_import_survives_an_immediate_stop_and_a_cancelled_one_stops_calling() {
    let mut env = Env::new("catalog-stop");
    // 30 calls a second, one at a time (no burst)
    env.add_tenant("slow", 5002, json!({"rate_limit": "30/s"}));
    catalog(&env, 5002, 3_000, json!({}));
    // a listing of the same connection, mapped before the import
    env.db()
        .batch_execute(&format!(
            "INSERT INTO inventory VALUES ('slow', 'PROBE', 1);
             SELECT integ.map_product('slow', 'mercadolibre', 'PROBE', '{}')",
            item(5002, 1)
        ))
        .expect("probe");
    env.wait_for(10, "the probe's first push", || {
        env.sim.item_quantity(&item(5002, 1)) == Some(1)
    });
    let id = import(&env, "slow");
    env.wait_for(30, "a few pages", || {
        env.scalar_i64(&format!("SELECT pages FROM integ.imports WHERE id = {id}")) >= 5
    });
    // the import takes only what pushes leave: a stock change goes out before it ends
    env.set_stock_of("slow", "PROBE", 2);
    env.wait_for(2, "the push made during the import", || {
        env.sim.item_quantity(&item(5002, 1)) == Some(2)
    });
    assert_eq!(import_state(&env, id), "running", "the push overtook the import");
    env.pg.stop("immediate");
    env.pg.pg_ctl_start();
    env.reconnect();
    assert_eq!(import_state(&env, id), "running");
    wait_done(&env, id, 120);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.remote_listings WHERE tenant_id = 'slow' AND gone_at IS NULL"),
        3_000,
        "every listing once"
    );
    // a second import, cancelled: no call after it
    let id = import(&env, "slow");
    env.wait_for(30, "a page", || {
        env.scalar_i64(&format!("SELECT pages FROM integ.imports WHERE id = {id}")) >= 1
    });
    assert_eq!(
        env.scalar_text(&format!("SELECT integ.cancel_import({id})::text")),
        "true"
    );
    std::thread::sleep(Duration::from_millis(300)); // a page already under way ends
    let calls = search_calls(&env);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(search_calls(&env), calls, "a cancelled import made calls");
    assert_eq!(import_state(&env, id), "cancelled");
    assert_eq!(
        env.scalar_text(&format!("SELECT integ.cancel_import({id})::text")),
        "false"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.remote_listings WHERE tenant_id = 'slow' AND gone_at IS NOT NULL"),
        0,
        "a cancelled import marks nothing gone"
    );
}

#[test]
fn an_expired_scroll_id_starts_the_pass_again_and_adopt_takes_the_marketplaces_number() {
    let mut env = Env::new("catalog-scroll");
    env.add_tenant("scroll", 5002, json!({"rate_limit": "30/s"}));
    catalog(&env, 5002, 1_500, json!({}));
    let id = import(&env, "scroll");
    env.wait_for(30, "a few pages", || {
        env.scalar_i64(&format!("SELECT pages FROM integ.imports WHERE id = {id}")) >= 3
    });
    env.sim.post("/mercadolibre/catalog/expire_scrolls", json!({}));
    wait_done(&env, id, 120);
    assert_eq!(
        env.scalar_i64(&format!("SELECT passes::bigint FROM integ.imports WHERE id = {id}")),
        2
    );
    assert_eq!(
        env.scalar_i64(&format!("SELECT listings_seen FROM integ.imports WHERE id = {id}")),
        1_500,
        "each listing counted once, though the pass started again"
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.remote_listings WHERE tenant_id = 'scroll' AND gone_at IS NULL"),
        1_500
    );
    // adopt: EGDC rows without stock take the marketplace's 5; rows with stock keep theirs
    env.db()
        .batch_execute(
            "INSERT INTO inventory VALUES ('scroll', 'SKU-1', NULL), ('scroll', 'SKU-2', 9), ('scroll', 'SKU-3', 0)",
        )
        .expect("inventory");
    let r = link(&env, "scroll", json!({"initial_sync": "adopt"}));
    assert_eq!(r["linked"], 3, "{r}");
    assert_eq!(env.egdc_stock("scroll", "SKU-1"), 5);
    assert_eq!(env.egdc_stock("scroll", "SKU-2"), 9);
    assert_eq!(
        env.egdc_stock("scroll", "SKU-3"),
        5,
        "0 and listed nowhere: no stock yet"
    );
    env.wait_for(20, "EGDC's 9 pushed", || {
        env.sim.item_quantity(&item(5002, 2)) == Some(9)
    });
    // a reconciliation read updates the cache: the seller set 4 in MercadoLibre's own pages
    env.wait_idle(20, "the pushes after linking");
    env.sim.post(
        &format!("/mercadolibre/items/{}/edit", item(5002, 1)),
        json!({"available_quantity": 4, "send": false}),
    );
    let report: Value = env
        .db()
        .query_one("SELECT integ.reconcile('scroll')", &[])
        .expect("reconcile")
        .get(0);
    assert_eq!(report["checked"], 3, "{report}");
    assert_eq!(
        env.scalar_i64(&format!(
            "SELECT remote_stock FROM integ.remote_listings WHERE tenant_id = 'scroll' AND external_id = '{}'",
            item(5002, 1)
        )),
        4
    );
}

#[test]
fn bad_input_is_a_clear_error_and_tenants_are_isolated() {
    let mut env = Env::new("catalog-bad");
    fn refused(env: &Env, sql: &str) -> String {
        format!("{:?}", env.db().batch_execute(sql).expect_err(sql))
    }
    assert!(refused(&env, "SELECT integ.import_catalog('nobody')")
        .contains("tenant \\\"nobody\\\" has no marketplace connection"));
    assert!(refused(&env, "SELECT integ.import_catalog('acme', 'ebay')").contains("unknown marketplace \\\"ebay\\\""));
    assert!(refused(&env, "SELECT integ.import_catalog('acme', 'shopify')").contains("has no shopify connection"));
    assert!(
        refused(&env, "SELECT integ.link_by_sku('acme', NULL, '{\"dryrun\": true}')")
            .contains("unknown key \\\"dryrun\\\"")
    );
    assert!(refused(
        &env,
        "SELECT integ.link_by_sku('acme', NULL, '{\"normalize\": \"lower\"}')"
    )
    .contains("options.normalize: unknown \\\"lower\\\""));
    assert!(refused(
        &env,
        "SELECT integ.link_by_sku('acme', NULL, '{\"initial_sync\": \"pull\"}')"
    )
    .contains("initial_sync must be"));
    assert!(
        refused(&env, "SELECT integ.link_by_sku('acme', NULL, '{\"dry_run\": \"yes\"}')")
            .contains("dry_run must be true or false")
    );
    assert!(refused(&env, "SELECT integ.cancel_import(424242)").contains("no catalog import 424242"));
    env.db()
        .batch_execute("SELECT integ.pause('acme', 'mercadolibre')")
        .expect("pause");
    assert!(refused(&env, "SELECT integ.import_catalog('acme', 'mercadolibre')").contains("is paused"));
    env.db()
        .batch_execute("SELECT integ.resume('acme', 'mercadolibre')")
        .expect("resume");
    env.add_shopify_tenant(TENANT, "catalog-a.myshopify.com", json!({}));
    assert!(refused(&env, "SELECT integ.import_catalog('acme', 'shopify')").contains("has no settings.location_id"));

    // a revoked grant: the import fails with the reason and the usual alert
    env.add_tenant("revoked", 5003, json!({}));
    catalog(&env, 5003, 50, json!({}));
    env.sim.post("/mercadolibre/sellers/5003/revoke", json!({}));
    env.db()
        .batch_execute("UPDATE integ.credential_store SET access_expires_at = now() - interval '1 minute' WHERE tenant_id = 'revoked'")
        .expect("expire");
    let id = import(&env, "revoked");
    env.wait_for(20, "the import to fail", || import_state(&env, id) == "failed");
    assert!(
        import_error(&env, id).contains("re-authorization"),
        "{}",
        import_error(&env, id)
    );
    assert_eq!(
        env.scalar_i64(
            "SELECT count(*) FROM integ.alerts WHERE tenant_id = 'revoked' AND kind = 'needs_reauthorization'"
        ),
        1
    );

    // tenant isolation: an application session of acme sees nothing of B and cannot act for it
    env.add_tenant("B", 5002, json!({}));
    catalog(&env, 5002, 20, json!({}));
    let b = import(&env, "B");
    wait_done(&env, b, 30);
    let mine = import(&env, TENANT);
    wait_done(&env, mine, 30);
    env.db()
        .batch_execute("CREATE ROLE app_a LOGIN IN ROLE integ_application")
        .expect("role");
    let mut app = Client::connect(
        &format!(
            "host=127.0.0.1 port={} user=app_a dbname=postgres options='-c integ.tenant_id=acme'",
            env.pg.port
        ),
        NoTls,
    )
    .expect("app session");
    let count = |app: &mut Client, sql: &str| -> i64 { app.query_one(sql, &[]).expect(sql).get(0) };
    assert_eq!(
        count(&mut app, "SELECT count(*) FROM integ.imports WHERE tenant_id <> 'acme'"),
        0
    );
    assert!(count(&mut app, "SELECT count(*) FROM integ.imports") >= 1);
    assert_eq!(
        count(
            &mut app,
            "SELECT count(*) FROM integ.remote_listings WHERE tenant_id <> 'acme'"
        ),
        0
    );
    assert_eq!(
        count(
            &mut app,
            "SELECT count(*) FROM integ.unlinked WHERE tenant_id <> 'acme'"
        ),
        0
    );
    assert_eq!(count(&mut app, "SELECT count(*) FROM integ.tracked_products(NULL)"), 0);
    for sql in [
        "SELECT integ.import_catalog('B')",
        "SELECT integ.link_by_sku('B')",
        &format!("SELECT integ.cancel_import({b})"),
    ] {
        let e = app.batch_execute(sql).expect_err(sql);
        assert!(format!("{e:?}").contains("permission denied"), "{sql}: {e:?}");
    }
    let r: Value = app
        .query_one(
            "SELECT integ.link_by_sku('acme', 'mercadolibre', '{\"dry_run\": true}')",
            &[],
        )
        .expect("own link")
        .get(0);
    assert_eq!(r["dry_run"], true);
}
