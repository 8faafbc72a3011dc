//! SHEIN prices. Self-operated shops set the selling price:
//! `POST /open-api/openapi-business-backend/product/price/save`
//! `{"productPriceList":[{"productCode","currencyCode","site","shopPrice","specialPrice"}]}`, up to
//! 100 SKUs a call, prices as JSON numbers. Omitting `specialPrice` resets it to 0, so it is
//! always sent, equal to the shop price: EGDC's price is the price (a special price set in SHEIN
//! is replaced). Each entry answers its own `success` even when the call's code is "0". The
//! connection names its `site` (`shein-mx`). Semi- and fully-managed shops (`shop_mode`) set a
//! supply cost instead: `POST /open-api/goods/update-cost` `{"spu_name", "skc_info_list":
//! [{"skc_name", "sku_info_list": [{"sku_code", "cost", "currency"}]}]}`, one SPU per call, each
//! SKU answering for itself; a listing names its SPU and SKC (`spu_name`, `skc_name`).

use super::http::{elapsed_ms, Reply};
use super::shein::{call_failure, post_text};
use super::{PushKind, PushRequest, PushResult};
use rust_decimal::RoundingStrategy;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Instant;

/// SKUs per call (the API's maximum).
pub const MAX_PRICES: usize = 100;
const PATH: &str = "/open-api/openapi-business-backend/product/price/save";
const COST_PATH: &str = "/open-api/goods/update-cost";
const MODES: [&str; 3] = ["self_operated", "semi_managed", "fully_managed"];

fn managed(connection_settings: &Value) -> bool {
    connection_settings
        .get("shop_mode")
        .and_then(Value::as_str)
        .is_some_and(|m| m != "self_operated")
}

fn text<'a>(settings: &'a Value, key: &str) -> Option<&'a str> {
    settings.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Requests of one call: a managed shop writes the SKUs of one SPU per call.
pub fn call_group(connection_settings: &Value, listing_settings: &Value) -> String {
    if managed(connection_settings) {
        text(listing_settings, "spu_name").unwrap_or_default().to_string()
    } else {
        String::new()
    }
}

/// The amount as SHEIN's JSON number text, two decimals.
pub(crate) fn amount_text(amount: rust_decimal::Decimal) -> String {
    amount
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
        .to_string()
}

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
    if managed(settings) {
        return push_costs(agent, reqs);
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
        let amount = amount_text(p.amount);
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
            let sku = &reqs[*i].external_id;
            results[*i] = Some(sku_result(&reply, start, |r| entry_outcome(r, sku)));
        }
    }
    finish(results)
}

/// One SKU's result of a call: the call's own failure, else what `answer` reads for the SKU.
fn sku_result(reply: &Result<Reply, String>, start: Instant, answer: impl Fn(&Reply) -> PushKind) -> PushResult {
    let kind = match reply {
        Err(e) => PushKind::Retry {
            error: e.clone(),
            retry_after: None,
        },
        Ok(r) => call_failure(r).unwrap_or_else(|| answer(r)),
    };
    PushResult {
        kind,
        http_status: reply.as_ref().ok().map(|r| r.status),
        latency_ms: elapsed_ms(start),
        learned: None,
    }
}

fn finish(results: Vec<Option<PushResult>>) -> Vec<PushResult> {
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| PushResult::refused("no result")))
        .collect()
}

/// An SPU's SKCs, each with its (request index, sku entry) pairs.
type SkcEntries<'a> = BTreeMap<&'a str, Vec<(usize, String)>>;

/// A managed shop's supply costs: one `update-cost` call per SPU, its SKUs grouped by SKC.
fn push_costs(agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
    let mut results: Vec<Option<PushResult>> = vec![None; reqs.len()];
    let mut spus: BTreeMap<&str, SkcEntries> = BTreeMap::new();
    for (i, r) in reqs.iter().enumerate() {
        let s = &r.listing_settings;
        let (Some(p), Some(spu), Some(skc)) = (&r.price, text(s, "spu_name"), text(s, "skc_name")) else {
            results[i] = Some(PushResult::refused(if r.price.is_none() {
                "no price to write"
            } else {
                "SHEIN managed shops set a supply cost by SPU and SKC: the listing's settings need spu_name and skc_name (import_catalog and link_by_sku fill them)"
            }));
            continue;
        };
        let Some(currency) = &p.currency else {
            results[i] = Some(PushResult::refused(
                "SHEIN needs the cost's currency: set price_rules.currency (the supplier's, e.g. MXN) or track a currency column",
            ));
            continue;
        };
        let entry = format!(
            "{{\"sku_code\":{},\"cost\":{},\"currency\":{}}}",
            Value::from(r.external_id.as_str()),
            amount_text(p.amount),
            Value::from(currency.as_str())
        );
        spus.entry(spu).or_default().entry(skc).or_default().push((i, entry));
    }
    for (spu, skcs) in spus {
        let start = Instant::now();
        let skc_list: Vec<String> = skcs
            .iter()
            .map(|(skc, skus)| {
                let list: Vec<&str> = skus.iter().map(|(_, e)| e.as_str()).collect();
                format!(
                    "{{\"skc_name\":{},\"sku_info_list\":[{}]}}",
                    Value::from(*skc),
                    list.join(",")
                )
            })
            .collect();
        let body = format!(
            "{{\"spu_name\":{},\"skc_info_list\":[{}]}}",
            Value::from(spu),
            skc_list.join(",")
        );
        let reply = post_text(agent, &reqs[0], COST_PATH, &body);
        for (i, _) in skcs.values().flatten() {
            let sku = &reqs[*i].external_id;
            results[*i] = Some(sku_result(&reply, start, |r| {
                answer_for(r, "skuCode", sku, "the supply cost")
            }));
        }
    }
    finish(results)
}

/// The `info.data[]` entry of one SKU: written, refused with SHEIN's message, or missing.
pub(crate) fn entry_outcome(reply: &Reply, sku: &str) -> PushKind {
    answer_for(reply, "productCode", sku, "the price")
}

/// The `info.data[]` entry whose `key` is `sku`.
pub(crate) fn answer_for(reply: &Reply, key: &str, sku: &str, what: &str) -> PushKind {
    let v = reply.json().unwrap_or(Value::Null);
    let entry = v
        .pointer("/info/data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| e.get(key).and_then(Value::as_str) == Some(sku));
    match entry {
        Some(e) if e.get("success").and_then(Value::as_bool) == Some(true) => PushKind::Applied { remote: None },
        Some(e) => PushKind::Permanent {
            error: super::http::truncate(
                &format!(
                    "SHEIN refused {what}: {}",
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
    fn a_managed_shop_writes_one_spu_per_call() {
        let managed = json!({"shop_mode": "semi_managed"});
        let listing = json!({"spu_name": "M1", "skc_name": "sM1"});
        assert_eq!(call_group(&managed, &listing), "M1");
        assert_eq!(call_group(&json!({"shop_mode": "self_operated"}), &listing), "");
        assert_eq!(call_group(&json!({}), &listing), "");
        let reply = super::super::http::Reply::new(
            200,
            json!({"code": "0", "info": {"data": [{"success": false, "message": "cost必须大于0且小于100000", "skuCode": "I1-0"}]}})
                .to_string(),
        );
        assert_eq!(
            answer_for(&reply, "skuCode", "I1-0", "the supply cost").error(),
            Some("SHEIN refused the supply cost: cost必须大于0且小于100000")
        );
        assert_eq!(amount_text(rust_decimal::Decimal::new(80_005, 3)), "80.01");
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
