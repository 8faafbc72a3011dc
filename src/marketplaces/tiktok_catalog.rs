//! TikTok Shop's catalog: `POST /product/202309/products/search`, 100 products a call, signed and
//! authorized like every shop call, asking for every status (`{"status": "ALL"}`). One call per
//! step; the cursor is TikTok's own `next_page_token` (empty on the last page). Each SKU is one
//! unit, mapped by its id with `{"product_id", "warehouse_id"}` (its first warehouse).

use super::catalog::{self, CatalogError, CatalogPage, RemoteListing};
use super::http::Reply;
use super::tiktok::{classify, signed, TikTok};
use super::{Connector, PushKind, PushRequest};
use serde_json::{json, Value};

/// Products per call (the API's maximum).
pub const PAGE_SIZE: &str = "100";
const PATH: &str = "/product/202309/products/search";
/// TikTok's "invalid parameter" code; with a page token given, the token is what is invalid.
const INVALID_PARAMETER: i64 = 36_009_001;

/// One step of the pass from `cursor` (a page token; None: a new pass).
pub fn page(agent: &ureq::Agent, req: &PushRequest, cursor: Option<&str>) -> Result<CatalogPage, CatalogError> {
    let cursor = cursor.filter(|c| !c.is_empty());
    let mut query = vec![("page_size", PAGE_SIZE)];
    if let Some(token) = cursor {
        query.push(("page_token", token));
    }
    // every status: an import lists deactivated and draft products too
    let reply = signed(agent, req, PATH, &query, Some(&json!({"status": "ALL"}))).map_err(CatalogError::Transient)?;
    parse(&reply, cursor.is_some())
}

/// A products/search reply as a page, or what its failure means (`with_cursor`: a page token
/// was sent, so an invalid parameter is that token: the pass starts again).
pub fn parse(reply: &Reply, with_cursor: bool) -> Result<CatalogPage, CatalogError> {
    match classify(reply) {
        PushKind::Applied { .. } => {}
        PushKind::Throttled { error, retry_after } => return Err(CatalogError::Throttled { error, retry_after }),
        PushKind::Unauthorized { error } => return Err(CatalogError::Unauthorized(error)),
        PushKind::Retry { error, .. } => return Err(CatalogError::Transient(error)),
        PushKind::Permanent { error } => {
            let code = reply.json().and_then(|v| v.get("code").and_then(Value::as_i64));
            return Err(if with_cursor && code == Some(INVALID_PARAMETER) {
                CatalogError::CursorExpired(error)
            } else {
                CatalogError::Failed(error)
            });
        }
    }
    let v = reply.json().unwrap_or(Value::Null);
    let data = v
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| CatalogError::Failed("TikTok Shop's product search answered without data".into()))?;
    let products: &[Value] = data
        .get("products")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    Ok(CatalogPage {
        listings: products.iter().flat_map(units).collect(),
        next: data
            .get("next_page_token")
            .and_then(catalog::text_ref)
            .map(str::to_string),
        total: data.get("total_count").and_then(Value::as_i64),
        discovered: products.len() as i64,
        calls: 1,
        ..Default::default()
    })
}

/// A product's units: one per SKU that stocks a warehouse.
pub fn units(product: &Value) -> Vec<RemoteListing> {
    let Some(product_id) = catalog::text(product.get("id")) else {
        return Vec::new();
    };
    let skus = product.get("skus").and_then(Value::as_array).into_iter().flatten();
    skus.filter_map(|sku| {
        let id = catalog::text(sku.get("id"))?;
        // a SKU's stock is written per warehouse, so a SKU without any warehouse cannot be
        // mapped (`integ.map_product` needs one): it is not a unit
        let (warehouse, stock) = sku
            .get("inventory")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|w| Some((catalog::text(w.get("warehouse_id"))?, w.get("quantity"))))?;
        let price = sku.get("price");
        Some(RemoteListing {
            settings: json!({"product_id": product_id, "warehouse_id": warehouse}),
            variation: String::new(), // SKU ids are unique in the shop
            seller_sku: catalog::text(sku.get("seller_sku")),
            title: catalog::text(product.get("title")),
            price: catalog::price(price.and_then(|p| p.get("sale_price"))),
            currency: catalog::text(price.and_then(|p| p.get("currency"))),
            stock: stock.and_then(Value::as_i64),
            status: catalog::text(product.get("status")),
            url: None,
            raw: catalog::bounded_raw(json!({"product_id": product_id, "sku": sku})),
            external_id: id,
        })
    })
    // only what `integ.map_product` takes (ids of letters, digits, '-' or '_')
    .filter(|u| TikTok.check_listing(&u.external_id, &u.settings).is_ok())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn search_reply(next: &str, products: Value) -> Reply {
        let body = json!({"code": 0, "message": "Success", "request_id": "r1",
                          "data": {"total_count": 3, "next_page_token": next, "products": products}});
        Reply::new(200, body.to_string())
    }

    fn products() -> Value {
        json!([
            {"id": "1729000000000001", "title": "Tenis", "status": "ACTIVATE", "skus": [
                {"id": "1729000000000011", "seller_sku": "TEN-27",
                 "price": {"currency": "USD", "sale_price": "121.10", "tax_exclusive_price": "111.01"},
                 "inventory": [{"warehouse_id": "7068", "quantity": 999}, {"warehouse_id": "7069", "quantity": 1}]},
                {"id": "1729000000000012", "seller_sku": "",
                 "price": {"currency": "USD", "sale_price": "0.10"},
                 "inventory": [{"warehouse_id": "7068", "quantity": 0}]}]},
            {"id": "1729000000000002", "title": "Gorra", "status": "SELLER_DEACTIVATED", "skus": [
                {"id": "1729000000000021", "seller_sku": "GOR-1", "price": {"currency": "USD", "sale_price": "5"},
                 "inventory": []},
                {"id": "1729000000000022", "seller_sku": "GOR-2"}]}
        ])
    }

    #[test]
    fn skus_become_units() {
        let page = parse(&search_reply("b2Zm", products()), false).unwrap();
        assert_eq!((page.discovered, page.total, page.calls), (2, Some(3), 1));
        assert_eq!(page.next.as_deref(), Some("b2Zm"));
        let u = &page.listings;
        assert_eq!(u.len(), 2, "the SKUs without a warehouse are skipped");
        assert_eq!(u[0].external_id, "1729000000000011");
        assert_eq!(
            u[0].settings,
            json!({"product_id": "1729000000000001", "warehouse_id": "7068"})
        );
        assert!(TikTok.check_listing(&u[0].external_id, &u[0].settings).is_ok());
        assert_eq!(
            (u[0].variation.as_str(), u[0].seller_sku.as_deref()),
            ("", Some("TEN-27"))
        );
        assert_eq!(
            u[0].price.map(|p| p.to_string()),
            Some("121.10".into()),
            "exactly as written"
        );
        assert_eq!((u[0].currency.as_deref(), u[0].stock), (Some("USD"), Some(999)));
        assert_eq!(
            (u[0].title.as_deref(), u[0].status.as_deref()),
            (Some("Tenis"), Some("ACTIVATE"))
        );
        assert_eq!(u[0].url, None);
        assert_eq!(u[0].raw["product_id"], "1729000000000001");
        assert_eq!(u[0].raw["sku"]["id"], "1729000000000011");
        assert_eq!(
            (u[1].external_id.as_str(), u[1].seller_sku.as_deref()),
            ("1729000000000012", None)
        );
        assert_eq!(
            (u[1].price.map(|p| p.to_string()), u[1].stock),
            (Some("0.10".into()), Some(0))
        );
    }

    #[test]
    fn the_last_page_has_an_empty_token() {
        let last = parse(&search_reply("", products()), true).unwrap();
        assert_eq!((last.next, last.discovered), (None, 2));
        let empty = parse(&search_reply("", json!([])), false).unwrap();
        assert_eq!((empty.next, empty.listings.len(), empty.discovered), (None, 0, 0));
        let no_data = Reply::new(200, r#"{"code":0,"message":"Success","data":null}"#);
        assert!(matches!(parse(&no_data, false), Err(CatalogError::Failed(_))));
    }

    #[test]
    fn failures_are_classified() {
        let bad_token = r#"{"code":36009001,"message":"page_token is invalid.","data":null}"#;
        match parse(&Reply::new(200, bad_token), true) {
            Err(CatalogError::CursorExpired(e)) => assert_eq!(e, "TikTok Shop 36009001: page_token is invalid."),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&Reply::new(200, bad_token), false),
            Err(CatalogError::Failed(_))
        ));
        let mut throttled = Reply::new(429, r#"{"code":36009004,"message":"Too many requests."}"#);
        throttled.retry_after = Some(Duration::from_secs(2));
        assert!(matches!(
            parse(&throttled, true),
            Err(CatalogError::Throttled { retry_after: Some(d), .. }) if d == Duration::from_secs(2)
        ));
        for (status, code) in [(401, 105001), (401, 105002)] {
            let r = Reply::new(
                status,
                format!(r#"{{"code":{code},"message":"Access token is invalid."}}"#),
            );
            assert!(matches!(parse(&r, false), Err(CatalogError::Unauthorized(_))));
        }
        let other = Reply::new(200, r#"{"code":12052048,"message":"Product does not exist."}"#);
        match parse(&other, false) {
            Err(CatalogError::Failed(e)) => assert!(e.contains("Product does not exist."), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&Reply::new(503, ""), false),
            Err(CatalogError::Transient(_))
        ));
        assert!(matches!(
            parse(&Reply::new(200, "<html>"), false),
            Err(CatalogError::Transient(_))
        ));
    }
}
