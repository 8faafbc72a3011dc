//! DROP EXTENSION and CREATE EXTENSION under a running server: connection ids, credential
//! generations and master key versions start again at 1, and nothing a worker or a backend
//! cached of the previous installation (credentials, master keys, limiter and circuit slots,
//! pushes in flight) is used for the new one's connections.

use e2e::*;
use serde_json::json;

const NEW_SELLER: u64 = 5002;

fn counters_with(env: &Env, part: &str) -> u64 {
    env.sim.get("/stats")["counters"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.contains(part))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

fn rotate(env: &Env, file: &str, key: &str) {
    let path = env.pg.dir.join(file);
    std::fs::write(&path, format!("{key}\n")).expect("write key");
    env.db()
        .query_one("SELECT integ.rotate_key($1)", &[&path.display().to_string()])
        .expect("rotate_key");
}

#[test]
fn a_recreated_extension_never_uses_the_previous_installations_state() {
    let mut env = Env::with_conf(
        "reinstall",
        "integ.circuit_failures = 3\ninteg.circuit_cooldown = 600000",
    );
    let old = env.listings(2);
    env.set_stock(&old[0].0, 5);
    env.wait_idle(15, "the first tenant synced");
    // workers and a backend hold the first installation's credentials and master key 2
    rotate(&env, "key-2", "first-installation-second-key");
    env.set_stock(&old[0].0, 6);
    env.wait_for(15, "6 under key 2", || env.sim.item_quantity(&old[0].1) == Some(6));
    let mut backend = env.pg.client();
    let remote: Option<i64> = backend
        .query_one("SELECT remote_stock FROM integ.remote_stock('acme', 'sku-0')", &[])
        .expect("remote_stock")
        .get(0);
    assert_eq!(remote, Some(6));
    // connection 1's circuit opens
    env.sim.post(
        "/faults",
        json!({"marketplace": "mercadolibre", "error_rate": 1.0, "error_status": 503}),
    );
    env.set_stock(&old[0].0, 7);
    env.wait_for(20, "the circuit to open", || {
        env.scalar_text("SELECT coalesce(max(circuit), '') FROM integ.rate_limits WHERE connection_id = 1") == "open"
    });
    env.sim.delete("/faults");

    env.db()
        .batch_execute(
            "DROP EXTENSION integration CASCADE;
             CREATE EXTENSION integration CASCADE;
             SELECT integ.track_inventory('inventory', 'tenant_id', 'sku', 'qty');",
        )
        .expect("re-create the extension");
    let refreshes_before = counters_with(&env, "mercadolibre token");
    let old_seller = format!("mercadolibre seller {SELLER} requests");
    let old_seller_before = env.sim.counter(&old_seller);
    env.add_tenant("newco", NEW_SELLER, json!({}));
    assert_eq!(
        env.scalar_i64("SELECT id FROM integ.connections WHERE tenant_id = 'newco'"),
        1,
        "the new tenant's connection has the old one's id"
    );
    let new = env.listings_for("newco", NEW_SELLER, 300_000, 2);
    // master key version 2 is another key in this installation
    rotate(&env, "key-3", "second-installation-second-key");
    env.set_stock_of("newco", &new[0].0, 21);
    env.set_stock_of("newco", &new[1].0, 22);
    env.wait_for(20, "the new tenant's stock, pushed with its own credentials", || {
        env.sim.item_quantity(&new[0].1) == Some(21) && env.sim.item_quantity(&new[1].1) == Some(22)
    });
    assert_eq!(
        env.scalar_text("SELECT status FROM integ.connections WHERE tenant_id = 'newco'"),
        "active"
    );
    assert_eq!(
        counters_with(&env, "mercadolibre token"),
        refreshes_before,
        "no token refresh: nothing was refused"
    );
    assert_eq!(
        counters_with(&env, "mercadolibre 401"),
        0,
        "no call with another seller's token"
    );
    assert_eq!(
        env.sim.item_quantity(&old[0].1),
        Some(6),
        "the old tenant's listing untouched"
    );
    // the new connection's limiter and circuit start fresh
    let (circuit, failures): (String, i32) = {
        let r = env
            .db()
            .query_one(
                "SELECT circuit, consecutive_failures FROM integ.rate_limits WHERE connection_id = 1",
                &[],
            )
            .expect("rate_limits");
        (r.get(0), r.get(1))
    };
    assert_eq!((circuit.as_str(), failures), ("closed", 0));
    assert_eq!(env.scalar_i64("SELECT used FROM integ.limiter_usage()"), 1);
    // the backend that used the first installation reads the new tenant with its credentials
    let remote: Option<i64> = backend
        .query_one("SELECT remote_stock FROM integ.remote_stock('newco', $1)", &[&new[0].0])
        .expect("remote_stock from a backend of the first installation")
        .get(0);
    assert_eq!(remote, Some(21));
    assert_eq!(counters_with(&env, "mercadolibre 401"), 0);
    assert_eq!(env.sim.counter(&old_seller), old_seller_before);
    env.assert_no_secrets();
}
