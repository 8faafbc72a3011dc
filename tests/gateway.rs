//! The gateway (`integ-gateway`, gateway/) end to end: a real cluster, the sandbox delivering
//! webhooks to it over HTTP, the authorization flow with the sandbox as the browser, metrics,
//! readiness, the dashboard in headless Chromium, and a sweep of malformed requests.
//!
//! The binary is `INTEG_GATEWAY_BIN`, else `integ-gateway` beside this test's own target
//! directory (scripts/test builds it). It connects as a non-superuser role `gw`.

use e2e::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod gateway_support;
use gateway_support::*;

#[test]
fn webhooks_of_each_marketplace_through_the_gateway() {
    let mut env = Env::with_conf("gw-hooks", "integ.webhook_max_bytes = 65536");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    // SHEIN signs over the callback's own path: the gateway's
    let key_id = env.add_shein_tenant(TENANT, 900, json!({"webhook_path": "/webhooks/shein"}));
    env.shein_listing(TENANT, &key_id, &sku, "SH-1");
    env.add_tiktok_tenant(TENANT, "CIPHER-1", json!({}));
    env.tiktok_listing(TENANT, "CIPHER-1", &sku, "P-1", "SKU-1");
    env.add_shopify_tenant(TENANT, SHOP, json!({}));
    env.shopify_listing(TENANT, SHOP, &sku, 1001);
    let mut g = Gateway::start(&env);
    for m in ["mercadolibre", "shopify", "tiktok", "shein"] {
        hooks(&env, &g, m, &[300, 600, 1_200, 2_400, 4_800]);
    }
    env.set_stock(&sku, 20);
    env.wait_idle(15, "initial stock everywhere");

    // a sale on each marketplace, delivered by the sandbox through the gateway, applied once
    env.sim.post(
        "/shopify/orders",
        json!({"shop": SHOP, "lines": [{"inventory_item_id": 1001, "location_id": 1, "sku": sku, "quantity": 2}]}),
    );
    env.wait_for(15, "the Shopify sale", || env.egdc_stock(TENANT, &sku) == 18);
    env.sim.post(
        "/mercadolibre/orders",
        json!({"seller": SELLER, "items": [{"item_id": item, "quantity": 1}]}),
    );
    env.wait_for(15, "the MercadoLibre sale", || env.egdc_stock(TENANT, &sku) == 17);
    env.sim.post(
        "/tiktok/orders",
        json!({"shop_cipher": "CIPHER-1", "lines": [{"sku_id": "SKU-1", "quantity": 3}]}),
    );
    env.wait_for(15, "the TikTok Shop sale", || env.egdc_stock(TENANT, &sku) == 14);
    env.sim.post(
        "/shein/orders",
        json!({"open_key_id": key_id, "lines": [{"sku_code": "SH-1", "quantity": 4}]}),
    );
    env.wait_for(15, "the SHEIN sale", || env.egdc_stock(TENANT, &sku) == 10);
    env.wait_idle(15, "the sales pushed out");
    assert_eq!(env.sim.item_quantity(&item), Some(10));
    assert_eq!(env.shopify_available(1001), Some(10));
    assert_eq!(
        env.scalar_i64("SELECT count(DISTINCT marketplace) FROM integ.order_lines"),
        4,
        "an order of each marketplace applied"
    );
    let log = hook_log(&env);
    assert!(
        log.iter().all(|(_, s)| *s == 200),
        "every attempt answered 200: {log:?}"
    );
    for m in ["mercadolibre", "shopify", "tiktok", "shein"] {
        assert!(log.iter().any(|(mm, _)| mm == m), "{m} delivered through the gateway");
    }

    // the same delivery twice: accepted, then a duplicate that changes nothing
    let made = env.sim.post(
        "/shopify/orders",
        json!({"shop": SHOP, "send": false,
               "lines": [{"inventory_item_id": 1001, "location_id": 1, "sku": sku, "quantity": 1}]}),
    );
    let d = &made["delivery"];
    let body = d["body"].as_str().expect("body").as_bytes().to_vec();
    assert_eq!(
        deliver(&g, "shopify", d, &body),
        (200, "{\"status\":\"accepted\"}\n".into())
    );
    env.wait_for(15, "the delivered order", || env.egdc_stock(TENANT, &sku) == 9);
    assert_eq!(
        deliver(&g, "shopify", d, &body),
        (200, "{\"status\":\"duplicate\"}\n".into())
    );
    std::thread::sleep(Duration::from_millis(500));
    env.wait_idle(15, "settled");
    assert_eq!(env.egdc_stock(TENANT, &sku), 9, "the duplicate changed nothing");

    // forged: a signature that is not the marketplace's, for each signing marketplace
    let tiktok = env.sim.post(
        "/tiktok/orders",
        json!({"shop_cipher": "CIPHER-1", "send": false, "lines": [{"sku_id": "SKU-1", "quantity": 1}]}),
    );
    let shein = env.sim.post(
        "/shein/orders",
        json!({"open_key_id": key_id, "send": false, "lines": [{"sku_code": "SH-1", "quantity": 1}]}),
    );
    for (m, made, header) in [
        ("shopify", &made, "X-Shopify-Hmac-Sha256"),
        ("tiktok", &tiktok, "Authorization"),
        ("shein", &shein, "x-lt-signature"),
    ] {
        let mut d = made["delivery"].clone();
        let signature = d["headers"][header]
            .as_str()
            .unwrap_or_else(|| panic!("{m} {header}: {d}"))
            .to_string();
        // the same length, one character in the middle changed: a digit for a digit or letter,
        // so the change shows in hex read either case (TikTok's "a" and "A" are one digit)
        let changed = if &signature[10..11] == "0" { "1" } else { "0" };
        d["headers"][header] = json!(format!("{}{changed}{}", &signature[..10], &signature[11..]));
        let body = d["body"].as_str().expect("body").to_string();
        let (status, _) = deliver(&g, m, &d, body.as_bytes());
        assert_eq!(status, 401, "a forged {m} delivery");
    }
    // and a Shopify body its signature does not cover
    let mut tampered = made["delivery"]["body"].as_str().expect("body").to_string();
    tampered.push(' ');
    assert_eq!(deliver(&g, "shopify", d, tampered.as_bytes()).0, 401);
    // forged MercadoLibre notification: another application's id
    let ml = json!({"headers": {"content-type": "application/json"}});
    let note = json!({"_id": "n-forged", "resource": "/orders/1", "user_id": SELLER, "topic": "orders_v2",
                      "application_id": 999_999, "attempts": 1});
    assert_eq!(deliver(&g, "mercadolibre", &ml, note.to_string().as_bytes()).0, 404);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE status = 'rejected' AND http_status = 401"),
        4
    );

    // oversized: by its Content-Length, before the body is read, and chunked, cut at the limit
    let big = vec![b'x'; 65_537];
    assert_eq!(deliver(&g, "shopify", d, &big).0, 413);
    let mut chunked =
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(b"8000\r\n");
        chunked.extend_from_slice(&[b'y'; 0x8000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(raw(&g.addr, &chunked), Some(413), "a chunked body, cut at the limit");
    let mut head = b"POST /webhooks/tiktok HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n".to_vec();
    head.extend_from_slice(b"{}");
    assert_eq!(raw(&g.addr, &head), Some(413), "refused from the declared length alone");

    // the database stopped: 503, and the marketplace's retry succeeds after the restart
    // (Shopify retries for hours; here for half a minute, long enough for a slow restart)
    hooks(&env, &g, "shopify", &[500, 1_000, 2_000, 4_000, 8_000, 16_000]);
    env.pg.stop("immediate");
    assert_eq!(
        deliver(
            &g,
            "tiktok",
            &tiktok["delivery"],
            tiktok["delivery"]["body"].as_str().unwrap_or("").as_bytes()
        )
        .0,
        503
    );
    let seen = hook_log(&env).len();
    env.sim.post(
        "/shopify/orders",
        json!({"shop": SHOP, "lines": [{"inventory_item_id": 1001, "location_id": 1, "sku": sku, "quantity": 2}]}),
    );
    env.wait_for(10, "a Shopify attempt answered 503", || {
        hook_log(&env)[seen..].iter().any(|(m, s)| m == "shopify" && *s == 503)
    });
    assert_eq!(
        raw(
            &g.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        Some(200)
    );
    assert_eq!(
        raw(&g.addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        Some(503)
    );
    env.pg.pg_ctl_start();
    env.reconnect();
    env.wait_for(30, "the Shopify order, by the marketplace's retry", || {
        env.egdc_stock(TENANT, &sku) == 7
    });
    let after: Vec<(String, i64)> = hook_log(&env)[seen..].to_vec();
    let first_ok = after.iter().position(|(m, s)| m == "shopify" && *s == 200);
    let first_503 = after.iter().position(|(m, s)| m == "shopify" && *s == 503);
    assert!(
        first_503 < first_ok && first_ok.is_some(),
        "503 while down, then 200: {after:?}"
    );
    assert!(g.alive(), "the gateway is still running");
    assert_clean_log(&g, &[CONNECT_SECRET, "x-shopify-hmac", "line_items"]);
    let log = g.log();
    assert!(log.contains("POST /webhooks/shopify 503"), "{log}");
    assert!(log.contains("POST /webhooks/tiktok 413"), "{log}");
    println!(
        "GATEWAY webhooks: 4 marketplaces applied once through HTTP, duplicate 200, forged 401, oversized 413, down 503 then retried"
    );
    env.assert_no_secrets();
}

/// Deliveries that arrive together go to the database together (one transaction for several),
/// and each is still answered for itself: a duplicate in the same batch is a duplicate, a
/// forged one 401, and one whose receipt raises is refused alone without taking the others with it.
#[test]
fn deliveries_arriving_together_are_received_together_and_each_answered_alone() {
    let mut env = Env::with_conf("gw-batch", "integ.workers = 0");
    env.add_shopify_tenant(TENANT, SHOP, json!({}));
    // a receipt that raises: any body mentioning "explode"
    env.db()
        .batch_execute(
            "CREATE FUNCTION public.explode() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF position('explode' IN convert_from(NEW.body, 'UTF8')) > 0 THEN RAISE EXCEPTION 'boom'; END IF;
                   RETURN NEW; END $$;
             CREATE TRIGGER explode BEFORE INSERT ON integ.webhooks FOR EACH ROW EXECUTE FUNCTION public.explode();",
        )
        .expect("the raising trigger");
    // 300 distinct deliveries (every 30th says "explode", every 25th is forged), and the first 40 again
    let rows = env
        .db()
        .query(
            &format!(
                "SELECT i, CASE WHEN i % 25 = 0 THEN 'AAAA' || encode(hmac(b, 'other', 'sha256'), 'base64')
                                ELSE encode(hmac(b, '{SHOPIFY_CLIENT_SECRET}', 'sha256'), 'base64') END, b
                   FROM (SELECT i, convert_to(json_build_object('id', i, 'note', CASE WHEN i % 30 = 0 THEN 'explode' END,
                                  'line_items', json_build_array())::text, 'UTF8') AS b
                           FROM generate_series(1, 300) i) s"
            ),
            &[],
        )
        .expect("deliveries");
    let mut deliveries: Vec<(i32, String, Vec<u8>)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    deliveries.extend(deliveries[..40].to_vec());
    let g = Gateway::start(&env);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let answers: Vec<(i32, u16, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let http = http();
                    let mut out = Vec::new();
                    loop {
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((i, hmac, body)) = deliveries.get(k) else {
                            break;
                        };
                        let r = http
                            .post(g.url("/webhooks/shopify"))
                            .header("X-Shopify-Hmac-Sha256", hmac.as_str())
                            .header("X-Shopify-Topic", "orders/create")
                            .header("X-Shopify-Shop-Domain", SHOP)
                            .header("X-Shopify-Webhook-Id", format!("batch-{i}"))
                            .header("Content-Type", "application/json")
                            .body(body.clone())
                            .send()
                            .expect("deliver");
                        out.push((*i, r.status().as_u16(), r.text().unwrap_or_default()));
                    }
                    out
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("client")).collect()
    });
    assert_eq!(answers.len(), 340);
    for (i, status, body) in &answers {
        let want = if i % 25 == 0 {
            401
        } else if i % 30 == 0 {
            400
        } else {
            200
        };
        assert_eq!(*status, want, "delivery {i}: {body}");
    }
    let accepted = |i: &i32| {
        answers
            .iter()
            .filter(|(j, _, b)| j == i && b.contains("\"accepted\""))
            .count()
    };
    for i in 1..=300 {
        let want = usize::from(i % 25 != 0 && i % 30 != 0);
        assert_eq!(
            accepted(&i),
            want,
            "delivery {i} accepted once (or never: forged, raising)"
        );
    }
    let dup = answers.iter().filter(|(_, _, b)| b.contains("\"duplicate\"")).count();
    // of the 40 repeated, 1 forged (25) and 1 raising (30) are not duplicates
    assert_eq!(dup, 38, "each repeat a duplicate");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE status = 'accepted' AND verified"),
        300 - 12 - 10 + 2,
        "accepted rows: 300 less 12 forged and 10 raising (the 2 both are counted in each)"
    );
    // several deliveries were received in one transaction
    let (rows, transactions) = (
        env.scalar_i64("SELECT count(*) FROM integ.webhooks"),
        env.scalar_i64("SELECT count(DISTINCT xmin::text) FROM integ.webhooks"),
    );
    assert!(transactions < rows, "{rows} deliveries in {transactions} transactions");
    println!("GATEWAY batching: {rows} deliveries recorded in {transactions} transactions; each answered alone");
}

/// GET /connect: the authorize URL the gateway redirects to.
fn connect(g: &Gateway, marketplace: &str, tenant: &str, token: &str, extra: &str) -> reqwest::blocking::Response {
    http()
        .get(g.url(&format!("/connect/{marketplace}")))
        .query(&[("tenant", tenant), ("token", token)])
        .query(&serde_urlencoded_pairs(extra))
        .send()
        .expect("connect")
}

fn serde_urlencoded_pairs(extra: &str) -> Vec<(String, String)> {
    extra
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The sandbox plays the seller's browser: approves at the authorize URL, then follows the
/// redirect back to the gateway's callback with what the marketplace sends.
fn approve_and_return(env: &Env, g: &Gateway, marketplace: &str, url: &str, who: Value) -> reqwest::blocking::Response {
    let mut body = who;
    body["url"] = json!(url);
    let cb = env.sim.post(&format!("/authorize/{marketplace}"), body);
    let params: Vec<(String, String)> = cb
        .as_object()
        .expect("callback")
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    http()
        .get(g.url(&format!("/oauth/{marketplace}/callback")))
        .query(&params)
        .send()
        .expect("callback")
}

#[test]
fn authorization_flow_through_connect_and_callback() {
    let mut env = Env::new("gw-oauth");
    env.secrets.extend([
        TIKTOK_APP_SECRET.to_string(),
        SHOPIFY_CLIENT_SECRET.to_string(),
        SHEIN_APP_SECRET.to_string(),
    ]);
    env.sim.post(
        "/shopify/apps",
        json!({"client_id": SHOPIFY_CLIENT_ID, "client_secret": SHOPIFY_CLIENT_SECRET}),
    );
    env.sim.post(
        "/tiktok/apps",
        json!({"app_key": TIKTOK_APP_KEY, "app_secret": TIKTOK_APP_SECRET}),
    );
    env.sim.post(
        "/shein/apps",
        json!({"appid": SHEIN_APPID, "app_secret_key": SHEIN_APP_SECRET}),
    );
    for (m, creds) in [
        (
            "mercadolibre",
            json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
        ),
        (
            "shopify",
            json!({"client_id": SHOPIFY_CLIENT_ID, "client_secret": SHOPIFY_CLIENT_SECRET}),
        ),
        (
            "tiktok",
            json!({"app_key": TIKTOK_APP_KEY, "app_secret": TIKTOK_APP_SECRET}),
        ),
        (
            "shein",
            json!({"appid": SHEIN_APPID, "app_secret_key": SHEIN_APP_SECRET}),
        ),
    ] {
        env.db()
            .execute(
                "SELECT integ.register_app($1, $2, $3)",
                &[&m, &creds, &json!({"base_url": env.sim.base_url(m)})],
            )
            .expect("register_app");
    }
    let g = Gateway::start(&env);
    let mut connections = Vec::new();
    for (m, tenant, extra, who) in [
        ("mercadolibre", "t-ml", "", json!({"seller": 6001})),
        (
            "shopify",
            "t-sh",
            "shop=gw-auth.myshopify.com",
            json!({"shop": "gw-auth.myshopify.com"}),
        ),
        (
            "tiktok",
            "t-tt",
            "",
            json!({"shop_cipher": "CIPHER-GW", "shop_id": "7494000000000000009"}),
        ),
        ("shein", "t-se", "", json!({"supplier_id": 902})),
    ] {
        let r = connect(&g, m, tenant, &mint(&env, tenant, m, 300), extra);
        assert_eq!(r.status().as_u16(), 302, "{m}: {:?}", r.text());
        let url = location(&r);
        assert!(url.contains("state="), "{m}: {url}");
        let back = approve_and_return(&env, &g, m, &url, who);
        assert_eq!(back.status().as_u16(), 302, "{m}");
        let to = location(&back);
        let id: i64 = to
            .strip_prefix(&format!("{SUCCESS}?connection="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{m}: redirected to {to}"));
        let owner: String = env
            .db()
            .query_one(
                "SELECT tenant_id || '/' || marketplace FROM integ.connections WHERE id = $1",
                &[&id],
            )
            .expect("the connection")
            .get(0);
        assert_eq!(owner, format!("{tenant}/{m}"));
        connections.push(id);
        // the same callback again: already used
        if m == "mercadolibre" {
            let url2 = location(&connect(&g, m, tenant, &mint(&env, tenant, m, 300), extra));
            let cb = env
                .sim
                .post("/authorize/mercadolibre", json!({"url": url2, "seller": 6001}));
            let query: Vec<(String, String)> = cb
                .as_object()
                .expect("cb")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            let once = http()
                .get(g.url("/oauth/mercadolibre/callback"))
                .query(&query)
                .send()
                .expect("cb");
            assert!(location(&once).starts_with(&format!("{SUCCESS}?connection=")));
            let twice = http()
                .get(g.url("/oauth/mercadolibre/callback"))
                .query(&query)
                .send()
                .expect("cb");
            assert_eq!(location(&twice), format!("{FAILURE}?reason=already_used"));
        }
    }
    // SHEIN's connection verifies event callbacks over the gateway's own path
    let path: String = env
        .db()
        .query_one(
            "SELECT settings ->> 'webhook_path' FROM integ.connections WHERE id = $1",
            &[&connections[3]],
        )
        .expect("settings")
        .get(0);
    assert_eq!(path, "/webhooks/shein");

    // tokens: forged, expired, too long-lived, another tenant's, another marketplace's, none
    let good = mint(&env, "t-x", "mercadolibre", 300);
    let (expiry, mac) = good.split_once('.').expect("token");
    let mut flipped = mac.to_string();
    flipped.replace_range(0..1, if mac.starts_with('0') { "1" } else { "0" });
    for (tenant, m, token) in [
        ("t-x", "mercadolibre", format!("{expiry}.{flipped}")),
        ("t-x", "mercadolibre", mint(&env, "t-x", "mercadolibre", -5)),
        ("t-x", "mercadolibre", mint(&env, "t-x", "mercadolibre", 3_600)),
        ("t-y", "mercadolibre", good.clone()),
        ("t-x", "shopify", good.clone()),
        (
            "t-x",
            "mercadolibre",
            format!("{}.{mac}", expiry.parse::<i64>().unwrap_or(0) + 1),
        ),
        ("t-x", "mercadolibre", "garbage".to_string()),
    ] {
        let r = connect(&g, m, tenant, &token, "");
        assert_eq!(r.status().as_u16(), 403, "{tenant} {m} {token}");
    }
    let none = http()
        .get(g.url("/connect/mercadolibre?tenant=t-x"))
        .send()
        .expect("connect");
    assert_eq!(none.status().as_u16(), 400);
    let unknown = connect(&g, "amazon", "t-x", &good, "");
    assert_eq!(unknown.status().as_u16(), 404);
    // the seller said no; an unknown state; no state
    for (query, reason) in [
        ("error=access_denied&state=abc", "denied"),
        ("code=TG-1&state=ffff", "invalid_state"),
        ("code=TG-1", "invalid_state"),
    ] {
        let r = http()
            .get(g.url(&format!("/oauth/mercadolibre/callback?{query}")))
            .send()
            .expect("cb");
        assert_eq!(location(&r), format!("{FAILURE}?reason={reason}"), "{query}");
    }
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.authorizations WHERE used_at IS NOT NULL"),
        5
    );
    // no code, state or token reaches the log
    let issued: Vec<String> = [
        "/mercadolibre/issued_tokens",
        "/tiktok/issued_tokens",
        "/shopify/issued_tokens",
    ]
    .iter()
    .filter_map(|p| env.sim.get(p).as_array().cloned())
    .flatten()
    .filter_map(|t| t.as_str().map(str::to_string))
    .collect();
    let mut never: Vec<&str> = issued.iter().map(String::as_str).collect();
    never.extend([mac, CONNECT_SECRET, "TG-1", "access_denied"]);
    assert_clean_log(&g, &never);
    assert!(g.log().contains("GET /oauth/shein/callback 302"), "{}", g.log());
    println!("GATEWAY authorization: 4 marketplaces connected through /connect and the callback; 7 bad tokens refused");
    env.assert_no_secrets();
}

#[test]
fn dashboard_metrics_readiness_and_malformed_requests() {
    let mut env = Env::new("gw-dash");
    env.add_shopify_tenant("beta", SHOP, json!({"conflict_strategy": "manual"}));
    env.shopify_listing("beta", SHOP, "B1", 4001);
    let ls = env.listings(2);
    env.set_stock(&ls[0].0, 5);
    env.set_stock(&ls[1].0, 6);
    env.set_stock_of("beta", "B1", 7);
    env.wait_idle(15, "pushes");
    env.wait_for(15, "every call rolled up into hour buckets of both connections", || {
        env.scalar_i64(
            "SELECT count(DISTINCT connection_id) FROM integ.health_buckets WHERE width_s = 3600 AND calls > 0",
        ) == 2
            && env.scalar_i64(
                "SELECT count(*) FROM integ.rollup_state
                  WHERE source = 'sync_log' AND watermark >= (SELECT coalesce(max(id), 0) FROM integ.sync_log)",
            ) == 1
    });
    // an alert whose text is HTML, and an open conflict
    env.db()
        .batch_execute(
            "INSERT INTO integ.alerts (tenant_id, marketplace, connection_id, kind, message)
             SELECT tenant_id, marketplace, id, 'test', '<script>alert(1)</script> & more' FROM integ.connections WHERE tenant_id = 'acme';
             INSERT INTO integ.conflicts (tenant_id, marketplace, connection_id, listing_id, product_id, external_id, egdc_stock, remote_stock, source)
             SELECT l.tenant_id, l.marketplace, l.connection_id, l.id, l.product_id, l.external_id, 7, 3, 'webhook'
               FROM integ.listings l WHERE l.tenant_id = 'beta';",
        )
        .expect("alert and conflict");
    let mut g = Gateway::start(&env);
    let client = http();

    // health and readiness
    assert_eq!(
        client.get(g.url("/healthz")).send().expect("healthz").status().as_u16(),
        200
    );
    let ready = client.get(g.url("/readyz")).send().expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let ready: Value = ready.json().expect("readyz json");
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(ready["workers"].as_i64().unwrap_or(0) >= 1, "{ready}");

    // metrics: a bearer token, or 401
    assert_eq!(
        client.get(g.url("/metrics")).send().expect("metrics").status().as_u16(),
        401
    );
    let wrong = client
        .get(g.url("/metrics"))
        .bearer_auth("not-the-token")
        .send()
        .expect("metrics");
    assert_eq!(wrong.status().as_u16(), 401);
    let m = client
        .get(g.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .expect("metrics");
    assert_eq!(m.status().as_u16(), 200);
    assert_eq!(
        m.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = m.text().expect("metrics text");
    let direct = env.scalar_text("SELECT integ.metrics()");
    assert!(text.contains("tenant=\"beta\""), "{text}");
    let described = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("# "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(!described(&direct).is_empty());
    assert_eq!(described(&text), described(&direct), "what integ.metrics() says");

    // the dashboard: refused without credentials, rendered in a real browser with them
    assert_eq!(client.get(g.url("/")).send().expect("dashboard").status().as_u16(), 401);
    let bad = client
        .get(g.url("/"))
        .basic_auth(DASH_USER, Some("wrong"))
        .send()
        .expect("dashboard");
    assert_eq!(bad.status().as_u16(), 401);
    assert!(bad.headers().get("www-authenticate").is_some());
    let dom_unauth = chromium(&g.url("/"), None);
    assert!(!dom_unauth.contains("tenant-count"), "no dashboard without credentials");
    let url = format!("http://{DASH_USER}:{DASH_PASSWORD}@{}/", g.addr);
    let dom = chromium(&url, None);
    assert!(dom.contains("integration · health"), "{dom}");
    assert!(dom.contains("<svg"), "charts are inline SVG");
    assert!(dom.contains("<rect"), "with bars");
    assert_eq!(by_id(&dom, "tenant-count"), Some("2"));
    assert_eq!(by_id(&dom, "connection-count"), Some("2"));
    assert_eq!(by_id(&dom, "alert-count"), Some("1"));
    assert_eq!(by_id(&dom, "conflict-count"), Some("1"));
    for tenant in ["acme", "beta"] {
        assert!(
            dom.contains(&format!("<span class=\"tenant-name\">{tenant}</span>")),
            "{tenant}"
        );
    }
    let rows = env
        .db()
        .query(
            "SELECT c.id, s.queue_depth, s.dead, coalesce((SELECT sum(calls) FROM integ.health_buckets b
                     WHERE b.connection_id = c.id AND b.width_s = 3600 AND b.start > now() - interval '24 hours'), 0)::bigint
               FROM integ.connections c JOIN integ.status s ON s.connection_id = c.id",
            &[],
        )
        .expect("expected numbers");
    for r in &rows {
        let (id, queue, dead, calls): (i64, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        assert!(calls > 0);
        assert_eq!(
            by_id(&dom, &format!("conn-{id}-calls")),
            Some(calls.to_string().as_str()),
            "calls of {id}"
        );
        assert_eq!(
            by_id(&dom, &format!("conn-{id}-queue")),
            Some(queue.to_string().as_str())
        );
        assert_eq!(by_id(&dom, &format!("conn-{id}-dead")), Some(dead.to_string().as_str()));
        assert_eq!(by_id(&dom, &format!("conn-{id}-status")), Some("active"));
    }
    // the alert's HTML is text, not markup
    assert!(
        dom.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"),
        "escaped"
    );
    assert!(!dom.contains("<script>"), "no script on the page");
    for s in [
        DASH_PASSWORD,
        METRICS_TOKEN,
        CONNECT_SECRET,
        SHOPIFY_CLIENT_SECRET,
        CLIENT_SECRET,
    ] {
        assert!(!dom.contains(s), "a secret on the page");
    }
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/gateway-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&url, Some(&shot));
    assert!(
        std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "a screenshot at {}",
        shot.display()
    );

    // malformed requests: each a 4xx, never a 5xx or a crash
    let sweep = malformed_requests();
    assert!(sweep.len() >= 100, "{} requests", sweep.len());
    let webhooks_before = env.scalar_i64("SELECT count(*) FROM integ.webhooks");
    let mut statuses = std::collections::BTreeMap::new();
    for (what, request) in &sweep {
        let status = raw(&g.addr, request);
        assert!(
            matches!(status, Some(400..=499)),
            "{what}: answered {status:?}\n{}",
            tail(&g.log(), 5)
        );
        *statuses.entry(status.unwrap_or(0)).or_insert(0) += 1;
        assert!(g.alive(), "{what}: the gateway died");
    }
    let recorded = env.scalar_i64("SELECT count(*) FROM integ.webhooks") - webhooks_before;
    println!(
        "GATEWAY sweep: {} malformed requests, answers {statuses:?}; {recorded} reached receive_webhook (recorded as rejected)",
        sweep.len()
    );
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE status <> 'rejected'"),
        0,
        "no malformed delivery was accepted"
    );
    assert_eq!(
        client.get(g.url("/healthz")).send().expect("healthz").status().as_u16(),
        200
    );
    assert_clean_log(&g, &[DASH_PASSWORD, METRICS_TOKEN]);

    // the database stopped: not ready, still alive; back when it is
    env.pg.stop("fast");
    let r = client.get(g.url("/readyz")).send().expect("readyz");
    assert_eq!(r.status().as_u16(), 503);
    let r = client
        .get(g.url("/"))
        .basic_auth(DASH_USER, Some(DASH_PASSWORD))
        .send()
        .expect("dashboard");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        client.get(g.url("/healthz")).send().expect("healthz").status().as_u16(),
        200
    );
    env.pg.pg_ctl_start();
    env.reconnect();
    env.wait_for(20, "ready again", || {
        client
            .get(g.url("/readyz"))
            .send()
            .map(|r| r.status().as_u16() == 200)
            .unwrap_or(false)
    });

    // SIGTERM: the request in flight (its body half sent) is answered, then a clean exit
    let mut in_flight = TcpStream::connect(&g.addr).expect("connect");
    in_flight
        .write_all(
            b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{\"a\":",
        )
        .expect("first half");
    std::thread::sleep(Duration::from_millis(300));
    signal(g.child.id() as i32, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(g.alive(), "the gateway waits for the request in flight");
    in_flight.write_all(b"\"bbbbbbbbbbbb\"}").expect("second half");
    in_flight
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = in_flight.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "the request in flight was answered: {answer}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Ok(Some(s)) = g.child.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "the gateway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "exit {code:?}\n{}", g.log());
    let log = g.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("POST /webhooks/shopify 400"), "{log}");

    // never as a superuser
    let out = Command::new(gateway_binary())
        .env(
            "INTEG_GATEWAY_DSN",
            format!("host=127.0.0.1 port={} user=postgres dbname=postgres", env.pg.port),
        )
        .env("INTEG_GATEWAY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("INTEG_GATEWAY_PUBLIC_URL", "http://127.0.0.1")
        .env("INTEG_GATEWAY_SUCCESS_URL", SUCCESS)
        .env("INTEG_GATEWAY_FAILURE_URL", FAILURE)
        .output()
        .expect("run as superuser");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("superuser"));
}
