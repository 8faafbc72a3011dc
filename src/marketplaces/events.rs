//! What an accepted delivery means, in plain Rust: an order (complete, or to be fetched because
//! the marketplace only points at it), a stock edit made on the marketplace, or nothing we act on.

use super::webhooks::id_text;
use super::{Credentials, Marketplace};
use marketplace_signing as signing;
use serde_json::Value;

/// One order line as the marketplace reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderLine {
    /// Unique within the order: the exactly-once key with the order id.
    pub line_id: String,
    /// The listing sold (matched against our listings' external ids), when the marketplace says.
    pub external_id: Option<String>,
    /// The variation sold, when the listing has variations (MercadoLibre).
    pub variation_id: Option<String>,
    /// The seller's SKU (the EGDC product id when no listing matches).
    pub sku: Option<String>,
    pub quantity: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    pub id: String,
    pub cancelled: bool,
    pub lines: Vec<OrderLine>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Order(Order),
    /// The delivery only names the order: read it with the connection's token.
    FetchOrder(String),
    /// Someone changed a listing's stock on the marketplace.
    StockEdit {
        external_id: String,
        /// Shopify's location (a listing is an item at one location).
        location_id: Option<String>,
        quantity: i64,
        /// When the marketplace says the change happened (RFC 3339).
        changed_at: Option<String>,
    },
    /// The delivery names a listing: read its stock now.
    FetchStock(String),
    /// Something an operator must act on (an `integ.alerts` row); `deauthorized`: the seller
    /// revoked the app, so the connection needs re-authorization.
    Alert {
        kind: &'static str,
        message: String,
        deauthorized: bool,
    },
    /// One of Shopify's mandatory privacy topics.
    Privacy(PrivacyRequest),
    /// A topic we do not act on (kept as done, with this note).
    Ignored(String),
    /// Which supplier's event this is (SHEIN notifies per app; the event names the supplier),
    /// wrapping what it says.
    ForSupplier(String, Box<Event>),
}

/// Shopify's mandatory privacy topics (configured in the app's settings, not subscribed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrivacyTopic {
    DataRequest,
    CustomerRedact,
    ShopRedact,
}

impl PrivacyTopic {
    pub fn as_str(self) -> &'static str {
        match self {
            PrivacyTopic::DataRequest => "customers/data_request",
            PrivacyTopic::CustomerRedact => "customers/redact",
            PrivacyTopic::ShopRedact => "shop/redact",
        }
    }
}

/// A privacy request: whose data (`customer_id`, absent for a shop) and which orders it names.
#[derive(Clone, Debug, PartialEq)]
pub struct PrivacyRequest {
    pub topic: PrivacyTopic,
    pub shop: String,
    pub customer_id: Option<String>,
    pub orders: Vec<String>,
}

/// Reads an accepted delivery. Err: the delivery cannot be understood (it goes dead).
pub fn parse(m: Marketplace, topic: Option<&str>, body: &[u8], creds: &Credentials) -> Result<Event, String> {
    match m {
        Marketplace::Shopify => shopify(topic.unwrap_or(""), body),
        Marketplace::MercadoLibre => {
            let v: Value = serde_json::from_slice(body).map_err(|_| "the notification is not JSON")?;
            let resource = v.get("resource").and_then(Value::as_str).unwrap_or("");
            let last = resource.rsplit('/').next().unwrap_or("").to_string();
            match topic.unwrap_or("") {
                "orders_v2" | "orders" if resource.starts_with("/orders/") && !last.is_empty() => {
                    Ok(Event::FetchOrder(last))
                }
                "items" if resource.starts_with("/items/") && !last.is_empty() => Ok(Event::FetchStock(last)),
                t => Ok(Event::Ignored(format!("topic {t} is not applied"))),
            }
        }
        Marketplace::TikTok => {
            let v: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
            match v.get("type").and_then(Value::as_i64) {
                Some(1) => {
                    let id = id_text(v.pointer("/data/order_id")).ok_or("the order status event has no order_id")?;
                    Ok(Event::FetchOrder(id))
                }
                Some(6) => Ok(Event::Alert {
                    kind: "needs_reauthorization",
                    message: "TikTok Shop: the seller deauthorized the app".into(),
                    deauthorized: true,
                }),
                Some(7) => Ok(Event::Alert {
                    kind: "authorization_expiring",
                    message: format!(
                        "TikTok Shop: the shop's authorization expires soon ({}); the seller must authorize again",
                        v.get("data")
                            .map(|d| super::http::truncate(&d.to_string(), 200))
                            .unwrap_or_default()
                    ),
                    deauthorized: false,
                }),
                t => Ok(Event::Ignored(format!(
                    "TikTok event type {} is not applied",
                    t.map_or("?".into(), |t| t.to_string())
                ))),
            }
        }
        Marketplace::Shein => {
            let secret = creds
                .secret("app_secret_key")
                .ok_or("the connection has no app_secret_key to decrypt SHEIN events")?;
            let event = shein_event(body, secret)?;
            let supplier = id_text(event.get("supplierId"));
            let inner = shein(&event)?;
            Ok(match supplier {
                Some(s) => Event::ForSupplier(s, Box::new(inner)),
                None => inner,
            })
        }
    }
}

fn shopify(topic: &str, body: &[u8]) -> Result<Event, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
    match topic {
        "orders/create" | "orders/paid" | "orders/updated" | "orders/cancelled" => {
            let cancelled = topic == "orders/cancelled" || v.get("cancelled_at").is_some_and(|c| !c.is_null());
            order(&v, "id", cancelled, "line_items", |l| {
                let line_id = id_text(l.get("id")).ok_or("an order line has no id")?;
                Ok(OrderLine {
                    quantity: line_quantity(l, "quantity", &line_id)?,
                    line_id,
                    external_id: None,
                    variation_id: None,
                    sku: text(l, "/sku"),
                })
            })
            .map(Event::Order)
        }
        "inventory_levels/update" => Ok(Event::StockEdit {
            external_id: id_text(v.get("inventory_item_id")).ok_or("the level has no inventory_item_id")?,
            location_id: id_text(v.get("location_id")),
            quantity: v
                .get("available")
                .and_then(Value::as_i64)
                .ok_or("the level has no available quantity")?,
            changed_at: v.get("updated_at").and_then(Value::as_str).map(str::to_string),
        }),
        // the app's grant is gone with it: stop calling and wait for a new authorization
        "app/uninstalled" => Ok(Event::Alert {
            kind: "needs_reauthorization",
            message: "Shopify: the app was uninstalled from the shop; the seller must install it again".into(),
            deauthorized: true,
        }),
        "customers/data_request" => privacy(&v, PrivacyTopic::DataRequest, "orders_requested"),
        "customers/redact" => privacy(&v, PrivacyTopic::CustomerRedact, "orders_to_redact"),
        "shop/redact" => privacy(&v, PrivacyTopic::ShopRedact, ""),
        t => Ok(Event::Ignored(format!("topic {t} is not applied"))),
    }
}

fn privacy(v: &Value, topic: PrivacyTopic, orders_key: &str) -> Result<Event, String> {
    let shop = text(v, "/shop_domain").ok_or("the privacy request has no shop_domain")?;
    let customer_id = id_text(v.pointer("/customer/id"));
    if topic != PrivacyTopic::ShopRedact && customer_id.is_none() {
        return Err(format!("the {} request has no customer id", topic.as_str()));
    }
    let orders = match v.get(orders_key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| id_text(Some(id)).ok_or_else(|| format!("{orders_key} holds a value that is not an order id")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("{orders_key} is not a list")),
    };
    Ok(Event::Privacy(PrivacyRequest {
        topic,
        shop,
        customer_id,
        orders,
    }))
}

/// The decrypted `eventData` of a SHEIN callback (form field, URL-encoded base64).
pub fn shein_event(body: &[u8], app_secret_key: &str) -> Result<Value, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the callback body is not text")?;
    let field = text
        .split('&')
        .find_map(|kv| kv.strip_prefix("eventData="))
        .ok_or("the callback has no eventData field")?;
    let cipher = form_unescape(field)?;
    let plain = signing::shein_decrypt(app_secret_key, &cipher).map_err(|e| format!("eventData: {e}"))?;
    serde_json::from_str(&plain).map_err(|_| "the decrypted eventData is not JSON".to_string())
}

fn shein(event: &Value) -> Result<Event, String> {
    let code = event.get("eventCode").and_then(Value::as_str).unwrap_or("");
    if code != "ORDER_STATUS" {
        return Ok(Event::Ignored(format!("SHEIN event {code} is not applied")));
    }
    let cancelled = event.get("orderStatus").and_then(Value::as_str) == Some("CANCELLED");
    order(event, "orderNo", cancelled, "orderGoodsInfoList", |l| {
        let sku = text(l, "/skuCode");
        let line_id = id_text(l.get("orderGoodsId")).ok_or("an order line has no orderGoodsId")?;
        Ok(OrderLine {
            quantity: line_quantity(l, "quantity", &line_id)?,
            line_id,
            external_id: sku.clone(),
            variation_id: None,
            sku,
        })
    })
    .map(Event::Order)
}

/// An order from a marketplace's JSON: its id is at `id_key`, its lines (each read by `line`)
/// in the array at `lines_key`.
pub fn order(
    v: &Value,
    id_key: &str,
    cancelled: bool,
    lines_key: &str,
    line: impl Fn(&Value) -> Result<OrderLine, String>,
) -> Result<Order, String> {
    let id = id_text(v.get(id_key)).ok_or_else(|| format!("the order has no {id_key}"))?;
    let lines = v
        .get(lines_key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("the order has no {lines_key}"))?
        .iter()
        .map(line)
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Order { id, cancelled, lines })
}

/// An order line's quantity as the marketplace wrote it at `key`: a positive whole JSON number
/// (not a string, not a float, not missing), or why not, naming the line and the value. How many
/// units a delivery may take at most is a setting the caller checks (`integ.max_order_quantity`).
pub fn line_quantity(line: &Value, key: &str, line_id: &str) -> Result<i64, String> {
    let shown = |v: &Value| crate::marketplaces::http::truncate(&v.to_string(), 40);
    match line.get(key) {
        None | Some(Value::Null) => Err(format!("line {line_id}: {key} is missing")),
        Some(v @ Value::Number(n)) => match n.as_i64() {
            Some(q) if q > 0 => Ok(q),
            Some(_) => Err(format!("line {line_id}: {key} {} is not positive", shown(v))),
            None if n.is_u64() => Err(format!("line {line_id}: {key} {} is too large", shown(v))),
            None => Err(format!("line {line_id}: {key} {} is not a whole number", shown(v))),
        },
        Some(v) => Err(format!("line {line_id}: {key} {} is not a number", shown(v))),
    }
}

/// The non-empty text at `pointer`.
pub fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Decodes application/x-www-form-urlencoded text (`+` is a space, `%XX` a byte).
pub fn form_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("bad %-escape in form data")?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "form data is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_line_quantity_is_a_positive_whole_number() {
        let q = |v: Value| line_quantity(&json!({"quantity": v}), "quantity", "L1");
        assert_eq!(q(json!(3)), Ok(3));
        assert_eq!(q(json!(1_000_000_000_000i64)), Ok(1_000_000_000_000));
        for (bad, why) in [
            (json!(0), "0 is not positive"),
            (json!(-2), "-2 is not positive"),
            (json!(1.5), "1.5 is not a whole number"),
            (json!(3.0), "3.0 is not a whole number"),
            (json!(1e300), "is not a whole number"),
            (json!(u64::MAX), "18446744073709551615 is too large"),
            (json!("3"), "\"3\" is not a number"),
            (json!([3]), "[3] is not a number"),
            (Value::Null, "quantity is missing"),
        ] {
            let e = q(bad).expect_err(why);
            assert!(e.starts_with("line L1: ") && e.contains(why), "{e}");
        }
        assert_eq!(
            line_quantity(&json!({}), "quantity", "L2"),
            Err("line L2: quantity is missing".into())
        );
    }

    #[test]
    fn shopify_orders_and_levels() {
        let body = json!({"id": 1, "cancelled_at": null, "line_items": [{"id": 7, "sku": "P1", "quantity": 2}]});
        let e = parse(
            Marketplace::Shopify,
            Some("orders/create"),
            body.to_string().as_bytes(),
            &Credentials::default(),
        );
        let Ok(Event::Order(o)) = e else { panic!("{e:?}") };
        assert_eq!((o.id.as_str(), o.cancelled, o.lines.len()), ("1", false, 1));
        assert_eq!(o.lines[0].sku.as_deref(), Some("P1"));
        let e = parse(
            Marketplace::Shopify,
            Some("orders/cancelled"),
            body.to_string().as_bytes(),
            &Credentials::default(),
        );
        assert!(matches!(e, Ok(Event::Order(Order { cancelled: true, .. }))));
        let level = json!({"inventory_item_id": 808950810, "location_id": 905684977, "available": 6,
                           "updated_at": "2026-11-26T04:00:00-05:00"});
        assert_eq!(
            parse(
                Marketplace::Shopify,
                Some("inventory_levels/update"),
                level.to_string().as_bytes(),
                &Credentials::default()
            ),
            Ok(Event::StockEdit {
                external_id: "808950810".into(),
                location_id: Some("905684977".into()),
                quantity: 6,
                changed_at: Some("2026-11-26T04:00:00-05:00".into())
            })
        );
        assert!(parse(
            Marketplace::Shopify,
            Some("orders/create"),
            b"{}",
            &Credentials::default()
        )
        .is_err());
        assert!(matches!(
            parse(
                Marketplace::Shopify,
                Some("products/update"),
                b"{}",
                &Credentials::default()
            ),
            Ok(Event::Ignored(_))
        ));
    }

    #[test]
    fn pointers_from_mercadolibre_and_tiktok() {
        let n = br#"{"_id":"a","resource":"/orders/2195160686","user_id":1,"topic":"orders_v2","application_id":2}"#;
        assert_eq!(
            parse(Marketplace::MercadoLibre, Some("orders_v2"), n, &Credentials::default()),
            Ok(Event::FetchOrder("2195160686".into()))
        );
        let n = br#"{"_id":"a","resource":"/items/MLM1","user_id":1,"topic":"items","application_id":2}"#;
        assert_eq!(
            parse(Marketplace::MercadoLibre, Some("items"), n, &Credentials::default()),
            Ok(Event::FetchStock("MLM1".into()))
        );
        let t =
            br#"{"type":1,"shop_id":"1","data":{"order_id":"576684019603311365","order_status":"AWAITING_SHIPMENT"}}"#;
        assert_eq!(
            parse(Marketplace::TikTok, None, t, &Credentials::default()),
            Ok(Event::FetchOrder("576684019603311365".into()))
        );
        assert!(matches!(
            parse(
                Marketplace::TikTok,
                None,
                br#"{"type":5,"shop_id":"1"}"#,
                &Credentials::default()
            ),
            Ok(Event::Ignored(_))
        ));
        assert!(matches!(
            parse(
                Marketplace::TikTok,
                None,
                br#"{"type":6,"shop_id":"1"}"#,
                &Credentials::default()
            ),
            Ok(Event::Alert { deauthorized: true, .. })
        ));
        let e = parse(
            Marketplace::TikTok,
            None,
            br#"{"type":7,"shop_id":"1","data":{"expire_time":1700000000}}"#,
            &Credentials::default(),
        );
        assert!(
            matches!(&e, Ok(Event::Alert { kind: "authorization_expiring", message, deauthorized: false }) if message.contains("1700000000")),
            "{e:?}"
        );
    }

    #[test]
    fn shopify_uninstall_and_privacy_topics() {
        let creds = Credentials::default();
        let parse = |topic: &str, body: &str| parse(Marketplace::Shopify, Some(topic), body.as_bytes(), &creds);
        assert!(matches!(
            parse("app/uninstalled", r#"{"id":1,"myshopify_domain":"a.myshopify.com"}"#),
            Ok(Event::Alert {
                kind: "needs_reauthorization",
                deauthorized: true,
                ..
            })
        ));
        let redact = r#"{"shop_id":9,"shop_domain":"a.myshopify.com","customer":{"id":191167,"email":"j@x.com"},
                         "orders_to_redact":[299938,"280263"]}"#;
        assert_eq!(
            parse("customers/redact", redact),
            Ok(Event::Privacy(PrivacyRequest {
                topic: PrivacyTopic::CustomerRedact,
                shop: "a.myshopify.com".into(),
                customer_id: Some("191167".into()),
                orders: vec!["299938".into(), "280263".into()],
            }))
        );
        let request =
            r#"{"shop_domain":"a.myshopify.com","customer":{"id":5},"orders_requested":[1],"data_request":{"id":9}}"#;
        assert!(matches!(parse("customers/data_request", request),
            Ok(Event::Privacy(PrivacyRequest { topic: PrivacyTopic::DataRequest, ref orders, .. })) if orders == &["1".to_string()]));
        assert!(matches!(
            parse("shop/redact", r#"{"shop_id":9,"shop_domain":"a.myshopify.com"}"#),
            Ok(Event::Privacy(PrivacyRequest {
                topic: PrivacyTopic::ShopRedact,
                customer_id: None,
                ..
            }))
        ));
        for (topic, bad) in [
            (
                "customers/redact",
                r#"{"shop_domain":"a.myshopify.com","orders_to_redact":[]}"#,
            ),
            (
                "customers/redact",
                r#"{"shop_domain":"a.myshopify.com","customer":{"id":1},"orders_to_redact":{}}"#,
            ),
            (
                "customers/redact",
                r#"{"shop_domain":"a.myshopify.com","customer":{"id":1},"orders_to_redact":[[1]]}"#,
            ),
            ("shop/redact", r#"{"shop_id":9}"#),
        ] {
            assert!(parse(topic, bad).is_err(), "{topic} {bad}");
        }
    }

    #[test]
    fn shein_events_are_decrypted() {
        let key = "698E4F20DFBA4B85B2291C2BCB7381C5";
        let plain = json!({"eventCode": "ORDER_STATUS", "supplierId": 42, "orderNo": "GSH1", "orderStatus": "TO_BE_SHIPPED",
                           "orderGoodsInfoList": [{"orderGoodsId": "9", "skuCode": "SKU-1", "quantity": 3}]});
        let cipher = signing::shein_encrypt(key, &plain.to_string()).unwrap();
        let body = format!(
            "eventData={}",
            cipher.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
        );
        let mut creds = Credentials::default();
        creds.secrets.insert("app_secret_key".into(), json!(key));
        let Ok(Event::ForSupplier(s, inner)) = parse(Marketplace::Shein, None, body.as_bytes(), &creds) else {
            panic!("not a supplier event")
        };
        assert_eq!(s, "42");
        let Event::Order(o) = *inner else {
            panic!("not an order")
        };
        assert_eq!(
            (o.id.as_str(), o.lines[0].external_id.as_deref(), o.lines[0].quantity),
            ("GSH1", Some("SKU-1"), 3)
        );
        creds.secrets.insert("app_secret_key".into(), json!("0000000000000000"));
        assert!(parse(Marketplace::Shein, None, body.as_bytes(), &creds).is_err());
        assert!(parse(Marketplace::Shein, None, b"other=1", &creds).is_err());
        assert_eq!(form_unescape("a%2Bb+c").unwrap(), "a+b c");
        assert!(form_unescape("%G1").is_err());
    }
}
