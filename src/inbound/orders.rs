//! Orders into EGDC's stock: each line is taken once per (marketplace, tenant, order, line)
//! however many times the order arrives (`integ.order_lines` is the ledger; the ledger row and
//! the stock change commit together), and given back once when the order is cancelled. The stock
//! change goes through the tracked table, so its trigger sends the new stock to every channel
//! (the channel that sold too: its own count may since have been overwritten by a push).

use crate::marketplaces::events::{Order, OrderLine};
use crate::spi_util::{first, OrRaise};
use pgrx::prelude::*;

pub struct Target<'a> {
    pub connection_id: i64,
    pub tenant: &'a str,
    pub marketplace: &'a str,
    pub webhook_id: Option<i64>,
}

/// What `integ.adjust_stock` says when a change would leave the stock column's range.
pub const STOCK_OUT_OF_RANGE: &str = "would leave the range of";

/// A signature proves who sent an order, not that its numbers make sense: a line of more than
/// `max` units makes the whole delivery dead (nothing of it is applied), naming the line.
pub fn check_quantities(order: &Order, max: i64) -> Result<(), String> {
    match order.lines.iter().find(|l| l.quantity > max) {
        Some(l) => Err(format!(
            "line {}: quantity {} is more than integ.max_order_quantity ({max}); nothing of order {} was applied",
            l.line_id, l.quantity, order.id
        )),
        None => Ok(()),
    }
}

/// Applies an order (or its cancellation); returns notes on lines that could not be applied.
pub fn apply(t: &Target, order: &Order) -> Vec<String> {
    let mut notes = Vec::new();
    for line in &order.lines {
        let Some(product) = product_of(t, line) else {
            notes.push(format!(
                "line {}: no listing matches {}",
                line.line_id,
                line.external_id
                    .as_deref()
                    .or(line.sku.as_deref())
                    .unwrap_or("(no sku)")
            ));
            continue;
        };
        // positive and at most integ.max_order_quantity (checked before): it fits
        let qty = line.quantity.clamp(1, i32::MAX as i64) as i32;
        let delta = if order.cancelled {
            cancel_line(t, &order.id, line, &product, qty)
        } else {
            take_line(t, &order.id, line, &product, qty)
        };
        if delta == 0 {
            continue;
        }
        forget_remote_stock(t, &product);
        let applied = super::adjust_egdc_stock(t.tenant, &product, delta);
        if !applied {
            notes.push(format!("product {product} is in no tracked table"));
        }
    }
    notes
}

/// The channel that sold (or took back) units no longer holds what we last knew; whether a push
/// since then came before or after the sale is unknown, so the next job writes EGDC's stock
/// instead of skipping as "already there" (an order applied and a change back to the old
/// number would otherwise leave the channel short).
fn forget_remote_stock(t: &Target, product: &str) {
    Spi::run_with_args(
        "UPDATE integ.listings SET remote_stock = NULL
          WHERE connection_id = $1 AND product_id = $2 AND remote_stock IS NOT NULL",
        &[t.connection_id.into(), product.into()],
    )
    .or_raise("forgetting a sold listing's remote stock");
}

/// The EGDC product a line sold: the product of the listing with the line's external id on this
/// connection, else the line's SKU.
fn product_of(t: &Target, line: &OrderLine) -> Option<String> {
    if let Some(ext) = &line.external_id {
        let found = first::<String>(
            "SELECT l.product_id FROM integ.listings l
              WHERE l.connection_id = $1 AND l.external_id = $2
              ORDER BY (l.settings ->> 'variation_id' IS NOT DISTINCT FROM $3) DESC, l.id LIMIT 1",
            &[
                t.connection_id.into(),
                ext.as_str().into(),
                line.variation_id.as_deref().into(),
            ],
        );
        if found.is_some() {
            return found;
        }
    }
    line.sku.clone()
}

/// Records the line in the ledger (cancelled from the start, or taken); whether it was new.
fn record_line(t: &Target, order: &str, line: &OrderLine, product: &str, qty: i32, cancelled: bool) -> bool {
    first::<i64>(
        "INSERT INTO integ.order_lines (marketplace, tenant_id, order_id, line_id, product_id, quantity, webhook_id, cancelled_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END) ON CONFLICT DO NOTHING RETURNING 1::bigint",
        &[
            t.marketplace.into(),
            t.tenant.into(),
            order.into(),
            line.line_id.as_str().into(),
            product.into(),
            qty.into(),
            t.webhook_id.into(),
            cancelled.into(),
        ],
    )
    .is_some()
}

/// Records the line as taken; the stock delta (0 when it was already taken or cancelled).
fn take_line(t: &Target, order: &str, line: &OrderLine, product: &str, qty: i32) -> i64 {
    if record_line(t, order, line, product, qty, false) {
        -(qty as i64)
    } else {
        0
    }
}

/// Gives a taken line back once; a line cancelled before it was ever taken is recorded as
/// cancelled so a late order event cannot take it.
fn cancel_line(t: &Target, order: &str, line: &OrderLine, product: &str, qty: i32) -> i64 {
    let given_back = first::<i32>(
        "UPDATE integ.order_lines SET cancelled_at = now()
          WHERE marketplace = $1 AND tenant_id = $2 AND order_id = $3 AND line_id = $4 AND cancelled_at IS NULL
      RETURNING quantity",
        &[
            t.marketplace.into(),
            t.tenant.into(),
            order.into(),
            line.line_id.as_str().into(),
        ],
    );
    if let Some(q) = given_back {
        return q as i64;
    }
    record_line(t, order, line, product, qty, true);
    0
}
