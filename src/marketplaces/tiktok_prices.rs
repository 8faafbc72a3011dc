//! TikTok Shop prices: `POST /product/202309/products/{product_id}/prices/update` with
//! `{"skus":[{"id","price":{"amount":"1.32","currency":"USD"}}]}`, signed like every shop call.
//! One call carries the SKUs of one product; the amount is a decimal string in the shop region's
//! currency, which the price must name (`price_rules.currency`, else EGDC's currency column).

use super::http::elapsed_ms;
use super::tiktok::{classify, signed};
use super::{PushKind, PushRequest, PushResult};
use rust_decimal::RoundingStrategy;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;

/// Price writes one push_prices call takes (grouped into one call per product).
pub const MAX_PRICES: usize = 50;

/// The product a listing's SKU belongs to (one prices/update call each).
pub fn product_id(listing_settings: &Value) -> Option<String> {
    match listing_settings.get("product_id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One result per request, in order: one call per product named by the requests.
pub fn push(agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
    let mut results: Vec<Option<PushResult>> = vec![None; reqs.len()];
    let mut by_product: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in reqs.iter().enumerate() {
        let refused = |error: &str| Some(PushResult::refused(error));
        match (&r.price, product_id(&r.listing_settings)) {
            (None, _) => results[i] = refused("no price to write"),
            (_, None) => results[i] = refused("tiktok listing settings have no product_id"),
            (Some(p), _) if p.currency.is_none() => {
                results[i] = refused(
                    "TikTok Shop needs the price's currency: set price_rules.currency (the shop region's, e.g. USD) or track a currency column",
                )
            }
            (Some(_), Some(product)) => by_product.entry(product).or_default().push(i),
        }
    }
    for (product, members) in by_product {
        let start = Instant::now();
        let skus: Vec<Value> = members
            .iter()
            .filter_map(|i| {
                let r = &reqs[*i];
                let p = r.price.as_ref()?;
                let amount = p
                    .amount
                    .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
                    .to_string();
                Some(json!({"id": r.external_id, "price": {"amount": amount, "currency": p.currency}}))
            })
            .collect();
        let path = format!("/product/202309/products/{product}/prices/update");
        let (kind, status) = match signed(agent, &reqs[members[0]], &path, &[], Some(&json!({ "skus": skus }))) {
            Ok(reply) => (classify(&reply), Some(reply.status)),
            Err(e) => (
                PushKind::Retry {
                    error: e,
                    retry_after: None,
                },
                None,
            ),
        };
        let kind = match kind {
            PushKind::Applied { .. } => PushKind::Applied { remote: None },
            other => other,
        };
        for i in members {
            results[i] = Some(PushResult {
                kind: kind.clone(),
                http_status: status,
                latency_ms: elapsed_ms(start),
                learned: None,
            });
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                PushResult::without_call(PushKind::Retry {
                    error: "no result".into(),
                    retry_after: None,
                })
            })
        })
        .collect()
}
