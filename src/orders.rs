//! Applying accepted webhooks, in the workers: an order takes EGDC stock once per line, however
//! many times it arrives, and a cancellation gives it back once (`integ.order_lines` is the
//! ledger; the ledger row and the stock change commit together). The stock change goes through
//! the tracked table, so its trigger sends the new stock to every channel.
//!
//! Handled so far: Shopify `orders/create` and `orders/cancelled` (a line's `sku` is the EGDC
//! product). Other events stay `pending` until their processing lands.

use crate::marketplaces::webhooks::id_text;
use crate::spi_util::{first, worker_transaction, OrRaise};
use pgrx::prelude::*;
use serde_json::Value;

/// Events this version applies: (marketplace, topic).
const HANDLED: &str = "(w.marketplace, w.topic) IN (('shopify', 'orders/create'), ('shopify', 'orders/cancelled'))";

/// Applies up to `limit` accepted deliveries, each in its own transaction; a failing one is
/// retried (`failed`) and dead after `max_attempts`. Returns how many were applied.
pub fn apply_pending(limit: i64, max_attempts: i32) -> Result<usize, String> {
    let ids: Vec<i64> = worker_transaction(|| {
        Spi::connect(|c| {
            let rows = c.select(
                &format!(
                    "SELECT w.id FROM integ.webhooks w
                      WHERE w.state IN ('pending', 'failed') AND w.status = 'accepted' AND {HANDLED}
                      ORDER BY w.id LIMIT $1"
                ),
                None,
                &[limit.into()],
            )?;
            rows.map(|r| r.get::<i64>(1).map(Option::unwrap_or_default))
                .collect::<Result<Vec<_>, _>>()
        })
        .or_raise("looking for webhooks to apply")
    })?;
    let mut applied = 0;
    for id in ids {
        match worker_transaction(|| apply_one(id)) {
            Ok(Ok(true)) => applied += 1,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => fail(id, &e, true, max_attempts)?,
            Err(e) => fail(id, &e, false, max_attempts)?,
        }
    }
    Ok(applied)
}

fn fail(id: i64, error: &str, permanent: bool, max_attempts: i32) -> Result<(), String> {
    worker_transaction(|| {
        Spi::run_with_args(
            "UPDATE integ.webhooks
                SET attempts = attempts + 1, error = $2,
                    state = CASE WHEN $3 OR attempts + 1 >= $4 THEN 'dead' ELSE 'failed' END
              WHERE id = $1",
            &[id.into(), error.into(), permanent.into(), max_attempts.into()],
        )
        .or_raise("recording a webhook failure")
    })
}

/// Applies one delivery if it is still to be applied. Ok(Err) is a permanent problem with the
/// delivery itself (it goes dead); a SQL error aborts the transaction and is retried.
fn apply_one(id: i64) -> Result<bool, String> {
    let row = first::<pgrx::JsonB>(
        "SELECT jsonb_build_array(w.marketplace, w.tenant_id, w.topic, convert_from(w.body, 'UTF8'))
           FROM integ.webhooks w
          WHERE w.id = $1 AND w.state IN ('pending', 'failed') FOR UPDATE SKIP LOCKED",
        &[id.into()],
    );
    let Some(pgrx::JsonB(Value::Array(row))) = row else {
        return Ok(false);
    };
    let text = |i: usize| row.get(i).and_then(Value::as_str).unwrap_or("").to_string();
    let (marketplace, tenant, topic) = (text(0), text(1), text(2));
    let body: Value = serde_json::from_str(&text(3)).map_err(|_| "the body is not JSON".to_string())?;
    let order = id_text(body.get("id")).ok_or("the order has no id")?;
    let mut notes = Vec::new();
    match topic.as_str() {
        "orders/create" => {
            let lines = body
                .get("line_items")
                .and_then(Value::as_array)
                .ok_or("the order has no line_items")?;
            for line in lines {
                let line_id = id_text(line.get("id")).ok_or("an order line has no id")?;
                let qty = line.get("quantity").and_then(Value::as_i64).filter(|q| *q > 0);
                let product = line.get("sku").and_then(Value::as_str).filter(|s| !s.is_empty());
                let (Some(qty), Some(product)) = (qty, product) else {
                    notes.push(format!("line {line_id} has no sku or quantity"));
                    continue;
                };
                let qty = qty.min(i32::MAX as i64) as i32;
                let taken = first::<i64>(
                    "INSERT INTO integ.order_lines (marketplace, tenant_id, order_id, line_id, product_id, quantity, webhook_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING 1::bigint",
                    &[
                        marketplace.as_str().into(),
                        tenant.as_str().into(),
                        order.as_str().into(),
                        line_id.as_str().into(),
                        product.into(),
                        qty.into(),
                        id.into(),
                    ],
                );
                if taken.is_some() && !adjust(&tenant, product, -(qty as i64)) {
                    notes.push(format!("product {product} is in no tracked table"));
                }
            }
        }
        "orders/cancelled" => {
            let given_back = Spi::connect_mut(|c| {
                let rows = c.update(
                    "UPDATE integ.order_lines SET cancelled_at = now()
                      WHERE marketplace = $1 AND tenant_id = $2 AND order_id = $3 AND cancelled_at IS NULL
                  RETURNING product_id, quantity",
                    None,
                    &[
                        marketplace.as_str().into(),
                        tenant.as_str().into(),
                        order.as_str().into(),
                    ],
                )?;
                rows.map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<i32>(2)?.unwrap_or(0))))
                    .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            })
            .or_raise("cancelling order lines");
            for (product, qty) in given_back {
                adjust(&tenant, &product, qty as i64);
            }
        }
        other => return Err(format!("no processing for topic {other}")),
    }
    Spi::run_with_args(
        "UPDATE integ.webhooks SET state = 'done', processed_at = now(), attempts = attempts + 1, error = $2
          WHERE id = $1",
        &[
            id.into(),
            (if notes.is_empty() { None } else { Some(notes.join("; ")) }).into(),
        ],
    )
    .or_raise("completing a webhook");
    Ok(true)
}

fn adjust(tenant: &str, product: &str, delta: i64) -> bool {
    first::<bool>(
        "SELECT integ.adjust_stock($1, $2, $3::numeric)",
        &[tenant.into(), product.into(), delta.into()],
    )
    .unwrap_or(false)
}
