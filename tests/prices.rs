//! Prices: EGDC's price changes reach MercadoLibre through each channel's price rules, a stock
//! and a price changed together go in one call, many changes end with the last in few calls,
//! and bad input is a clear error or a dead letter naming its cause without stopping the rest.

use e2e::*;
use serde_json::{json, Value};

const SELLER_P: u64 = 5101;

fn prices_of(env: &Env, item: &str) -> Value {
    env.sim.get(&format!("/mercadolibre/items/{item}/prices"))
}

/// The item's price as decimal text without trailing zeros ("110.00" and "110" are "110").
fn price_of(env: &Env, item: &str) -> String {
    let text = prices_of(env, item)["price"].as_str().unwrap_or("").to_string();
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn puts(env: &Env) -> u64 {
    env.sim.counter("mercadolibre PUT /items/{id}")
}

/// Tenant `tenant` on seller `seller` with `settings`, `n` mapped items, and a tracked price
/// table `prices` (created once per cluster).
fn priced_tenant(
    env: &mut Env,
    tenant: &str,
    seller: u64,
    first: usize,
    n: usize,
    settings: Value,
) -> Vec<(String, String)> {
    env.add_tenant(tenant, seller, settings);
    let ls = env.listings_for(tenant, seller, first, n);
    env.db()
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS prices (tenant_id text, sku text, price numeric(12,2), currency text,
                                                PRIMARY KEY (tenant_id, sku));
             SELECT integ.track_prices('prices', 'tenant_id', 'sku', 'price', 'currency');",
        )
        .expect("track prices");
    ls
}

fn set_price(env: &Env, tenant: &str, sku: &str, price: Option<&str>, currency: &str) {
    env.db()
        .execute(
            "INSERT INTO prices VALUES ($1, $2, $3::text::numeric, $4)
             ON CONFLICT (tenant_id, sku) DO UPDATE SET price = EXCLUDED.price, currency = EXCLUDED.currency",
            &[&tenant, &sku, &price, &currency],
        )
        .expect("set price");
}

fn last_price_log(env: &Env, tenant: &str, sku: &str) -> (String, String, String) {
    let r = env
        .db()
        .query_one(
            "SELECT outcome, coalesce(price::text, ''), coalesce(error, '') || coalesce(egdc_price::text, '')
               FROM integ.sync_log WHERE tenant_id = $1 AND product_id = $2 AND operation = 'price'
              ORDER BY id DESC LIMIT 1",
            &[&tenant, &sku],
        )
        .expect("a price log row");
    (r.get(0), r.get(1), r.get(2))
}

#[test]
fn a_price_reaches_mercadolibre_through_its_rules_and_a_stock_change_with_it_in_one_call() {
    let mut env = Env::new("prices-ml");
    let ls = priced_tenant(
        &mut env,
        "p1",
        SELLER_P,
        300_000,
        3,
        json!({"price_rules": {"markup_percent": 12, "round": "ends_99"}}),
    );
    env.set_stock_of("p1", "sku-0", 4);
    env.set_stock_of("p1", "sku-1", 4);
    env.wait_idle(20, "the first stock");
    // EGDC 100.00, 12% more, then the next price ending in .99
    set_price(&env, "p1", "sku-0", Some("100.00"), "MXN");
    env.wait_for(20, "the price with the channel's rules", || {
        price_of(&env, &ls[0].1) == "111.99"
    });
    env.wait_idle(20, "the price write recorded");
    let (outcome, sent, from) = last_price_log(&env, "p1", "sku-0");
    assert_eq!(
        (outcome.as_str(), sent.as_str(), from.as_str()),
        ("success", "111.99", "100.00")
    );
    assert_eq!(
        env.scalar_text(
            "SELECT last_pushed_price::text FROM integ.listings WHERE tenant_id = 'p1' AND product_id = 'sku-0'"
        ),
        "111.99"
    );

    // a stock and a price changed in one transaction travel in one call
    let before = puts(&env);
    env.db()
        .batch_execute(
            "BEGIN;
             UPDATE inventory SET qty = 9 WHERE tenant_id = 'p1' AND sku = 'sku-1';
             INSERT INTO prices VALUES ('p1', 'sku-1', 50.00, 'MXN');
             COMMIT;",
        )
        .expect("one transaction");
    env.wait_for(20, "the stock and the price", || {
        env.sim.item_quantity(&ls[1].1) == Some(9) && price_of(&env, &ls[1].1) == "55.99"
    });
    env.wait_idle(20, "recorded");
    assert_eq!(puts(&env) - before, 1, "one PUT carried both");

    // a listing overrides the connection's rules key by key: whole instead of ends_99
    env.db()
        .batch_execute(&format!(
            "SELECT integ.map_product('p1', 'mercadolibre', 'sku-2', '{}', '{{\"price_rules\": {{\"round\": \"whole\"}}}}')",
            ls[2].1
        ))
        .expect("map with its own rules");
    set_price(&env, "p1", "sku-2", Some("10.40"), "MXN");
    env.wait_for(20, "the listing's own rounding", || price_of(&env, &ls[2].1) == "12");
    assert_eq!(prices_of(&env, &ls[0].1)["variations_deleted"], 0);
}

#[test]
fn many_price_changes_end_with_the_last_in_few_calls() {
    let mut env = Env::new("prices-many");
    let ls = priced_tenant(&mut env, "p2", SELLER_P, 310_000, 1, json!({}));
    env.set_stock_of("p2", "sku-0", 1);
    env.wait_idle(20, "the first stock");
    let writes = || prices_of(&env, &ls[0].1)["price_writes"].as_u64().unwrap_or(0);
    let before = writes();
    for i in 1..=1_000 {
        set_price(
            &env,
            "p2",
            "sku-0",
            Some(&format!("{}.{:02}", 100 + i / 100, i % 100)),
            "MXN",
        );
    }
    env.wait_for(30, "the last price", || price_of(&env, &ls[0].1) == "110");
    env.wait_idle(20, "settled");
    let calls = writes() - before;
    println!("PRICES 1,000 changes of one product: {calls} price writes");
    assert!(calls < 200, "{calls} writes for 1,000 changes");
    assert_eq!(price_of(&env, &ls[0].1), "110");
}

#[test]
fn bad_prices_and_rules_are_clear_errors_or_dead_letters_and_nothing_else_stops() {
    let mut env = Env::new("prices-bad");
    let ls = priced_tenant(
        &mut env,
        "p3",
        SELLER_P,
        320_000,
        5,
        json!({"price_rules": {"currency": "MXN"}}),
    );
    fn refused(env: &Env, sql: &str) -> String {
        format!("{:?}", env.db().batch_execute(sql).expect_err(sql))
    }
    env.db()
        .batch_execute("CREATE TABLE fprices (tenant_id text, sku text, price float8, label text, cur int)")
        .expect("table");
    assert!(refused(
        &env,
        "SELECT integ.track_prices('fprices', 'tenant_id', 'sku', 'price')"
    )
    .contains("never a float"));
    assert!(refused(
        &env,
        "SELECT integ.track_prices('fprices', 'tenant_id', 'sku', 'label')"
    )
    .contains("never a float or text"));
    assert!(
        refused(&env, "SELECT integ.track_prices('fprices', 'tenant_id', 'sku', 'nope')")
            .contains("has no column \\\"nope\\\"")
    );
    env.db()
        .batch_execute("ALTER TABLE fprices ADD COLUMN amount numeric")
        .expect("column");
    assert!(refused(
        &env,
        "SELECT integ.track_prices('fprices', 'tenant_id', 'sku', 'amount', 'cur')"
    )
    .contains("expected text"));
    assert!(refused(&env, "SELECT integ.untrack_prices('fprices')").contains("is not tracked"));
    assert!(refused(
        &env,
        "SELECT integ.connect('p9', 'mercadolibre', '{}', '{\"price_rules\": {\"markup\": 1}}')"
    )
    .contains("price_rules: unknown key \\\"markup\\\""));
    assert!(refused(
        &env,
        &format!(
            "SELECT integ.map_product('p3', 'mercadolibre', 'sku-0', '{}', '{{\"price_rules\": {{\"round\": \"ends_98\"}}}}')",
            ls[0].1
        )
    )
    .contains("price_rules.round"));

    env.set_stock_of("p3", "sku-0", 2);
    env.wait_idle(20, "the first stock");
    // NULL, negative, another currency: dead letters naming the cause
    set_price(&env, "p3", "sku-0", None, "MXN");
    set_price(&env, "p3", "sku-1", Some("-5.00"), "MXN");
    set_price(&env, "p3", "sku-2", Some("10.00"), "USD");
    set_price(&env, "p3", "sku-3", Some("10.00"), "MXN");
    set_price(&env, "p3", "sku-4", Some("NaN"), "MXN");
    env.wait_for(20, "the good price", || price_of(&env, &ls[3].1) == "10");
    env.wait_idle(20, "settled");
    for (sku, why) in [
        ("sku-0", "EGDC's price is NULL"),
        ("sku-1", "is negative"),
        ("sku-2", "is in USD and this channel sells in MXN"),
        ("sku-4", "EGDC's price NaN is not a finite number"),
    ] {
        let (outcome, _, error) = last_price_log(&env, "p3", sku);
        assert_eq!(outcome, "dead", "{sku}");
        assert!(error.contains(why), "{sku}: {error}");
    }
    // the product whose price is refused still gets its stock, and only one dead letter
    env.set_stock_of("p3", "sku-0", 7);
    env.wait_for(20, "the stock of a product with a NULL price", || {
        env.sim.item_quantity(&ls[0].1) == Some(7)
    });
    env.wait_idle(20, "settled");
    let rows: Vec<String> = env
        .db()
        .query(
            "SELECT concat_ws(' ', outcome, job_id, error) FROM integ.sync_log
              WHERE tenant_id = 'p3' AND product_id = 'sku-0' AND operation = 'price' ORDER BY id",
            &[],
        )
        .expect("log")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let all: Vec<String> = env
        .db()
        .query(
            "SELECT concat_ws(' ', id, operation, outcome, job_id, stock, price, error) FROM integ.sync_log
              WHERE tenant_id = 'p3' AND product_id = 'sku-0' ORDER BY id",
            &[],
        )
        .expect("log")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "one dead letter for the refused price: {rows:?} {all:#?}"
    );
}

#[test]
fn a_price_the_marketplace_refuses_is_a_dead_letter_with_its_reason_and_can_be_retried() {
    let mut env = Env::new("prices-refused");
    let ls = priced_tenant(&mut env, "p4", SELLER_P, 330_000, 1, json!({}));
    env.set_stock_of("p4", "sku-0", 3);
    env.wait_idle(20, "the first stock");
    env.sim.post(
        "/mercadolibre/prices/minimum",
        json!({"site_id": "MLM", "minimum_price": "50"}),
    );
    set_price(&env, "p4", "sku-0", Some("10.00"), "MXN");
    env.wait_for(20, "the dead letter", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE tenant_id = 'p4' AND state = 'dead'") == 1
    });
    let (outcome, sent, error) = last_price_log(&env, "p4", "sku-0");
    assert_eq!((outcome.as_str(), sent.as_str()), ("dead", "10"));
    assert!(error.contains("below the minimum price"), "{error}");
    // the marketplace's minimum is lowered; the operator retries the dead letter
    env.sim.post(
        "/mercadolibre/prices/minimum",
        json!({"site_id": "MLM", "minimum_price": null}),
    );
    env.db().batch_execute("SELECT integ.retry_dead('p4')").expect("retry");
    env.wait_for(20, "the retried price", || price_of(&env, &ls[0].1) == "10");
}

#[test]
fn an_immediate_shutdown_with_price_jobs_pending_and_in_flight_loses_no_price() {
    let mut env = Env::new("prices-crash");
    let ls = priced_tenant(
        &mut env,
        "p5",
        SELLER_P,
        340_000,
        30,
        json!({"price_rules": {"add": 1}}),
    );
    for (sku, _) in &ls {
        env.set_stock_of("p5", sku, 2);
    }
    env.wait_idle(30, "the first stock");
    env.sim
        .post("/faults", json!({"marketplace": "mercadolibre", "latency_ms": 400}));
    for (i, (sku, _)) in ls.iter().enumerate() {
        set_price(&env, "p5", sku, Some(&format!("{}.50", 20 + i)), "MXN");
    }
    env.wait_for(10, "price writes in flight", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE tenant_id = 'p5' AND state = 'in_flight'") > 0
    });
    env.pg.stop("immediate");
    env.sim.delete("/faults");
    env.pg.pg_ctl_start();
    env.reconnect();
    for (i, (_, item)) in ls.iter().enumerate() {
        let want = format!("{}.5", 21 + i);
        env.wait_for(60, "every listing to reach its price after the crash", || {
            price_of(&env, item) == want
        });
    }
    env.wait_idle(20, "no job left in flight");
}

#[test]
fn a_price_reaches_tiktok_shop_in_the_shops_currency_one_call_per_product() {
    let mut env = Env::new("prices-tiktok");
    env.add_tiktok_tenant("tp", "CIPHER-P", json!({"price_rules": {"add": 5, "currency": "USD"}}));
    // one product with two SKUs
    env.sim.post(
        "/tiktok/products",
        json!({"shop_cipher": "CIPHER-P", "product_id": "1729000000000101",
               "skus": [{"id": "1729000000000201", "warehouse_id": "WH-1"},
                        {"id": "1729000000000202", "warehouse_id": "WH-1"}]}),
    );
    for (sku, id) in [("sku-a", "1729000000000201"), ("sku-b", "1729000000000202")] {
        env.db()
            .batch_execute(&format!(
                "INSERT INTO inventory VALUES ('tp', '{sku}', 0);
                 SELECT integ.map_product('tp', 'tiktok', '{sku}', '{id}',
                                          '{{\"product_id\": \"1729000000000101\", \"warehouse_id\": \"WH-1\"}}')"
            ))
            .expect("map");
    }
    env.db()
        .batch_execute(
            "CREATE TABLE prices (tenant_id text, sku text, price numeric(12,2), currency text, PRIMARY KEY (tenant_id, sku));
             SELECT integ.track_prices('prices', 'tenant_id', 'sku', 'price', 'currency');",
        )
        .expect("track prices");
    env.set_stock_of("tp", "sku-a", 1);
    env.set_stock_of("tp", "sku-b", 1);
    env.wait_idle(20, "the first stock");
    let calls = || env.sim.counter("tiktok prices/update");
    let before = calls();
    env.db()
        .batch_execute("INSERT INTO prices VALUES ('tp', 'sku-a', 100.00, 'USD'), ('tp', 'sku-b', 20.10, 'USD')")
        .expect("prices");
    let sale = |sku: &str| env.sim.get(&format!("/tiktok/prices/{sku}"))["price"]["sale_price"].clone();
    env.wait_for(20, "both prices, EGDC's + 5", || {
        sale("1729000000000201") == "105.00" && sale("1729000000000202") == "25.10"
    });
    env.wait_idle(20, "recorded");
    assert_eq!(calls() - before, 1, "the two SKUs of one product in one call");
    // a price TikTok Shop refuses (the SKU is in a promotion): a dead letter with its reason
    env.sim.post("/tiktok/prices/1729000000000201/lock", json!({}));
    env.db()
        .batch_execute("UPDATE prices SET price = 110.00 WHERE sku = 'sku-a'")
        .expect("price");
    env.wait_for(20, "the dead letter", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE tenant_id = 'tp' AND state = 'dead'") == 1
    });
    let (outcome, _, error) = last_price_log(&env, "tp", "sku-a");
    assert_eq!(outcome, "dead");
    assert!(error.contains("locked"), "{error}");
}

#[test]
fn a_price_reaches_shein_with_its_special_price_and_a_refused_one_says_why() {
    let mut env = Env::new("prices-shein");
    let key = env.add_shein_tenant(
        "sp",
        930,
        json!({"site": "shein-mx", "price_rules": {"currency": "MXN"}}),
    );
    env.shein_listing("sp", &key, "sku-s", "SKU-S-1");
    env.shein_listing("sp", &key, "sku-t", "SKU-S-2");
    env.db()
        .batch_execute(
            "CREATE TABLE prices (tenant_id text, sku text, price numeric(12,2), currency text, PRIMARY KEY (tenant_id, sku));
             SELECT integ.track_prices('prices', 'tenant_id', 'sku', 'price', 'currency');",
        )
        .expect("track prices");
    env.set_stock_of("sp", "sku-s", 1);
    env.set_stock_of("sp", "sku-t", 1);
    env.wait_idle(20, "the first stock");
    env.sim.post("/shein/prices/config", json!({"min_price": "10.00"}));
    env.db()
        .batch_execute("INSERT INTO prices VALUES ('sp', 'sku-s', 23.00, 'MXN'), ('sp', 'sku-t', 5.00, 'MXN')")
        .expect("prices");
    let price = |sku: &str| env.sim.get(&format!("/shein/prices/{sku}"))["prices"][0].clone();
    env.wait_for(20, "the price and its special price", || {
        price("SKU-S-1")["base_price"] == "23.00" && price("SKU-S-1")["special_price"] == "23.00"
    });
    env.wait_for(20, "the refused one", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE tenant_id = 'sp' AND state = 'dead'") == 1
    });
    let (outcome, _, error) = last_price_log(&env, "sp", "sku-t");
    assert_eq!(outcome, "dead");
    assert!(error.contains("SHEIN refused the price"), "{error}");
}

#[test]
fn a_price_reaches_all_four_marketplaces_through_each_channels_rules() {
    const SHOP: &str = "prices-all.myshopify.com";
    const F: u64 = 2_000_000; // products F, F+1; variants F+2, F+3; inventory items F+4, F+5
    let mut env = Env::new("prices-all");
    env.add_tenant(
        "all",
        5102,
        json!({"price_rules": {"markup_percent": 12, "round": "ends_99"}}),
    );
    let ml = env.listings_for("all", 5102, 330_000, 1);
    env.add_shopify_tenant("all", SHOP, json!({"location_id": 1}));
    let made = env.sim.post(
        "/shopify/catalog",
        json!({"shop": SHOP, "products": 2, "first_id": F, "location_id": 1, "price": "1.00"}),
    );
    assert_eq!(made["units"], 2, "{made}");
    // mapped by hand: the variant and product are looked up at the first price write
    env.db()
        .batch_execute(&format!(
            "SELECT integ.map_product('all', 'shopify', 'sku-0', '{}', '{{\"location_id\": 1}}')",
            F + 4
        ))
        .expect("map shopify");
    env.add_tiktok_tenant(
        "all",
        "CIPHER-ALL",
        json!({"price_rules": {"add": 5, "currency": "USD"}}),
    );
    env.tiktok_listing("all", "CIPHER-ALL", "sku-0", "1729000000000301", "1729000000000401");
    let key = env.add_shein_tenant(
        "all",
        932,
        json!({"site": "shein-mx", "price_rules": {"currency": "MXN"}}),
    );
    env.shein_listing("all", &key, "sku-0", "SKU-ALL-1");
    env.db()
        .batch_execute(
            "CREATE TABLE prices (tenant_id text, sku text, price numeric(12,2), PRIMARY KEY (tenant_id, sku));
             SELECT integ.track_prices('prices', 'tenant_id', 'sku', 'price');",
        )
        .expect("track prices");
    env.set_stock_of("all", "sku-0", 3);
    env.wait_idle(20, "the first stock");

    let shopify_price = || env.sim.get(&format!("/shopify/variants/{}", F + 2))["price"].clone();
    let tiktok_price = || env.sim.get("/tiktok/prices/1729000000000401")["price"]["sale_price"].clone();
    let shein_price = || env.sim.get("/shein/prices/SKU-ALL-1")["prices"][0]["base_price"].clone();
    let lookups = || env.sim.counter("shopify graphql inventoryItem variant");
    env.db()
        .batch_execute("INSERT INTO prices VALUES ('all', 'sku-0', 100.00)")
        .expect("price");
    env.wait_for(30, "EGDC 100.00 on every channel with its rules", || {
        price_of(&env, &ml[0].1) == "111.99"
            && shopify_price() == "100.00"
            && tiktok_price() == "105.00"
            && shein_price() == "100.00"
    });
    env.wait_idle(20, "recorded");
    for (market, sent) in [
        ("mercadolibre", "111.99"),
        ("shopify", "100"),
        ("tiktok", "105"),
        ("shein", "100"),
    ] {
        let logged = env.scalar_text(&format!(
            "SELECT outcome || ' ' || trim_scale(price)::text || ' from ' || egdc_price::text FROM integ.sync_log
              WHERE tenant_id = 'all' AND marketplace = '{market}' AND operation = 'price' ORDER BY id DESC LIMIT 1"
        ));
        assert_eq!(logged, format!("success {sent} from 100.00"), "{market}");
    }
    // Shopify's variant and product were found once and kept in the listing's settings
    assert_eq!(lookups(), 1);
    let kept = json!({"location_id": 1, "variant_id": F + 2, "product_id": F});
    assert_eq!(
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.listings WHERE tenant_id = 'all' AND marketplace = 'shopify'
                AND settings = '{kept}'::jsonb"
        )),
        1,
        "the listing keeps {kept}"
    );
    env.db()
        .batch_execute("UPDATE prices SET price = 80.00")
        .expect("price");
    env.wait_for(20, "the next price", || shopify_price() == "80.00");
    assert_eq!(lookups(), 1, "no second lookup");

    // a price below the shop's minimum: a dead letter with Shopify's userError, the rest goes on
    env.sim.post(
        &format!("/shopify/shops/{SHOP}/min_price"),
        json!({"min_price": "50.00"}),
    );
    env.db()
        .batch_execute("UPDATE prices SET price = 40.00")
        .expect("price");
    env.wait_for(20, "the dead letter", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE tenant_id = 'all' AND marketplace = 'shopify' AND state = 'dead'") == 1
    });
    let error = env.scalar_text(
        "SELECT error FROM integ.sync_log WHERE marketplace = 'shopify' AND operation = 'price' ORDER BY id DESC LIMIT 1",
    );
    assert!(error.contains("GREATER_THAN_OR_EQUAL_TO"), "{error}");
    env.wait_for(20, "the other channels", || {
        price_of(&env, &ml[0].1) == "44.99" && tiktok_price() == "45.00"
    });
}

#[test]
fn a_managed_shein_shop_sets_its_supply_cost_one_spu_per_call() {
    let mut env = Env::new("prices-shein-managed");
    let key = env.add_shein_tenant(
        "mg",
        933,
        json!({"site": "shein-mx", "shop_mode": "semi_managed", "price_rules": {"currency": "MXN"}}),
    );
    env.sim
        .post(&format!("/shein/suppliers/{key}"), json!({"mode": "semi_managed"}));
    for (sku, code, spu) in [
        ("c-1", "C-1", "MC1"),
        ("c-2", "C-2", "MC1"),
        ("c-3", "C-3", "MC2"),
        ("c-4", "C-4", "MC3"),
    ] {
        env.sim.post(
            "/shein/skus",
            json!({"open_key_id": key, "sku_code": code, "warehouse_code": "WH-1",
                   "spu_name": spu, "skc_name": format!("s{spu}")}),
        );
        // c-4 is mapped without its SPU and SKC
        let settings = if sku == "c-4" {
            json!({"warehouse_code": "WH-1"})
        } else {
            json!({"warehouse_code": "WH-1", "spu_name": spu, "skc_name": format!("s{spu}")})
        };
        env.db()
            .batch_execute(&format!(
                "INSERT INTO inventory VALUES ('mg', '{sku}', 1);
                 SELECT integ.map_product('mg', 'shein', '{sku}', '{code}', '{settings}')"
            ))
            .expect("map");
    }
    env.db()
        .batch_execute(
            "CREATE TABLE prices (tenant_id text, sku text, price numeric(12,2), PRIMARY KEY (tenant_id, sku));
             SELECT integ.track_prices('prices', 'tenant_id', 'sku', 'price');",
        )
        .expect("track prices");
    env.wait_idle(20, "the first stock");
    let calls = || env.sim.counter("shein update-cost calls");
    let before = calls();
    env.db()
        .batch_execute(
            "INSERT INTO prices VALUES ('mg', 'c-1', 80.00), ('mg', 'c-2', 81.50), ('mg', 'c-3', 82.00), ('mg', 'c-4', 83.00)",
        )
        .expect("prices");
    let cost = |code: &str| env.sim.get(&format!("/shein/prices/{code}"))["cost"]["cost"].clone();
    env.wait_for(20, "the supply costs", || {
        cost("C-1") == "80.00" && cost("C-2") == "81.50" && cost("C-3") == "82.00"
    });
    env.wait_for(20, "c-4's dead letter", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE tenant_id = 'mg' AND state = 'dead'") == 1
    });
    env.wait_idle(20, "recorded");
    assert_eq!(calls() - before, 2, "one call per SPU");
    let (outcome, _, error) = last_price_log(&env, "mg", "c-4");
    assert_eq!(outcome, "dead");
    assert!(error.contains("spu_name and skc_name"), "{error}");
    // a cost SHEIN refuses (not above 0): a dead letter with its message
    env.db()
        .batch_execute("UPDATE prices SET price = 0 WHERE sku = 'c-1'")
        .expect("price");
    env.wait_for(20, "the refused cost", || {
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE tenant_id = 'mg' AND state = 'dead'") == 2
    });
    let (_, _, error) = last_price_log(&env, "mg", "c-1");
    assert!(error.contains("SHEIN refused the supply cost"), "{error}");
}

/// The seller changes the item's price on MercadoLibre (the stock stays).
fn edit_price_on_marketplace(env: &Env, item: &str, seller: u64, price: f64, stock: i64) {
    env.sim.post(
        "/mercadolibre/items",
        json!({"id": item, "seller_id": seller, "price": price, "available_quantity": stock}),
    );
}

fn reconcile(env: &Env, tenant: &str) -> Value {
    let v: Value = env
        .db()
        .query_one(&format!("SELECT integ.reconcile('{tenant}')"), &[])
        .expect("reconcile")
        .get(0);
    v
}

#[test]
fn reconciliation_repairs_a_price_changed_on_the_marketplace_or_adopts_it() {
    let mut env = Env::new("prices-reconcile");
    let (s1, s2, s3) = (5103, 5104, 5105);
    let a = priced_tenant(&mut env, "rp1", s1, 340_000, 1, json!({}));
    let b = priced_tenant(
        &mut env,
        "rp2",
        s2,
        341_000,
        1,
        json!({"conflict_strategy": "marketplace_wins", "price_rules": {"markup_percent": 10}}),
    );
    let c = priced_tenant(&mut env, "rp3", s3, 342_000, 1, json!({"conflict_strategy": "manual"}));
    for t in ["rp1", "rp2", "rp3"] {
        env.set_stock_of(t, "sku-0", 3);
        set_price(&env, t, "sku-0", Some("100.00"), "MXN");
    }
    env.wait_for(20, "the first prices", || {
        price_of(&env, &a[0].1) == "100" && price_of(&env, &b[0].1) == "110" && price_of(&env, &c[0].1) == "100"
    });
    env.wait_idle(20, "recorded");

    // egdc_wins (the default): EGDC's price is written again
    edit_price_on_marketplace(&env, &a[0].1, s1, 90.0, 3);
    let r = reconcile(&env, "rp1");
    assert_eq!(
        (r["prices_checked"].as_i64(), r["prices_repaired"].as_i64()),
        (Some(1), Some(1)),
        "{r}"
    );
    env.wait_for(20, "EGDC's price back on the item", || price_of(&env, &a[0].1) == "100");
    env.wait_idle(20, "recorded");
    let r = reconcile(&env, "rp1");
    assert_eq!(r["prices_in_sync"], 1, "{r}");

    // marketplace_wins: 121.00 there is EGDC's 110.00 through the 10% markup
    let writes = || prices_of(&env, &b[0].1)["price_writes"].as_u64().unwrap_or(0);
    edit_price_on_marketplace(&env, &b[0].1, s2, 121.0, 3);
    let before = writes();
    let r = reconcile(&env, "rp2");
    assert_eq!(r["prices_repaired"], 1, "{r}");
    assert_eq!(
        env.scalar_text("SELECT price::text FROM prices WHERE tenant_id = 'rp2' AND sku = 'sku-0'"),
        "110.00",
        "EGDC's price took the marketplace's, rules undone"
    );
    env.wait_idle(20, "the adopted price's job");
    assert_eq!(writes(), before, "nothing is written back");
    assert_eq!(price_of(&env, &b[0].1), "121");
    // a price the rules cannot give (no EGDC price in cents is 100.04 with 10% more) is a conflict
    edit_price_on_marketplace(&env, &b[0].1, s2, 100.04, 3);
    let r = reconcile(&env, "rp2");
    assert_eq!(r["price_conflicts"], 1, "{r}");

    // manual: left for a person, logged with both prices; the catalog cache row an import made
    // for the item takes the price read
    env.db()
        .batch_execute(
            "INSERT INTO integ.remote_listings (connection_id, tenant_id, marketplace, external_id, price, currency)
             SELECT connection_id, tenant_id, marketplace, external_id, 100, 'MXN' FROM integ.listings WHERE tenant_id = 'rp3'",
        )
        .expect("a cached catalog row");
    edit_price_on_marketplace(&env, &c[0].1, s3, 95.0, 3);
    let r = reconcile(&env, "rp3");
    assert_eq!(r["price_conflicts"], 1, "{r}");
    assert_eq!(
        env.scalar_text("SELECT trim_scale(price)::text FROM integ.remote_listings WHERE tenant_id = 'rp3'"),
        "95"
    );
    let logged = env.scalar_text(
        "SELECT outcome || ': ' || error FROM integ.sync_log WHERE tenant_id = 'rp3' AND operation = 'price' ORDER BY id DESC LIMIT 1",
    );
    assert!(
        logged.starts_with("mismatch: the marketplace shows the price 95") && logged.contains("we published 100"),
        "{logged}"
    );
    assert_eq!(price_of(&env, &c[0].1), "95");

    // remote_stock reads the price live; sync_product writes it now
    let live = env.scalar_text("SELECT trim_scale(remote_price)::text FROM integ.remote_stock('rp3', 'sku-0')");
    assert_eq!(live, "95");
    let row = env
        .db()
        .query_one(
            "SELECT status, trim_scale(price)::text, price_status FROM integ.sync_product('rp3', 'sku-0')",
            &[],
        )
        .expect("sync_product");
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ),
        ("success".to_string(), "100".to_string(), "success".to_string())
    );
    assert_eq!(price_of(&env, &c[0].1), "100");
}

/// A worker claims a listing's pending job while the application's transaction, which found
/// that job pending and so enqueued nothing, is still writing a new price into the listing: the
/// job read the listing before that commit. Once it has committed, the listing must get a job
/// for its price, whether the claimed job pushed a stock (its record waits for the writer) or
/// pushed nothing (its look at the listing comes after). Table path, so the test holds the
/// writing transaction open; the capture's apply meets the same check.
#[test]
fn a_price_written_while_its_pending_job_is_in_flight_is_published() {
    let mut env = Env::with_conf("prices-race", "integ.logical_capture = off");
    let ls = priced_tenant(&mut env, "p5", SELLER_P, 350_000, 2, json!({}));
    env.set_stock_of("p5", "sku-0", 3);
    env.set_stock_of("p5", "sku-1", 3);
    env.wait_idle(20, "the first stock");
    let worker_waits = || {
        env.scalar_i64(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'integration worker' AND wait_event_type = 'Lock'",
        ) > 0
    };
    let skips = || env.scalar_i64("SELECT count(*) FROM integ.sync_log WHERE tenant_id = 'p5' AND outcome = 'skipped'");
    for (sku, stock, price) in [("sku-0", 8, "20.50"), ("sku-1", 3, "30.50")] {
        // a pending job: for a new stock (sku-0), or one that will find nothing to do (sku-1)
        env.db()
            .batch_execute("SELECT integ.pause('p5', 'mercadolibre')")
            .expect("pause");
        env.set_stock_of("p5", sku, stock);
        env.db()
            .batch_execute(&format!(
                "INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace)
                 SELECT id, connection_id, tenant_id, marketplace FROM integ.listings
                  WHERE tenant_id = 'p5' AND product_id = '{sku}'
                 ON CONFLICT (listing_id) WHERE state = 'pending' DO NOTHING"
            ))
            .expect("a pending job");
        let skipped_before = skips();
        let mut app = env.pg.client();
        let mut tx = app.transaction().expect("the application's transaction");
        tx.execute(
            "INSERT INTO prices VALUES ('p5', $1, $2::text::numeric, 'MXN')",
            &[&sku, &price],
        )
        .expect("a new price, not committed yet");
        env.db()
            .batch_execute("SELECT integ.resume('p5', 'mercadolibre')")
            .expect("resume");
        env.wait_for(10, "the worker to push or skip the job it claimed", || {
            worker_waits() || skips() > skipped_before
        });
        tx.commit().expect("commit the price");
        env.wait_for(20, "the price written meanwhile to reach MercadoLibre", || {
            price_of(&env, &ls[if sku == "sku-0" { 0 } else { 1 }].1) == price.trim_end_matches('0')
        });
        assert_eq!(env.sim.item_quantity(&ls[0].1), Some(8));
    }
}
