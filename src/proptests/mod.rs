//! Property tests for every parser of outside data: webhook bodies and headers, signatures,
//! credentials and settings, stock and price rules, and the marketplaces' replies.
//!
//! Each property never panics on arbitrary input, refuses with a reason or yields values inside
//! the documented bounds, and round-trips where a writer exists. The case count is proptest's
//! (256), or `PROPTEST_CASES` when set; a longer run:
//! `PROPTEST_CASES=20000 cargo test --lib proptests`.
//!
//! Replies that only reach their parser through an HTTP call are served by `Loopback`, a tiny
//! HTTP server on 127.0.0.1 that answers each request with the next canned reply.
//!
//! A property that found a bug keeps the failing input as an `#[ignore]`d test named `bug_*`
//! (with what happens), and its generator steers clear of that input so the tier stays green.

mod catalogs;
mod events;
mod http_replies;
mod price_rules;
mod replies;
mod rules;
mod settings;
mod signatures;
mod subscriptions;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Number, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// proptest's default configuration (256 cases, or `PROPTEST_CASES`), without writing
/// regression files into the tree: a failure prints its minimal input, which is kept as a test.
pub fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

/// `config()` with fewer cases when `PROPTEST_CASES` is not set (properties whose cases make
/// HTTP calls on the loopback); `PROPTEST_CASES` still decides when it is set.
pub fn config_with_default_cases(cases: u32) -> Config {
    let mut c = config();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

/// Keys the parsers look for, so that generated objects reach past their first `get`.
pub const KEYS: &[&str] = &[
    "id",
    "_id",
    "line_items",
    "quantity",
    "sku",
    "sku_id",
    "seller_sku",
    "cancelled_at",
    "inventory_item_id",
    "location_id",
    "available",
    "updated_at",
    "resource",
    "topic",
    "user_id",
    "application_id",
    "type",
    "data",
    "order_id",
    "orders",
    "shop_id",
    "tts_notification_id",
    "eventCode",
    "supplierId",
    "orderNo",
    "orderStatus",
    "orderGoodsInfoList",
    "orderGoodsId",
    "skuCode",
    "status",
    "order_items",
    "item",
    "variation_id",
    "variations",
    "available_quantity",
    "locations",
    "code",
    "message",
    "msg",
    "error",
    "error_description",
    "cause",
    "info",
    "failedList",
    "reason",
    "errors",
    "extensions",
    "cost",
    "requestedQueryCost",
    "throttleStatus",
    "currentlyAvailable",
    "restoreRate",
    "maximumAvailable",
    "userErrors",
    "field",
    "success",
    "productCode",
    "access_token",
    "refresh_token",
    "expires_in",
    "access_token_expire_in",
    "products",
    "skus",
    "inventory",
    "warehouse_id",
    "warehouse_inventory",
    "price",
    "sale_price",
    "currency",
    "next_page_token",
    "total_count",
    "title",
    "results",
    "scroll_id",
    "paging",
    "total",
    "body",
    "attributes",
    "value_name",
    "seller_custom_field",
    "nodes",
    "pageInfo",
    "hasNextPage",
    "endCursor",
    "inventoryItem",
    "inventoryLevel",
    "quantities",
    "name",
    "product",
    "productVariants",
    "inventorySetQuantities",
    "variants",
    "variant",
    "shop",
    "currencyCode",
    "inventoryQuantity",
    "goodsInventory",
    "skuList",
    "totalUsableInventory",
    "warehouseInventoryList",
    "warehouseCode",
    "spuName",
    "skcName",
    "skuCodeList",
    "skcInfoList",
    "skuInfoList",
    "supplierSku",
    "priceInfoList",
    "basePrice",
    "specialPrice",
    "productMultiNameList",
    "language",
    "productName",
    "messages",
    "cipher",
    "shops",
    "i0",
    "i1",
    "u0",
];

/// Strings the parsers compare against, and odd ones.
const WORDS: &[&str] = &[
    "",
    " ",
    "0",
    "1",
    "-1",
    "abc",
    "orders/create",
    "orders/cancelled",
    "inventory_levels/update",
    "orders_v2",
    "items",
    "/orders/1",
    "/orders/",
    "/items/MLM1",
    "ORDER_STATUS",
    "CANCELLED",
    "cancelled",
    "selling_address",
    "available",
    "THROTTLED",
    "MAX_COST_EXCEEDED",
    "832213",
    "openapi00001",
    "20401",
    "SELLER_SKU",
    "en",
    "variants",
    "gid://shopify/InventoryItem/1",
    "gid://shopify/ProductVariant/2",
    "gid://shopify/Product/3",
    "gid://shopify/Location/4",
    "gid://shopify/InventoryItem/",
    "9999999999999999999999",
    "MLMU123",
    "é",
    "\u{0}",
    "日本",
];

pub fn word() -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(WORDS).prop_map(str::to_string),
        1 => "[a-zA-Z0-9_/:.-]{0,12}",
        1 => ".{0,16}",
    ]
    .boxed()
}

pub fn key() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => ".{0,8}",
    ]
    .boxed()
}

/// Numbers of every kind JSON can carry: small, huge, negative, fractional.
pub fn json_number() -> BoxedStrategy<Value> {
    prop_oneof![
        (-3i64..=300).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![i64::MIN, i64::MAX, 0, -1, 1, i32::MAX as i64, i32::MAX as i64 + 1])
            .prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        prop::sample::select(vec![0.5, -0.0, 1.0, 3.0, 1e300, -1e300, 1e-300, 99.99, 1e19])
            .prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
    .boxed()
}

pub fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => json_number(),
        3 => word().prop_map(Value::String),
    ]
    .boxed()
}

/// Any JSON value, at most a few levels deep and a few dozen nodes.
pub fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                json_object_of(inner),
            ]
        })
        .boxed()
}

/// An object whose keys are mostly ones the parsers read.
pub fn json_object_of(values: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    prop::collection::vec((key(), values), 0..8)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
        .boxed()
}

pub fn json_object() -> BoxedStrategy<Value> {
    json_object_of(json_value()).boxed()
}

/// A value where a number belongs: a number of any kind, or something else entirely.
pub fn odd_number() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => json_number(),
        1 => json_leaf(),
        1 => json_value(),
    ]
    .boxed()
}

/// JSON number text as a marketplace may write it (and some that is not JSON at all):
/// integers of any size, fractions, exponents, leading zeros, strings, null.
pub fn raw_number() -> BoxedStrategy<String> {
    prop_oneof![
        2 => (1i64..=1000).prop_map(|n| n.to_string()),
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i128>().prop_map(|n| n.to_string()),
        1 => (any::<i32>(), "[0-9]{1,6}").prop_map(|(i, f)| format!("{i}.{f}")),
        1 => (any::<i32>(), -400i32..400).prop_map(|(m, e)| format!("{m}e{e}")),
        1 => "-?[0-9]{1,30}",
        1 => prop::sample::select(vec![
            "\"3\"", "null", "true", "[1]", "{}", "-0", "0", "1.0", "1E2", "3.", ".5", "+1", "0x10", "1e400",
            "9223372036854775807", "9223372036854775808", "-9223372036854775808", "18446744073709551616", "NaN",
            "Infinity", "",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

/// What a JSON integer literal says, when `raw` is one (no fraction, no exponent, no leading
/// zero): the value as i128, else None. `-0` is not one: serde_json reads it as the float -0.0.
pub fn json_integer(raw: &str) -> Option<i128> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    let ok = raw != "-0"
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && digits.len() <= 38;
    ok.then(|| raw.parse::<i128>().ok()).flatten()
}

/// Arbitrary bytes, mostly short.
pub fn bytes() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..256).boxed()
}

/// A body as a marketplace may send it: JSON of any shape, JSON text cut short, or bytes.
pub fn body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => json_object().prop_map(|v| v.to_string().into_bytes()),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        1 => (json_object(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let mut t = v.to_string().into_bytes();
            t.truncate(cut.index(t.len() + 1));
            t
        }),
        1 => bytes(),
    ]
    .boxed()
}

// ---- a loopback HTTP server ------------------------------------------------------------------

/// One canned reply: status, body, extra headers.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Canned {
    pub fn new(status: u16, body: impl Into<String>) -> Canned {
        Canned {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }
}

/// Statuses a reply may have (no 1xx, 204 or 304: those carry no body).
pub fn status() -> BoxedStrategy<u16> {
    prop_oneof![
        4 => Just(200u16),
        1 => prop::sample::select(vec![201u16, 400, 401, 403, 404, 408, 409, 422, 425, 429, 500, 502, 503, 599]),
    ]
    .boxed()
}

/// A reply body: JSON of any shape (object mostly), or text that is not JSON.
pub fn reply_body() -> BoxedStrategy<String> {
    prop_oneof![
        5 => json_object().prop_map(|v| v.to_string()),
        1 => json_value().prop_map(|v| v.to_string()),
        1 => ".{0,40}",
    ]
    .boxed()
}

pub fn canned() -> BoxedStrategy<Canned> {
    (status(), reply_body()).prop_map(|(s, b)| Canned::new(s, b)).boxed()
}

/// An HTTP/1.1 server on 127.0.0.1 answering each request with the next of its canned replies
/// (the last one again when they run out), then closing the connection. It lives as long as
/// the test process; each test starts its own.
pub struct Loopback {
    pub base: String,
    replies: Arc<Mutex<Vec<Canned>>>,
    served: Arc<Mutex<usize>>,
}

impl Loopback {
    pub fn start() -> Loopback {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("local address"));
        let replies: Arc<Mutex<Vec<Canned>>> = Arc::new(Mutex::new(vec![Canned::new(200, "{}")]));
        let served = Arc::new(Mutex::new(0usize));
        let (r, s) = (replies.clone(), served.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let reply = {
                    let list = r.lock().expect("replies");
                    let mut n = s.lock().expect("served");
                    let c = list[(*n).min(list.len() - 1)].clone();
                    *n += 1;
                    c
                };
                let _ = serve(stream, &reply);
            }
        });
        Loopback { base, replies, served }
    }

    /// The replies for the next requests, in order.
    pub fn answer(&self, replies: Vec<Canned>) {
        assert!(!replies.is_empty());
        *self.replies.lock().expect("replies") = replies;
        *self.served.lock().expect("served") = 0;
    }

    /// Requests served since the last `answer`.
    pub fn served(&self) -> usize {
        *self.served.lock().expect("served")
    }
}

fn serve(mut stream: TcpStream, reply: &Canned) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // the request: headers, then Content-Length bytes of body
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..header_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while got.len() < header_end + length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let mut out = format!(
        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

/// An agent as the workers make them (short timeout: the loopback answers at once).
pub fn agent() -> ureq::Agent {
    crate::marketplaces::http::agent(Duration::from_secs(5), 4)
}

/// A request to `base` for one listing, with credentials of every marketplace's shape.
pub fn request(base: &str, external_id: &str, listing_settings: Value) -> crate::marketplaces::PushRequest {
    use crate::marketplaces::{Credentials, PushRequest};
    let mut creds = Credentials::default();
    for (k, v) in [
        ("client_id", "7001"),
        ("user_id", "5001"),
        ("shop", "acme.myshopify.com"),
        ("app_key", "k"),
        ("shop_cipher", "C"),
        ("open_key_id", "K"),
        ("appid", "app1"),
    ] {
        creds.identifiers.insert(k.into(), Value::from(v));
    }
    for (k, v) in [
        ("client_secret", "s"),
        ("refresh_token", "r"),
        ("access_token", "a"),
        ("app_secret", "s"),
        ("secret_key", "S"),
    ] {
        creds.secrets.insert(k.into(), Value::from(v));
    }
    PushRequest {
        base_url: base.to_string(),
        external_id: external_id.to_string(),
        listing_settings,
        quantity: 5,
        access_token: "t".into(),
        credentials: creds,
        idempotency_key: "job-1-5".into(),
        last_known: None,
        connection_settings: serde_json::json!({"location_id": 905684977, "site": "shein-mx"}),
        price: None,
        read_price: true,
    }
}

#[test]
fn proptest_cases_come_from_the_environment() {
    // proptest's default configuration reads PROPTEST_CASES (default 256); `config()` keeps it
    let want = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(256);
    assert_eq!(config().cases, want);
    if std::env::var_os("PROPTEST_CASES").is_some() {
        assert_eq!(config_with_default_cases(7).cases, want);
    } else {
        assert_eq!(config_with_default_cases(7).cases, 7);
    }
}

#[test]
fn json_integer_reads_only_integer_literals() {
    assert_eq!(json_integer("12"), Some(12));
    assert_eq!(json_integer("-0"), None);
    assert_eq!(json_integer("0"), Some(0));
    assert_eq!(json_integer("012"), None);
    assert_eq!(json_integer("1.0"), None);
    assert_eq!(json_integer("1e2"), None);
    assert_eq!(json_integer("\"3\""), None);
    assert_eq!(json_integer(""), None);
}

#[test]
fn the_loopback_answers_in_order() {
    let server = Loopback::start();
    server.answer(vec![Canned::new(201, "{\"a\":1}"), Canned::new(503, "")]);
    let a = agent();
    let get =
        |path: &str| crate::marketplaces::http::read(a.get(format!("{}{path}", server.base)).call()).expect("a reply");
    let first = get("/x");
    assert_eq!((first.status, first.body.as_str()), (201, "{\"a\":1}"));
    assert_eq!(get("/y").status, 503);
    assert_eq!(get("/z").status, 503);
    assert_eq!(server.served(), 3);
}

/// A JSON object of the fields that are present.
pub(crate) fn object_of<'a>(
    fields: impl IntoIterator<Item = (&'a str, Option<Value>)>,
) -> serde_json::Map<String, Value> {
    fields
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .collect()
}
