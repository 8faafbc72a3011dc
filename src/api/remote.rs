//! `integ.remote_stock`: what each marketplace holds for a product right now, read live through
//! its connector (the same read conflict resolution and reconciliation use). For support.

use super::sync::{agent, mapped_listings, take_budget};
use crate::gucs::Tuning;
use crate::push::{self, ListingRef};
use crate::tokens;
use pgrx::prelude::*;

#[allow(clippy::type_complexity)] // the SQL result row, spelled out for pgrx
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn remote_stock(
    tenant_id: &str,
    product_id: &str,
    marketplace: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(marketplace, String),
        name!(external_id, String),
        name!(remote_stock, Option<i64>),
        name!(egdc_stock, Option<i32>),
        name!(error, Option<String>),
    ),
> {
    let listings = mapped_listings(tenant_id, product_id, marketplace);
    let wait_ms = Tuning::read().http_timeout_ms * 2 + 2_000;
    let rows: Vec<_> = listings
        .into_iter()
        .map(|l| {
            let row = |remote: Option<i64>, error: Option<String>| {
                (l.marketplace.clone(), l.external_id.clone(), remote, l.desired, error)
            };
            let (token, credentials) = match tokens::backend_token(l.connection_id, None, wait_ms).ready_or_error() {
                Ok(t) => t,
                Err(e) => return row(None, Some(e)),
            };
            let listing = ListingRef {
                marketplace: &l.marketplace,
                connection_settings: &l.connection_settings,
                external_id: &l.external_id,
                listing_settings: &l.settings,
                last_known: l.remote,
            };
            let (connector, request) =
                match push::prepare(&listing, l.desired.unwrap_or(0), token, credentials, String::new()) {
                    Ok(p) => p,
                    Err(e) => return row(None, Some(e)),
                };
            if let Err(wait_ns) = take_budget(&l) {
                return row(
                    None,
                    Some(format!(
                        "rate limit: the next request is allowed in {} ms",
                        wait_ns / 1_000_000
                    )),
                );
            }
            match connector.read_stock(agent(), &request) {
                Ok(q) => row(q, None),
                Err(e) => row(None, Some(e)),
            }
        })
        .collect();
    TableIterator::new(rows)
}
