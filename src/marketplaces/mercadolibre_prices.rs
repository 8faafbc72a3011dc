//! MercadoLibre prices: `PUT /items/{id}` with `{"price": n}`, a JSON number in the item's
//! currency, and the stock in the same body when it changed too (one call carries both). An item
//! with variations takes `{"variations": [...]}`: every variation id must be listed (one left out
//! is deleted) and all must carry the same price, so a variation's new price is every variation's.
//! Prices are rounded (halves up) to the currency's decimals: 0 for the Chilean, Colombian and
//! Paraguayan sites, 2 elsewhere. A user product's price lives on its items: not written here.

use super::http::{classify_failure, elapsed_ms, Reply};
use super::mercadolibre::{listing_kind, put_text, variation_ids, ListingKind, Step};
use super::{PriceWrite, PushKind, PushRequest, PushResult};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;
use std::time::Instant;

/// Decimal places of the site's currency (the id's first three letters): CLP, COP and PYG have
/// none (`GET /currencies/{id}`).
pub fn decimals(item_id: &str) -> u32 {
    match item_id.get(..3) {
        Some("MLC" | "MCO" | "MPY") => 0,
        _ => 2,
    }
}

/// The amount as MercadoLibre takes it: rounded to the site's decimals, written as a JSON number.
pub fn amount_text(item_id: &str, amount: Decimal) -> String {
    amount
        .round_dp_with_strategy(decimals(item_id), RoundingStrategy::MidpointAwayFromZero)
        .normalize()
        .to_string()
}

/// Writes one listing's price (and stock, when `with_stock`).
pub fn push(agent: &ureq::Agent, req: &PushRequest) -> PushResult {
    let start = Instant::now();
    let (kind, status) = match (&req.price, listing_kind(&req.external_id, &req.listing_settings)) {
        (None, _) => (
            PushKind::Permanent {
                error: "no price to write".into(),
            },
            None,
        ),
        (_, Err(e)) => (PushKind::Permanent { error: e }, None),
        (Some(_), Ok(ListingKind::UserProduct)) => (
            PushKind::Permanent {
                error: "a user product's price is set on its items: map the item to sync its price".into(),
            },
            None,
        ),
        (Some(p), Ok(ListingKind::Item)) => item(agent, req, p),
        (Some(p), Ok(ListingKind::Variation(v))) => variation(agent, req, p, v),
    };
    PushResult {
        kind,
        http_status: status,
        latency_ms: elapsed_ms(start),
        learned: None,
    }
}

fn applied(reply: &Reply, with_stock: bool, stock_of: impl Fn(&Value) -> Option<i64>) -> Step {
    if !(200..300).contains(&reply.status) {
        return (classify_failure(reply), Some(reply.status));
    }
    let remote = if with_stock {
        reply.json().as_ref().and_then(stock_of)
    } else {
        None
    };
    (PushKind::Applied { remote }, Some(reply.status))
}

fn item(agent: &ureq::Agent, req: &PushRequest, p: &PriceWrite) -> Step {
    let price = amount_text(&req.external_id, p.amount);
    let body = if p.with_stock {
        format!("{{\"price\":{price},\"available_quantity\":{}}}", req.quantity)
    } else {
        format!("{{\"price\":{price}}}")
    };
    match put_text(agent, req, &format!("/items/{}", req.external_id), body, None) {
        Ok(reply) => applied(&reply, p.with_stock, |b| {
            b.get("available_quantity").and_then(Value::as_i64)
        }),
        Err(step) => step,
    }
}

fn variation(agent: &ureq::Agent, req: &PushRequest, p: &PriceWrite, variation: i64) -> Step {
    let path = format!("/items/{}", req.external_id);
    let ids = match variation_ids(agent, req, variation) {
        Ok(ids) => ids,
        Err(step) => return step,
    };
    // every variation, each with the one price; the stock only on ours
    let price = amount_text(&req.external_id, p.amount);
    let entries: Vec<String> = ids
        .iter()
        .map(|id| {
            if *id == variation && p.with_stock {
                format!(
                    "{{\"id\":{id},\"price\":{price},\"available_quantity\":{}}}",
                    req.quantity
                )
            } else {
                format!("{{\"id\":{id},\"price\":{price}}}")
            }
        })
        .collect();
    let body = format!("{{\"variations\":[{}]}}", entries.join(","));
    match put_text(agent, req, &path, body, None) {
        Ok(reply) => applied(&reply, p.with_stock, |b| {
            b.get("variations")?
                .as_array()?
                .iter()
                .find(|v| v.get("id").and_then(Value::as_i64) == Some(variation))?
                .get("available_quantity")?
                .as_i64()
        }),
        Err(step) => step,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn amounts_follow_the_sites_currency() {
        let d = |s: &str| Decimal::from_str(s).expect("decimal");
        assert_eq!(amount_text("MLM123", d("111.99")), "111.99");
        assert_eq!(amount_text("MLM123", d("100.00")), "100");
        assert_eq!(amount_text("MLM123", d("10.005")), "10.01");
        assert_eq!(amount_text("MLC123", d("9990.5")), "9991");
        assert_eq!(amount_text("MCO123", d("1500")), "1500");
        assert_eq!(amount_text("MLA1", d("0.1")), "0.1");
    }
}
