//! integ.connect: validate, store the connection and its encrypted credentials.

use super::{check_tenant, connector_for, shown};
use crate::marketplaces::Marketplace;
use crate::spi_util::{first, invalid, OrRaise};
use crate::{credentials, marketplaces, shmem};
use pgrx::prelude::*;
use pgrx::JsonB;

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn connect(tenant_id: &str, marketplace: &str, credentials: JsonB, settings: default!(JsonB, "'{}'")) -> i64 {
    check_tenant(tenant_id);
    upsert(tenant_id, marketplace, &credentials.0, &settings.0)
}

/// Validates and stores a connection and its encrypted credentials (status back to active);
/// the connection id. Also the end of an authorization flow.
pub(crate) fn upsert(
    tenant_id: &str,
    marketplace: &str,
    credentials: &serde_json::Value,
    settings: &serde_json::Value,
) -> i64 {
    let (m, connector) = connector_for(marketplace);
    if !settings.is_object() {
        invalid("settings must be a JSON object");
    }
    marketplaces::base_url(connector, settings, &crate::gucs::allowed_hosts()).unwrap_or_else(|e| invalid(e));
    crate::rules::validate(settings).unwrap_or_else(|e| invalid(e));
    crate::inbound::drift::validate(settings).unwrap_or_else(|e| invalid(e));
    match settings.get("rate_limit") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(r)) => {
            crate::limits::Quota::parse(r).unwrap_or_else(|e| invalid(format!("settings.rate_limit: {e}")));
        }
        Some(_) => invalid("settings.rate_limit must be a string such as \"200/min\" or \"4/s:40\""),
    }
    let creds = connector.split_credentials(credentials).unwrap_or_else(|e| invalid(e));
    // Fail on a missing master key before writing anything.
    credentials::require_master_key();
    let id = Spi::get_one_with_args::<i64>(
        "INSERT INTO integ.connections AS c (tenant_id, marketplace, settings)
         VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, marketplace) DO UPDATE
            SET settings = EXCLUDED.settings, status = 'active', last_error = NULL, updated_at = now()
         RETURNING c.id",
        &[tenant_id.into(), m.as_str().into(), JsonB(settings.clone()).into()],
    )
    .or_raise("storing the connection")
    .unwrap_or_else(|| {
        invalid(format!(
            "could not store the connection of tenant \"{}\"",
            shown(tenant_id)
        ))
    });
    credentials::store(id, tenant_id, m.as_str(), &creds);
    shmem::wake_workers_at_commit();
    id
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn disconnect(tenant_id: &str, marketplace: &str) {
    check_tenant(tenant_id);
    let m: Marketplace = marketplace.parse().unwrap_or_else(|e: String| invalid(e));
    let id = first::<i64>(
        "DELETE FROM integ.connections WHERE tenant_id = $1 AND marketplace = $2 RETURNING id",
        &[tenant_id.into(), m.as_str().into()],
    );
    match id {
        Some(id) => credentials::forget(id),
        None => crate::spi_util::not_found(format!("tenant \"{}\" has no {m} connection", shown(tenant_id))),
    }
}
