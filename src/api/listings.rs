//! integ.map_product: a product of a tenant is a listing on a marketplace.

use super::json_in::JsonIn;
use super::{check_tenant, connector_for, shown};
use crate::spi_util::{first, invalid, not_found, OrRaise};
use pgrx::prelude::*;

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn map_product(
    tenant_id: &str,
    marketplace: &str,
    product_id: &str,
    external_id: &str,
    settings: default!(JsonIn, "'{}'"),
) -> i64 {
    check_tenant(tenant_id);
    let (m, connector) = connector_for(marketplace);
    if product_id.is_empty() {
        invalid("product_id must not be empty");
    }
    if !settings.0.is_object() {
        invalid("settings must be a JSON object");
    }
    crate::rules::validate(&settings.0).unwrap_or_else(|e| invalid(e));
    crate::price_rules::validate(&settings.0).unwrap_or_else(|e| invalid(e));
    let plain = crate::price_rules::without_rules(&crate::rules::without_rules(&settings.0));
    connector
        .check_listing(external_id, &plain)
        .unwrap_or_else(|e| invalid(e));
    let connection_id = first::<i64>(
        "SELECT id FROM integ.connections WHERE tenant_id = $1 AND marketplace = $2",
        &[tenant_id.into(), m.as_str().into()],
    )
    .unwrap_or_else(|| {
        not_found(format!(
            "tenant \"{}\" has no {m} connection: call integ.connect first",
            shown(tenant_id)
        ))
    });
    let id = Spi::get_one_with_args::<i64>(
        "INSERT INTO integ.listings AS l (connection_id, tenant_id, marketplace, product_id, external_id, settings)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, marketplace, product_id) DO UPDATE
            SET external_id = EXCLUDED.external_id, settings = EXCLUDED.settings,
                connection_id = EXCLUDED.connection_id,
                -- a different listing: nothing we knew about the old one holds
                last_pushed_stock = CASE WHEN l.external_id = EXCLUDED.external_id THEN l.last_pushed_stock END,
                last_pushed_price = CASE WHEN l.external_id = EXCLUDED.external_id THEN l.last_pushed_price END,
                price_refused_lsn = NULL,
                remote_stock = CASE WHEN l.external_id = EXCLUDED.external_id AND l.settings = EXCLUDED.settings
                                    THEN l.remote_stock END
         RETURNING l.id",
        &[
            connection_id.into(),
            tenant_id.into(),
            m.as_str().into(),
            product_id.into(),
            external_id.into(),
            settings.into(),
        ],
    )
    .or_raise("storing the listing")
    .unwrap_or_else(|| invalid("could not store the listing"));
    // Seed EGDC's current stock and price from the tracked tables, which also enqueues a push.
    Spi::run_with_args(
        "SELECT integ.seed_listing_stock($1, $2), integ.seed_listing_price($1, $2)",
        &[tenant_id.into(), product_id.into()],
    )
    .or_raise("reading current stock and price");
    id
}
