//! The SQL surface. Functions that need Rust (encryption, connector validation, HTTP) live
//! here; the purely relational ones (track_inventory, retry_dead, ...) are PL/pgSQL in
//! `sql/api.sql`.

pub mod access;
pub mod authorize;
pub mod capture;
pub mod connections;
pub mod json_in;
pub mod limits;
pub mod listings;
pub mod reconcile;
pub mod remote;
pub mod signature;
pub mod sync;
pub mod sync_price;
pub mod webhooks;

use crate::marketplaces::{self, Connector, Marketplace};
use crate::spi_util::invalid;

/// Parses a marketplace name and returns its connector, or raises a clear SQL error.
pub(crate) fn connector_for(marketplace: &str) -> (Marketplace, &'static dyn Connector) {
    let m: Marketplace = marketplace.parse().unwrap_or_else(|e: String| invalid(e));
    let c = marketplaces::connector(m)
        .unwrap_or_else(|e| crate::spi_util::fail(pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, e));
    (m, c)
}

/// Validates a tenant id and that the caller may act for that tenant.
pub(crate) fn check_tenant(tenant_id: &str) {
    if tenant_id.trim().is_empty() {
        invalid("tenant_id must not be empty");
    }
    if tenant_id.len() > 200 {
        invalid("tenant_id is longer than 200 characters");
    }
    access::require_access(tenant_id);
}

/// Tenant and product ids in messages: bounded, so a hostile value cannot flood the log.
pub(crate) fn shown(s: &str) -> String {
    marketplaces::http::truncate(s, 80)
}
