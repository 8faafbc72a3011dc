//! Webhook subscriptions end to end, with the gateway as the subscribed address: a Shopify shop
//! connected through the authorization flow is subscribed by the workers and its sales arrive
//! with no manual step; a subscription deleted in the sandbox is re-created by the next
//! reconciliation; app/uninstalled stops every call until the seller authorizes again; the
//! privacy topics remove what they must and nothing else. TikTok Shop through its event API,
//! MercadoLibre shown as configured by hand.

use e2e::*;
use serde_json::{json, Value};
use std::time::Duration;

#[allow(dead_code)]
mod gateway_support;
use gateway_support::Gateway;

const SHOP: &str = "subs-shop.myshopify.com";
const OTHER_SHOP: &str = "subs-other.myshopify.com";
const REDIRECT: &str = "https://egdc.example/integrations/callback";

/// The shop authorizes the app (again): the sandbox's install page, its signed callback.
fn authorize_shop(env: &Env, tenant: &str, shop: &str) {
    let url: String = env
        .db()
        .query_one(
            "SELECT integ.authorize_url($1, 'shopify', $2, $3)",
            &[&tenant, &REDIRECT, &json!({"shop": shop})],
        )
        .expect("authorize_url")
        .get(0);
    let cb = env.sim.post("/authorize/shopify", json!({"url": url, "shop": shop}));
    env.db()
        .query_one("SELECT integ.complete_authorization('shopify', $1)", &[&cb])
        .expect("complete_authorization");
}

fn subscriptions(env: &Env, tenant: &str) -> Vec<(String, String, String, Option<String>)> {
    env.db()
        .query(
            "SELECT topic, state, coalesce(address, ''), remote_id FROM integ.subscriptions
              WHERE tenant_id = $1 ORDER BY topic",
            &[&tenant],
        )
        .expect("subscriptions")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

fn all_subscribed(env: &Env, tenant: &str, n: usize, address: &str) -> bool {
    let s = subscriptions(env, tenant);
    s.len() == n && s.iter().all(|(_, state, a, _)| state == "subscribed" && a == address)
}

fn sandbox_subscriptions(env: &Env, shop: &str) -> Vec<Value> {
    let v = env.sim.get(&format!("/shopify/shops/{shop}/subscriptions"));
    v.get("subscriptions")
        .or(Some(&v))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Every request the sandbox's Shopify answered (its API, not the admin).
fn shopify_calls(env: &Env) -> u64 {
    env.sim.counter("shopify requests")
}

fn order(env: &Env, shop: &str, item: u64, sku: &str, quantity: i64, customer: Value) -> Value {
    env.sim.post(
        "/shopify/orders",
        json!({"shop": shop, "customer": customer,
               "lines": [{"inventory_item_id": item, "location_id": 1, "sku": sku, "quantity": quantity}]}),
    )
}

fn stored_bodies(env: &Env, sql_where: &str) -> Vec<String> {
    env.db()
        .query(
            &format!("SELECT convert_from(body, 'UTF8') FROM integ.webhooks WHERE body IS NOT NULL AND {sql_where}"),
            &[],
        )
        .expect("bodies")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn connections_are_subscribed_and_kept_subscribed_uninstalls_stop_calls_privacy_requests_are_applied() {
    // a sale of 60 units goes dead (and keeps its body): a customer's data outside any ledger
    let mut env = Env::with_conf("subscriptions", "integ.max_order_quantity = 50");
    env.secrets.push(SHOPIFY_CLIENT_SECRET.to_string());
    let gw = Gateway::start(&env);
    let base = format!("http://{}", gw.addr);
    let address = format!("{base}/webhooks/shopify");
    for m in ["shopify", "tiktok"] {
        env.sim
            .post(&format!("/{m}/config"), json!({"allow_http_webhooks": true}));
    }
    env.sim.post(
        "/shopify/apps",
        json!({"client_id": SHOPIFY_CLIENT_ID, "client_secret": SHOPIFY_CLIENT_SECRET}),
    );
    env.db()
        .execute(
            "SELECT integ.register_app('shopify', $1, $2)",
            &[
                &json!({"client_id": SHOPIFY_CLIENT_ID, "client_secret": SHOPIFY_CLIENT_SECRET}),
                &json!({"base_url": env.sim.base_url("shopify")}),
            ],
        )
        .expect("register_app");

    // without integ.webhook_base_url nothing is subscribed, and the status says so
    authorize_shop(&env, "t-subs", SHOP);
    env.wait_for(15, "the status to say subscriptions are skipped", || {
        env.scalar_text("SELECT webhooks FROM integ.status WHERE tenant_id = 't-subs'")
            .starts_with("skipped")
    });
    assert!(sandbox_subscriptions(&env, SHOP).is_empty());

    // the base URL set: the four topics at the gateway, in the sandbox as in the view
    for sql in [
        format!("ALTER SYSTEM SET integ.webhook_base_url = '{base}'"),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        env.db().execute(sql.as_str(), &[]).expect("set integ.webhook_base_url");
    }
    env.wait_for(20, "four Shopify subscriptions at the gateway", || {
        all_subscribed(&env, "t-subs", 4, &address)
    });
    let topics: Vec<String> = subscriptions(&env, "t-subs").into_iter().map(|s| s.0).collect();
    assert_eq!(
        topics,
        [
            "APP_UNINSTALLED",
            "INVENTORY_LEVELS_UPDATE",
            "ORDERS_CANCELLED",
            "ORDERS_CREATE"
        ]
    );
    let remote = sandbox_subscriptions(&env, SHOP);
    assert_eq!(remote.len(), 4, "{remote:?}");
    assert!(remote.iter().all(|s| s["uri"] == json!(address)), "{remote:?}");
    assert_eq!(
        env.scalar_text("SELECT webhooks FROM integ.status WHERE tenant_id = 't-subs'"),
        "subscribed"
    );

    // a sale in the sandbox arrives through the subscription and is applied, nothing by hand
    env.shopify_listing("t-subs", SHOP, "P1", 4101);
    env.set_stock_of("t-subs", "P1", 20);
    env.wait_for(10, "the stock pushed", || env.shopify_available(4101) == Some(20));
    let ana = json!({"id": 8801, "email": "ana@example.com", "first_name": "Ana", "last_name": "Lima",
                     "phone": "+52 55 0000 0001"});
    let sale = order(&env, SHOP, 4101, "P1", 3, ana.clone());
    let sale_id = sale["event"]["order_id"].as_u64().expect("order id").to_string();
    env.wait_for(15, "the sale applied", || env.egdc_stock("t-subs", "P1") == 17);
    // what is kept of it: no customer
    let kept = stored_bodies(&env, "topic = 'orders/create' AND state = 'done'");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        !kept[0].contains("ana@example.com") && !kept[0].contains("Lima") && kept[0].contains("line_items"),
        "{kept:?}"
    );

    // a subscription deleted in the sandbox comes back with the next reconciliation
    let gone = remote
        .iter()
        .find(|s| s["topic"] == json!("ORDERS_CREATE"))
        .and_then(|s| s["id"].as_str())
        .expect("the ORDERS_CREATE subscription")
        .to_string();
    let numeric = gone.rsplit('/').next().unwrap_or("").to_string();
    env.sim.delete(&format!("/shopify/subscriptions/{numeric}"));
    assert_eq!(sandbox_subscriptions(&env, SHOP).len(), 3);
    env.db()
        .execute("SELECT integ.reconcile('t-subs', 'shopify')", &[])
        .expect("reconcile");
    env.wait_for(20, "ORDERS_CREATE subscribed again", || {
        sandbox_subscriptions(&env, SHOP).len() == 4
            && subscriptions(&env, "t-subs")
                .iter()
                .any(|s| s.0 == "ORDERS_CREATE" && s.1 == "subscribed" && s.3.as_deref() != Some(gone.as_str()))
    });
    // that check listed once and created once: only what was missing
    env.wait_for(10, "the check logged", || {
        env.scalar_i64(
            "SELECT count(*) FROM integ.sync_log WHERE operation = 'subscribe' AND calls = 2 AND outcome = 'success'",
        ) == 1
    });

    // privacy: the compliance topics come to the app's configured address
    env.sim
        .post("/webhooks", json!({"marketplace": "shopify", "url": address}));
    let bea = json!({"id": 8802, "email": "bea@example.com", "first_name": "Bea", "last_name": "Souza",
                     "phone": "+52 55 0000 0002"});
    // too large to apply: dead, its body (with the customer) kept for the operator
    let big = order(&env, SHOP, 4101, "P1", 60, ana.clone());
    let big_id = big["event"]["order_id"].as_u64().expect("order id").to_string();
    order(&env, SHOP, 4101, "P1", 70, bea.clone());
    env.wait_for(15, "both large orders dead", || {
        env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE state = 'dead' AND topic = 'orders/create'") == 2
    });
    assert_eq!(env.egdc_stock("t-subs", "P1"), 17, "a dead order changed nothing");
    env.sim.post(
        "/shopify/privacy",
        json!({"shop": SHOP, "topic": "customers/data_request", "customer": ana, "orders": [sale_id.parse::<u64>().unwrap(), big_id.parse::<u64>().unwrap()]}),
    );
    env.wait_for(15, "the data request recorded", || {
        env.scalar_i64("SELECT count(*) FROM integ.privacy_requests WHERE topic = 'customers/data_request'") == 1
    });
    let held: Value = env
        .db()
        .query_one("SELECT integ.customer_data($1, '8801')", &[&SHOP])
        .expect("customer_data")
        .get(0);
    let deliveries = held["deliveries"].as_array().cloned().unwrap_or_default();
    assert!(deliveries.len() >= 2, "{held}");
    assert!(
        held["order_lines"].as_array().is_some_and(|l| l.len() == 1),
        "the applied sale's line: {held}"
    );
    assert!(
        held.to_string().contains("ana@example.com"),
        "the dead order's body names her: {held}"
    );
    assert!(
        !held.to_string().contains("bea@example.com"),
        "another customer's data: {held}"
    );

    env.sim.post(
        "/shopify/privacy",
        json!({"shop": SHOP, "topic": "customers/redact", "customer": ana, "orders": [sale_id.parse::<u64>().unwrap(), big_id.parse::<u64>().unwrap()]}),
    );
    env.wait_for(15, "the redaction applied", || {
        env.scalar_i64("SELECT count(*) FROM integ.privacy_requests WHERE topic = 'customers/redact'") == 1
    });
    let all = stored_bodies(&env, "true").join("\n");
    for gone in ["ana@example.com", "Lima", "+52 55 0000 0001"] {
        assert!(!all.contains(gone), "{gone} still stored");
    }
    assert!(
        all.contains("bea@example.com"),
        "another customer's dead order was touched"
    );
    assert_eq!(
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.order_lines WHERE order_id = '{sale_id}'"
        )),
        1,
        "the applied sale stays in the ledger"
    );
    assert_eq!(env.egdc_stock("t-subs", "P1"), 17);

    // app/uninstalled: needs_reauthorization, one alert, no more calls; authorizing resumes
    env.sim.post(&format!("/shopify/shops/{SHOP}/uninstall"), json!({}));
    env.wait_for(15, "the connection to need re-authorization", || {
        env.scalar_text("SELECT status FROM integ.connections WHERE tenant_id = 't-subs'") == "needs_reauthorization"
    });
    let calls = shopify_calls(&env);
    env.set_stock_of("t-subs", "P1", 11);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(shopify_calls(&env), calls, "a call was made for an uninstalled shop");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.alerts WHERE kind = 'needs_reauthorization'"),
        1
    );
    assert_eq!(
        env.scalar_i64(
            "SELECT count(*) FROM integ.sync_jobs j JOIN integ.listings l ON l.id = j.listing_id
                         JOIN integ.connections c ON c.id = l.connection_id
                        WHERE c.tenant_id = 't-subs' AND j.state = 'pending'"
        ),
        1,
        "the job waits"
    );
    authorize_shop(&env, "t-subs", SHOP);
    env.wait_for(15, "the waiting stock pushed", || {
        env.shopify_available(4101) == Some(11)
    });
    env.wait_for(20, "subscribed again after the new install", || {
        sandbox_subscriptions(&env, SHOP).len() == 4 && all_subscribed(&env, "t-subs", 4, &address)
    });

    // shop/redact removes that shop and nothing of another
    env.add_shopify_tenant("t-other", OTHER_SHOP, json!({}));
    env.shopify_listing("t-other", OTHER_SHOP, "Q1", 4201);
    env.set_stock_of("t-other", "Q1", 4);
    env.wait_for(10, "the other shop's push", || env.shopify_available(4201) == Some(4));
    let id = env.scalar_i64("SELECT id FROM integ.connections WHERE tenant_id = 't-subs'");
    env.sim
        .post("/shopify/privacy", json!({"shop": SHOP, "topic": "shop/redact"}));
    env.wait_for(15, "the shop removed", || {
        env.scalar_i64("SELECT count(*) FROM integ.connections WHERE tenant_id = 't-subs'") == 0
    });
    for (table, column) in [
        ("integ.credential_store", "connection_id"),
        ("integ.listings", "connection_id"),
        ("integ.webhook_subscriptions", "connection_id"),
        ("integ.sync_log", "connection_id"),
        ("integ.webhooks", "connection_id"),
        ("integ.alerts", "connection_id"),
    ] {
        assert_eq!(
            env.scalar_i64(&format!("SELECT count(*) FROM {table} WHERE {column} = {id}")),
            0,
            "{table} keeps rows of the redacted shop"
        );
    }
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.order_lines WHERE tenant_id = 't-subs'"),
        0
    );
    assert!(stored_bodies(&env, "true")
        .iter()
        .all(|b| !b.contains("bea@example.com")));
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.privacy_requests WHERE shop = 'subs-shop.myshopify.com'"),
        3,
        "the requests stay recorded"
    );
    // the other shop: untouched and still syncing
    assert_eq!(
        env.scalar_text("SELECT status FROM integ.connections WHERE tenant_id = 't-other'"),
        "active"
    );
    env.set_stock_of("t-other", "Q1", 6);
    env.wait_for(10, "the other shop still syncs", || {
        env.shopify_available(4201) == Some(6)
    });

    // an address the marketplace refuses: failing, one alert however often it is retried
    env.wait_for(20, "the other shop subscribed", || {
        all_subscribed(&env, "t-other", 4, &address)
    });
    env.sim.post("/shopify/config", json!({"allow_http_webhooks": false}));
    let other = sandbox_subscriptions(&env, OTHER_SHOP);
    assert_eq!(other.len(), 4, "{other:?}");
    let numeric = other[0]["id"]
        .as_str()
        .and_then(|id| id.rsplit('/').next())
        .unwrap_or("")
        .to_string();
    env.sim.delete(&format!("/shopify/subscriptions/{numeric}"));
    let refused = "SELECT count(*) FROM integ.sync_log WHERE operation = 'subscribe' AND outcome = 'failed'";
    for n in 1..=2 {
        env.db()
            .execute("SELECT integ.reconcile('t-other', 'shopify')", &[])
            .expect("reconcile");
        env.wait_for(15, "the refused subscription checked", || env.scalar_i64(refused) == n);
        assert!(env
            .scalar_text("SELECT webhooks FROM integ.status WHERE tenant_id = 't-other'")
            .starts_with("failing: "));
    }
    let error =
        env.scalar_text("SELECT min(error) FROM integ.subscriptions WHERE tenant_id = 't-other' AND state = 'failed'");
    assert!(error.contains("http:// is not supported"), "{error}");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.alerts WHERE kind = 'webhook_subscription'"),
        1
    );

    // TikTok Shop through its event API; MercadoLibre configured by hand
    env.add_tiktok_tenant("t-tts", "CIPHER-SUBS", json!({}));
    let tts = format!("{base}/webhooks/tiktok");
    env.wait_for(20, "three TikTok Shop event addresses", || {
        all_subscribed(&env, "t-tts", 3, &tts)
    });
    let set = env.sim.get("/tiktok/shops/CIPHER-SUBS/webhooks");
    assert_eq!(set.to_string().matches(&tts).count(), 3, "{set}");
    env.add_tenant("t-meli", 7301, json!({}));
    env.wait_for(20, "MercadoLibre shown as configured by hand", || {
        env.scalar_text("SELECT coalesce(min(webhooks), '') FROM integ.status WHERE tenant_id = 't-meli'")
            .starts_with("manual: enter http")
    });
    env.assert_no_secrets();
    assert!(gw.log().lines().all(|l| !l.contains(SHOPIFY_CLIENT_SECRET)));
}
