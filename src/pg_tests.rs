// `#[pg_test]`s: SQL behaviour inside one (rolled back) transaction. Pushing, waking and
// refreshing are tested end to end in `tests/`.

use pgrx::prelude::*;

const KEY_FILE: &str = "/tmp/integ-pg-test.key";

fn key() {
    std::fs::write(KEY_FILE, "pg-test-master-key-0123456789").expect("write key file");
}

fn connect_demo() -> i64 {
    key();
    Spi::get_one::<i64>(
        "SELECT integ.connect('t1', 'mercadolibre',
            '{\"client_id\": 42, \"client_secret\": \"CS-very-secret\", \"refresh_token\": \"TG-refresh-secret\",
              \"access_token\": \"APP-access-secret\", \"expires_in\": 21600, \"user_id\": 7}',
            '{\"base_url\": \"http://127.0.0.1:9\"}')",
    )
    .unwrap()
    .unwrap()
}

fn count(sql: &str) -> i64 {
    Spi::get_one::<i64>(sql).unwrap().unwrap()
}

#[pg_test]
fn connect_stores_secrets_encrypted() {
    let id = connect_demo();
    assert!(id > 0);
    assert_eq!(count("SELECT count(*) FROM integ.credentials WHERE identifiers->>'client_id' = '42'"), 1);
    for secret in ["CS-very-secret", "TG-refresh-secret", "APP-access-secret"] {
        let leaks = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM integ.credential_store c
              WHERE position(convert_to($1, 'UTF8') IN c.secrets) > 0 OR c::text LIKE '%' || $1 || '%'",
            &[secret.into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(leaks, 0, "{secret} stored in plain text");
    }
    // Connecting again updates the same connection and bumps the credentials generation.
    assert_eq!(connect_demo(), id);
    assert_eq!(count("SELECT generation FROM integ.credentials"), 2);
}

#[pg_test(error = "unknown marketplace \"amazon\" (expected one of: mercadolibre, shopify, tiktok, shein)")]
fn connect_rejects_unknown_marketplace() {
    Spi::run("SELECT integ.connect('t1', 'amazon', '{}')").unwrap();
}

#[pg_test(
    error = "a jsonb argument could not be read (too deeply nested): documents nested deeper than 128 levels are refused"
)]
fn a_jsonb_argument_nested_too_deep_is_a_clear_error() {
    // PostgreSQL takes it; pgrx's own JsonB argument would panic (XX000) on it
    Spi::run("SELECT integ.signature('shopify', (repeat('[', 200) || repeat(']', 200))::jsonb)").unwrap();
}

#[pg_test(error = "mercadolibre credentials: \"client_secret\" is required")]
fn connect_rejects_incomplete_credentials() {
    key();
    Spi::run("SELECT integ.connect('t1', 'mercadolibre', '{\"client_id\": 1, \"refresh_token\": \"x\"}')").unwrap();
}

#[pg_test(error = "settings.base_url must start with http:// or https://")]
fn connect_rejects_bad_settings() {
    key();
    Spi::run(
        "SELECT integ.connect('t1', 'mercadolibre', '{\"client_id\": 1, \"client_secret\": \"s\", \"refresh_token\": \"x\"}',
                              '{\"base_url\": \"gopher://x\"}')",
    )
    .unwrap();
}

#[pg_test(error = "tenant \"nobody\" has no mercadolibre connection: call integ.connect first")]
fn map_product_needs_a_connection() {
    Spi::run("SELECT integ.map_product('nobody', 'mercadolibre', 'p1', 'MLM1')").unwrap();
}

#[pg_test(error = "invalid mercadolibre listing id \"MLM 1/../x\": expected letters, digits, '-' or '_'")]
fn map_product_rejects_bad_listing_ids() {
    connect_demo();
    Spi::run("SELECT integ.map_product('t1', 'mercadolibre', 'p1', 'MLM 1/../x')").unwrap();
}

#[pg_test]
fn tracked_updates_coalesce_into_one_pending_job() {
    connect_demo();
    Spi::run("CREATE TABLE inv (tenant text, sku text, qty int, note text)").unwrap();
    Spi::run("INSERT INTO inv VALUES ('t1', 'p1', 5, ''), ('t1', 'p2', 9, ''), ('t2', 'p1', 1, '')").unwrap();
    Spi::run("SELECT integ.map_product('t1', 'mercadolibre', 'p1', 'MLM1')").unwrap();
    Spi::run("SELECT integ.track_inventory('inv', 'tenant', 'sku', 'qty')").unwrap();
    // Tracking enqueues the current stock of the mapped product only.
    assert_eq!(count("SELECT count(*) FROM integ.sync_jobs WHERE state = 'pending'"), 1);
    assert_eq!(count("SELECT desired_stock FROM integ.listings WHERE product_id = 'p1'"), 5);
    for q in [7, 8, 3] {
        Spi::run(&format!("UPDATE inv SET qty = {q} WHERE tenant = 't1' AND sku = 'p1'")).unwrap();
    }
    assert_eq!(count("SELECT count(*) FROM integ.sync_jobs WHERE state = 'pending'"), 1);
    assert_eq!(count("SELECT desired_stock FROM integ.listings WHERE product_id = 'p1'"), 3);
    // Unmapped products and other tenants enqueue nothing; non-stock updates do not fire.
    Spi::run("UPDATE inv SET qty = 100 WHERE sku = 'p2' OR tenant = 't2'").unwrap();
    Spi::run("UPDATE inv SET note = 'x'").unwrap();
    assert_eq!(count("SELECT count(*) FROM integ.sync_jobs"), 1);
    // Deleting the row means no stock; negative stock is published as 0.
    Spi::run("DELETE FROM inv WHERE tenant = 't1' AND sku = 'p1'").unwrap();
    assert_eq!(count("SELECT desired_stock FROM integ.listings WHERE product_id = 'p1'"), 0);
    Spi::run("INSERT INTO inv VALUES ('t1', 'p1', -4, '')").unwrap();
    assert_eq!(count("SELECT desired_stock FROM integ.listings WHERE product_id = 'p1'"), 0);
    Spi::run("SELECT integ.untrack_inventory('inv')").unwrap();
    Spi::run("UPDATE inv SET qty = 50 WHERE sku = 'p1' AND tenant = 't1'").unwrap();
    assert_eq!(count("SELECT desired_stock FROM integ.listings WHERE product_id = 'p1'"), 0);
}

/// The price trigger reads numeric and integer price columns from their datums: each must
/// publish the value's exact text (the table path, as without a capture slot).
#[pg_test]
fn tracked_prices_keep_the_exact_value_of_numeric_and_integer_columns() {
    connect_demo();
    Spi::run("SELECT integ.map_product('t1', 'mercadolibre', 'p1', 'MLM1')").unwrap();
    Spi::run("SELECT integ.map_product('t1', 'mercadolibre', 'p2', 'MLM2')").unwrap();
    Spi::run("CREATE TABLE np (tenant text, sku text, price numeric(14,4))").unwrap();
    Spi::run("CREATE TABLE ip (tenant text, sku text, price bigint)").unwrap();
    Spi::run("SELECT integ.track_prices('np', 'tenant', 'sku', 'price')").unwrap();
    Spi::run("SELECT integ.track_prices('ip', 'tenant', 'sku', 'price')").unwrap();
    let price = |sku: &str| {
        Spi::get_one::<String>(&format!(
            "SELECT coalesce(desired_price::text, 'NULL') FROM integ.listings WHERE product_id = '{sku}'"
        ))
        .unwrap()
        .unwrap_or_default()
    };
    Spi::run("INSERT INTO np VALUES ('t1', 'p1', 1234567890.1234)").unwrap();
    assert_eq!(price("p1"), "1234567890.1234");
    Spi::run("UPDATE np SET price = price + 0.0001").unwrap();
    assert_eq!(price("p1"), "1234567890.1235");
    Spi::run("UPDATE np SET price = NULL").unwrap();
    assert_eq!(price("p1"), "NULL");
    Spi::run("INSERT INTO ip VALUES ('t1', 'p2', 9000000000)").unwrap();
    assert_eq!(price("p2"), "9000000000");
    Spi::run("UPDATE ip SET price = -7").unwrap();
    assert_eq!(price("p2"), "-7");
}

/// The trigger reads text and integer columns from their datums and any other type through
/// its text: each must publish what the value's text says.
#[pg_test]
fn tracked_columns_of_other_types_publish_the_same_stock() {
    connect_demo();
    Spi::run("CREATE TABLE inv5 (tenant varchar(20), sku bigint, qty bigint, small smallint)").unwrap();
    Spi::run("INSERT INTO inv5 VALUES ('t1', 41, 1, 1), ('t1', 42, 2, 2)").unwrap();
    Spi::run("SELECT integ.map_product('t1', 'mercadolibre', '41', 'MLM41')").unwrap();
    Spi::run("SELECT integ.map_product('t1', 'mercadolibre', '42', 'MLM42')").unwrap();
    Spi::run("SELECT integ.track_inventory('inv5', 'tenant', 'sku', 'qty')").unwrap();
    let desired = |p: &str| count(&format!("SELECT desired_stock FROM integ.listings WHERE product_id = '{p}'"));
    for (qty, want) in [("3000000000", i32::MAX as i64), ("-5", 0), ("9", 9), ("NULL", 0), ("8", 8)] {
        Spi::run(&format!("UPDATE inv5 SET qty = {qty} WHERE sku = 42")).unwrap();
        assert_eq!(desired("42"), want, "qty {qty}");
    }
    // a row moved to another product: the old one goes to 0, the new one gets the stock
    Spi::run("UPDATE inv5 SET sku = 41 WHERE sku = 42").unwrap();
    assert_eq!((desired("42"), desired("41")), (0, 8));
    // a smallint stock column
    Spi::run("SELECT integ.track_inventory('inv5', 'tenant', 'sku', 'small')").unwrap();
    Spi::run("UPDATE inv5 SET small = 300 WHERE qty = 1").unwrap();
    assert_eq!(desired("41"), 300);
}

/// The triggers find their columns by name past dropped ones, read a key stored compressed
/// (a row over the toast threshold), and trim a padded currency code.
#[pg_test]
fn tracked_rows_past_dropped_columns_with_compressed_keys() {
    connect_demo();
    let long = format!("p{}", "k".repeat(2500));
    Spi::run(&format!("SELECT integ.map_product('t1', 'mercadolibre', '{long}', 'MLM77')")).unwrap();
    Spi::run("CREATE TABLE inv7 (junk int, tenant text, sku text, qty int, price numeric(10,2), cur char(5))").unwrap();
    Spi::run("ALTER TABLE inv7 DROP COLUMN junk").unwrap();
    Spi::run("SELECT integ.track_inventory('inv7', 'tenant', 'sku', 'qty')").unwrap();
    Spi::run("SELECT integ.track_prices('inv7', 'tenant', 'sku', 'price', 'cur')").unwrap();
    Spi::run(&format!("INSERT INTO inv7 VALUES ('t1', '{long}', 5, 10.50, 'MXN')")).unwrap();
    let compressed = Spi::get_one::<bool>("SELECT pg_column_size(sku) < 2000 FROM inv7").unwrap();
    assert_eq!(compressed, Some(true), "the key is stored compressed");
    Spi::run("UPDATE inv7 SET qty = 6, price = 11.25").unwrap();
    let listing = |col: &str| {
        Spi::get_one::<String>(&format!("SELECT {col}::text FROM integ.listings WHERE external_id = 'MLM77'"))
            .unwrap()
            .unwrap_or_default()
    };
    assert_eq!(listing("desired_stock"), "6");
    assert_eq!(listing("desired_price"), "11.25");
    assert_eq!(listing("price_currency"), "MXN");
    Spi::run("DELETE FROM inv7").unwrap();
    assert_eq!(listing("desired_stock"), "0");
    assert_eq!(listing("coalesce(desired_price::text, 'NULL')"), "NULL");
}

#[pg_test(error = "integ.track_stock: column \"qty\" no longer exists; run integ.track_inventory again")]
fn a_renamed_tracked_column_is_named_by_the_trigger() {
    Spi::run("CREATE TABLE inv8 (tenant text, sku text, qty int)").unwrap();
    Spi::run("SELECT integ.track_inventory('inv8', 'tenant', 'sku', 'qty')").unwrap();
    Spi::run("INSERT INTO inv8 VALUES ('t1', 'p1', 1)").unwrap();
    Spi::run("ALTER TABLE inv8 RENAME COLUMN qty TO quantity").unwrap();
    Spi::run("UPDATE inv8 SET quantity = 2").unwrap();
}

/// The price trigger prints numerics from their stored bytes: every value must read as
/// `numeric_out` prints it, in the short and long stored forms, special values included.
#[pg_test]
fn tracked_numeric_prices_print_as_numeric_out_does() {
    connect_demo();
    Spi::run(
        "CREATE TABLE np2 (tenant text, sku text, price numeric);
         SELECT integ.track_prices('np2', 'tenant', 'sku', 'price');
         CREATE TEMP TABLE vals AS
           WITH v(x) AS (
             SELECT unnest(ARRAY['0', '0.00', '-0.5', 'NaN', 'Infinity', '-Infinity', '1e-20', '10000',
                                 '123456789012345678901234567890.0001', '9999.9999', '0.0001', '-100000000',
                                 '1e1000', '0.000012', '7.0001']::numeric[])
             UNION ALL
             SELECT round(((i * 7919) % 1000003 - 500000)::numeric * power(10::numeric, (i % 41) - 20), i % 30)
               FROM generate_series(1, 400) i)
           SELECT row_number() OVER () AS i, x FROM v;
         SELECT integ.map_product('t1', 'mercadolibre', 'n' || i, 'MLMN' || i) FROM vals;
         INSERT INTO np2 SELECT 't1', 'n' || i, x FROM vals;",
    )
    .unwrap();
    let differing = "SELECT count(*) FROM np2 JOIN integ.listings l ON l.tenant_id = np2.tenant AND l.product_id = np2.sku
                      WHERE l.desired_price::text IS DISTINCT FROM np2.price::text";
    assert_eq!(count("SELECT count(*) FROM vals"), 415);
    assert_eq!(count(differing), 0, "inserted");
    Spi::run("UPDATE np2 SET price = price * -10 WHERE sku LIKE 'n1%'").unwrap();
    assert_eq!(count(differing), 0, "updated");
}

#[pg_test]
fn map_product_seeds_stock_from_tracked_tables() {
    connect_demo();
    Spi::run("CREATE TABLE inv2 (tenant text, sku text, qty numeric)").unwrap();
    Spi::run("INSERT INTO inv2 VALUES ('t1', 'p9', 12.7)").unwrap();
    Spi::run("SELECT integ.track_inventory('inv2', 'tenant', 'sku', 'qty')").unwrap();
    Spi::run("SELECT integ.map_product('t1', 'mercadolibre', 'p9', 'MLM9')").unwrap();
    assert_eq!(count("SELECT desired_stock FROM integ.listings WHERE product_id = 'p9'"), 12);
    assert_eq!(count("SELECT queue_depth FROM integ.status WHERE tenant_id = 't1'"), 1);
}

#[pg_test(error = "integ.track_inventory: table public.inv3 has no column \"stock\"")]
fn track_inventory_checks_columns() {
    Spi::run("CREATE TABLE inv3 (tenant text, sku text, qty int)").unwrap();
    Spi::run("SELECT integ.track_inventory('inv3', 'tenant', 'sku', 'stock')").unwrap();
}

#[pg_test(error = "integ.track_inventory: stock column \"qty\" is text, expected a numeric type")]
fn track_inventory_checks_stock_type() {
    Spi::run("CREATE TABLE inv4 (tenant text, sku text, qty text)").unwrap();
    Spi::run("SELECT integ.track_inventory('inv4', 'tenant', 'sku', 'qty')").unwrap();
}

#[pg_test]
fn retry_dead_requeues_one_job_per_listing() {
    connect_demo();
    Spi::run("SELECT integ.map_product('t1', 'mercadolibre', 'p1', 'MLM1')").unwrap();
    Spi::run(
        "INSERT INTO integ.sync_jobs (listing_id, connection_id, tenant_id, marketplace, state, attempts, last_error)
         SELECT id, connection_id, tenant_id, marketplace, 'dead', 3, 'HTTP 400' FROM integ.listings, generate_series(1, 2)",
    )
    .unwrap();
    assert_eq!(count("SELECT dead FROM integ.status"), 2);
    assert_eq!(count("SELECT integ.retry_dead('t1')"), 1);
    assert_eq!(count("SELECT count(*) FROM integ.sync_jobs WHERE state = 'pending' AND attempts = 0"), 1);
    assert_eq!(count("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'"), 0);
    assert_eq!(count("SELECT integ.retry_dead()"), 0);
}

#[pg_test(error = "unknown tenant \"ghost\": it has no connection")]
fn retry_dead_rejects_unknown_tenant() {
    Spi::run("SELECT integ.retry_dead('ghost')").unwrap();
}

#[pg_test(error = "product \"nope\" of tenant \"t1\" is not mapped to any listing")]
fn sync_product_rejects_unmapped_products() {
    connect_demo();
    Spi::run("SELECT * FROM integ.sync_product('t1', 'nope')").unwrap();
}

#[pg_test(error = "tenant \"t1\" has no shopify connection")]
fn disconnect_unknown_connection() {
    Spi::run("SELECT integ.disconnect('t1', 'shopify')").unwrap();
}

#[pg_test]
fn disconnect_removes_everything_of_the_connection() {
    connect_demo();
    Spi::run("SELECT integ.map_product('t1', 'mercadolibre', 'p1', 'MLM1')").unwrap();
    Spi::run("SELECT integ.disconnect('t1', 'mercadolibre')").unwrap();
    assert_eq!(count("SELECT count(*) FROM integ.credentials"), 0);
    assert_eq!(count("SELECT count(*) FROM integ.listings"), 0);
}

#[pg_test(error = "settings.rate_limit: invalid rate limit \"fast\": expected requests/period[:burst], e.g. 200/min or 4/s:40")]
fn connect_rejects_bad_rate_limits() {
    key();
    Spi::run(
        "SELECT integ.connect('t1', 'mercadolibre', '{\"client_id\": 1, \"client_secret\": \"s\", \"refresh_token\": \"x\"}',
                              '{\"rate_limit\": \"fast\"}')",
    )
    .unwrap();
}

#[pg_test(error = "settings.conflict_strategy must be one of: egdc_wins, marketplace_wins, most_recent, manual")]
fn connect_rejects_unknown_conflict_strategies() {
    key();
    Spi::run(
        "SELECT integ.connect('t1', 'mercadolibre', '{\"client_id\": 1, \"client_secret\": \"s\", \"refresh_token\": \"x\"}',
                              '{\"conflict_strategy\": \"coin_flip\"}')",
    )
    .unwrap();
}

#[pg_test(
    error = "mercadolibre settings: unknown key \"conflict_stratgy\" (allowed: base_url, conflict_strategy, price_rules, rate_limit, stock_rules)"
)]
fn connect_refuses_a_misspelt_settings_key() {
    key();
    Spi::run(
        "SELECT integ.connect('acme', 'mercadolibre', '{\"client_id\": 1, \"client_secret\": \"s\", \"refresh_token\": \"x\"}',
                              '{\"conflict_stratgy\": \"manual\", \"rate_limt\": \"50/min\"}')",
    )
    .unwrap();
}

#[pg_test(error = "authorize options: shopify settings: unknown key \"colour\" (allowed: base_url, conflict_strategy, price_rules, rate_limit, stock_rules, api_version, location_id)")]
fn authorize_url_refuses_unknown_connection_settings() {
    key();
    Spi::run(
        "SELECT integ.authorize_url('acme', 'shopify', 'https://egdc.example/callback',
                                    '{\"shop\": \"a.myshopify.com\", \"settings\": {\"colour\": \"red\"}}')",
    )
    .unwrap();
}

#[pg_test(error = "settings.base_url: host \"169.254.169.254\" is not mercadolibre's and not in integ.allowed_hosts")]
fn connect_refuses_base_urls_outside_the_allowed_hosts() {
    key();
    Spi::run(
        "SELECT integ.connect('t1', 'mercadolibre', '{\"client_id\": 1, \"client_secret\": \"s\", \"refresh_token\": \"x\"}',
                              '{\"base_url\": \"http://169.254.169.254/latest/meta-data\"}')",
    )
    .unwrap();
}

#[pg_test(error = "no conflict 42")]
fn resolving_an_unknown_conflict_says_so() {
    Spi::run("SELECT integ.resolve_conflict(42, 'dismiss')").unwrap();
}

#[pg_test]
fn pause_and_resume() {
    connect_demo();
    Spi::run("SELECT integ.pause('t1', 'mercadolibre')").unwrap();
    assert_eq!(count("SELECT count(*) FROM integ.status WHERE status = 'paused' AND circuit = 'open (paused)'"), 1);
    Spi::run("SELECT integ.resume('t1', 'mercadolibre')").unwrap();
    assert_eq!(count("SELECT count(*) FROM integ.status WHERE status = 'active'"), 1);
}

#[pg_test(error = "the mercadolibre connection of tenant \"t1\" needs re-authorization: call integ.connect with new credentials")]
fn resume_refuses_a_dead_grant() {
    connect_demo();
    Spi::run("UPDATE integ.connections SET status = 'needs_reauthorization'").unwrap();
    Spi::run("SELECT integ.resume('t1', 'mercadolibre')").unwrap();
}

#[pg_test(error = "tenant \"ghost\" has no mercadolibre connection")]
fn pause_unknown_connection() {
    Spi::run("SELECT integ.pause('ghost', 'mercadolibre')").unwrap();
}

#[pg_test]
fn signature_matches_the_worked_examples() {
    let one = |m: &str, j: &str| {
        Spi::get_one_with_args::<String>("SELECT integ.signature($1, $2::jsonb)", &[m.into(), j.into()])
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        one("shopify", r#"{"secret": "hush", "body": "\"my secret message\""}"#),
        "hMTq0K2x7oyOjoBwGYeTj5oxfnaVYXzbanUG9aajpKI="
    );
    assert_eq!(
        one(
            "shopify",
            r#"{"secret": "hush", "query": {"code": "a94a110d86d2452eb3e2af4cfb8a3828", "shop": "some-shop.myshopify.com", "timestamp": 1337178173, "hmac": "x"}}"#
        ),
        "2cb1a277650a659f1b11e92a4a64275b128e037f2c3390e3c8fd2d8721dac9e2"
    );
    assert_eq!(
        one("tiktok", r#"{"app_secret": "app_secret", "path": "/test-api", "query": {"foo": "bar", "sign": "s"}}"#),
        "d3cb7fe11ecae942802ceeca67e7cf10120cc12f1517d45fbc1c8cfe5413c80f"
    );
    assert_eq!(
        one(
            "shein",
            r#"{"open_key_id": "B96C15416C9240DF96BAA0BC9B367C6D", "secret_key": "6BEC9C4B668B4B14B17EEF106BB98AE5", "path": "/open-api/order/purchase-order-info", "timestamp": "1740709414000", "random_key": "test1"}"#
        ),
        "test1ZDZjYTJjNzg5ZjUzMDdkZTU2N2Y3NzcxN2ZjZjA5OGIxMTRhZWI0MTU1MzQxNjZlNjFkMGQxOTJiYTk1YWNjYQ=="
    );
    assert_eq!(
        one("tiktok", r#"{"app_key": "k", "app_secret": "s", "body": "{}"}"#).len(),
        64
    );
}

#[pg_test(error = "integ.signature: unknown marketplace \"ebay\" (shopify, tiktok or shein)")]
fn signature_rejects_unknown_marketplaces() {
    Spi::run("SELECT integ.signature('ebay', '{}')").unwrap();
}

#[pg_test(
    error = "integ.signature: \"secret_key\" is missing; expected {\"open_key_id\", \"secret_key\", \"path\", \"timestamp\", \"random_key\"}"
)]
fn signature_names_the_missing_key() {
    Spi::run(r#"SELECT integ.signature('shein', '{"open_key_id": "a", "path": "/p", "timestamp": "1", "random_key": "abcde"}')"#)
        .unwrap();
}

#[pg_test]
fn every_security_definer_function_pins_its_search_path() {
    let unpinned = Spi::get_one::<i64>(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'integ' AND p.prosecdef
            AND NOT coalesce(array_to_string(p.proconfig, ',') LIKE '%search_path=pg_catalog%', false)",
    )
    .unwrap()
    .unwrap_or(-1);
    let definers = Spi::get_one::<i64>(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'integ' AND p.prosecdef",
    )
    .unwrap()
    .unwrap_or(0);
    assert!(definers >= 10, "only {definers} SECURITY DEFINER functions found");
    assert_eq!(unpinned, 0);
}

#[pg_test]
fn the_capture_walk_finds_every_record_postgres_reader_finds() {
    Spi::run("CREATE TABLE walk_t (id int PRIMARY KEY, pad text)").unwrap();
    Spi::run("INSERT INTO walk_t SELECT g, repeat('x', g % 300) FROM generate_series(1, 2000) g").unwrap();
    Spi::run("CHECKPOINT").unwrap();
    let start = count("SELECT (pg_current_wal_insert_lsn() - '0/0')::int8") as u64;
    let message = |prefix: &str, hex: &str| {
        format!("PERFORM pg_logical_emit_message(true, '{prefix}', decode('{hex}', 'hex'));")
    };
    // stock and price messages, one 20 kB long; an aborted subtransaction; full-page images
    // (the first updates after the checkpoint); a segment switch; rows of every size
    let stock = message("integ.stock", "740070310035");
    let price = message("integ.price", "7400703100392e393900");
    Spi::run(&format!(
        "DO $$ BEGIN
           {stock} {price}
           PERFORM pg_logical_emit_message(true, 'integ.price', convert_to(repeat('9', 20000), 'UTF8'));
           BEGIN {stock} RAISE EXCEPTION 'undo'; EXCEPTION WHEN raise_exception THEN NULL; END;
           UPDATE walk_t SET pad = pad || 'y' WHERE id % 7 = 0;
           PERFORM pg_switch_wal();
           {stock}
           INSERT INTO walk_t SELECT g, repeat('z', g % 9000) FROM generate_series(2001, 2400) g;
           {price}
         END $$"
    ))
    .unwrap();
    unsafe { pg_sys::XLogFlush(pg_sys::GetXLogInsertRecPtr()) };
    let (ours, theirs) = crate::capture::wal::records_both_ways(start).unwrap();
    assert!(theirs.len() > 500, "{} records", theirs.len());
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a, b, "record at {:X}", a.0);
    }
    let switch = |r: &&crate::capture::wal::Seen| r.2 == 0 && r.4 & 0xF0 == pg_sys::XLOG_SWITCH as u8;
    assert_eq!(ours.iter().filter(switch).count(), 1);
    assert!(ours.iter().any(|r| r.5.len() > 20000), "the long message, whole");
    let aborts = ours.iter().filter(|r| r.2 == pg_sys::RmgrIds::RM_XACT_ID as u8 && !r.5.is_empty());
    assert!(aborts.count() >= 1, "the subtransaction's abort");
}
