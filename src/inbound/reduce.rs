//! What a stored delivery keeps once it is applied: only the fields processing read (ids,
//! lines, quantities, timestamps), in the marketplace's own shape, so customer names and
//! addresses are not kept for `integ.webhook_retention`. A reduced Shopify order still parses
//! as the same order.

use crate::marketplaces::{Credentials, Marketplace};
use serde_json::{json, Map, Value};

/// The reduced body of a delivery (`{}` when nothing in it was used or it cannot be read).
pub fn reduce(m: Marketplace, topic: Option<&str>, body: &[u8], creds: &Credentials) -> Vec<u8> {
    let kept = match m {
        Marketplace::Shein => shein(body, creds),
        _ => serde_json::from_slice::<Value>(body)
            .ok()
            .map(|v| keep(&v, &spec(m, topic.unwrap_or(""))))
            .unwrap_or_else(|| json!({})),
    };
    kept.to_string().into_bytes()
}

/// The fields read, as a tree: `true` keeps a value whole, an object keeps those keys, a
/// one-element array applies its element to every item of a list.
fn spec(m: Marketplace, topic: &str) -> Value {
    match (m, topic) {
        (Marketplace::Shopify, t) if t.starts_with("orders/") => {
            json!({"id": true, "cancelled_at": true, "updated_at": true,
                   "line_items": [{"id": true, "sku": true, "quantity": true}]})
        }
        (Marketplace::Shopify, "inventory_levels/update") => {
            json!({"inventory_item_id": true, "location_id": true, "available": true, "updated_at": true})
        }
        (Marketplace::Shopify, "customers/data_request" | "customers/redact" | "shop/redact") => {
            json!({"shop_id": true, "shop_domain": true, "customer": {"id": true},
                   "orders_to_redact": true, "orders_requested": true, "data_request": {"id": true}})
        }
        (Marketplace::MercadoLibre, _) => {
            json!({"_id": true, "resource": true, "user_id": true, "topic": true, "application_id": true,
                   "sent": true})
        }
        (Marketplace::TikTok, _) => json!({"type": true, "shop_id": true, "tts_notification_id": true,
                                          "timestamp": true,
                                          "data": {"order_id": true, "order_status": true, "update_time": true}}),
        // app/uninstalled and topics not applied: nothing was read
        _ => json!({}),
    }
}

fn keep(v: &Value, spec: &Value) -> Value {
    match (v, spec) {
        (_, Value::Bool(true)) => v.clone(),
        (Value::Object(o), Value::Object(s)) => Value::Object(
            s.iter()
                .filter_map(|(k, sub)| o.get(k).map(|x| (k.clone(), keep(x, sub))))
                .collect::<Map<_, _>>(),
        ),
        (Value::Array(items), Value::Array(s)) => match s.first() {
            Some(each) => Value::Array(items.iter().map(|x| keep(x, each)).collect()),
            None => Value::Array(Vec::new()),
        },
        _ => Value::Null,
    }
}

/// A SHEIN callback is an encrypted form: what is kept is the decrypted event's used fields.
fn shein(body: &[u8], creds: &Credentials) -> Value {
    let event = creds
        .secret("app_secret_key")
        .and_then(|k| crate::marketplaces::events::shein_event(body, k).ok());
    let spec = json!({"eventCode": true, "supplierId": true, "orderNo": true, "orderStatus": true,
                      "orderGoodsInfoList": [{"orderGoodsId": true, "skuCode": true, "quantity": true}]});
    event.map(|e| keep(&e, &spec)).unwrap_or_else(|| json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketplaces::events::{self, Event};

    #[test]
    fn a_reduced_shopify_order_keeps_no_customer_and_parses_the_same() {
        let body = json!({"id": 7, "email": "ana@example.com", "cancelled_at": null,
            "customer": {"id": 5, "first_name": "Ana", "email": "ana@example.com", "phone": "+525555"},
            "shipping_address": {"name": "Ana", "address1": "Calle 1", "city": "CDMX"},
            "line_items": [{"id": 1, "sku": "A", "quantity": 2, "title": "Shoe", "price": "10.00"}]})
        .to_string();
        let creds = Credentials::default();
        let reduced = reduce(Marketplace::Shopify, Some("orders/create"), body.as_bytes(), &creds);
        let text = String::from_utf8(reduced.clone()).expect("utf-8");
        for gone in ["ana@example.com", "Ana", "Calle", "+525555", "customer", "Shoe"] {
            assert!(!text.contains(gone), "{gone} kept in {text}");
        }
        let parse = |b: &[u8]| events::parse(Marketplace::Shopify, Some("orders/create"), b, &creds);
        assert_eq!(parse(&reduced), parse(body.as_bytes()));
        assert!(matches!(parse(&reduced), Ok(Event::Order(_))));
    }

    #[test]
    fn other_bodies_keep_only_what_was_read() {
        let creds = Credentials::default();
        let r = |m, topic, v: Value| {
            serde_json::from_slice::<Value>(&reduce(m, topic, v.to_string().as_bytes(), &creds)).expect("json")
        };
        assert_eq!(
            r(
                Marketplace::Shopify,
                Some("app/uninstalled"),
                json!({"id": 1, "email": "owner@x"})
            ),
            json!({})
        );
        assert_eq!(
            r(
                Marketplace::Shopify,
                Some("customers/redact"),
                json!({"shop_domain": "a", "customer": {"id": 1, "email": "e@x", "phone": "1"}, "orders_to_redact": [2]})
            ),
            json!({"shop_domain": "a", "customer": {"id": 1}, "orders_to_redact": [2]})
        );
        assert_eq!(
            r(
                Marketplace::TikTok,
                None,
                json!({"type": 1, "shop_id": "9", "data": {"order_id": "5", "buyer": "x"}})
            ),
            json!({"type": 1, "shop_id": "9", "data": {"order_id": "5"}})
        );
        assert_eq!(
            reduce(Marketplace::Shopify, Some("orders/create"), b"not json", &creds),
            b"{}"
        );
        // a list where an object was expected, and the reverse, keep nothing of it
        assert_eq!(
            r(
                Marketplace::Shopify,
                Some("orders/create"),
                json!({"id": 1, "line_items": {"id": 1}})
            ),
            json!({"id": 1, "line_items": null})
        );
    }
}
