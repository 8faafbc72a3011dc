//! `integ.remote_stock`: what each marketplace holds for a product right now (stock, and the
//! price where the product's price is tracked and the connector reads prices), read live through
//! its connector (the same read conflict resolution and reconciliation use). For support.

use super::sync::{agent, mapped_listings, take_budget, token_wait_ms};
use crate::gucs::Tuning;
use crate::marketplaces::{self, RemoteRead};
use crate::push;
use crate::tokens;
use pgrx::prelude::*;
use pgrx::AnyNumeric;

#[allow(clippy::type_complexity)] // the SQL result row, spelled out for pgrx
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn remote_stock(
    tenant_id: Option<&str>,
    product_id: Option<&str>,
    marketplace: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(marketplace, String),
        name!(external_id, String),
        name!(remote_stock, Option<i64>),
        name!(egdc_stock, Option<i32>),
        name!(error, Option<String>),
        name!(remote_price, Option<AnyNumeric>),
    ),
> {
    let tenant_id = crate::spi_util::required(tenant_id, "tenant_id");
    let product_id = crate::spi_util::required(product_id, "product_id");
    let listings = mapped_listings(tenant_id, product_id, marketplace);
    let wait_ms = token_wait_ms(&Tuning::read());
    let rows: Vec<_> = listings
        .into_iter()
        .map(|l| {
            let row = |read: RemoteRead, error: Option<String>| {
                let price = read
                    .price
                    .and_then(|p| AnyNumeric::try_from(p.to_string().as_str()).ok());
                (
                    l.marketplace.clone(),
                    l.external_id.clone(),
                    read.stock,
                    l.desired,
                    error,
                    price,
                )
            };
            let none = RemoteRead::default;
            let (token, credentials) = match tokens::backend_token(l.connection_id, None, wait_ms).ready_or_error() {
                Ok(t) => t,
                Err(e) => return row(none(), Some(e)),
            };
            let listing = l.listing_ref();
            let (connector, mut request) =
                match push::prepare(&listing, l.desired.unwrap_or(0), token, credentials, String::new()) {
                    Ok(p) => p,
                    Err(e) => return row(none(), Some(e)),
                };
            request.read_price = l.price_lsn.is_some() && connector.reads_prices();
            if let Err(wait_ns) = take_budget(&l) {
                return row(
                    none(),
                    Some(format!(
                        "rate limit: the next request is allowed in {} ms",
                        wait_ns / 1_000_000
                    )),
                );
            }
            match marketplaces::only_read(connector.read_listings(agent(), std::slice::from_ref(&request))) {
                Ok(read) => row(read, None),
                Err(e) => row(none(), Some(e)),
            }
        })
        .collect();
    TableIterator::new(rows)
}
