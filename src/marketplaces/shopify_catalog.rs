//! Shopify's catalog: the GraphQL Admin `productVariants` connection in ID order, 250 variants a
//! call (cost 2 + 3 × 250 + 1 for `shop { currencyCode }`: 753 of the 1,000 a query may cost).
//! Each variant's inventory item is one unit, mapped at the connection's `settings.location_id`.
//!
//! Shopify limits by query cost, not calls: a catalog page takes 753 points from a bucket that
//! pushes (10 points each) share. Each reply's `extensions.cost` says what the bucket holds, so
//! the next page waits until the bucket holds a page and a reserve for pushes (`CatalogPage::
//! pause`), and a THROTTLED page only pauses the import (`CatalogError::Wait`), never the pushes.
//! The cursor is `{"after": endCursor, "first": page size}`; the size shrinks only for a bucket
//! smaller than a full page.

use super::catalog::{self, CatalogError, CatalogPage, RemoteListing};
use super::http::Reply;
use super::shopify::{graphql, Shopify};
use super::{Connector, PushRequest};
use serde_json::{json, Value};
use std::time::Duration;

/// Variants per call (the API's maximum).
pub const PAGE_SIZE: u64 = 250;
/// A query may cost at most this many points.
const MAX_QUERY_COST: u64 = 1_000;
/// What a page of `first` variants costs: the connection (2), each node with its product and
/// inventory item (3), and `shop` (1).
pub fn page_cost(first: u64) -> u64 {
    2 + 3 * first + 1
}

/// The share of the bucket an import leaves for pushes.
const PUSH_RESERVE_SHARE: f64 = 0.1;

const QUERY: &str = "query Catalog($first: Int!, $after: String) {
  shop { currencyCode }
  productVariants(first: $first, after: $after, sortKey: ID) {
    pageInfo { hasNextPage endCursor }
    nodes { id sku price inventoryQuantity inventoryItem { id } product { id title status } }
  }
}";

/// Where a pass goes on.
#[derive(Debug, PartialEq)]
struct Cursor {
    after: Option<String>,
    first: u64,
}

impl Cursor {
    fn read(cursor: Option<&str>) -> Result<Cursor, CatalogError> {
        let Some(text) = cursor.filter(|c| !c.is_empty()) else {
            return Ok(Cursor {
                after: None,
                first: PAGE_SIZE,
            });
        };
        let v: Value = serde_json::from_str(text)
            .map_err(|_| CatalogError::CursorExpired("the stored Shopify cursor is not readable".into()))?;
        Ok(Cursor {
            after: v.get("after").and_then(catalog::text_ref).map(str::to_string),
            first: v
                .get("first")
                .and_then(Value::as_u64)
                .unwrap_or(PAGE_SIZE)
                .clamp(1, PAGE_SIZE),
        })
    }

    fn write(&self) -> String {
        json!({"after": self.after, "first": self.first}).to_string()
    }
}

/// One step of the pass from `cursor` (None: a new pass).
pub fn page(agent: &ureq::Agent, req: &PushRequest, cursor: Option<&str>) -> Result<CatalogPage, CatalogError> {
    let location = match req.connection_settings.get("location_id") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(CatalogError::Failed(
                "the shopify connection has no settings.location_id (the location whose stock EGDC syncs)".into(),
            ))
        }
    };
    let at = Cursor::read(cursor)?;
    let reply =
        graphql(agent, req, QUERY, json!({"first": at.first, "after": at.after})).map_err(CatalogError::Transient)?;
    let shop = req.credentials.identifier("shop").unwrap_or_default();
    parse(&reply, &at, &location, &shop)
}

/// The bucket as a reply reports it: (maximum, available, restore per second).
fn bucket(v: &Value) -> Option<(f64, f64, f64)> {
    let s = v.pointer("/extensions/cost/throttleStatus")?;
    let f = |k: &str| s.get(k).and_then(Value::as_f64);
    Some((f("maximumAvailable")?, f("currentlyAvailable")?, f("restoreRate")?))
}

/// The page size a bucket of `max` points allows with the reserve left.
fn fitting_first(max: f64) -> u64 {
    let room = (max * (1.0 - PUSH_RESERVE_SHARE)).min(MAX_QUERY_COST as f64) - 3.0;
    ((room / 3.0).floor().max(1.0) as u64).min(PAGE_SIZE)
}

/// How long until the bucket holds `cost` points and the reserve for pushes.
fn wait_for(cost: u64, (max, available, rate): (f64, f64, f64)) -> Option<Duration> {
    let need = (cost as f64 + max * PUSH_RESERVE_SHARE).min(max);
    (need > available && rate > 0.0).then(|| Duration::from_secs_f64(((need - available) / rate).min(60.0)))
}

/// A reply as a page, or what its failure means.
fn parse(reply: &Reply, at: &Cursor, location: &str, shop: &str) -> Result<CatalogPage, CatalogError> {
    if reply.status != 200 {
        return Err(catalog::failure(reply));
    }
    let v = reply
        .json()
        .ok_or_else(|| CatalogError::Transient("Shopify answered with a body that is not JSON".into()))?;
    let status = bucket(&v);
    if let Some(first) = v.pointer("/errors/0") {
        let code = first.pointer("/extensions/code").and_then(Value::as_str);
        let message = first.get("message").and_then(Value::as_str).unwrap_or("GraphQL error");
        return Err(match (code, status) {
            (Some("THROTTLED"), Some(b)) => {
                CatalogError::Wait(wait_for(page_cost(at.first), b).unwrap_or(Duration::from_secs(1)))
            }
            (Some("THROTTLED"), None) => CatalogError::Wait(Duration::from_secs(1)),
            (Some("MAX_COST_EXCEEDED"), _) if at.first > 1 => CatalogError::Failed(format!(
                "Shopify refused a page of {} variants as too costly: {message}",
                at.first
            )),
            _ if at.after.is_some() && message.to_ascii_lowercase().contains("cursor") => {
                CatalogError::CursorExpired(super::http::truncate(message, 300))
            }
            _ => CatalogError::Failed(super::http::truncate(&format!("Shopify GraphQL error: {message}"), 500)),
        });
    }
    let conn = v
        .pointer("/data/productVariants")
        .filter(|c| c.is_object())
        .ok_or_else(|| CatalogError::Failed("Shopify's productVariants answered without data".into()))?;
    let currency = v.pointer("/data/shop/currencyCode").and_then(catalog::text_ref);
    let nodes: &[Value] = conn.get("nodes").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let more = conn.pointer("/pageInfo/hasNextPage").and_then(Value::as_bool) == Some(true);
    let end = conn.pointer("/pageInfo/endCursor").and_then(catalog::text_ref);
    let next = match (more, end) {
        (true, Some(end)) => Some(Cursor {
            after: Some(end.to_string()),
            first: status.map_or(at.first, |(max, _, _)| fitting_first(max)),
        }),
        (true, None) => {
            return Err(CatalogError::Failed(
                "Shopify said more variants follow but gave no cursor".into(),
            ))
        }
        (false, _) => None,
    };
    let pause = match (&next, status) {
        (Some(n), Some(b)) => wait_for(page_cost(n.first), b),
        _ => None,
    };
    Ok(CatalogPage {
        listings: nodes.iter().filter_map(|n| unit(n, location, currency, shop)).collect(),
        next: next.map(|n| n.write()),
        total: None,
        discovered: nodes.len() as i64,
        calls: 1,
        pause,
    })
}

/// The number at the end of a gid (`gid://shopify/InventoryItem/123` → `123`).
fn gid_number(v: Option<&Value>) -> Option<String> {
    let s = catalog::text(v)?;
    let tail = s.rsplit('/').next()?.to_string();
    (!tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit())).then_some(tail)
}

/// A variant's unit: its inventory item at the connection's location.
fn unit(node: &Value, location: &str, currency: Option<&str>, shop: &str) -> Option<RemoteListing> {
    let item = gid_number(node.pointer("/inventoryItem/id"))?;
    let variant = gid_number(node.get("id"));
    let product = node.get("product");
    let product_id = gid_number(product.and_then(|p| p.get("id")));
    let as_number = |s: &str| s.parse::<u64>().map_or(json!(s), Value::from);
    let mut settings = json!({ "location_id": as_number(location) });
    // the variant and product a price is written to, so a linked listing needs no lookup
    if let (Some(v), Some(p)) = (&variant, &product_id) {
        settings["variant_id"] = as_number(v);
        settings["product_id"] = as_number(p);
    }
    let url = match (&product_id, &variant) {
        (Some(p), Some(v)) if !shop.is_empty() => Some(format!("https://{shop}/admin/products/{p}/variants/{v}")),
        _ => None,
    };
    let listing = RemoteListing {
        external_id: item,
        settings,
        variation: String::new(), // inventory items are unique in the shop
        seller_sku: catalog::text(node.get("sku")),
        title: product.and_then(|p| catalog::text(p.get("title"))),
        price: catalog::price(node.get("price")),
        currency: currency.map(str::to_string),
        stock: node.get("inventoryQuantity").and_then(Value::as_i64),
        status: product.and_then(|p| catalog::text(p.get("status"))),
        url,
        raw: catalog::bounded_raw(node.clone()),
    };
    Shopify
        .check_listing(&listing.external_id, &listing.settings)
        .is_ok()
        .then_some(listing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn node(variant: u64, item: u64, sku: &str) -> Value {
        json!({"id": format!("gid://shopify/ProductVariant/{variant}"), "sku": sku, "price": "19.99",
               "inventoryQuantity": 7, "inventoryItem": {"id": format!("gid://shopify/InventoryItem/{item}")},
               "product": {"id": "gid://shopify/Product/5", "title": "Tenis", "status": "ACTIVE"}})
    }

    fn reply(nodes: Value, more: bool, available: f64) -> Reply {
        let body = json!({"data": {"shop": {"currencyCode": "MXN"},
                                   "productVariants": {"pageInfo": {"hasNextPage": more, "endCursor": "eyJsYXN0X2lkIjo5fQ=="},
                                                       "nodes": nodes}},
                          "extensions": {"cost": {"requestedQueryCost": 753, "actualQueryCost": 11,
                                                  "throttleStatus": {"maximumAvailable": 2000.0,
                                                                     "currentlyAvailable": available, "restoreRate": 100.0}}}});
        Reply::new(200, body.to_string())
    }

    fn start() -> Cursor {
        Cursor::read(None).expect("a new pass")
    }

    #[test]
    fn a_page_reads_every_variant_as_its_inventory_item_at_the_location() {
        let r = reply(json!([node(1, 11, "TEN-27"), node(2, 12, "")]), true, 2000.0);
        let page = parse(&r, &start(), "905684977", "acme.myshopify.com").expect("page");
        assert_eq!(page.listings.len(), 2);
        let a = &page.listings[0];
        assert_eq!(a.external_id, "11");
        assert_eq!(
            a.settings,
            json!({"location_id": 905684977, "variant_id": 1, "product_id": 5})
        );
        assert_eq!(a.seller_sku.as_deref(), Some("TEN-27"));
        assert_eq!(a.price, rust_decimal::Decimal::from_str("19.99").ok());
        assert_eq!(a.currency.as_deref(), Some("MXN"));
        assert_eq!(a.stock, Some(7));
        assert_eq!(a.status.as_deref(), Some("ACTIVE"));
        assert_eq!(
            a.url.as_deref(),
            Some("https://acme.myshopify.com/admin/products/5/variants/1")
        );
        assert_eq!(page.listings[1].seller_sku, None, "an empty SKU is no SKU");
        let next = Cursor::read(page.next.as_deref()).expect("cursor");
        assert_eq!(next.after.as_deref(), Some("eyJsYXN0X2lkIjo5fQ=="));
        assert_eq!(next.first, PAGE_SIZE);
        // a full bucket holds the next page and the reserve
        assert_eq!(page.pause, None);
    }

    #[test]
    fn the_next_page_waits_for_the_bucket_to_hold_it_and_the_reserve() {
        let r = reply(json!([node(1, 11, "A")]), true, 500.0);
        let page = parse(&r, &start(), "1", "s").expect("page");
        // 753 + 200 reserve - 500 available at 100 a second
        assert_eq!(page.pause, Some(Duration::from_secs_f64(4.53)));
        let last = parse(&reply(json!([node(1, 11, "A")]), false, 0.0), &start(), "1", "s").expect("page");
        assert_eq!((last.next, last.pause), (None, None), "the last page waits for nothing");
    }

    #[test]
    fn throttled_pauses_the_import_and_a_small_bucket_shrinks_the_page() {
        let body = json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
                          "extensions": {"cost": {"requestedQueryCost": 753, "actualQueryCost": null,
                                                  "throttleStatus": {"maximumAvailable": 2000.0,
                                                                     "currentlyAvailable": 53.0, "restoreRate": 100.0}}}});
        match parse(&Reply::new(200, body.to_string()), &start(), "1", "s") {
            Err(CatalogError::Wait(d)) => assert_eq!(d, Duration::from_secs(9)),
            other => panic!("{other:?}"),
        }
        assert_eq!(fitting_first(2000.0), PAGE_SIZE);
        assert_eq!(fitting_first(1000.0), 299.min(PAGE_SIZE));
        assert_eq!(fitting_first(500.0), 149);
        assert!(page_cost(fitting_first(500.0)) <= 450 + 1);
    }

    #[test]
    fn errors_say_what_they_mean() {
        let gql = |msg: &str| {
            Reply::new(
                200,
                json!({"errors": [{"message": msg, "extensions": {"code": "BAD_REQUEST"}}]}).to_string(),
            )
        };
        let later = Cursor {
            after: Some("x".into()),
            first: 250,
        };
        assert!(matches!(
            parse(&gql("Invalid cursor for current pagination sort: x"), &later, "1", "s"),
            Err(CatalogError::CursorExpired(_))
        ));
        assert!(matches!(
            parse(
                &gql("Cursor-based pagination is limited to 25000 objects"),
                &start(),
                "1",
                "s"
            ),
            Err(CatalogError::Failed(_))
        ));
        let unauthorized = Reply::new(401, r#"{"errors":"[API] Invalid API key or access token"}"#);
        assert!(matches!(
            parse(&unauthorized, &start(), "1", "s"),
            Err(CatalogError::Unauthorized(_))
        ));
        assert!(matches!(
            parse(&Reply::new(200, "<html>"), &start(), "1", "s"),
            Err(CatalogError::Transient(_))
        ));
        // a variant whose inventory item is not a Shopify id is no unit
        let odd = reply(
            json!([{"id": "x", "inventoryItem": {"id": "gid://shopify/InventoryItem/abc"}}]),
            false,
            2000.0,
        );
        assert!(parse(&odd, &start(), "1", "s").expect("page").listings.is_empty());
        assert!(Cursor::read(Some("not json")).is_err());
    }
}
