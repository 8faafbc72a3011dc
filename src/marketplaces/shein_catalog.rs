//! SHEIN's catalog, one signed call per step: `product/query` pages of 50 SKCs (no total: a
//! short page is the last), `goods/spu-info` once per SPU of a page (its SKUs, the seller's
//! `supplierSku`, prices), `stock/stock-query` for up to 100 units waiting (stock, warehouse).
//! The cursor carries the pass: pages read, the page's SPUs still to read (with the SKCs that
//! page listed, so an SPU split across pages yields each SKU once) and the units waiting for
//! stock, across pages, so stock calls go full. A unit is returned at its stock step, complete.

use super::catalog::{self, CatalogError, CatalogPage, RemoteListing};
use super::http::{self, Reply};
use super::shein::{call_failure, post, STOCK_QUERY};
use super::{Connector, PushKind, PushRequest};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::str::FromStr;

pub const PRODUCT_QUERY: &str = "/open-api/openapi-business-backend/product/query";
pub const SPU_INFO: &str = "/open-api/goods/spu-info";
/// SKCs per `product/query` page (the size SHEIN documents).
const PAGE_SIZE: usize = 50;
/// SKUs per `stock-query` call, and about the most units the cursor keeps waiting.
const STOCK_BATCH: usize = 100;
/// An SPU unknown (or no longer this supplier's): the catalog changed since its page was read.
const SPU_GONE: &str = "20401";

/// Where a pass stands.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Cursor {
    /// `product/query` pages read.
    pages: u32,
    /// The last page read was short: there are no more.
    last: bool,
    spus: Vec<Spu>,
    units: Vec<Unit>,
}

/// An SPU of the last page still to read: the SKCs that page listed and their SKU count.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Spu {
    name: String,
    skcs: Vec<String>,
    skus: usize,
}

/// A unit read from `spu-info`, waiting for its stock (`price`: exact decimal text).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Unit {
    id: String,
    sku: Option<String>,
    title: Option<String>,
    price: Option<String>,
    currency: Option<String>,
    /// Its SPU and SKC: what a managed shop's supply cost is written by.
    spu: Option<String>,
    skc: Option<String>,
}

#[derive(Debug, PartialEq)]
enum Step {
    Query,
    Spu,
    /// Stock of the first n units waiting.
    Stock(usize),
}

/// One step of the pass from `cursor` (None: a new pass).
pub fn page(agent: &ureq::Agent, req: &PushRequest, cursor: Option<&str>) -> Result<CatalogPage, CatalogError> {
    let at = parse(cursor)?;
    let Some((step, path, body)) = next_call(&at) else {
        return Ok(CatalogPage::default()); // nothing left (the last step said so already)
    };
    let reply = post(agent, req, path, &body).map_err(CatalogError::Transient)?;
    advance(at, &step, &reply)
}

fn parse(cursor: Option<&str>) -> Result<Cursor, CatalogError> {
    cursor.map_or(Ok(Cursor::default()), |c| {
        serde_json::from_str(c)
            .map_err(|_| CatalogError::CursorExpired("the stored cursor is not one of this version".into()))
    })
}

/// The call `at` makes next (None: nothing left). Units wait, across pages, until the next SPU
/// would take them past one stock call's worth (or the pass has nothing else to read).
fn next_call(at: &Cursor) -> Option<(Step, &'static str, Value)> {
    let waiting = at.units.len();
    let stock_now = match at.spus.first() {
        Some(s) => waiting > 0 && waiting.saturating_add(s.skus) > STOCK_BATCH,
        None => waiting >= STOCK_BATCH || (at.last && waiting > 0),
    };
    Some(if stock_now {
        let n = waiting.min(STOCK_BATCH);
        let ids: Vec<&str> = at.units[..n].iter().map(|u| u.id.as_str()).collect();
        let body = json!({"skuCodeList": ids, "invType": "VI"});
        (Step::Stock(n), STOCK_QUERY, body)
    } else if let Some(s) = at.spus.first() {
        (Step::Spu, SPU_INFO, json!({"languageList": ["en"], "spuName": s.name}))
    } else if !at.last {
        let body = json!({"pageNum": at.pages.saturating_add(1), "pageSize": PAGE_SIZE});
        (Step::Query, PRODUCT_QUERY, body)
    } else {
        return None;
    })
}

/// The cursor after `step` answered with `reply`, and what the step found.
fn advance(mut at: Cursor, step: &Step, reply: &Reply) -> Result<CatalogPage, CatalogError> {
    let mut page = CatalogPage {
        calls: 1,
        ..Default::default()
    };
    match step {
        Step::Query => {
            let found = answer(reply)?;
            let data = found
                .pointer("/info/data")
                .and_then(Value::as_array)
                .ok_or_else(|| CatalogError::Failed("SHEIN product/query answered without info.data".into()))?;
            page.discovered = data.len() as i64;
            at.pages = at.pages.saturating_add(1);
            at.last = data.len() < PAGE_SIZE;
            for (name, skc) in data.iter().filter_map(|c| Some((catalog::text(c.get("spuName"))?, c))) {
                let i = at.spus.iter().position(|s| s.name == name).unwrap_or_else(|| {
                    at.spus.push(Spu {
                        name,
                        ..Default::default()
                    });
                    at.spus.len() - 1
                });
                at.spus[i].skus += skc.get("skuCodeList").and_then(Value::as_array).map_or(0, Vec::len);
                at.spus[i].skcs.extend(catalog::text(skc.get("skcName")));
            }
        }
        Step::Spu => {
            let spu = at.spus.remove(0);
            let gone = reply.status == 200 && reply.json().is_some_and(|v| v["code"] == SPU_GONE);
            if !gone {
                at.units.extend(spu_units(&answer(reply)?, &spu.name, &spu.skcs));
            }
        }
        Step::Stock(n) => {
            let rest = at.units.split_off((*n).min(at.units.len()));
            let found = answer(reply)?;
            let stock = stock_of(&found);
            let ready = std::mem::replace(&mut at.units, rest);
            // only what map_product takes (link_by_sku maps every unit it links)
            page.listings = ready
                .into_iter()
                .map(|u| listing(u, &stock))
                .filter(|l| super::shein::Shein.check_listing(&l.external_id, &l.settings).is_ok())
                .collect();
        }
    }
    let done = at.last && at.spus.is_empty() && at.units.is_empty();
    page.next = if done { None } else { serde_json::to_string(&at).ok() };
    Ok(page)
}

/// The answer's JSON, or what its failure means (shein.rs's classification; SHEIN's keys are
/// permanent, so a refused signature fails the import rather than asking for a refresh).
fn answer(reply: &Reply) -> Result<Value, CatalogError> {
    if !(200..300).contains(&reply.status) {
        return Err(catalog::failure(reply));
    }
    match call_failure(reply) {
        None => reply
            .json()
            .ok_or_else(|| CatalogError::Failed("SHEIN answered with a body that is not JSON".into())),
        Some(PushKind::Throttled { error, retry_after }) => Err(CatalogError::Throttled { error, retry_after }),
        Some(PushKind::Retry { error, .. }) => Err(CatalogError::Transient(error)),
        Some(other) => Err(CatalogError::Failed(other.error().unwrap_or("refused").to_string())),
    }
}

/// `v[key]`'s elements (none when it is not an array).
fn array<'a>(v: Option<&'a Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    v.and_then(|v| v.get(key)?.as_array()).into_iter().flatten()
}

/// The SKUs of an SPU's SKCs in `skcs` (all when the page named none).
fn spu_units(v: &Value, spu: &str, skcs: &[String]) -> Vec<Unit> {
    let info = v.get("info");
    let title = array(info, "productMultiNameList")
        .find(|n| n.get("language").and_then(Value::as_str) == Some("en"))
        .and_then(|n| catalog::text(n.get("productName")))
        .map(|t| http::truncate(&t, 500));
    let spu = Some(spu.to_string());
    array(info, "skcInfoList")
        .filter(|skc| skcs.is_empty() || catalog::text(skc.get("skcName")).is_some_and(|n| skcs.contains(&n)))
        .flat_map(|skc| array(Some(skc), "skuInfoList").map(move |sku| (catalog::text(skc.get("skcName")), sku)))
        .filter_map(|(skc, sku)| {
            Some(Unit {
                spu: spu.clone(),
                skc,
                id: catalog::text(sku.get("skuCode"))?,
                sku: catalog::text(sku.get("supplierSku")),
                title: title.clone(),
                price: price_of(sku).map(|p| p.to_string()),
                currency: catalog::text(sku.pointer("/priceInfoList/0/currency")),
            })
        })
        .collect()
}

/// The first `priceInfoList` entry's `specialPrice` when > 0, else its `basePrice`.
fn price_of(sku: &Value) -> Option<Decimal> {
    let first = |key: &str| sku.pointer(&format!("/priceInfoList/0/{key}"));
    catalog::price(first("specialPrice"))
        .filter(|d| !d.is_zero())
        .or_else(|| catalog::price(first("basePrice")))
}

/// `stock-query`'s SKUs by skuCode.
fn stock_of(v: &Value) -> HashMap<&str, &Value> {
    array(Some(v), "info")
        .flat_map(|i| array(Some(i), "goodsInventory"))
        .flat_map(|g| array(Some(g), "skuList"))
        .filter_map(|s| Some((s.get("skuCode")?.as_str()?, s)))
        .collect()
}

/// What `map_product` takes: the warehouse the stock is in, and the SPU and SKC a managed shop's
/// supply cost is written by.
fn unit_settings(warehouse: Option<String>, u: &Unit) -> Value {
    let mut settings = serde_json::Map::new();
    let fields = [
        ("warehouse_code", warehouse),
        ("spu_name", u.spu.clone()),
        ("skc_name", u.skc.clone()),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            settings.insert(key.into(), Value::String(v));
        }
    }
    Value::Object(settings)
}

/// A unit with its stock (None, and no warehouse, when `stock-query` did not list it).
fn listing(u: Unit, stock: &HashMap<&str, &Value>) -> RemoteListing {
    let inv = stock.get(u.id.as_str()).copied();
    let warehouse = inv.and_then(|s| catalog::text(s.pointer("/warehouseInventoryList/0/warehouseCode")));
    RemoteListing {
        settings: unit_settings(warehouse, &u),
        variation: String::new(),
        seller_sku: u.sku,
        title: u.title,
        price: u.price.as_deref().and_then(|p| Decimal::from_str(p).ok()),
        currency: u.currency,
        stock: inv.and_then(|s| s.get("totalUsableInventory")).and_then(Value::as_i64),
        status: None,
        url: None,
        raw: catalog::bounded_raw(inv.cloned().unwrap_or_else(|| json!({"skuCode": u.id}))),
        external_id: u.id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(info: Value) -> Reply {
        Reply::new(200, json!({"code": "0", "msg": "OK", "info": info}).to_string())
    }

    fn query(page: u32) -> (&'static str, Value) {
        (PRODUCT_QUERY, json!({"pageNum": page, "pageSize": 50}))
    }

    /// The step `cursor` takes next, checked to send `want`, answered with `reply`.
    fn step(cursor: Option<&str>, want: (&str, Value), reply: Reply) -> CatalogPage {
        let at = parse(cursor).unwrap();
        let (s, path, body) = next_call(&at).unwrap();
        assert_eq!((path, body), want);
        advance(at, &s, &reply).unwrap()
    }

    #[test]
    fn a_short_pass_reads_each_sku_once_then_ends() {
        let page = json!({"data": [{"spuName": "M1", "skcName": "sM1a", "skuCodeList": ["I1", "I2"]},
            {"spuName": "M2", "skcName": "sM2", "skuCodeList": ["I3"]},
            {"spuName": "M1", "skcName": "sM1b", "skuCodeList": ["I4"]}]});
        let p = step(None, query(1), ok(page));
        assert_eq!((p.discovered, p.listings.len(), p.total, p.calls), (3, 0, None, 1));
        let spu = r#"{"code":"0","info":{"productMultiNameList":[{"language":"en","productName":"Dress"}],
          "skcInfoList":[{"skcName":"sM1a","skuInfoList":[
              {"skuCode":"I1","supplierSku":"A-1","priceInfoList":[{"basePrice":1299.5,"specialPrice":0.00,"currency":"MXN"}]},
              {"skuCode":"I2","supplierSku":"","priceInfoList":[{"basePrice":199.00,"specialPrice":149.99,"currency":"MXN"},{"basePrice":1,"currency":"USD"}]}]},
            {"skcName":"sM1z","skuInfoList":[{"skuCode":"I9","supplierSku":"ON-ANOTHER-PAGE"}]},
            {"skcName":"sM1b","skuInfoList":[{"skuCode":"I4","supplierSku":"A-4"}]}]}}"#;
        let spu_body = |n: &str| json!({"languageList": ["en"], "spuName": n});
        let p = step(p.next.as_deref(), (SPU_INFO, spu_body("M1")), Reply::new(200, spu));
        assert!(p.listings.is_empty());
        let gone = Reply::new(200, r#"{"code":"20401","msg":"SPU不存在或不属于该供应商"}"#);
        let p = step(p.next.as_deref(), (SPU_INFO, spu_body("M2")), gone); // skipped
        let stock = json!([{"goodsInventory": [{"skuList": [
            {"skuCode": "I1", "totalUsableInventory": 7, "warehouseInventoryList": [{"warehouseCode": "WH-1"}]},
            {"skuCode": "I2", "totalUsableInventory": 0, "warehouseInventoryList": []}]}]}]);
        let want = json!({"skuCodeList": ["I1", "I2", "I4"], "invType": "VI"});
        let p = step(p.next.as_deref(), (STOCK_QUERY, want), ok(stock));
        assert_eq!(p.next, None, "the short page was the last");
        let got: Vec<Value> = (p.listings.iter())
            .map(|u| {
                json!({"id": u.external_id, "sku": u.seller_sku, "price": u.price.map(|p| p.to_string()),
                       "stock": u.stock, "settings": u.settings, "title": u.title, "currency": u.currency})
            })
            .collect();
        let want = json!([
            {"id": "I1", "sku": "A-1", "price": "1299.5", "stock": 7,
             "settings": {"warehouse_code": "WH-1", "spu_name": "M1", "skc_name": "sM1a"}, "title": "Dress", "currency": "MXN"},
            {"id": "I2", "sku": null, "price": "149.99", "stock": 0, "settings": {"spu_name": "M1", "skc_name": "sM1a"},
             "title": "Dress", "currency": "MXN"},
            {"id": "I4", "sku": "A-4", "price": null, "stock": null, "settings": {"spu_name": "M1", "skc_name": "sM1b"},
             "title": "Dress", "currency": null}]);
        assert_eq!(Value::Array(got), want);
        assert_eq!(p.listings[0].raw["totalUsableInventory"], 7);
        assert!((p.listings.iter()).all(|u| u.variation.is_empty() && u.status.is_none() && u.url.is_none()));
    }

    #[test]
    fn full_pages_go_on_and_units_wait_for_about_one_stock_call() {
        let data: Vec<Value> = (0..50)
            .map(|i| json!({"spuName": format!("M{}", i % 40), "skuCodeList": ["x"]}))
            .collect();
        let p = step(None, query(1), ok(json!({ "data": data })));
        let mut at = parse(p.next.as_deref()).unwrap();
        assert_eq!((at.pages, at.last, p.discovered), (1, false, 50));
        assert_eq!((at.spus.len(), at.spus[0].skus), (40, 2), "SKCs grouped by SPU");
        let units = |n: usize| (0..n).map(|i| json!({"id": format!("I{i}")})).collect::<Value>();
        let call = |at: &Cursor| next_call(at).map(|c| c.0);
        (at.units, at.spus[0].skus) = (serde_json::from_value(units(95)).unwrap(), 5);
        assert_eq!(call(&at), Some(Step::Spu));
        at.spus[0].skus = 6;
        assert_eq!(call(&at), Some(Step::Stock(95)));
        at.spus.clear(); // units wait across pages
        let next = serde_json::to_string(&at).unwrap();
        let p = step(Some(&next), query(2), ok(json!({"data": []})));
        let mut at = parse(p.next.as_deref()).unwrap();
        assert_eq!((p.discovered, at.last, call(&at)), (0, true, Some(Step::Stock(95))));
        at.units = serde_json::from_value(units(130)).unwrap();
        assert_eq!(call(&at), Some(Step::Stock(100)));
        at.units.clear();
        assert_eq!(call(&at), None);
    }

    #[test]
    fn failures_are_classified() {
        let fail = |status, body: &str| answer(&Reply::new(status, body)).unwrap_err();
        assert!(matches!(fail(429, ""), CatalogError::Throttled { .. }));
        let throttled = fail(200, r#"{"code":"832213","msg":"请求过于频繁"}"#);
        assert!(matches!(throttled, CatalogError::Throttled { .. }));
        let failed = |m: &str| CatalogError::Failed(m.into());
        let bad_signature = fail(200, r#"{"code":"openapi00001","msg":"签名错误:生成的签名不正确"}"#);
        assert_eq!(bad_signature, failed("SHEIN openapi00001: 签名错误:生成的签名不正确"));
        let other = fail(200, r#"{"code":"400","msg":"pageSize必须在1到50之间"}"#);
        assert_eq!(other, failed("SHEIN 400: pageSize必须在1到50之间"));
        assert!(matches!(fail(503, ""), CatalogError::Transient(_)));
        assert!(matches!(fail(200, "<html>"), CatalogError::Transient(_)));
        for stale in ["not json", r#"{"scroll":"x","ids":[]}"#] {
            assert!(matches!(parse(Some(stale)), Err(CatalogError::CursorExpired(_))));
        }
        let no_data = advance(Cursor::default(), &Step::Query, &ok(json!({})));
        assert!(matches!(no_data, Err(CatalogError::Failed(_)))); // not the end of the pass
    }
}
