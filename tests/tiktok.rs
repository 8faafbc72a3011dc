//! End to end against the sandbox's TikTok Shop: signed calls (the sandbox recomputes every
//! `sign`), token refresh with absolute expiry, quantity bounds, a dead refresh token.

use e2e::*;
use serde_json::json;

/// One EGDC product on MercadoLibre, SHEIN and TikTok Shop: a stock change reaches all three.
#[test]
fn a_tracked_product_reaches_three_marketplaces() {
    let mut env = Env::new("tiktok-three");
    let ls = env.listings(1);
    let (sku, item) = ls[0].clone();
    let key_id = env.add_shein_tenant(TENANT, 890, json!({}));
    env.shein_listing(TENANT, &key_id, &sku, "SH-1");
    env.add_tiktok_tenant(TENANT, "CIPHER-A", json!({}));
    env.tiktok_listing(TENANT, "CIPHER-A", &sku, "P-100", "SKU-100");
    env.set_stock(&sku, 31);
    env.wait_for(10, "MercadoLibre", || env.sim.item_quantity(&item) == Some(31));
    env.wait_for(10, "SHEIN", || env.shein_quantity("SH-1") == Some(31));
    env.wait_for(10, "TikTok Shop", || env.tiktok_quantity("SKU-100") == Some(31));
    // TikTok takes 0..99,999 exclusive: more is published as the most it accepts
    env.set_stock(&sku, 150_000);
    env.wait_for(10, "TikTok Shop at its maximum", || {
        env.tiktok_quantity("SKU-100") == Some(99_998)
    });
    env.wait_for(10, "MercadoLibre", || env.sim.item_quantity(&item) == Some(150_000));
    assert_eq!(env.sim.counter("tiktok bad sign"), 0);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'"),
        0
    );
    env.assert_no_secrets();
}

/// An expired access token is refreshed once (the rotated pair stored), then pushes go on.
#[test]
fn tiktok_tokens_are_refreshed_with_absolute_expiry() {
    let mut env = Env::new("tiktok-refresh");
    env.add_tiktok_tenant("tt", "CIPHER-B", json!({}));
    for i in 0..5 {
        env.tiktok_listing(
            "tt",
            "CIPHER-B",
            &format!("p{i}"),
            &format!("P-{i}"),
            &format!("SKU-{i}"),
        );
    }
    env.wait_idle(20, "initial sync");
    env.sim.post("/tiktok/expire_tokens", json!({}));
    env.db()
        .batch_execute("UPDATE inventory SET qty = 6 WHERE tenant_id = 'tt'")
        .unwrap();
    for i in 0..5 {
        let sku = format!("SKU-{i}");
        env.wait_for(20, "every SKU after the refresh", || {
            env.tiktok_quantity(&sku) == Some(6)
        });
    }
    assert_eq!(
        env.sim.counter("tiktok token refresh ok"),
        1,
        "one refresh for the connection"
    );
    let expires_in = env.scalar_i64(
        "SELECT extract(epoch FROM access_expires_at - now())::bigint FROM integ.credentials WHERE marketplace = 'tiktok'",
    );
    assert!(
        expires_in > 6 * 24 * 3600,
        "the absolute expiry was not turned into seconds from now: {expires_in}"
    );
    env.assert_no_secrets();
}

/// A refresh token that no longer works: the connection needs re-authorization, jobs wait.
#[test]
fn a_dead_tiktok_refresh_token_needs_reauthorization() {
    let mut env = Env::new("tiktok-dead");
    let g = env.add_tiktok_tenant("tt", "CIPHER-C", json!({}));
    env.tiktok_listing("tt", "CIPHER-C", "p0", "P-0", "SKU-0");
    env.wait_idle(20, "initial sync");
    // someone else uses the refresh token first (it is single use), then the access token expires
    let rt = g["refresh_token"].as_str().unwrap_or_default().to_string();
    let url = format!(
        "{}/api/v2/token/refresh?app_key={TIKTOK_APP_KEY}&app_secret={TIKTOK_APP_SECRET}&refresh_token={rt}&grant_type=refresh_token",
        env.sim.base_url("tiktok")
    );
    let used = reqwest::blocking::get(url)
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(used["code"], 0);
    env.sim.post("/tiktok/expire_tokens", json!({}));
    env.set_stock_of("tt", "p0", 3);
    env.wait_for(20, "the connection to need re-authorization", || {
        env.scalar_i64(
            "SELECT count(*) FROM integ.connections WHERE tenant_id = 'tt' AND status = 'needs_reauthorization'",
        ) == 1
    });
    assert_eq!(env.sim.counter("tiktok token refresh invalid"), 1);
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'dead'"),
        0
    );
    let why: String = env
        .db()
        .query_one("SELECT last_error FROM integ.connections WHERE tenant_id = 'tt'", &[])
        .unwrap()
        .get(0);
    assert!(why.contains("36004005"), "{why}");
}
