//! Shopify prices: `productVariantsBulkUpdate(productId:, variants: [{id, price}],
//! allowPartialUpdates: true)`, one aliased mutation per product and every product of the batch
//! in one document (10 points each). A price belongs to a variant, a listing is an inventory
//! item: the variant and its product are looked up once (`inventoryItem { variants(first: 2) }`
//! from 2026-01, `inventoryItem { variant }` before; every lookup of the batch in one aliased
//! query) and kept in the listing's settings (`variant_id`, `product_id`). Prices are decimal
//! strings with two decimals in the shop's currency.

use super::http::{self, elapsed_ms};
use super::shopify::{api_version, call_failure, gid, graphql};
use super::{PushKind, PushRequest, PushResult};
use rust_decimal::RoundingStrategy;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Instant;

/// Price writes one push_prices call takes (variants of any products, 250 per product).
pub const MAX_PRICES: usize = 250;

/// The number at the end of an id given as a number, a numeric string or a gid.
fn number(v: Option<&Value>) -> Option<String> {
    let text = match v? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let tail = text.rsplit('/').next()?.to_string();
    (!tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())).then_some(tail)
}

/// A listing's variant and product: kept in its settings, or to be looked up.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Target {
    variant: String,
    product: String,
    /// Found by this call: the listing keeps it.
    learned: bool,
}

fn kept(req: &PushRequest) -> Option<Target> {
    Some(Target {
        variant: number(req.listing_settings.get("variant_id"))?,
        product: number(req.listing_settings.get("product_id"))?,
        learned: false,
    })
}

fn permanent(error: String) -> PushKind {
    PushKind::Permanent {
        error: http::truncate(&error, 500),
    }
}

/// A document with one aliased `inventoryItem` per request, selecting `fields` of its variant(s).
fn items_query(reqs: &[&PushRequest], modern: bool, fields: &str) -> String {
    let body = if modern {
        format!("variants(first: 2) {{ nodes {{ {fields} }} }}")
    } else {
        format!("variant {{ {fields} }}")
    };
    let items: Vec<String> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            // ids are checked digits (check_listing), safe inside the string literal
            format!(
                "i{i}: inventoryItem(id: \"{}\") {{ {body} }}",
                gid("InventoryItem", &r.external_id)
            )
        })
        .collect();
    format!("query VariantsOfItems {{ {} }}", items.join(" "))
}

/// The lookup document: the variant and product of each request's inventory item.
fn lookup_query(reqs: &[&PushRequest], modern: bool) -> String {
    items_query(reqs, modern, "id product { id }")
}

/// The variants answered for request `i` (None: the inventory item is unknown).
fn variants_of(data: &Value, i: usize) -> Option<Vec<&Value>> {
    let node = data.get(format!("i{i}")).filter(|n| !n.is_null())?;
    Some(match node.get("variants") {
        Some(c) => c
            .get("nodes")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        None => node.get("variant").filter(|v| !v.is_null()).into_iter().collect(),
    })
}

/// What one lookup answer says about request `i`.
pub(crate) fn found(data: &Value, i: usize, item: &str) -> Result<Target, PushKind> {
    let variants = variants_of(data, i).unwrap_or_default();
    match variants.as_slice() {
        [one] => match (number(one.get("id")), number(one.pointer("/product/id"))) {
            (Some(variant), Some(product)) => Ok(Target {
                variant,
                product,
                learned: true,
            }),
            _ => Err(PushKind::Retry {
                error: "Shopify's variant lookup answered without ids".into(),
                retry_after: None,
            }),
        },
        [] => Err(permanent(format!(
            "Shopify has no variant for inventory item {item} (deleted, or not this shop's)"
        ))),
        _ => Err(permanent(format!(
            "inventory item {item} belongs to several variants: set variant_id and product_id in the listing's settings"
        ))),
    }
}

/// The price of each request's variant, read in one query (None: no single variant).
pub fn read(agent: &ureq::Agent, reqs: &[&PushRequest]) -> Vec<Result<Option<rust_decimal::Decimal>, String>> {
    let Some(first) = reqs.first() else {
        return Vec::new();
    };
    let modern = api_version(first).as_str() >= "2026-01";
    let all = |e: String| reqs.iter().map(|_| Err(e.clone())).collect();
    let reply = match graphql(agent, first, &items_query(reqs, modern, "price"), json!({})) {
        Ok(r) => r,
        Err(e) => return all(e),
    };
    if let Some(kind) = call_failure(&reply) {
        return all(kind.error().unwrap_or("Shopify refused the price read").to_string());
    }
    let data = reply.json().and_then(|v| v.get("data").cloned()).unwrap_or(Value::Null);
    (0..reqs.len())
        .map(|i| match variants_of(&data, i).as_deref() {
            Some([one]) => Ok(super::decimal_of(one.get("price"))),
            _ => Ok(None),
        })
        .collect()
}

/// Looks up the variants of `reqs` in one query: a target or a failure each.
fn look_up(agent: &ureq::Agent, reqs: &[&PushRequest]) -> (Vec<Result<Target, PushKind>>, Option<u16>) {
    let all = |kind: PushKind| reqs.iter().map(|_| Err(kind.clone())).collect();
    let modern = api_version(reqs[0]).as_str() >= "2026-01";
    let reply = match graphql(agent, reqs[0], &lookup_query(reqs, modern), json!({})) {
        Ok(r) => r,
        Err(e) => {
            let kind = PushKind::Retry {
                error: e,
                retry_after: None,
            };
            return (all(kind), None);
        }
    };
    if let Some(kind) = call_failure(&reply) {
        return (all(kind), Some(reply.status));
    }
    let data = reply.json().and_then(|v| v.get("data").cloned()).unwrap_or(Value::Null);
    let answers = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| found(&data, i, &r.external_id))
        .collect();
    (answers, Some(reply.status))
}

/// The amount as Shopify's Money input: a decimal string with two decimals.
pub(crate) fn money(amount: rust_decimal::Decimal) -> String {
    let mut d = amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    d.rescale(2);
    d.to_string()
}

/// A product's price writes: (request index, its variant, the price text).
type ProductWrites<'a> = (String, Vec<(usize, &'a Target, String)>);

const PAYLOAD: &str = "productVariants { id price } userErrors { field message code }";

/// The mutation document and its variables: one aliased update per product.
fn mutation(products: &[ProductWrites]) -> (String, Value) {
    let mut decls = Vec::new();
    let mut fields = Vec::new();
    let mut vars = Map::new();
    for (k, (product, members)) in products.iter().enumerate() {
        decls.push(format!("$p{k}: ID!, $v{k}: [ProductVariantsBulkInput!]!"));
        fields.push(format!(
            "u{k}: productVariantsBulkUpdate(productId: $p{k}, variants: $v{k}, allowPartialUpdates: true) {{ {PAYLOAD} }}"
        ));
        vars.insert(format!("p{k}"), json!(gid("Product", product)));
        let variants: Vec<Value> = members
            .iter()
            .map(|(_, t, price)| json!({"id": gid("ProductVariant", &t.variant), "price": price}))
            .collect();
        vars.insert(format!("v{k}"), Value::Array(variants));
    }
    let doc = format!("mutation SetPrices({}) {{ {} }}", decls.join(", "), fields.join(" "));
    (doc, Value::Object(vars))
}

/// A product's answer: per member, applied or why not.
pub(crate) fn product_answer(payload: &Value, members: usize) -> Vec<PushKind> {
    if payload.is_null() {
        return vec![
            PushKind::Retry {
                error: "Shopify answered no payload for the product's prices".into(),
                retry_after: None,
            };
            members
        ];
    }
    let mut kinds = vec![PushKind::Applied { remote: None }; members];
    let errors = payload
        .get("userErrors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for e in errors {
        let text = format!(
            "Shopify refused the price: {} ({})",
            e.get("message").and_then(Value::as_str).unwrap_or("userError"),
            e.get("code").and_then(Value::as_str).unwrap_or("no code")
        );
        let field = e.get("field").and_then(Value::as_array).cloned().unwrap_or_default();
        let index = match field.first().and_then(Value::as_str) {
            Some("variants") => field.get(1).and_then(|v| match v {
                Value::String(s) => s.parse::<usize>().ok(),
                other => other.as_u64().map(|n| n as usize),
            }),
            _ => None,
        };
        match index {
            Some(i) if i < members => kinds[i] = permanent(text),
            // the product itself (or an error naming no variant): every member
            _ => kinds.iter_mut().for_each(|k| *k = permanent(text.clone())),
        }
    }
    kinds
}

/// One result per request, in order.
pub fn push(agent: &ureq::Agent, reqs: &[PushRequest]) -> Vec<PushResult> {
    let start = Instant::now();
    let mut kinds: Vec<Option<PushKind>> = vec![None; reqs.len()];
    let mut targets: Vec<Option<Target>> = reqs.iter().map(kept).collect();
    let mut status = None;
    for (i, r) in reqs.iter().enumerate() {
        if r.price.is_none() {
            kinds[i] = Some(permanent("no price to write".into()));
        } else if i >= MAX_PRICES {
            kinds[i] = Some(PushKind::Retry {
                error: "more prices than one call carries".into(),
                retry_after: None,
            });
        }
    }
    let unknown: Vec<usize> = (0..reqs.len())
        .filter(|i| kinds[*i].is_none() && targets[*i].is_none())
        .collect();
    if !unknown.is_empty() {
        let asked: Vec<&PushRequest> = unknown.iter().map(|i| &reqs[*i]).collect();
        let (answers, s) = look_up(agent, &asked);
        status = s;
        for (i, a) in unknown.into_iter().zip(answers) {
            match a {
                Ok(t) => targets[i] = Some(t),
                Err(k) => kinds[i] = Some(k),
            }
        }
    }
    let mut by_product: BTreeMap<String, Vec<(usize, &Target, String)>> = BTreeMap::new();
    for (i, r) in reqs.iter().enumerate() {
        if let (None, Some(t), Some(p)) = (&kinds[i], &targets[i], &r.price) {
            by_product
                .entry(t.product.clone())
                .or_default()
                .push((i, t, money(p.amount)));
        }
    }
    let products: Vec<ProductWrites> = by_product.into_iter().collect();
    if !products.is_empty() {
        let (doc, vars) = mutation(&products);
        let first = products[0].1[0].0;
        match graphql(agent, &reqs[first], &doc, vars) {
            Err(e) => {
                for (_, members) in &products {
                    for (i, ..) in members {
                        kinds[*i] = Some(PushKind::Retry {
                            error: e.clone(),
                            retry_after: None,
                        });
                    }
                }
            }
            Ok(reply) => {
                status = Some(reply.status);
                let failed = call_failure(&reply);
                let data = reply.json().and_then(|v| v.get("data").cloned()).unwrap_or(Value::Null);
                for (k, (_, members)) in products.iter().enumerate() {
                    let answers = match &failed {
                        Some(kind) => vec![kind.clone(); members.len()],
                        None => product_answer(data.get(format!("u{k}")).unwrap_or(&Value::Null), members.len()),
                    };
                    for ((i, ..), kind) in members.iter().zip(answers) {
                        kinds[*i] = Some(kind);
                    }
                }
            }
        }
    }
    reqs.iter()
        .enumerate()
        .map(|(i, _)| {
            let kind = kinds[i].take().unwrap_or(PushKind::Retry {
                error: "no result".into(),
                retry_after: None,
            });
            let learned = targets[i].as_ref().and_then(|t| remember(t, &kind));
            PushResult {
                kind,
                http_status: status,
                latency_ms: elapsed_ms(start),
                learned,
            }
        })
        .collect()
}

/// What the listing keeps: a variant just found; or, when Shopify says the kept variant or
/// product does not exist (deleted, moved), nothing, so that the next attempt looks it up again.
fn remember(t: &Target, kind: &PushKind) -> Option<Map<String, Value>> {
    let gone = matches!(kind, PushKind::Permanent { error }
        if error.contains("PRODUCT_VARIANT_DOES_NOT_EXIST") || error.contains("PRODUCT_DOES_NOT_EXIST"));
    let ids = |v: Value, p: Value| {
        let mut m = Map::new();
        m.insert("variant_id".into(), v);
        m.insert("product_id".into(), p);
        Some(m)
    };
    let as_number = |s: &str| s.parse::<u64>().map_or(json!(s), Value::from);
    if gone {
        ids(Value::Null, Value::Null)
    } else if t.learned {
        ids(as_number(&t.variant), as_number(&t.product))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketplaces::{Credentials, PriceWrite};
    use std::str::FromStr;

    fn req(item: &str, settings: Value) -> PushRequest {
        PushRequest {
            base_url: "http://127.0.0.1:1".into(),
            external_id: item.into(),
            listing_settings: settings,
            quantity: 0,
            access_token: "t".into(),
            credentials: Credentials::default(),
            idempotency_key: "k".into(),
            last_known: None,
            connection_settings: json!({}),
            price: Some(PriceWrite {
                amount: rust_decimal::Decimal::from_str("19.9").unwrap(),
                currency: None,
                with_stock: false,
            }),
            read_price: false,
        }
    }

    #[test]
    fn a_variant_is_kept_or_looked_up_and_what_is_found_is_remembered() {
        let r = req(
            "11",
            json!({"location_id": 1, "variant_id": "gid://shopify/ProductVariant/4", "product_id": 5}),
        );
        assert_eq!(
            kept(&r),
            Some(Target {
                variant: "4".into(),
                product: "5".into(),
                learned: false
            })
        );
        assert_eq!(kept(&req("11", json!({"location_id": 1}))), None);
        let modern = json!({"i0": {"variants": {"nodes": [{"id": "gid://shopify/ProductVariant/4",
                                                           "product": {"id": "gid://shopify/Product/5"}}]}},
                            "i1": null,
                            "i2": {"variants": {"nodes": [{"id": "a"}, {"id": "b"}]}}});
        let t = found(&modern, 0, "11").unwrap();
        assert_eq!((t.variant.as_str(), t.product.as_str(), t.learned), ("4", "5", true));
        assert!(found(&modern, 1, "12")
            .unwrap_err()
            .error()
            .unwrap()
            .contains("no variant for inventory item 12"));
        assert!(found(&modern, 2, "13")
            .unwrap_err()
            .error()
            .unwrap()
            .contains("several variants"));
        let old = json!({"i0": {"variant": {"id": "gid://shopify/ProductVariant/4", "product": {"id": "gid://shopify/Product/5"}}}});
        assert_eq!(found(&old, 0, "11").unwrap().variant, "4");
        let applied = PushKind::Applied { remote: None };
        let learned = remember(&t, &applied).unwrap();
        assert_eq!(Value::Object(learned), json!({"variant_id": 4, "product_id": 5}));
        let gone = permanent(
            "Shopify refused the price: Product variant does not exist (PRODUCT_VARIANT_DOES_NOT_EXIST)".into(),
        );
        let kept_target = Target { learned: false, ..t };
        assert_eq!(
            Value::Object(remember(&kept_target, &gone).unwrap()),
            json!({"variant_id": null, "product_id": null})
        );
        assert_eq!(remember(&kept_target, &applied), None);
    }

    #[test]
    fn one_document_carries_every_product_and_errors_find_their_variant() {
        let a = Target {
            variant: "4".into(),
            product: "5".into(),
            learned: false,
        };
        let b = Target {
            variant: "7".into(),
            product: "6".into(),
            learned: false,
        };
        let (doc, vars) = mutation(&[
            (
                "5".into(),
                vec![(0, &a, money(rust_decimal::Decimal::from_str("19.9").unwrap()))],
            ),
            ("6".into(), vec![(1, &b, "1.00".into())]),
        ]);
        assert!(doc.starts_with("mutation SetPrices($p0: ID!, $v0: [ProductVariantsBulkInput!]!, $p1: ID!"));
        assert!(doc.contains("u1: productVariantsBulkUpdate(productId: $p1, variants: $v1, allowPartialUpdates: true)"));
        assert_eq!(
            vars,
            json!({"p0": "gid://shopify/Product/5", "v0": [{"id": "gid://shopify/ProductVariant/4", "price": "19.90"}],
                   "p1": "gid://shopify/Product/6", "v1": [{"id": "gid://shopify/ProductVariant/7", "price": "1.00"}]})
        );
        let payload = json!({"productVariants": [{"id": "x"}], "userErrors": [
            {"field": ["variants", "1", "price"], "message": "Price must be greater than or equal to 5", "code": "GREATER_THAN_OR_EQUAL_TO"}]});
        let kinds = product_answer(&payload, 2);
        assert_eq!(kinds[0], PushKind::Applied { remote: None });
        assert_eq!(
            kinds[1].error(),
            Some("Shopify refused the price: Price must be greater than or equal to 5 (GREATER_THAN_OR_EQUAL_TO)")
        );
        let whole = json!({"productVariants": null, "userErrors": [
            {"field": ["productId"], "message": "Product does not exist", "code": "PRODUCT_DOES_NOT_EXIST"}]});
        assert!(product_answer(&whole, 2)
            .iter()
            .all(|k| k.error().is_some_and(|e| e.contains("PRODUCT_DOES_NOT_EXIST"))));
        assert!(matches!(product_answer(&Value::Null, 1)[0], PushKind::Retry { .. }));
        assert_eq!(money(rust_decimal::Decimal::from_str("100").unwrap()), "100.00");
        assert_eq!(money(rust_decimal::Decimal::from_str("2.005").unwrap()), "2.01");
    }

    #[test]
    fn the_lookup_asks_each_item_once_by_api_version() {
        let a = req("11", json!({}));
        let b = req("gid://shopify/InventoryItem/12", json!({}));
        let q = lookup_query(&[&a, &b], true);
        assert_eq!(
            q,
            "query VariantsOfItems { i0: inventoryItem(id: \"gid://shopify/InventoryItem/11\") { variants(first: 2) { nodes { id product { id } } } } \
             i1: inventoryItem(id: \"gid://shopify/InventoryItem/12\") { variants(first: 2) { nodes { id product { id } } } } }"
        );
        assert!(lookup_query(&[&a], false).contains("{ variant { id product { id } } }"));
    }
}
