//! Catalog import at the default rate limits: calls against the fewest the page sizes allow,
//! wall time against what the limit allows for those calls, worker memory during the import,
//! and the latency of stock pushes to the same connection made meanwhile, against the same
//! pushes made just before the import.

use super::{env_number, worker_rss_kib};
use e2e::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The import's catalog: `products` products, every other one with 4 variations (10,000 units
/// for 4,000 products), some SKUs missing or duplicated, as the catalog tests make them.
fn plan(products: u64) -> Value {
    json!({"products": products, "variations": 4, "variations_every": 2, "missing_sku_every": 97,
           "duplicate_sku_every": 89, "stock": 5})
}

const FIRST: u64 = 1_000_000;
/// Pushes made before the import (the baseline) and the pause between pushes during it.
const BASELINE_PUSHES: usize = 5;
const PUSH_EVERY: Duration = Duration::from_secs(8);
/// `integ.http_concurrency` here: few threads, so all of them are warm before measuring.
const HTTP_THREADS: usize = 4;
/// Shopify: points a catalog page costs (250 variants, their products and items, the shop),
/// a push costs, and the bucket (size, refill per second), the sandbox's as Shopify's.
const SHOPIFY_PAGE: f64 = 753.0;
const SHOPIFY_PUSH: f64 = 10.0;
const SHOPIFY_BUCKET: (f64, f64) = (2_000.0, 100.0);

/// Reads the probe unit's quantity in the sandbox.
type Quantity = Box<dyn Fn(&Env) -> Option<i64>>;

struct Case {
    marketplace: String,
    tenant: &'static str,
    /// The default limit's spacing between calls, in seconds.
    spacing: f64,
    quantity: Quantity,
}

pub fn import() {
    let which = std::env::var("BENCH_IMPORT").unwrap_or_else(|_| "mercadolibre,tiktok,shopify,shein".into());
    let units: u64 = env_number("BENCH_IMPORT_UNITS", 10_000);
    let products = units * 2 / 5; // 4,000 products make 10,000 units
                                  // the default limits, which the test harness otherwise lifts
    let mut env = Env::with_conf(
        "bench-import",
        "integ.rate_limit_mercadolibre = '200/min'\ninteg.rate_limit_tiktok = '1000/hour'\n\
         integ.rate_limit_shein = '100/min'\ninteg.rate_limit_shopify = '4/s:40'\n\
         integ.http_concurrency = 4",
    );
    // the same import again shows whether worker memory keeps growing or stays where it got
    let rounds: usize = env_number("BENCH_IMPORT_ROUNDS", 1);
    for m in which.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let case = setup(&mut env, m, products);
        for _ in 0..rounds {
            run(&env, &case, products);
        }
    }
}

/// Connects the marketplace's tenant, builds its catalog and maps product PROBE to the single
/// unit of product 1 (the pushes measured).
fn setup(env: &mut Env, marketplace: &str, products: u64) -> Case {
    let units = products * 5 / 2;
    let mut body = plan(products);
    body["first_id"] = json!(FIRST);
    let (tenant, external_id, settings, spacing, quantity): (_, String, Value, f64, Quantity) = match marketplace {
        "mercadolibre" => {
            env.add_tenant("ml", 6001, json!({}));
            body["seller_id"] = json!(6001);
            env.sim.post("/mercadolibre/catalog", body);
            let item = format!("MLM{}", FIRST + 1);
            let probe = item.clone();
            (
                "ml",
                item,
                json!({}),
                0.3,
                Box::new(move |e: &Env| e.sim.item_quantity(&probe)),
            )
        }
        "tiktok" => {
            env.add_tiktok_tenant("tts", "CIPHER-B", json!({}));
            body["shop_cipher"] = json!("CIPHER-B");
            body["warehouse_id"] = json!("WH-1");
            env.sim.post("/tiktok/catalog", body);
            // product 1's SKU is unit 5 (product 0 has four)
            let sku = (FIRST + products + 4).to_string();
            let probe = sku.clone();
            (
                "tts",
                sku,
                json!({"product_id": (FIRST + 1).to_string(), "warehouse_id": "WH-1"}),
                3.6,
                Box::new(move |e: &Env| e.tiktok_quantity(&probe)),
            )
        }
        "shopify" => {
            let shop = "bench-import.myshopify.com";
            env.add_shopify_tenant("shp", shop, json!({"location_id": 1}));
            body["shop"] = json!(shop);
            body["location_id"] = json!(1);
            env.sim.post("/shopify/catalog", body);
            let item = FIRST + products + units + 4;
            (
                "shp",
                item.to_string(),
                json!({"location_id": 1}),
                0.25,
                Box::new(move |e: &Env| e.shopify_available(item)),
            )
        }
        "shein" => {
            let key = env.add_shein_tenant("shn", 921, json!({}));
            body["open_key_id"] = json!(key);
            body["warehouse_code"] = json!("WH-1");
            env.sim.post("/shein/catalog", body);
            let sku = format!("I{}-0", FIRST + 1);
            let probe = sku.clone();
            (
                "shn",
                sku,
                json!({"warehouse_code": "WH-1"}),
                0.6,
                Box::new(move |e: &Env| e.shein_quantity(&probe)),
            )
        }
        other => panic!("unknown marketplace {other}"),
    };
    env.db()
        .execute("INSERT INTO inventory VALUES ($1, 'PROBE', 0)", &[&tenant])
        .expect("probe product");
    env.db()
        .query_one(
            "SELECT integ.map_product($1, $2, 'PROBE', $3, $4)",
            &[&tenant, &marketplace, &external_id, &settings],
        )
        .expect("map the probe");
    env.wait_idle(60, "the probe's first push");
    Case {
        marketplace: marketplace.to_string(),
        tenant,
        spacing,
        quantity,
    }
}

/// One push of the probe: commit → the sandbox holds it, in ms.
fn push(env: &Env, case: &Case, qty: i32) -> f64 {
    let t0 = Instant::now();
    env.set_stock_of(case.tenant, "PROBE", qty);
    while (case.quantity)(env) != Some(i64::from(qty)) {
        assert!(t0.elapsed() < Duration::from_secs(60), "a push took over a minute");
        std::thread::sleep(Duration::from_millis(2));
    }
    t0.elapsed().as_secs_f64() * 1000.0
}

fn stats(ms: &mut [f64]) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "p50 {:.0} ms, max {:.0} ms ({} pushes)",
        percentile(ms, 50.0),
        ms.last().copied().unwrap_or(0.0),
        ms.len()
    )
}

fn run(env: &Env, case: &Case, products: u64) {
    let units = products * 5 / 2;
    let m = case.marketplace.as_str();
    let mut qty = 100;
    // every HTTP thread makes its first call (its stack and connection buffers are then in the
    // worker's memory): what the import adds is measured after that
    for _ in 0..2 * HTTP_THREADS {
        qty += 1;
        push(env, case, qty);
    }
    let mut baseline = Vec::new();
    for _ in 0..BASELINE_PUSHES {
        qty += 1;
        baseline.push(push(env, case, qty));
        // the budget refills between pushes, as between the pushes made during the import
        std::thread::sleep(Duration::from_secs_f64(case.spacing + 1.0));
    }
    let rss_start = worker_rss_kib(env);
    let id: i64 = env
        .db()
        .query_one("SELECT (integ.import_catalog($1, $2))[1]", &[&case.tenant, &m])
        .expect("import_catalog")
        .get(0);
    let started = Instant::now();
    let mut during = Vec::new();
    // worker memory at each push made during the import (the first worker runs imports)
    let mut rss_during: Vec<i64> = Vec::new();
    let state = || env.scalar_text(&format!("SELECT state FROM integ.imports WHERE id = {id}"));
    let mut next_push = Instant::now() + PUSH_EVERY;
    loop {
        let s = state();
        if s != "running" {
            assert_eq!(s, "done", "the import ended {s}");
            break;
        }
        if Instant::now() >= next_push {
            qty += 1;
            during.push(push(env, case, qty));
            next_push = Instant::now() + PUSH_EVERY;
            rss_during.extend(worker_rss_kib(env).first());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall = started.elapsed().as_secs_f64();
    let rss_end = worker_rss_kib(env);
    let row = env
        .db()
        .query_one(
            "SELECT api_calls, listings_seen FROM integ.imports WHERE id = $1",
            &[&id],
        )
        .expect("import");
    let (calls, seen): (i64, i64) = (row.get(0), row.get(1));
    let fewest = match m {
        "mercadolibre" => products.div_ceil(100) + 1 + products.div_ceil(20),
        "tiktok" => products.div_ceil(100),
        "shopify" => units.div_ceil(250),
        _ => products / 50 + 1 + products + units.div_ceil(100),
    } as f64;
    let pushes = during.len() as f64;
    // what the limit allows for the import's calls and the pushes made meanwhile
    let allowed = if m == "shopify" {
        (calls as f64 * SHOPIFY_PAGE + pushes * SHOPIFY_PUSH - SHOPIFY_BUCKET.0).max(0.0) / SHOPIFY_BUCKET.1
    } else {
        (calls as f64 + pushes - 1.0) * case.spacing
    };
    println!(
        "BENCH import {m}: {seen} units ({units} made) in {wall:.1} s; {calls} calls, the fewest {fewest} \
         ({:+.1}%); the limit allows it in {allowed:.1} s ({:.1}% of the limit used)",
        (calls as f64 / fewest - 1.0) * 100.0,
        allowed / wall * 100.0
    );
    println!(
        "BENCH import {m}: push latency before {}; during {}; one spacing {:.0} ms",
        stats(&mut baseline),
        stats(&mut during),
        case.spacing * 1000.0
    );
    println!(
        "BENCH import {m}: first worker's RssAnon KiB before {:?}, during {rss_during:?}, after {:?}",
        rss_start.first(),
        rss_end.first()
    );
}
