//! Connecting sellers through each marketplace's authorization flow, end to end against the
//! sandbox: authorize URL -> the seller approves -> callback -> complete_authorization -> a push
//! with the new tokens. And the state's protections: forged, replayed, expired; Shopify's
//! callback HMAC and timestamp.

use e2e::*;
use marketplace_signing as signing;
use serde_json::{json, Value};

const REDIRECT: &str = "https://egdc.example/integrations/callback";

fn register(env: &Env, marketplace: &str, creds: Value) {
    env.db()
        .execute(
            "SELECT integ.register_app($1, $2, $3)",
            &[
                &marketplace,
                &creds,
                &json!({"base_url": env.sim.base_url(marketplace)}),
            ],
        )
        .expect("register_app");
}

fn authorize_url(env: &Env, tenant: &str, marketplace: &str, options: Value) -> String {
    env.db()
        .query_one(
            "SELECT integ.authorize_url($1, $2, $3, $4)",
            &[&tenant, &marketplace, &REDIRECT, &options],
        )
        .expect("authorize_url")
        .get(0)
}

fn complete(env: &Env, marketplace: &str, callback: &Value) -> Result<i64, String> {
    env.db()
        .query_one("SELECT integ.complete_authorization($1, $2)", &[&marketplace, callback])
        .map(|r| r.get(0))
        .map_err(|e| format!("{e:?}"))
}

fn query_param(url: &str, key: &str) -> Option<String> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

#[test]
fn each_marketplace_connects_through_its_authorization_flow_and_pushes() {
    let mut env = Env::new("authorize");
    env.secrets.extend([
        TIKTOK_APP_SECRET.to_string(),
        SHOPIFY_CLIENT_SECRET.to_string(),
        SHEIN_APP_SECRET.to_string(),
    ]);
    // MercadoLibre, with PKCE
    register(
        &env,
        "mercadolibre",
        json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
    );
    let url = authorize_url(&env, "t-ml", "mercadolibre", json!({}));
    assert!(url.starts_with("https://auth.mercadolibre.com.mx/authorization?response_type=code&client_id="));
    assert_eq!(query_param(&url, "code_challenge_method").as_deref(), Some("S256"));
    let cb = env
        .sim
        .post("/authorize/mercadolibre", json!({"url": url, "seller": 6001}));
    let ml = complete(&env, "mercadolibre", &cb).expect("complete mercadolibre");
    env.sim
        .post("/mercadolibre/items", json!({"id": "MLM6001", "seller_id": 6001}));
    env.db()
        .batch_execute(
            "INSERT INTO inventory VALUES ('t-ml', 'P1', 4);
             SELECT integ.map_product('t-ml', 'mercadolibre', 'P1', 'MLM6001');",
        )
        .unwrap();
    env.wait_for(10, "MercadoLibre push with the new tokens", || {
        env.sim.item_quantity("MLM6001") == Some(4)
    });
    // the same state cannot be used twice
    let again = complete(&env, "mercadolibre", &cb).unwrap_err();
    assert!(again.contains("already used"), "{again}");

    // Shopify: the shop's install page, a signed callback
    env.sim.post(
        "/shopify/apps",
        json!({"client_id": SHOPIFY_CLIENT_ID, "client_secret": SHOPIFY_CLIENT_SECRET}),
    );
    register(
        &env,
        "shopify",
        json!({"client_id": SHOPIFY_CLIENT_ID, "client_secret": SHOPIFY_CLIENT_SECRET}),
    );
    let shop = "auth-test.myshopify.com";
    let url = authorize_url(&env, "t-sh", "shopify", json!({"shop": shop}));
    assert!(
        url.starts_with(&format!("https://{shop}/admin/oauth/authorize?client_id=")),
        "{url}"
    );
    let cb = env.sim.post("/authorize/shopify", json!({"url": url, "shop": shop}));
    // tampered: the hmac no longer matches
    let mut forged = cb.clone();
    forged["shop"] = json!("other-shop.myshopify.com");
    let e = complete(&env, "shopify", &forged).unwrap_err();
    assert!(e.contains("hmac does not verify"), "{e}");
    let mut stale = cb.as_object().unwrap().clone();
    stale.remove("hmac");
    let old = stale["timestamp"].as_str().unwrap().parse::<i64>().unwrap() - 300;
    stale.insert("timestamp".into(), json!(old.to_string()));
    let signed: std::collections::BTreeMap<String, String> = stale
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
        .collect();
    stale.insert(
        "hmac".into(),
        json!(signing::shopify_oauth(SHOPIFY_CLIENT_SECRET, &signed)),
    );
    let e = complete(&env, "shopify", &Value::Object(stale)).unwrap_err();
    assert!(e.contains("90 seconds"), "{e}");
    let sh = complete(&env, "shopify", &cb).expect("complete shopify");
    env.sim.post(
        "/shopify/levels",
        json!({"shop": shop, "inventory_item_id": 3001, "location_id": 1, "available": 0}),
    );
    env.db()
        .batch_execute(
            "INSERT INTO inventory VALUES ('t-sh', 'P1', 5);
             SELECT integ.map_product('t-sh', 'shopify', 'P1', '3001', '{\"location_id\": 1}');",
        )
        .unwrap();
    env.wait_for(10, "Shopify push with the new tokens", || {
        env.shopify_available(3001) == Some(5)
    });

    // TikTok Shop: code -> token/get -> the authorized shop's cipher
    env.sim.post(
        "/tiktok/apps",
        json!({"app_key": TIKTOK_APP_KEY, "app_secret": TIKTOK_APP_SECRET}),
    );
    register(
        &env,
        "tiktok",
        json!({"app_key": TIKTOK_APP_KEY, "app_secret": TIKTOK_APP_SECRET}),
    );
    let url = authorize_url(&env, "t-tt", "tiktok", json!({}));
    assert!(
        url.starts_with("https://services.tiktokshop.com/open/authorize?service_id="),
        "{url}"
    );
    let cb = env.sim.post(
        "/authorize/tiktok",
        json!({"url": url, "shop_cipher": "CIPHER-AUTH", "shop_id": "7494000000000000001"}),
    );
    let tt = complete(&env, "tiktok", &cb).expect("complete tiktok");
    let ids: Value = env
        .db()
        .query_one(
            "SELECT identifiers FROM integ.credentials WHERE connection_id = $1",
            &[&tt],
        )
        .unwrap()
        .get(0);
    assert_eq!(ids["shop_cipher"], "CIPHER-AUTH");
    assert_eq!(ids["shop_id"], "7494000000000000001");
    env.sim.post(
        "/tiktok/products",
        json!({"shop_cipher": "CIPHER-AUTH", "product_id": "P-A", "skus": [{"id": "SKU-A", "warehouse_id": "WH-1"}]}),
    );
    env.db()
        .batch_execute(
            "INSERT INTO inventory VALUES ('t-tt', 'P1', 6);
             SELECT integ.map_product('t-tt', 'tiktok', 'P1', 'SKU-A', '{\"product_id\": \"P-A\", \"warehouse_id\": \"WH-1\"}');",
        )
        .unwrap();
    env.wait_for(10, "TikTok push with the new tokens", || {
        env.tiktok_quantity("SKU-A") == Some(6)
    });

    // SHEIN: empower -> tempToken -> get-by-token, secretKey AES-decrypted
    env.sim.post(
        "/shein/apps",
        json!({"appid": SHEIN_APPID, "app_secret_key": SHEIN_APP_SECRET}),
    );
    register(
        &env,
        "shein",
        json!({"appid": SHEIN_APPID, "app_secret_key": SHEIN_APP_SECRET}),
    );
    let url = authorize_url(&env, "t-se", "shein", json!({}));
    assert!(
        url.starts_with("https://openapi-sem.sheincorp.com/#/empower?appid="),
        "{url}"
    );
    let cb = env
        .sim
        .post("/authorize/shein", json!({"url": url, "supplier_id": 901}));
    let se = complete(&env, "shein", &cb).expect("complete shein");
    let ids: Value = env
        .db()
        .query_one(
            "SELECT identifiers FROM integ.credentials WHERE connection_id = $1",
            &[&se],
        )
        .unwrap()
        .get(0);
    let key_id = ids["open_key_id"].as_str().expect("open_key_id").to_string();
    env.sim
        .post("/shein/skus", json!({"open_key_id": key_id, "sku_code": "SKU-SE"}));
    env.db()
        .batch_execute(
            "INSERT INTO inventory VALUES ('t-se', 'P1', 7);
             SELECT integ.map_product('t-se', 'shein', 'P1', 'SKU-SE', '{\"warehouse_code\": \"WH-1\"}');",
        )
        .unwrap();
    env.wait_for(10, "SHEIN push with the decrypted key", || {
        env.shein_quantity("SKU-SE") == Some(7)
    });

    assert_eq!(
        [ml, sh, tt, se].iter().collect::<std::collections::HashSet<_>>().len(),
        4
    );
    assert_eq!(
        env.scalar_i64(
            "SELECT count(*) FROM integ.authorizations WHERE used_at IS NOT NULL AND connection_id IS NOT NULL"
        ),
        4
    );
    // issued tokens, codes and the sandbox's SHEIN secret keys must appear nowhere
    if let Some(shein) = env.sim.get("/shein/issued_tokens").as_array() {
        env.secrets
            .extend(shein.iter().filter_map(|t| t.as_str().map(str::to_string)));
    }
    env.assert_no_secrets();
}

#[test]
fn forged_expired_and_foreign_states_are_refused() {
    let env = Env::new("auth-state");
    register(
        &env,
        "mercadolibre",
        json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
    );
    let url = authorize_url(&env, TENANT, "mercadolibre", json!({}));
    let state = query_param(&url, "state").expect("state");
    assert_eq!(state.len(), 64, "256 random bits");
    // only its hash is stored
    assert_eq!(
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.authorizations a WHERE a::text LIKE '%{state}%'"
        )),
        0
    );
    assert_eq!(
        env.scalar_i64(&format!(
            "SELECT count(*) FROM integ.authorizations WHERE state_sha256 = '{}'",
            signing::sha256_hex(state.as_bytes())
        )),
        1
    );
    let e = complete(&env, "mercadolibre", &json!({"code": "TG-x", "state": "f".repeat(64)})).unwrap_err();
    assert!(e.contains("unknown authorization state"), "{e}");
    let e = complete(&env, "mercadolibre", &json!({"code": "TG-x"})).unwrap_err();
    assert!(e.contains("no state"), "{e}");
    // the state of one marketplace means nothing to another
    let e = complete(&env, "shopify", &json!({"code": "x", "state": state})).unwrap_err();
    assert!(e.contains("unknown authorization state"), "{e}");
    // a wrong PKCE verifier or redirect would be refused by MercadoLibre: the code is bound to them
    let cb = env
        .sim
        .post("/authorize/mercadolibre", json!({"url": url, "seller": 6002}));
    env.db()
        .batch_execute("UPDATE integ.authorizations SET expires_at = now() - interval '1 second'")
        .unwrap();
    let e = complete(&env, "mercadolibre", &cb).unwrap_err();
    assert!(e.contains("expired"), "{e}");
    // a fresh one works, and its verifier is what the code was bound to
    let url = authorize_url(&env, TENANT, "mercadolibre", json!({}));
    let cb = env
        .sim
        .post("/authorize/mercadolibre", json!({"url": url, "seller": 6002}));
    env.db()
        .batch_execute(&format!(
            "UPDATE integ.authorizations SET redirect_uri = 'https://evil.example/' WHERE state_sha256 = '{}'",
            signing::sha256_hex(cb["state"].as_str().unwrap().as_bytes())
        ))
        .unwrap();
    let e = complete(&env, "mercadolibre", &cb).unwrap_err();
    assert!(
        e.contains("code exchange failed"),
        "a code used with another redirect_uri: {e}"
    );
    for bad in ["javascript:alert(1)", "https://x.example/ cb", ""] {
        let r = env
            .db()
            .query_one("SELECT integ.authorize_url($1, 'mercadolibre', $2)", &[&TENANT, &bad]);
        assert!(format!("{:?}", r.err()).contains("redirect_uri"), "{bad}");
    }
    let e = env
        .db()
        .query_one("SELECT integ.authorize_url($1, 'tiktok', $2)", &[&TENANT, &REDIRECT])
        .unwrap_err();
    assert!(format!("{e:?}").contains("integ.register_app"), "{e:?}");
    env.assert_no_secrets();
}
