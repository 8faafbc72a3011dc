//! SHEIN prices (self-operated shops): `POST /open-api/openapi-business-backend/product/price/save`
//! `{"productPriceList":[{"productCode","currencyCode","site","shopPrice","specialPrice"}]}`, up to
//! 100 SKUs a call, prices as JSON numbers. Omitting `specialPrice` resets it to 0, so it is
//! always sent, equal to the shop price: EGDC's price is the price (a special price set in SHEIN
//! is replaced). Each entry answers its own `success` even when the call's code is "0". The
//! connection names its `site` (`shein-mx`); semi- and fully-managed shops (`shop_mode`) set a
//! supply cost instead, which is not synced yet.

use super::http::elapsed_ms;
use super::shein::{call_failure, post_text};
use super::{PushKind, PushRequest, PushResult};
use rust_decimal::RoundingStrategy;
use serde_json::{Map, Value};
use std::time::Instant;

/// SKUs per call (the API's maximum).
pub const MAX_PRICES: usize = 100;
const PATH: &str = "/open-api/openapi-business-backend/product/price/save";
const MODES: [&str; 3] = ["self_operated", "semi_managed", "fully_managed"];

/// Checks `site` and `shop_mode` of a connection's settings.
pub fn check_settings(settings: &Map<String, Value>) -> Result<(), String> {
    match settings.get("site") {
        None | Some(Value::Null) => {}
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {}
        Some(_) => return Err("settings.site must be a SHEIN site such as \"shein-mx\"".into()),
    }
    match settings.get("shop_mode") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(m)) if MODES.contains(&m.as_str()) => Ok(()),
        Some(_) => Err(format!("settings.shop_mode must be one of: {}", MODES.join(", "))),
    }
}

/// One result per request, in order (the requests are of one connection).
pub fn push(agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
    let Some(first) = reqs.first() else {
        return Vec::new();
    };
    let settings = &first.connection_settings;
    let mode = settings
        .get("shop_mode")
        .and_then(Value::as_str)
        .unwrap_or("self_operated");
    if mode != "self_operated" {
        let why = "SHEIN semi- and fully-managed shops set a supply cost (goods/update-cost), which is not synced yet";
        return reqs.iter().map(|_| PushResult::refused(why)).collect();
    }
    let Some(site) = settings.get("site").and_then(Value::as_str) else {
        let why = "SHEIN price writes need the connection's settings.site (such as \"shein-mx\")";
        return reqs.iter().map(|_| PushResult::refused(why)).collect();
    };
    let mut results: Vec<Option<PushResult>> = vec![None; reqs.len()];
    let mut entries = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let Some(p) = &r.price else {
            results[i] = Some(PushResult::refused("no price to write"));
            continue;
        };
        let Some(currency) = &p.currency else {
            results[i] = Some(PushResult::refused(
                "SHEIN needs the price's currency: set price_rules.currency (the site's, e.g. MXN) or track a currency column",
            ));
            continue;
        };
        let amount = p
            .amount
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
            .to_string();
        entries.push((
            i,
            format!(
                "{{\"productCode\":{},\"currencyCode\":{},\"site\":{},\"shopPrice\":{amount},\"specialPrice\":{amount}}}",
                Value::from(r.external_id.as_str()),
                Value::from(currency.as_str()),
                Value::from(site)
            ),
        ));
    }
    if !entries.is_empty() {
        let start = Instant::now();
        let body = format!(
            "{{\"productPriceList\":[{}]}}",
            entries.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>().join(",")
        );
        let reply = post_text(agent, first, PATH, &body);
        for (i, _) in &entries {
            let kind = match &reply {
                Err(e) => PushKind::Retry {
                    error: e.clone(),
                    retry_after: None,
                },
                Ok(reply) => call_failure(reply).unwrap_or_else(|| entry_outcome(reply, &reqs[*i].external_id)),
            };
            results[*i] = Some(PushResult {
                kind,
                http_status: reply.as_ref().ok().map(|r| r.status),
                latency_ms: elapsed_ms(start),
            });
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| PushResult::refused("no result")))
        .collect()
}

/// The `info.data[]` entry of one SKU: written, refused with SHEIN's message, or missing.
fn entry_outcome(reply: &super::http::Reply, sku: &str) -> PushKind {
    let v = reply.json().unwrap_or(Value::Null);
    let entry = v
        .pointer("/info/data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| e.get("productCode").and_then(Value::as_str) == Some(sku));
    match entry {
        Some(e) if e.get("success").and_then(Value::as_bool) == Some(true) => PushKind::Applied { remote: None },
        Some(e) => PushKind::Permanent {
            error: super::http::truncate(
                &format!(
                    "SHEIN refused the price: {}",
                    e.get("message").and_then(Value::as_str).unwrap_or("no reason given")
                ),
                500,
            ),
        },
        None => PushKind::Retry {
            error: "SHEIN's answer does not mention this SKU".into(),
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_checked() {
        let ok = json!({"site": "shein-mx", "shop_mode": "self_operated"});
        assert!(check_settings(ok.as_object().unwrap()).is_ok());
        assert!(check_settings(json!({"site": ""}).as_object().unwrap()).is_err());
        assert!(check_settings(json!({"site": "a b"}).as_object().unwrap()).is_err());
        assert!(check_settings(json!({"shop_mode": "managed"}).as_object().unwrap()).is_err());
    }

    #[test]
    fn each_entry_answers_for_itself() {
        let reply = super::super::http::Reply::new(
            200,
            json!({"code": "0", "info": {"data": [
                {"success": true, "message": "成功", "productCode": "A"},
                {"success": false, "message": "shopPrice不能低于最低价10.00", "productCode": "B"}]}})
            .to_string(),
        );
        assert_eq!(entry_outcome(&reply, "A"), PushKind::Applied { remote: None });
        match entry_outcome(&reply, "B") {
            PushKind::Permanent { error } => assert!(error.contains("最低价"), "{error}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(entry_outcome(&reply, "C"), PushKind::Retry { .. }));
    }
}
