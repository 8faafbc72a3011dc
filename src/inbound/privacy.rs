//! Shopify's mandatory privacy topics, applied in the worker's transaction with the delivery:
//! each request is recorded in `integ.privacy_requests`; `customers/redact` reduces every stored
//! delivery naming the customer or one of the orders to its ids, lines and quantities;
//! `shop/redact` removes everything of the shop. The order ledger holds no personal data (ids,
//! products, quantities) and keeps what exactly-once needs: an order applied stays applied once.

use super::reduce::reduce;
use crate::marketplaces::events::{PrivacyRequest, PrivacyTopic};
use crate::marketplaces::{Credentials, Marketplace};
use crate::spi_util::{first, OrRaise};
use pgrx::prelude::*;
use serde_json::Value;

/// Applies the request; the note kept on the delivery.
pub fn apply(connection_id: i64, tenant: &str, creds: &Credentials, webhook_id: i64, r: &PrivacyRequest) -> String {
    let outcome = match r.topic {
        PrivacyTopic::DataRequest => format!(
            "recorded: integ.customer_data('{}', '{}') shows what is held",
            r.shop,
            r.customer_id.as_deref().unwrap_or("")
        ),
        PrivacyTopic::CustomerRedact => {
            let n = redact_customer(connection_id, creds, webhook_id, r);
            format!("{n} stored deliveries reduced to ids and quantities")
        }
        PrivacyTopic::ShopRedact => redact_shop(connection_id, webhook_id),
    };
    Spi::run_with_args(
        "INSERT INTO integ.privacy_requests (webhook_id, tenant_id, marketplace, shop, topic, customer_id, orders, outcome)
         VALUES ($1, $2, 'shopify', $3, $4, $5, $6, $7)",
        &[
            webhook_id.into(),
            tenant.into(),
            r.shop.as_str().into(),
            r.topic.as_str().into(),
            r.customer_id.clone().into(),
            r.orders.clone().into(),
            outcome.as_str().into(),
        ],
    )
    .or_raise("recording a privacy request");
    outcome
}

/// Whether a stored body names the customer or one of the orders.
fn names(body: &Value, customer: Option<&str>, orders: &[String]) -> bool {
    let id = |v: Option<&Value>| crate::marketplaces::webhooks::id_text(v);
    let by_customer = customer.is_some() && id(body.pointer("/customer/id")).as_deref() == customer;
    let by_order = body.get("line_items").is_some() && id(body.get("id")).is_some_and(|o| orders.contains(&o));
    by_customer || by_order
}

fn redact_customer(connection_id: i64, creds: &Credentials, webhook_id: i64, r: &PrivacyRequest) -> i64 {
    // deliveries still to be applied are reduced when they are; every other is reduced now
    let rows: Vec<(i64, Option<String>, Vec<u8>)> = Spi::connect(|c| {
        c.select(
            "SELECT w.id, w.topic, w.body FROM integ.webhooks w
              WHERE w.connection_id = $1 AND w.marketplace = 'shopify' AND NOT w.body_reduced
                AND w.body IS NOT NULL AND w.id <> $2 AND w.state NOT IN ('pending', 'failed')",
            None,
            &[connection_id.into(), webhook_id.into()],
        )?
        .map(|row| {
            Ok((
                row.get(1)?.unwrap_or_default(),
                row.get(2)?,
                row.get(3)?.unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .or_raise("reading the shop's stored deliveries");
    let mut reduced = 0;
    for (id, topic, body) in rows {
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            continue;
        };
        if !names(&v, r.customer_id.as_deref(), &r.orders) {
            continue;
        }
        let kept = reduce(Marketplace::Shopify, topic.as_deref(), &body, creds);
        Spi::run_with_args(
            "UPDATE integ.webhooks SET body = $2, body_reduced = true WHERE id = $1",
            &[id.into(), kept.into()],
        )
        .or_raise("reducing a stored delivery");
        reduced += 1;
    }
    reduced
}

/// Removes the shop's connection and everything kept of it; the usage counts stay (they name
/// no shop) and so does the record of this request.
fn redact_shop(connection_id: i64, webhook_id: i64) -> String {
    let count = |sql: &str| {
        first::<i64>(
            &format!("WITH d AS ({sql} RETURNING 1) SELECT count(*) FROM d"),
            &[connection_id.into(), webhook_id.into()],
        )
        .unwrap_or(0)
    };
    let lines = count(
        "DELETE FROM integ.order_lines l USING integ.webhooks w
          WHERE w.connection_id = $1 AND l.webhook_id = w.id AND $2 IS NOT NULL",
    );
    let deliveries = count("DELETE FROM integ.webhooks WHERE connection_id = $1 AND id <> $2");
    let log = count("DELETE FROM integ.sync_log WHERE connection_id = $1 AND $2 IS NOT NULL");
    count("DELETE FROM integ.alerts WHERE connection_id = $1 AND $2 IS NOT NULL");
    count("DELETE FROM integ.health_windows WHERE connection_id = $1 AND $2 IS NOT NULL");
    count("DELETE FROM integ.health_buckets WHERE connection_id = $1 AND $2 IS NOT NULL");
    // credentials, listings, jobs, conflicts, imports and subscriptions go with it
    count("DELETE FROM integ.connections WHERE id = $1 AND $2 IS NOT NULL");
    crate::credentials::forget(connection_id);
    format!("shop removed: its connection, credentials and listings, {deliveries} deliveries, {lines} ledger lines, {log} log rows")
}

#[cfg(test)]
mod tests {
    use super::names;
    use serde_json::json;

    #[test]
    fn a_body_names_the_customer_or_an_order_of_theirs() {
        let order = json!({"id": 7, "customer": {"id": 5}, "line_items": []});
        let orders = vec!["8".to_string()];
        assert!(names(&order, Some("5"), &[]));
        assert!(!names(&order, Some("6"), &orders));
        assert!(names(&json!({"id": 8, "line_items": []}), Some("6"), &orders));
        // a level update has an id-less body: never an order
        assert!(!names(&json!({"inventory_item_id": 8}), None, &orders));
        assert!(!names(&json!({"id": 8}), None, &orders));
    }
}
