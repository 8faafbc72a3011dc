//! MercadoLibre's catalog: the seller's item ids by scan search (100 a call, a scroll id that
//! expires after 5 minutes), then their details 20 a call (`GET /items?ids=`, only the fields
//! used, variations' attributes included). One call per step, so an import takes one request
//! at a time from the connection's budget; the cursor carries the scroll id and the ids still
//! waiting for their details. Each item without variations is one unit; each variation is one
//! (`{"variation_id": ..}`). The seller's SKU is the `SELLER_SKU` attribute, else the older
//! `seller_custom_field`: an item has no top-level `seller_sku`.

use super::catalog::{self, CatalogError, CatalogPage, RemoteListing};
use super::http::{self, Reply};
use super::{Connector, PushRequest};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Ids a scan search returns per call (its maximum).
pub const SCAN_LIMIT: usize = 100;
/// Ids per details call (`GET /items?ids=`).
const DETAILS: usize = 20;
const FIELDS: &str =
    "id,title,price,currency_id,available_quantity,status,permalink,attributes,seller_custom_field,variations";

/// Where a pass stands: the last scroll id, and the ids it returned still to be read.
#[derive(Default, Serialize, Deserialize)]
struct Cursor {
    scroll: Option<String>,
    ids: Vec<String>,
}

fn call(agent: &ureq::Agent, req: &PushRequest, path: &str) -> Result<Reply, CatalogError> {
    http::read(
        agent
            .get(format!("{}{path}", req.base_url))
            .header("authorization", format!("Bearer {}", req.access_token))
            .call(),
    )
    .map_err(|e| CatalogError::Transient(e.0))
}

fn json_of(reply: &Reply) -> Result<Value, CatalogError> {
    reply
        .json()
        .ok_or_else(|| CatalogError::Failed("MercadoLibre answered with a body that is not JSON".into()))
}

fn encode(c: &Cursor) -> Option<String> {
    serde_json::to_string(c).ok()
}

/// One step of the pass from `cursor`: details of the next 20 ids waiting, else the next scan.
pub fn page(agent: &ureq::Agent, req: &PushRequest, cursor: Option<&str>) -> Result<CatalogPage, CatalogError> {
    let mut at: Cursor = match cursor {
        None => Cursor::default(),
        Some(c) => serde_json::from_str(c)
            .map_err(|_| CatalogError::CursorExpired("the stored cursor is not one of this version".into()))?,
    };
    if !at.ids.is_empty() {
        let rest = at.ids.split_off(at.ids.len().min(DETAILS));
        let listings = details(agent, req, &at.ids)?;
        at.ids = rest;
        return Ok(CatalogPage {
            listings,
            next: encode(&at),
            calls: 1,
            ..Default::default()
        });
    }
    scan(agent, req, at.scroll.as_deref())
}

fn scan(agent: &ureq::Agent, req: &PushRequest, scroll: Option<&str>) -> Result<CatalogPage, CatalogError> {
    let user = req
        .credentials
        .identifier("user_id")
        .filter(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| CatalogError::Failed("the connection has no numeric user_id".into()))?;
    let mut path = format!("/users/{user}/items/search?search_type=scan&limit={SCAN_LIMIT}");
    if let Some(s) = scroll {
        path.push_str(&format!("&scroll_id={}", catalog::query_value(s)));
    }
    let reply = call(agent, req, &path)?;
    if reply.status == 400 && scroll.is_some() && reply.body.to_ascii_lowercase().contains("scroll") {
        return Err(CatalogError::CursorExpired(http::error_text(&reply)));
    }
    if !(200..300).contains(&reply.status) {
        return Err(catalog::failure(&reply));
    }
    let found = json_of(&reply)?;
    let ids: Vec<String> = found
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| CatalogError::Failed("the scan search answered without results".into()))?
        .iter()
        .filter_map(|v| catalog::text(Some(v)))
        .collect();
    let mut page = CatalogPage {
        total: found.pointer("/paging/total").and_then(Value::as_i64),
        discovered: ids.len() as i64,
        calls: 1,
        ..Default::default()
    };
    if ids.is_empty() {
        return Ok(page); // the pass is over
    }
    let scroll = found
        .get("scroll_id")
        .and_then(catalog::text_ref)
        .ok_or_else(|| CatalogError::Failed("the scan search answered without a scroll_id".into()))?;
    page.next = encode(&Cursor {
        scroll: Some(scroll.to_string()),
        ids,
    });
    Ok(page)
}

/// The units of up to 20 items, in one call; an item gone since the search is not listed.
fn details(agent: &ureq::Agent, req: &PushRequest, ids: &[String]) -> Result<Vec<RemoteListing>, CatalogError> {
    let path = format!(
        "/items?ids={}&attributes={FIELDS}&include_attributes=all",
        ids.iter()
            .map(|i| catalog::query_value(i))
            .collect::<Vec<_>>()
            .join(",")
    );
    let reply = call(agent, req, &path)?;
    if !(200..300).contains(&reply.status) {
        return Err(catalog::failure(&reply));
    }
    Ok(json_of(&reply)?
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry.get("code").and_then(Value::as_i64) == Some(200))
        .filter_map(|entry| entry.get("body"))
        .flat_map(units)
        .collect())
}

/// The `SELLER_SKU` attribute's value, else `seller_custom_field`.
fn seller_sku(v: &Value) -> Option<String> {
    v.get("attributes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a.get("id").and_then(Value::as_str) == Some("SELLER_SKU"))
        .and_then(|a| catalog::text(a.get("value_name")))
        .or_else(|| catalog::text(v.get("seller_custom_field")))
}

/// An item's units: itself, or each of its variations.
pub fn units(item: &Value) -> Vec<RemoteListing> {
    let Some(id) = catalog::text(item.get("id")) else {
        return Vec::new();
    };
    let unit = |v: &Value, variation: Option<String>| RemoteListing {
        external_id: id.clone(),
        settings: match &variation {
            Some(var) => json!({"variation_id": var.parse::<i64>().map(Value::from).unwrap_or(json!(var))}),
            None => json!({}),
        },
        variation: variation.clone().unwrap_or_default(),
        seller_sku: seller_sku(v),
        title: catalog::text(item.get("title")),
        price: catalog::price(v.get("price")).or_else(|| catalog::price(item.get("price"))),
        currency: catalog::text(item.get("currency_id")),
        stock: v.get("available_quantity").and_then(Value::as_i64),
        status: catalog::text(item.get("status")),
        url: catalog::text(item.get("permalink")),
        raw: catalog::bounded_raw(match &variation {
            Some(_) => json!({"item_id": id, "variation": v}),
            None => {
                let mut r = item.clone();
                if let Some(o) = r.as_object_mut() {
                    o.remove("variations");
                }
                r
            }
        }),
    };
    let all = match item.get("variations").and_then(Value::as_array) {
        Some(vars) if !vars.is_empty() => vars
            .iter()
            .filter_map(|v| catalog::text(v.get("id")).map(|vid| unit(v, Some(vid))))
            .collect(),
        _ => vec![unit(item, None)],
    };
    // only what map_product takes (link_by_sku maps every unit it links)
    all.into_iter()
        .filter(|u| {
            super::mercadolibre::MercadoLibre
                .check_listing(&u.external_id, &u.settings)
                .is_ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_become_units_with_their_seller_skus() {
        let plain = json!({"id": "MLM1", "title": "Tenis", "price": 1299.5, "currency_id": "MXN", "available_quantity": 4,
                           "status": "active", "permalink": "https://x/MLM1",
                           "attributes": [{"id": "BRAND", "value_name": "X"}, {"id": "SELLER_SKU", "value_name": "TEN-27"}]});
        let u = units(&plain);
        assert_eq!(u.len(), 1);
        assert_eq!(
            (
                u[0].external_id.as_str(),
                u[0].variation.as_str(),
                u[0].seller_sku.as_deref()
            ),
            ("MLM1", "", Some("TEN-27"))
        );
        assert_eq!(u[0].settings, json!({}));
        assert_eq!(u[0].price.map(|p| p.to_string()), Some("1299.5".into()));
        assert_eq!(u[0].stock, Some(4));
        let older = json!({"id": "MLM2", "seller_custom_field": "OLD-1", "attributes": []});
        assert_eq!(units(&older)[0].seller_sku.as_deref(), Some("OLD-1"));
        let none = json!({"id": "MLM3", "seller_sku": "NOT-HERE"});
        assert_eq!(units(&none)[0].seller_sku, None, "an item has no top-level seller_sku");
        let varied = json!({"id": "MLM4", "price": 10, "variations": [
            {"id": 11, "price": 12.5, "available_quantity": 1, "attributes": [{"id": "SELLER_SKU", "value_name": "B-25"}]},
            {"id": 12, "available_quantity": 2, "attributes": []}]});
        let u = units(&varied);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].settings, json!({"variation_id": 11}));
        assert_eq!(
            (u[0].variation.as_str(), u[0].seller_sku.as_deref()),
            ("11", Some("B-25"))
        );
        assert_eq!(u[0].price.map(|p| p.to_string()), Some("12.5".into()));
        assert_eq!((u[1].seller_sku.as_deref(), u[1].stock), (None, Some(2)));
        assert_eq!(u[1].price.map(|p| p.to_string()), Some("10".into()), "the item's price");
        assert!(units(&json!({"title": "no id"})).is_empty());
    }
}
