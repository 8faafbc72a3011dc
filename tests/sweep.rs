//! Hostile input from outside the process (issue 22): thousands of random calls into every SQL
//! entry point of schema `integ` (random marketplaces and tenants, header objects and
//! non-objects, bodies of random bytes, deep nesting, huge numbers, over-size values), then
//! hundreds of correctly signed deliveries with random bodies for Shopify, TikTok Shop and SHEIN. It
//! holds when the server never restarts, every call ends with a result or a clear SQL error (no
//! internal error, no lost connection), no delivery stays pending or retries forever, and EGDC's
//! stock changes only by the order lines the ledger applied. `SWEEP_SEED` and `SWEEP_CALLS`
//! repeat or widen a run.

use e2e::*;
use marketplace_signing as signing;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const SHOP: &str = "sweep-mx.myshopify.com";
const CIPHER: &str = "CIPHER-SWEEP";
const TENANTS: [&str; 4] = ["acme", "s1", "t1", "nobody"];
const MARKETS: [&str; 6] = ["mercadolibre", "shopify", "tiktok", "shein", "amazon", ""];
/// Functions a sweep must not call at random: they end the test's own setup (its tracked table,
/// its connections, its key) rather than check input; each has its own tests.
const LEFT_OUT: [&str; 6] = [
    "disconnect",
    "untrack_inventory",
    "untrack_prices",
    "track_inventory",
    "track_prices",
    "rotate_key",
];

/// One function of schema integ: its name and argument types.
struct Entry {
    name: String,
    types: Vec<String>,
}

fn entry_points(env: &Env) -> Vec<Entry> {
    env.db()
        .query(
            "SELECT p.proname::text, coalesce(array_agg(format_type(t.oid, NULL) ORDER BY a.n)
                                          FILTER (WHERE t.oid IS NOT NULL), '{}')
               FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace
               LEFT JOIN LATERAL unnest(p.proargtypes::oid[]) WITH ORDINALITY a(typ, n) ON true
               LEFT JOIN pg_type t ON t.oid = a.typ
              WHERE s.nspname = 'integ' AND p.prokind = 'f' AND p.prorettype <> 'trigger'::regtype
              GROUP BY p.oid, p.proname ORDER BY p.proname",
            &[],
        )
        .expect("entry points")
        .iter()
        .map(|r| Entry {
            name: r.get(0),
            types: r.get(1),
        })
        .filter(|e| !LEFT_OUT.contains(&e.name.as_str()))
        .collect()
}

fn random_text(rng: &mut StdRng) -> String {
    match rng.gen_range(0..10) {
        0 => MARKETS[rng.gen_range(0..MARKETS.len())].to_string(),
        1 => TENANTS[rng.gen_range(0..TENANTS.len())].to_string(),
        2 => format!("p{}", rng.gen_range(0..12)),
        3 => "'; DROP TABLE inventory; --".to_string(),
        4 => "x".repeat(rng.gen_range(1_000..200_000)),
        5 => (0..rng.gen_range(0..40))
            .map(|_| rng.gen_range('\u{1}'..'\u{2FFF}'))
            .collect(),
        6 => random_json(rng, 0).to_string(),
        7 => String::new(),
        _ => (0..rng.gen_range(1..20)).map(|_| rng.gen_range('a'..='z')).collect(),
    }
}

fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..if depth > 3 { 6 } else { 10 }) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => {
            let numbers = [
                json!(0),
                json!(-1),
                json!(i64::MAX),
                json!(i64::MIN),
                json!(1e300),
                json!(-1e-300),
                json!(0.5),
            ];
            numbers[rng.gen_range(0..numbers.len())].clone()
        }
        3 => json!(random_text_short(rng)),
        4 => json!(rng.gen::<i32>()),
        5 => json!(MARKETS[rng.gen_range(0..MARKETS.len())]),
        6 | 7 => {
            let keys = [
                "quantity",
                "sku",
                "id",
                "line_items",
                "type",
                "data",
                "order_id",
                "available",
                "price",
                "topic",
                "X-Shopify-Topic",
                "authorization",
                "shop_id",
                "inventory_item_id",
                "user_id",
            ];
            let mut o = serde_json::Map::new();
            for _ in 0..rng.gen_range(0..6) {
                o.insert(keys[rng.gen_range(0..keys.len())].into(), random_json(rng, depth + 1));
            }
            Value::Object(o)
        }
        8 => (0..rng.gen_range(0..5)).map(|_| random_json(rng, depth + 1)).collect(),
        _ => {
            // deep nesting
            let mut v = json!(1);
            for _ in 0..rng.gen_range(50..400) {
                v = json!([v]);
            }
            v
        }
    }
}

fn random_text_short(rng: &mut StdRng) -> String {
    (0..rng.gen_range(0..12)).map(|_| rng.gen_range('!'..='~')).collect()
}

/// A value for an argument of type `ty`, as text for `$n::text::<ty>` (None: NULL), and the
/// cast to use.
fn random_arg(rng: &mut StdRng, ty: &str) -> (Option<String>, String) {
    if rng.gen_range(0..12) == 0 {
        return (None, format!("::{ty}"));
    }
    let v = match ty {
        "text" | "name" => random_text(rng),
        "jsonb" | "json" => {
            if rng.gen_range(0..8) == 0 {
                "{not json".to_string()
            } else {
                random_json(rng, 0).to_string()
            }
        }
        "bytea" => {
            let len = match rng.gen_range(0..20) {
                0 => 2 * 1024 * 1024,
                1..=3 => 0,
                _ => rng.gen_range(1..3_000),
            };
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            return (
                Some(bytes.iter().map(|b| format!("{b:02x}")).collect()),
                "bytea-hex".into(),
            );
        }
        "bigint" | "integer" | "smallint" => [
            0i64,
            -1,
            1,
            7,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
            rng.gen_range(-5..100_000),
        ][rng.gen_range(0..8)]
        .to_string(),
        "numeric" => ["0", "-1", "1e400", "NaN", "12.345", "99999999999999999999.99"][rng.gen_range(0..6)].into(),
        "boolean" => rng.gen::<bool>().to_string(),
        "interval" => ["1 s", "-1 day", "1000000 years", "nonsense", "0"][rng.gen_range(0..5)].into(),
        "regclass" => ["inventory", "nowhere", "pg_class", "integ.listings"][rng.gen_range(0..4)].into(),
        "timestamp with time zone" => ["now", "-infinity", "2026-01-01", "garbage"][rng.gen_range(0..4)].into(),
        "text[]" => format!("{{{}}}", random_text_short(rng).replace(['{', '}', '"', '\\', ','], "")),
        _ => random_text(rng),
    };
    (Some(v), format!("::{ty}"))
}

/// A call's SQL and its arguments.
fn call_sql(rng: &mut StdRng, e: &Entry) -> (String, Vec<Option<String>>) {
    let mut args = Vec::new();
    let mut casts = Vec::new();
    for (i, ty) in e.types.iter().enumerate() {
        let (v, cast) = random_arg(rng, ty);
        casts.push(if cast == "bytea-hex" {
            format!("decode(${}::text, 'hex')", i + 1)
        } else {
            format!("${}::text{cast}", i + 1)
        });
        args.push(v);
    }
    (format!("SELECT integ.{}({})", e.name, casts.join(", ")), args)
}

/// Why a failed call is not a clear SQL error, if it is not.
fn unclear(e: &postgres::Error) -> Option<String> {
    let Some(db) = e.as_db_error() else {
        return Some(format!("not a SQL error: {e}"));
    };
    let code = db.code().code();
    let text = db.message();
    // an internal error is no clear error
    if code == "XX000" {
        return Some(format!("{code}: {text}"));
    }
    None
}

fn shopify_delivery(rng: &mut StdRng, n: usize) -> (Value, Vec<u8>) {
    let body = if rng.gen_range(0..3) == 0 {
        random_json(rng, 0)
    } else {
        let lines: Vec<Value> = (0..rng.gen_range(0..4))
            .map(|i| {
                let quantity = match rng.gen_range(0..8) {
                    0 => json!(-3),
                    1 => json!(1_000_000_000_000i64),
                    2 => json!("2"),
                    3 => json!(1.5),
                    _ => json!(rng.gen_range(1..4)),
                };
                json!({"id": i, "sku": format!("p{}", rng.gen_range(0..12)), "quantity": quantity})
            })
            .collect();
        json!({"id": 900_000 + n, "line_items": lines})
    };
    let bytes = body.to_string().into_bytes();
    let topic = [
        "orders/create",
        "orders/cancelled",
        "inventory_levels/update",
        "products/update",
    ][rng.gen_range(0..4)];
    let headers = json!({"X-Shopify-Hmac-Sha256": signing::shopify_webhook(SHOPIFY_CLIENT_SECRET, &bytes),
                         "X-Shopify-Topic": topic, "X-Shopify-Shop-Domain": SHOP,
                         "X-Shopify-Webhook-Id": format!("sweep-{n}"), "X-Shopify-API-Version": "2026-10"});
    (headers, bytes)
}

/// What the sandbox answers a MercadoLibre order read with: random JSON, random bytes, or a
/// near-valid order with hostile quantities.
fn mercadolibre_order_body(rng: &mut StdRng, n: usize) -> String {
    match rng.gen_range(0..4) {
        0 => random_json(rng, 0).to_string(),
        1 => random_text(rng),
        _ => {
            let items: Vec<Value> = (0..rng.gen_range(0..4))
                .map(|_| {
                    let quantity = match rng.gen_range(0..8) {
                        0 => json!(0),
                        1 => json!(u64::MAX),
                        2 => json!("3"),
                        3 => json!(2.5),
                        _ => json!(rng.gen_range(1..4)),
                    };
                    json!({"item": {"id": format!("MLM{}", rng.gen_range(0..5)), "seller_sku": format!("p{}", rng.gen_range(0..12))},
                           "quantity": quantity})
                })
                .collect();
            let status = ["paid", "cancelled", "?"][rng.gen_range(0..3)];
            json!({"id": 700_000 + n, "status": status, "order_items": items}).to_string()
        }
    }
}

fn tiktok_delivery(rng: &mut StdRng, shop_id: &Value) -> (Value, Vec<u8>) {
    let body = match rng.gen_range(0..3) {
        0 => random_json(rng, 0),
        _ => {
            let kind = [1, 1, 6, 7, 99][rng.gen_range(0..5usize)];
            json!({"type": kind, "shop_id": shop_id,
                    "data": {"order_id": rng.gen_range(1..1_000_000_000u64).to_string(), "order_status": "AWAITING_SHIPMENT"}})
        }
    };
    let bytes = body.to_string().into_bytes();
    let headers = json!({"Authorization": signing::tiktok_webhook(TIKTOK_APP_KEY, TIKTOK_APP_SECRET, &bytes)});
    (headers, bytes)
}

fn form_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A SHEIN event callback: the event encrypted with the app's key into form field `eventData`,
/// the `x-lt-*` headers signed over the callback's path (`/`).
fn shein_delivery(rng: &mut StdRng, n: usize) -> (Value, Vec<u8>) {
    let event = if rng.gen_range(0..3) == 0 {
        random_json(rng, 0)
    } else {
        let lines: Vec<Value> = (0..rng.gen_range(0..4))
            .map(|i| {
                let quantity = match rng.gen_range(0..8) {
                    0 => json!(0),
                    1 => json!(99_999_999_999i64),
                    2 => json!("1"),
                    _ => json!(rng.gen_range(1..4)),
                };
                json!({"orderGoodsId": format!("{n}-{i}"), "skuCode": format!("p{}", rng.gen_range(0..12)), "quantity": quantity})
            })
            .collect();
        let status = ["TO_BE_SHIPPED", "TO_BE_SHIPPED", "CANCELLED", "ELSEWHERE"][rng.gen_range(0..4)];
        json!({"eventCode": "ORDER_STATUS", "eventId": format!("sweep-{n}"), "supplierId": 940,
               "orderNo": format!("GSH{}", rng.gen_range(0..300)), "orderStatus": status,
               "orderGoodsInfoList": lines})
    };
    let encrypted = signing::shein_encrypt(SHEIN_APP_SECRET, &event.to_string()).expect("encrypt");
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
        .to_string();
    let random_key = signing::shein_random_key(rng);
    let headers = json!({"Content-Type": "application/x-www-form-urlencoded", "x-lt-appid": SHEIN_APPID,
                         "x-lt-timestamp": ts,
                         "x-lt-signature": signing::shein(SHEIN_APPID, SHEIN_APP_SECRET, "/", &ts, &random_key)});
    (headers, format!("eventData={}", form_escape(&encrypted)).into_bytes())
}

#[test]
fn random_and_hostile_calls_into_every_entry_point_leave_nothing_broken() {
    let seed: u64 = std::env::var("SWEEP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(22);
    let calls: usize = std::env::var("SWEEP_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let deliveries = 400;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut env = Env::with_conf("sweep", "integ.max_attempts = 4\ninteg.webhook_max_bytes = 65536");
    env.add_shopify_tenant("s1", SHOP, json!({"location_id": 1}));
    let grant = env.add_tiktok_tenant("t1", CIPHER, json!({}));
    env.add_shein_tenant("h1", 940, json!({}));
    env.db()
        .batch_execute(
            "INSERT INTO inventory SELECT t, 'p' || i, 100000 FROM unnest(ARRAY['acme', 's1', 't1', 'h1']) t, generate_series(0, 9) i",
        )
        .expect("inventory");
    let started: String = env.scalar_text("SELECT pg_postmaster_start_time()::text");
    let before: BTreeMap<(String, String), i32> = stock(&env);

    // 1. random calls into every entry point, as a role with both of the extension's roles (as
    // the application and its operators reach them; internal functions are refused to them)
    env.db()
        .batch_execute("CREATE ROLE sweeper; GRANT integ_operator, integ_application TO sweeper")
        .expect("role");
    let as_sweeper = |env: &Env| env.db().batch_execute("SET ROLE sweeper").expect("set role");
    as_sweeper(&env);
    let entries = entry_points(&env);
    assert!(entries.len() > 30, "found {} entry points", entries.len());
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    let mut internal: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..calls {
        let e = &entries[i % entries.len()];
        let (sql, args) = call_sql(&mut rng, e);
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn postgres::types::ToSql + Sync)).collect();
        // each call alone: a failed one must not hide the next
        let result = env.db().query(sql.as_str(), &params);
        let word = match &result {
            Ok(_) => "ok".to_string(),
            Err(err) => {
                if let Some(why) = unclear(err) {
                    bad.push(format!("{}: {why}", e.name));
                }
                if let Some(db) = err.as_db_error().filter(|d| d.code().code() == "XX000") {
                    let first: String = db.message().chars().take(90).collect();
                    *internal.entry(format!("{}: {first}", e.name)).or_default() += 1;
                }
                err.code().map_or("no code".into(), |c| c.code().to_string())
            }
        };
        *outcomes.entry(word).or_default() += 1;
        if result.as_ref().is_err_and(|err| err.as_db_error().is_none()) {
            env.reconnect();
            as_sweeper(&env);
        }
    }
    env.db().batch_execute("RESET ROLE").expect("reset role");
    println!(
        "SWEEP seed {seed}: {calls} calls into {} entry points: {outcomes:?}",
        entries.len()
    );
    println!("SWEEP internal errors (XX000): {internal:#?}");
    assert!(bad.is_empty(), "calls without a clear SQL error: {bad:#?}");

    // 2. correctly signed deliveries with random bodies
    let shop_id = grant["shop_id"].clone();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for n in 0..deliveries * 3 {
        let (market, (headers, body)) = match n % 3 {
            0 => ("shopify", shopify_delivery(&mut rng, n)),
            1 => ("tiktok", tiktok_delivery(&mut rng, &shop_id)),
            _ => ("shein", shein_delivery(&mut rng, n)),
        };
        let r: Value = env
            .db()
            .query_one("SELECT integ.receive_webhook($1, $2, $3)", &[&market, &headers, &body])
            .expect("a signed delivery is answered")
            .get(0);
        *statuses
            .entry(format!("{market} {}", r["status"].as_str().unwrap_or("?")))
            .or_default() += 1;
    }
    // MercadoLibre notifications are pointers: the order they point at answers random bodies
    for n in 0..deliveries {
        let order = 700_000 + n;
        let body = mercadolibre_order_body(&mut rng, n);
        let made = env.sim.post(
            &format!("/mercadolibre/orders/{order}/raw"),
            json!({"seller": SELLER, "body": body, "send": false}),
        );
        let d = &made["delivery"];
        let r: Value = env
            .db()
            .query_one(
                "SELECT integ.receive_webhook('mercadolibre', $1, convert_to($2, 'UTF8'))",
                &[&d["headers"], &d["body"].as_str().unwrap_or("")],
            )
            .expect("a notification is answered")
            .get(0);
        *statuses
            .entry(format!("mercadolibre {}", r["status"].as_str().unwrap_or("?")))
            .or_default() += 1;
    }
    println!("SWEEP {deliveries} signed deliveries each for Shopify, TikTok Shop and SHEIN, and {deliveries} MercadoLibre notifications of orders answering random bodies: {statuses:?}");
    for market in ["shopify", "tiktok", "shein", "mercadolibre"] {
        assert!(
            statuses.get(&format!("{market} accepted")).copied().unwrap_or(0) > deliveries / 2,
            "the signed {market} deliveries are accepted: {statuses:?}"
        );
    }

    // 3. every delivery ends; the stock moved only by the applied lines
    env.wait_for(120, "every delivery to be done, dead or ignored", || {
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE state IN ('pending', 'failed')") == 0
    });
    let states = env.scalar_text(
        "SELECT string_agg(state || ' ' || n, ', ' ORDER BY state) FROM (SELECT state, count(*) n FROM integ.webhooks GROUP BY state) s",
    );
    println!("SWEEP deliveries ended: {states}");
    assert_eq!(
        env.scalar_text("SELECT pg_postmaster_start_time()::text"),
        started,
        "the server never restarted"
    );
    let applied: BTreeMap<(String, String), i64> = env
        .db()
        .query(
            "SELECT tenant_id, product_id, sum(quantity)::bigint FROM integ.order_lines WHERE cancelled_at IS NULL GROUP BY 1, 2",
            &[],
        )
        .expect("ledger")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let after = stock(&env);
    for (key, was) in &before {
        let now = after.get(key).copied().unwrap_or(i32::MIN);
        let sold = applied.get(key).copied().unwrap_or(0);
        assert_eq!(
            i64::from(*was) - i64::from(now),
            sold,
            "{key:?}: EGDC's stock moved only by the ledger's lines"
        );
    }
    let lines = env.scalar_i64("SELECT count(*) FROM integ.order_lines");
    let out_of_range = env.scalar_i64("SELECT count(*) FROM integ.order_lines WHERE quantity NOT BETWEEN 1 AND 10000");
    println!("SWEEP ledger: {lines} lines applied, {out_of_range} out of range");
    assert_eq!(out_of_range, 0);
    env.assert_no_secrets();
}

fn stock(env: &Env) -> BTreeMap<(String, String), i32> {
    env.db()
        .query("SELECT tenant_id, sku, qty FROM inventory", &[])
        .expect("inventory")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect()
}
