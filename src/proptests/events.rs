//! Webhook deliveries: what they mean (`events::parse`), what they say about themselves
//! (`webhooks::envelope`), the orders read from MercadoLibre and TikTok Shop, and the order-line
//! quantity check (`inbound::orders::check_quantities`, `integ.max_order_quantity`).

use super::*;
use crate::inbound::orders::check_quantities;
use crate::marketplaces::events::{self, form_unescape, line_quantity, Event, Order};
use crate::marketplaces::webhooks::{envelope, lowercase_headers, Headers};
use crate::marketplaces::{mercadolibre, tiktok, Credentials, Marketplace};
use marketplace_signing as signing;
use serde_json::json;

const SHEIN_KEY: &str = "698E4F20DFBA4B85B2291C2BCB7381C5";

fn marketplace() -> BoxedStrategy<Marketplace> {
    prop::sample::select(Marketplace::ALL.to_vec()).boxed()
}

fn topic() -> BoxedStrategy<Option<String>> {
    prop::option::of(prop_oneof![
        3 => prop::sample::select(vec![
            "orders/create", "orders/paid", "orders/updated", "orders/cancelled", "inventory_levels/update",
            "orders_v2", "orders", "items", "products/update", "app/uninstalled",
            "customers/data_request", "customers/redact", "shop/redact",
        ])
        .prop_map(str::to_string),
        1 => word(),
    ])
    .boxed()
}

fn shein_creds() -> Credentials {
    let mut c = Credentials::default();
    c.secrets.insert("app_secret_key".into(), json!(SHEIN_KEY));
    c
}

/// A SHEIN callback body carrying `plain` encrypted with the app's key.
fn shein_body(plain: &str) -> Vec<u8> {
    let cipher = signing::shein_encrypt(SHEIN_KEY, plain).expect("a 32-character key");
    format!("eventData={}", crate::marketplaces::authorize::enc(&cipher)).into_bytes()
}

/// What every order the parsers accept satisfies.
fn check_order(o: &Order) -> Result<(), TestCaseError> {
    prop_assert!(!o.id.is_empty(), "an order without id: {o:?}");
    for l in &o.lines {
        prop_assert!(!l.line_id.is_empty(), "a line without id: {o:?}");
        prop_assert!(l.quantity >= 1, "a line of {} units: {o:?}", l.quantity);
    }
    Ok(())
}

fn check_event(e: &Event) -> Result<(), TestCaseError> {
    match e {
        Event::Order(o) => check_order(o)?,
        Event::FetchOrder(id) | Event::FetchStock(id) => prop_assert!(!id.is_empty()),
        Event::StockEdit { external_id, .. } => prop_assert!(!external_id.is_empty()),
        Event::ForSupplier(s, inner) => {
            prop_assert!(!s.is_empty());
            prop_assert!(!matches!(**inner, Event::ForSupplier(..)), "nested supplier events");
            check_event(inner)?;
        }
        Event::Privacy(r) => {
            prop_assert!(!r.shop.is_empty());
            prop_assert!(r.orders.iter().all(|o| !o.is_empty()), "an empty order id: {r:?}");
        }
        Event::Alert { .. } | Event::Ignored(_) => {}
    }
    Ok(())
}

/// What `check_quantities` must decide for an accepted order: refused exactly when a line is
/// above `max`, naming that line.
fn check_max(o: &Order, max: i64) -> Result<(), TestCaseError> {
    let over = o.lines.iter().find(|l| l.quantity > max);
    match (check_quantities(o, max), over) {
        (Ok(()), None) => {}
        (Err(e), Some(l)) => {
            prop_assert!(e.contains(&format!("line {}:", l.line_id)), "{e}");
            prop_assert!(e.contains("integ.max_order_quantity"), "{e}");
        }
        (got, over) => prop_assert!(false, "max {max}, line over it {over:?}, check said {got:?}"),
    }
    Ok(())
}

/// A Shopify order body whose first line's quantity is the raw text `q`.
fn shopify_order(id: &Value, q: &str, more: &[i64]) -> Vec<u8> {
    let others: String = more
        .iter()
        .enumerate()
        .map(|(i, n)| format!(",{{\"id\":{},\"sku\":\"S{i}\",\"quantity\":{n}}}", i + 100))
        .collect();
    format!(
        "{{\"id\":{id},\"cancelled_at\":null,\"line_items\":[{{\"id\":7,\"sku\":\"P1\",\"quantity\":{q}}}{others}]}}"
    )
    .into_bytes()
}

fn order_id() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => (1u64..u64::MAX).prop_map(Value::from),
        1 => "[A-Za-z0-9-]{1,12}".prop_map(Value::String),
        1 => json_leaf(),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config())]

    /// Any body, any topic, any marketplace: parsed or refused with a reason, never a panic;
    /// what is accepted is well formed.
    #[test]
    fn any_delivery_is_parsed_or_refused(m in marketplace(), topic in topic(), body in body()) {
        let creds = if m == Marketplace::Shein { shein_creds() } else { Credentials::default() };
        match events::parse(m, topic.as_deref(), &body, &creds) {
            Ok(e) => check_event(&e)?,
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    /// Shopify's privacy topics with bodies close to the real ones: a request names its shop and
    /// only order ids, or is refused with a reason.
    #[test]
    fn privacy_requests_are_read_or_refused(
        topic in prop::sample::select(vec!["customers/data_request", "customers/redact", "shop/redact"]),
        shop in prop_oneof![json_leaf(), "[a-z]{1,8}\\.myshopify\\.com".prop_map(Value::String)],
        customer in json_value(),
        orders in prop_oneof![json_value(), prop::collection::vec(order_id(), 0..4).prop_map(Value::Array)],
    ) {
        let body = json!({"shop_domain": shop, "customer": {"id": customer}, "orders_to_redact": orders.clone(),
                          "orders_requested": orders}).to_string();
        match events::parse(Marketplace::Shopify, Some(topic), body.as_bytes(), &Credentials::default()) {
            Ok(Event::Privacy(r)) => {
                prop_assert_eq!(r.topic.as_str(), topic);
                check_event(&Event::Privacy(r))?;
            }
            Ok(other) => prop_assert!(false, "{topic} read as {other:?}"),
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    /// What is kept of an applied delivery is JSON and reads as the same event: reduction keeps
    /// every field processing used.
    #[test]
    fn a_reduced_body_reads_as_the_original(m in marketplace(), topic in topic(), body in body()) {
        let creds = if m == Marketplace::Shein { shein_creds() } else { Credentials::default() };
        let reduced = crate::inbound::reduce::reduce(m, topic.as_deref(), &body, &creds);
        prop_assert!(serde_json::from_slice::<Value>(&reduced).is_ok());
        if m != Marketplace::Shein {
            if let Ok(e) = events::parse(m, topic.as_deref(), &body, &creds) {
                if !matches!(e, Event::Alert { .. } | Event::Ignored(_)) {
                    prop_assert_eq!(events::parse(m, topic.as_deref(), &reduced, &creds), Ok(e));
                }
            }
        }
    }

    /// Near-valid Shopify orders, reduced: still the same order (or still refused).
    #[test]
    fn a_reduced_shopify_order_is_the_same_order(id in order_id(), q in raw_number(), more in prop::collection::vec(1i64..=50, 0..3)) {
        let body = shopify_order(&id, &q, &more);
        let creds = Credentials::default();
        let reduced = crate::inbound::reduce::reduce(Marketplace::Shopify, Some("orders/create"), &body, &creds);
        let parse = |b: &[u8]| events::parse(Marketplace::Shopify, Some("orders/create"), b, &creds);
        match parse(&body) {
            Ok(e) => prop_assert_eq!(parse(&reduced), Ok(e)),
            // refused orders go dead and are never reduced; reduced they are still refused
            Err(_) => prop_assert!(parse(&reduced).is_err()),
        }
    }

    /// SHEIN: any decrypted event JSON, and any form body around it.
    #[test]
    fn any_shein_event_is_parsed_or_refused(event in json_object(), prefix in "[a-z=&%+]{0,8}", tail in "[a-zA-Z0-9%+=&]{0,12}") {
        let mut v = event;
        if let Some(o) = v.as_object_mut() {
            o.entry("eventCode").or_insert(json!("ORDER_STATUS"));
        }
        let body = shein_body(&v.to_string());
        let mut framed = prefix.into_bytes();
        framed.extend_from_slice(b"&");
        framed.extend_from_slice(&body);
        framed.extend_from_slice(tail.as_bytes());
        for b in [body, framed] {
            match events::parse(Marketplace::Shein, None, &b, &shein_creds()) {
                Ok(e) => check_event(&e)?,
                Err(e) => prop_assert!(!e.is_empty()),
            }
        }
    }

    /// Near-valid Shopify orders: the quantity is taken exactly as written when it is a whole
    /// number from 1 to i64::MAX, and the delivery is refused otherwise (never wrapped, clamped
    /// or rounded); `integ.max_order_quantity` then refuses exactly the lines above it.
    #[test]
    fn shopify_order_quantities_are_exact_or_refused(
        id in order_id(),
        q in raw_number(),
        more in prop::collection::vec(1i64..=50, 0..3),
        max in prop_oneof![1i64..=100, 1i64..=i32::MAX as i64],
        cancelled in any::<bool>(),
    ) {
        let topic = if cancelled { "orders/cancelled" } else { "orders/create" };
        let got = events::parse(Marketplace::Shopify, Some(topic), &shopify_order(&id, &q, &more), &Credentials::default());
        let want = json_integer(&q).filter(|n| (1..=i64::MAX as i128).contains(n));
        let id_ok = crate::marketplaces::webhooks::id_text(Some(&id)).is_some();
        match (got, want) {
            (Ok(Event::Order(o)), Some(n)) if id_ok => {
                check_order(&o)?;
                prop_assert_eq!(o.lines[0].quantity as i128, n);
                prop_assert_eq!(o.lines.len(), 1 + more.len());
                prop_assert_eq!(o.cancelled, cancelled);
                check_max(&o, max)?;
            }
            (Err(e), _) => prop_assert!(want.is_none() || !id_ok, "refused a valid order: {e}"),
            (other, _) => prop_assert!(false, "quantity {q}, id {id}: {other:?}"),
        }
    }

    /// The same for SHEIN's encrypted order events.
    #[test]
    fn shein_order_quantities_are_exact_or_refused(q in raw_number(), max in 1i64..=i32::MAX as i64, supplier in prop::option::of(1u32..)) {
        let supplier = supplier.map_or(String::new(), |s| format!("\"supplierId\":{s},"));
        let plain = format!(
            "{{\"eventCode\":\"ORDER_STATUS\",{supplier}\"orderNo\":\"GSH1\",\"orderStatus\":\"CANCELLED\",\
              \"orderGoodsInfoList\":[{{\"orderGoodsId\":\"9\",\"skuCode\":\"SKU-1\",\"quantity\":{q}}}]}}"
        );
        let got = events::parse(Marketplace::Shein, None, &shein_body(&plain), &shein_creds());
        let want = json_integer(&q).filter(|n| (1..=i64::MAX as i128).contains(n));
        let order = match got {
            Ok(Event::ForSupplier(_, inner)) => *inner,
            Ok(e) => e,
            Err(e) => {
                prop_assert!(want.is_none(), "refused a valid order: {e}");
                return Ok(());
            }
        };
        let Event::Order(o) = order else {
            prop_assert!(false, "not an order: {order:?}");
            return Ok(());
        };
        check_order(&o)?;
        prop_assert!(o.cancelled);
        prop_assert_eq!(Some(o.lines[0].quantity as i128), want);
        prop_assert_eq!(o.lines[0].external_id.as_deref(), Some("SKU-1"));
        check_max(&o, max)?;
    }

    /// `line_quantity` on any value: a positive i64 exactly as given, or a reason naming the line.
    #[test]
    fn a_line_quantity_is_positive_and_exact(v in odd_number(), line in "[A-Z0-9]{1,6}") {
        let q = line_quantity(&json!({ "quantity": v.clone() }), "quantity", &line);
        match (&v, q) {
            (Value::Number(n), Ok(q)) => {
                prop_assert!(q >= 1);
                prop_assert_eq!(n.as_i64(), Some(q));
            }
            (_, Ok(q)) => prop_assert!(false, "{v} accepted as {q}"),
            (_, Err(e)) => {
                prop_assert!(e.starts_with(&format!("line {line}: quantity")), "{e}");
                prop_assert!(v.as_i64().is_none_or(|n| n < 1), "{v} refused: {e}");
            }
        }
    }

    /// Shopify's inventory level: the stock edit carries `available` exactly as written (any
    /// i64: the bounds are `integ.max_stock`'s, checked where it is applied), else a refusal.
    #[test]
    fn shopify_stock_levels_are_exact_or_refused(
        item in order_id(),
        available in raw_number(),
        location in prop::option::of(order_id()),
    ) {
        let loc = location.map_or(String::new(), |l| format!(",\"location_id\":{l}"));
        let body = format!("{{\"inventory_item_id\":{item},\"available\":{available}{loc},\"updated_at\":\"2026-11-26T04:00:00-05:00\"}}");
        let got = events::parse(Marketplace::Shopify, Some("inventory_levels/update"), body.as_bytes(), &Credentials::default());
        let want = json_integer(&available).filter(|n| (i64::MIN as i128..=i64::MAX as i128).contains(n));
        let item_ok = crate::marketplaces::webhooks::id_text(Some(&item)).is_some();
        match got {
            Ok(Event::StockEdit { quantity, external_id, .. }) => {
                prop_assert!(item_ok && !external_id.is_empty());
                prop_assert_eq!(Some(quantity as i128), want, "available {}", available);
            }
            Ok(other) => prop_assert!(false, "{other:?}"),
            Err(e) => prop_assert!(want.is_none() || !item_ok, "refused {body}: {e}"),
        }
    }

    /// MercadoLibre's notifications only point: at an order or an item named by the resource's
    /// last segment, never empty.
    #[test]
    fn mercadolibre_notifications_point_at_what_they_name(
        topic in topic(),
        resource in prop_oneof![
            "/(orders|items)/[A-Za-z0-9]{0,12}",
            "/(orders|items)/[^ ]{0,12}",
            word(),
        ],
        extra in json_object(),
    ) {
        let mut v = extra;
        v["resource"] = json!(resource);
        let got = events::parse(Marketplace::MercadoLibre, topic.as_deref(), v.to_string().as_bytes(), &Credentials::default());
        match got {
            Ok(Event::FetchOrder(id)) => {
                prop_assert!(resource.starts_with("/orders/") && resource.ends_with(&id) && !id.contains('/'));
                prop_assert!(matches!(topic.as_deref(), Some("orders" | "orders_v2")));
            }
            Ok(Event::FetchStock(id)) => {
                prop_assert!(resource.starts_with("/items/") && resource.ends_with(&id) && !id.contains('/'));
                prop_assert_eq!(topic.as_deref(), Some("items"));
            }
            Ok(Event::Ignored(_)) => {}
            other => prop_assert!(false, "{other:?}"),
        }
    }

    /// TikTok Shop: type 1 points at its order, 6 and 7 are alerts, the rest is ignored.
    #[test]
    fn tiktok_events_are_typed(kind in odd_number(), data in json_value(), order in prop::option::of(order_id())) {
        let mut data = data;
        if let (Some(id), Some(o)) = (order, data.as_object_mut()) {
            o.insert("order_id".into(), id);
        }
        let body = json!({"type": kind, "shop_id": "1", "data": data});
        let got = events::parse(Marketplace::TikTok, None, body.to_string().as_bytes(), &Credentials::default());
        match (kind.as_i64(), got) {
            (Some(1), Ok(Event::FetchOrder(id))) => prop_assert!(!id.is_empty()),
            (Some(1), Err(e)) => prop_assert!(e.contains("order_id")),
            (Some(6), Ok(Event::Alert { deauthorized, .. })) => prop_assert!(deauthorized),
            (Some(7), Ok(Event::Alert { deauthorized, message, .. })) => {
                prop_assert!(!deauthorized);
                // the event's data is quoted, bounded
                prop_assert!(message.len() < 400, "{} bytes", message.len());
            }
            (k, Ok(Event::Ignored(_))) => prop_assert!(!matches!(k, Some(1 | 6 | 7))),
            (k, other) => prop_assert!(false, "type {k:?}: {other:?}"),
        }
    }

    /// Orders read from MercadoLibre (`GET /orders/{id}`) and TikTok Shop (order search): any
    /// JSON gives an order whose lines are well formed, or a reason.
    #[test]
    fn fetched_orders_are_well_formed(v in json_object(), lines in prop::collection::vec(json_object(), 0..4), q in odd_number()) {
        let mut v = v;
        let mut lines = lines;
        for l in &mut lines {
            if let Some(o) = l.as_object_mut() {
                o.insert("quantity".into(), q.clone());
                o.entry("item").or_insert(json!({"id": "MLM1", "variation_id": 3}));
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.entry("id").or_insert(json!(1));
            o.insert("order_items".into(), Value::Array(lines.clone()));
            o.insert("line_items".into(), Value::Array(lines));
        }
        for got in [mercadolibre::order_from_json(&v), tiktok::order_from_json(&v)] {
            match got {
                Ok(o) => check_order(&o)?,
                Err(e) => prop_assert!(!e.is_empty()),
            }
        }
        if let Ok(o) = tiktok::order_from_json(&v) {
            // every TikTok Shop line item is one unit
            prop_assert!(o.lines.iter().all(|l| l.quantity == 1));
        }
        if let Ok(o) = mercadolibre::order_from_json(&v) {
            prop_assert!(o.lines.iter().all(|l| Some(l.quantity) == q.as_i64()));
        }
    }

    /// What a delivery says about itself, from any headers and body: never a panic; a found
    /// account names a value.
    #[test]
    fn any_envelope_is_read_or_refused(
        m in marketplace(),
        headers in prop::collection::vec((prop_oneof![
            3 => prop::sample::select(vec![
                "X-Shopify-Shop-Domain", "X-Shopify-Hmac-Sha256", "X-Shopify-Webhook-Id", "X-Shopify-Topic",
                "x-lt-appid", "X-LT-Timestamp", "x-lt-signature", "Authorization",
            ]).prop_map(str::to_string),
            1 => word(),
        ], json_leaf()), 0..8),
        body in body(),
    ) {
        let h: Headers = lowercase_headers(&Value::Object(headers.into_iter().collect())).expect("an object");
        match envelope(m, &h, &body) {
            Ok(e) => {
                let (_, account) = e.account.expect("an account");
                prop_assert!(!account.is_empty());
                prop_assert!(e.event_id.is_some_and(|id| !id.is_empty()));
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    /// Form decoding round-trips with the crate's query encoder, and never panics on any text.
    #[test]
    fn form_unescape_round_trips(s in ".{0,40}", junk in "[%+a-fA-F0-9G-Z]{0,12}") {
        let enc = crate::marketplaces::authorize::enc(&s);
        prop_assert_eq!(form_unescape(&enc), Ok(s.clone()));
        prop_assert_eq!(crate::marketplaces::catalog::query_value(&s), enc);
        let _ = form_unescape(&junk);
        let _ = form_unescape(&format!("{s}{junk}"));
    }
}
