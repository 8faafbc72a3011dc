//! Master key rotation: every secret re-encrypted under a new key in one call, workers and
//! backends carry on without a restart, credentials say their key version, and a key file that
//! no longer holds its key is a clear error, never garbage.

use e2e::*;
use serde_json::{json, Value};

const SHOP: &str = "keys-mx.myshopify.com";
const SECOND_KEY: &str = "e2e-second-master-key-after-rotation";

#[test]
fn the_master_key_rotates_without_downtime_and_a_wrong_key_is_a_clear_error() {
    let mut env = Env::new("keys");
    let ls = env.listings(2);
    env.add_shopify_tenant(TENANT, SHOP, json!({}));
    env.shopify_listing(TENANT, SHOP, &ls[0].0, 1001);
    env.set_stock(&ls[0].0, 3);
    env.wait_for(10, "3 everywhere", || {
        env.sim.item_quantity(&ls[0].1) == Some(3) && env.shopify_available(1001) == Some(3)
    });
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.credentials WHERE key_version = 1"),
        2
    );

    let path = env.pg.dir.join("master-2.key");
    std::fs::write(&path, format!("{SECOND_KEY}\n")).expect("write key");
    let path = path.display().to_string();
    let r: Value = env
        .db()
        .query_one("SELECT integ.rotate_key($1)", &[&path])
        .expect("rotate_key")
        .get(0);
    assert_eq!(r["version"], 2, "{r}");
    assert_eq!(r["credential_store"], 2, "{r}");
    assert_eq!(
        env.scalar_i64("SELECT count(*) FROM integ.credentials WHERE key_version = 2"),
        2
    );
    assert_eq!(env.scalar_i64("SELECT count(*) FROM integ.master_keys"), 1);
    // the workers read the re-encrypted credentials with the new key, no restart
    env.set_stock(&ls[0].0, 4);
    env.wait_for(10, "4 everywhere after the rotation", || {
        env.sim.item_quantity(&ls[0].1) == Some(4) && env.shopify_available(1001) == Some(4)
    });
    // new credentials are written under the new key
    env.add_tenant("t2", 5002, json!({}));
    assert_eq!(
        env.scalar_i64("SELECT key_version::bigint FROM integ.credentials WHERE tenant_id = 't2'"),
        2
    );
    let same = env.db().query_one("SELECT integ.rotate_key($1)", &[&path]).unwrap_err();
    assert!(
        format!("{same:?}").contains("the new key is the current key"),
        "{same:?}"
    );
    env.db()
        .batch_execute("CREATE ROLE ops LOGIN IN ROLE integ_operator")
        .unwrap();
    let mut ops = postgres::Client::connect(
        &format!("host=127.0.0.1 port={} user=ops dbname=postgres", env.pg.port),
        postgres::NoTls,
    )
    .unwrap();
    let e = ops.query_one("SELECT integ.rotate_key($1)", &[&path]).unwrap_err();
    assert!(format!("{e:?}").contains("permission denied"), "{e:?}");

    // the key file now holds another key: a process that must load it refuses, clearly
    std::fs::write(&path, "a-completely-different-key-0000\n").expect("overwrite key");
    let mut fresh = env.pg.client();
    let e = fresh
        .query("SELECT * FROM integ.sync_product($1, $2)", &[&TENANT, &ls[1].0])
        .unwrap_err();
    assert!(
        format!("{e:?}").contains("no longer holds master key version 2"),
        "{e:?}"
    );
    std::fs::write(&path, format!("{SECOND_KEY}\n")).expect("restore key");
    let mut fresh = env.pg.client();
    let rows = fresh
        .query(
            "SELECT status FROM integ.sync_product($1, $2, 'mercadolibre')",
            &[&TENANT, &ls[1].0],
        )
        .expect("sync_product after the key file is restored");
    assert_eq!(rows[0].get::<_, String>(0), "success");
    env.secrets.push(SECOND_KEY.to_string());
    env.assert_no_secrets();
}
