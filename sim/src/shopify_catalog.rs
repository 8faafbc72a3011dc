//! The Shopify catalog: a shop's products and variants, read as Shopify's GraphQL Admin API serves
//! them (`productVariants(first:, after:, sortKey: ID)` with `pageInfo`, opaque base64 cursors,
//! the 250-per-page and 25,000-object limits, and the calculated query cost taken from the shop's
//! leaky bucket), and an admin call that builds large catalogs quickly.
//!
//! The GraphQL handler in `shopify.rs` hands a query over here when [`is_catalog_query`] says so.
//! The query is parsed (a small GraphQL parser below: one operation, variables with defaults,
//! aliases, literal or variable arguments; no fragments or field directives) and validated against
//! the part of Shopify's schema the sandbox emulates, with graphql-ruby's error shapes for unknown
//! fields, bad arguments and undeclared or unused variables, as the real service answers them.
//!
//! Cost (Shopify's published calculation): an object costs 1, scalars and enums 0, a connection
//! 2 plus `first` times the cost of one node, the node being 1 plus its nested objects. The usual
//! import query (`product` and `inventoryItem` under each node) costs `2 + 3 × first` (752 for 250);
//! a query above 1,000 points is refused (`MAX_COST_EXCEEDED`, nothing charged). The requested cost
//! is taken from the bucket before running (short: `THROTTLED`), then the difference to the actual
//! cost (2 + 3 × nodes returned) is given back, as Shopify refunds it.
//!
//! A catalog query may also select `shop { id name myshopifyDomain currencyCode }` (1 point, an
//! object): the currency is the one given to the generator (`currency`, "USD" by default).

use crate::catalog_rule::{is_decimal, Common, Counts, DEFAULT_FIRST_ID};
use crate::shopify::{Level, Shopify};
use crate::state::State;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// At most this many nodes per page (`first`).
pub const MAX_PAGE: i64 = 250;
/// Cursor paging stops at this many objects (beyond: bulk operations).
pub const PAGINATION_LIMIT: usize = 25_000;
/// A single query may not cost more than this.
pub const MAX_QUERY_COST: u64 = 1_000;
/// The generator refuses larger catalogs (memory).
pub const MAX_GENERATED_UNITS: u64 = 1_000_000;
/// At most this many variants per product in the generator (Shopify's current product limit).
pub const MAX_VARIANTS_PER_PRODUCT: u64 = 2_048;
/// A shop's currency (`shop { currencyCode }`) until the generator is given another.
pub const DEFAULT_CURRENCY: &str = "USD";

/// Every shop's catalog.
#[derive(Default)]
pub struct Catalog {
    pub shops: HashMap<String, ShopCatalog>,
}

pub struct ShopCatalog {
    pub products: HashMap<u64, Product>,
    /// Sorted by id (the `sortKey: ID` order).
    pub variants: Vec<Variant>,
    /// The shop's currency, an ISO 4217 code (`shop { currencyCode }`).
    pub currency: String,
    /// The lowest price `productVariantsBulkUpdate` accepts (admin-set; None: 0). See
    /// shopify_prices.rs.
    pub min_price: Option<rust_decimal::Decimal>,
    /// Variant prices written through `productVariantsBulkUpdate` in this shop.
    pub price_writes: u64,
}

impl Default for ShopCatalog {
    fn default() -> ShopCatalog {
        ShopCatalog {
            products: HashMap::new(),
            variants: Vec::new(),
            currency: DEFAULT_CURRENCY.to_string(),
            min_price: None,
            price_writes: 0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Product {
    pub id: u64,
    pub title: String,
    /// ACTIVE, DRAFT or ARCHIVED
    pub status: String,
}

#[derive(Clone, Debug)]
pub struct Variant {
    pub id: u64,
    pub product_id: u64,
    pub title: String,
    /// Empty when the variant has no SKU (Shopify answers "").
    pub sku: String,
    /// Money as Shopify writes it: decimal text, never a float.
    pub price: String,
    pub compare_at_price: Option<String>,
    pub inventory_item_id: u64,
    /// The location its inventory level is at (`inventoryQuantity` is that level's available).
    pub location_id: u64,
    /// How many times `productVariantsBulkUpdate` wrote its price or compareAtPrice.
    pub price_writes: u64,
}

/// Catalog endpoints, merged into the shopify router (the catalog is read through
/// `POST /admin/api/{version}/graphql.json`, in `shopify.rs`).
pub fn router() -> Router<Arc<State>> {
    Router::new()
}

/// Admin endpoints (under /_admin/shopify) that build catalogs.
pub fn admin_router() -> Router<Arc<State>> {
    Router::new().route("/catalog", post(admin_catalog))
}

// ---- the GraphQL query ------------------------------------------------------------------------

/// Whether a GraphQL document is a query (not a mutation) selecting `productVariants`.
pub fn is_catalog_query(query: &str) -> bool {
    match gql::lex(query) {
        Ok(toks) => {
            let mutation = matches!(toks.first().map(|t| &t.tok),
                Some(gql::Tok::Name(n)) if n == "mutation" || n == "subscription");
            !mutation
                && toks
                    .iter()
                    .any(|t| matches!(&t.tok, gql::Tok::Name(n) if n == "productVariants"))
        }
        Err(_) => query.contains("productVariants") && !query.trim_start().starts_with("mutation"),
    }
}

/// Answers a catalog query for `shop` (always HTTP 200, as Shopify): data, or GraphQL errors, and
/// `extensions.cost` on every reply.
pub fn answer(state: &State, m: &mut Shopify, shop: &str, query: &str, variables: &Value) -> Value {
    state.count("shopify graphql productVariants");
    let tops = match prepare(query, variables) {
        Ok(t) => t,
        Err(errors) => {
            let available = m.spend(shop, 0.0).unwrap_or_else(|a| a);
            return json!({"errors": errors.iter().map(gql::Error::to_json).collect::<Vec<_>>(),
                          "extensions": cost_json(m, 0, 0, available)});
        }
    };
    let requested: u64 = tops.iter().map(Top::requested).sum();
    if let Err(refused) = charge(state, m, shop, requested) {
        return refused;
    }
    let mut data = Map::new();
    let mut errors = Vec::new();
    let mut actual = 0;
    {
        let cat = m.catalog.shops.get(shop);
        let variants = cat.map(|c| c.variants.as_slice()).unwrap_or(&[]);
        let products = cat.map(|c| &c.products);
        let currency = cat.map(|c| c.currency.as_str()).unwrap_or(DEFAULT_CURRENCY);
        for t in &tops {
            match t {
                Top::Variants(c) => match c.execute(shop, variants, products, &m.levels) {
                    Ok((v, returned)) => {
                        actual += 2 + returned * c.node_cost;
                        data.insert(c.key.clone(), v);
                    }
                    Err(e) => errors.push(e.to_json()),
                },
                Top::Shop { key, selection, cost } => {
                    actual += cost;
                    data.insert(key.clone(), shop_object(selection, shop, currency));
                }
            }
        }
    }
    let available = m.refund(shop, requested.saturating_sub(actual) as f64);
    let ext = cost_json(m, requested, actual, available);
    if errors.is_empty() {
        json!({"data": data, "extensions": ext})
    } else {
        // productVariants is non-null: an error nulls the whole data
        json!({"data": null, "errors": errors, "extensions": ext})
    }
}

/// Takes a query's requested cost from the shop's bucket; Err(the reply) when it is above the
/// single-query maximum (`MAX_COST_EXCEEDED`, nothing charged) or the bucket is short
/// (`THROTTLED`).
pub(crate) fn charge(state: &State, m: &mut Shopify, shop: &str, requested: u64) -> Result<(), Value> {
    if requested > MAX_QUERY_COST {
        let available = m.spend(shop, 0.0).unwrap_or_else(|a| a);
        let message = format!(
            "Query cost is {requested}, which exceeds the single query max cost limit ({MAX_QUERY_COST}).\n\n\
             See https://shopify.dev/concepts/about-apis/rate-limits for more information on how the\n\
             cost of a query is calculated.\n\n\
             To query larger amounts of data with fewer limits, bulk operations should be used instead.\n\
             See https://shopify.dev/tutorials/perform-bulk-operations-with-admin-api for usage details.\n"
        );
        return Err(
            json!({"errors": [{"message": message, "extensions": {"code": "MAX_COST_EXCEEDED",
                        "cost": requested, "maxCost": MAX_QUERY_COST,
                        "documentation": "https://shopify.dev/api/usage/limits#rate-limits"}}],
                      "extensions": cost_json(m, requested, 0, available)}),
        );
    }
    if let Err(available) = m.spend(shop, requested as f64) {
        state.count("shopify throttled");
        return Err(
            json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED",
                        "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                      "extensions": cost_json(m, requested, 0, available)}),
        );
    }
    Ok(())
}

/// `extensions` with Shopify's cost object: integer query costs, float throttle status.
pub(crate) fn cost_json(m: &Shopify, requested: u64, actual: u64, available: f64) -> Value {
    json!({"cost": {"requestedQueryCost": requested, "actualQueryCost": actual,
           "throttleStatus": {"maximumAvailable": m.bucket_max, "currentlyAvailable": available,
                              "restoreRate": m.restore_rate}}})
}

/// A top-level field of a catalog query, checked and ready to run.
enum Top {
    Variants(Conn),
    /// `shop { ... }`: `cost` is the object's (1; its fields are scalars).
    Shop {
        key: String,
        selection: Vec<gql::Field>,
        cost: u64,
    },
}

impl Top {
    /// The cost asked of the bucket before running.
    fn requested(&self) -> u64 {
        match self {
            Top::Variants(c) => c.requested(),
            Top::Shop { cost, .. } => *cost,
        }
    }
}

/// The `Shop` object (`QueryRoot.shop`) of `shop` (its myshopify domain).
fn shop_object(sel: &[gql::Field], shop: &str, currency: &str) -> Value {
    let mut out = Map::new();
    for f in sel {
        let v = match f.name.as_str() {
            "__typename" => json!("Shop"),
            "id" => json!("gid://shopify/Shop/1"),
            "name" => json!(shop.split('.').next().unwrap_or(shop)),
            "myshopifyDomain" => json!(shop),
            "currencyCode" => json!(currency),
            _ => Value::Null,
        };
        out.insert(f.key().to_string(), v);
    }
    Value::Object(out)
}

/// One `productVariants` selection, checked and ready to run.
struct Conn {
    key: String,
    first: usize,
    after: Option<u64>,
    selection: Vec<gql::Field>,
    /// 1 (the variant) + the objects selected under it
    node_cost: u64,
    loc: (usize, usize),
}

impl Conn {
    fn requested(&self) -> u64 {
        2 + self.first as u64 * self.node_cost
    }

    /// The page as JSON and how many nodes it holds.
    fn execute(
        &self,
        shop: &str,
        variants: &[Variant],
        products: Option<&HashMap<u64, Product>>,
        levels: &HashMap<(String, String, String), Level>,
    ) -> Result<(Value, u64), gql::Error> {
        let start = match self.after {
            Some(last) => variants.partition_point(|v| v.id <= last),
            None => 0,
        };
        if start >= PAGINATION_LIMIT {
            return Err(gql::Error::new(format!(
                "Cursor-based pagination is limited to {PAGINATION_LIMIT} objects: this page would start after \
                 object {start}. To read more, use bulk operations (bulkOperationRunQuery) instead."
            ))
            .at(self.loc)
            .with_path(vec![self.key.clone()])
            .with_extensions(json!({"code": "BAD_REQUEST"})));
        }
        let end = (start + self.first).min(variants.len()).min(PAGINATION_LIMIT);
        let page = &variants[start..end];
        let info = PageInfo {
            has_next: end < variants.len(),
            has_previous: start > 0,
        };
        let ctx = Render { shop, products, levels };
        Ok((ctx.connection(&self.selection, page, &info), page.len() as u64))
    }
}

pub(crate) struct PageInfo {
    pub(crate) has_next: bool,
    pub(crate) has_previous: bool,
}

/// Renders catalog objects for a selection (also used by shopify_prices.rs).
pub(crate) struct Render<'a> {
    pub(crate) shop: &'a str,
    pub(crate) products: Option<&'a HashMap<u64, Product>>,
    pub(crate) levels: &'a HashMap<(String, String, String), Level>,
}

impl Render<'_> {
    pub(crate) fn connection(&self, sel: &[gql::Field], page: &[Variant], info: &PageInfo) -> Value {
        let mut out = Map::new();
        for f in sel {
            let sub = f.selection.as_deref().unwrap_or(&[]);
            let v = match f.name.as_str() {
                "__typename" => json!("ProductVariantConnection"),
                "nodes" => Value::Array(page.iter().map(|v| self.variant(sub, v)).collect()),
                "edges" => Value::Array(
                    page.iter()
                        .map(|v| {
                            let mut edge = Map::new();
                            for g in sub {
                                let gsub = g.selection.as_deref().unwrap_or(&[]);
                                let x = match g.name.as_str() {
                                    "__typename" => json!("ProductVariantEdge"),
                                    "cursor" => json!(cursor(v.id)),
                                    "node" => self.variant(gsub, v),
                                    _ => Value::Null,
                                };
                                edge.insert(g.key().to_string(), x);
                            }
                            Value::Object(edge)
                        })
                        .collect(),
                ),
                "pageInfo" => {
                    let mut p = Map::new();
                    for g in sub {
                        let x = match g.name.as_str() {
                            "__typename" => json!("PageInfo"),
                            "hasNextPage" => json!(info.has_next),
                            "hasPreviousPage" => json!(info.has_previous),
                            "startCursor" => page.first().map(|v| json!(cursor(v.id))).unwrap_or(Value::Null),
                            "endCursor" => page.last().map(|v| json!(cursor(v.id))).unwrap_or(Value::Null),
                            _ => Value::Null,
                        };
                        p.insert(g.key().to_string(), x);
                    }
                    Value::Object(p)
                }
                _ => Value::Null,
            };
            out.insert(f.key().to_string(), v);
        }
        Value::Object(out)
    }

    pub(crate) fn variant(&self, sel: &[gql::Field], v: &Variant) -> Value {
        let product = self.products.and_then(|p| p.get(&v.product_id));
        let mut out = Map::new();
        for f in sel {
            let sub = f.selection.as_deref().unwrap_or(&[]);
            let x = match f.name.as_str() {
                "__typename" => json!("ProductVariant"),
                "id" => json!(format!("gid://shopify/ProductVariant/{}", v.id)),
                "title" => json!(v.title),
                "displayName" => json!(format!(
                    "{} - {}",
                    product.map(|p| p.title.as_str()).unwrap_or(""),
                    v.title
                )),
                "sku" => json!(v.sku),
                "barcode" => Value::Null,
                "price" => json!(v.price),
                "compareAtPrice" => v.compare_at_price.as_ref().map(|p| json!(p)).unwrap_or(Value::Null),
                "inventoryQuantity" => json!(self.quantity(v)),
                "product" => product.map(|p| Self::product(sub, p)).unwrap_or(Value::Null),
                "inventoryItem" => {
                    let mut o = Map::new();
                    for g in sub {
                        let y = match g.name.as_str() {
                            "__typename" => json!("InventoryItem"),
                            "id" => json!(format!("gid://shopify/InventoryItem/{}", v.inventory_item_id)),
                            "sku" => json!(v.sku),
                            "tracked" => json!(true),
                            _ => Value::Null,
                        };
                        o.insert(g.key().to_string(), y);
                    }
                    Value::Object(o)
                }
                _ => Value::Null,
            };
            out.insert(f.key().to_string(), x);
        }
        Value::Object(out)
    }

    pub(crate) fn product(sel: &[gql::Field], p: &Product) -> Value {
        let mut o = Map::new();
        for g in sel {
            let y = match g.name.as_str() {
                "__typename" => json!("Product"),
                "id" => json!(format!("gid://shopify/Product/{}", p.id)),
                "title" => json!(p.title),
                "status" => json!(p.status),
                _ => Value::Null,
            };
            o.insert(g.key().to_string(), y);
        }
        Value::Object(o)
    }

    /// The available quantity of the variant's inventory level (0 without one).
    fn quantity(&self, v: &Variant) -> i64 {
        self.levels
            .get(&(
                self.shop.to_string(),
                v.inventory_item_id.to_string(),
                v.location_id.to_string(),
            ))
            .map(|l| l.available)
            .unwrap_or(0)
    }
}

/// An opaque cursor as Shopify's look: base64 of `{"last_id":N,"last_value":"N"}`.
pub fn cursor(id: u64) -> String {
    marketplace_signing::base64(format!("{{\"last_id\":{id},\"last_value\":\"{id}\"}}").as_bytes())
}

pub(crate) fn decode_cursor(c: &str) -> Option<u64> {
    let bytes = base64_decode(c)?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("last_id").and_then(Value::as_u64)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

// ---- checking a query against the emulated schema ---------------------------------------------

/// A field's type in the emulated part of the schema.
enum Kind {
    Scalar(&'static str),
    Object(&'static str),
}

fn field_kind(ty: &str, name: &str) -> Option<Kind> {
    use Kind::{Object, Scalar};
    Some(match (ty, name) {
        (_, "__typename") => Scalar("String!"),
        ("ProductVariantConnection", "nodes") => Object("ProductVariant"),
        ("ProductVariantConnection", "edges") => Object("ProductVariantEdge"),
        ("ProductVariantConnection", "pageInfo") => Object("PageInfo"),
        ("ProductVariantEdge", "cursor") => Scalar("String!"),
        ("ProductVariantEdge", "node") => Object("ProductVariant"),
        ("PageInfo", "hasNextPage" | "hasPreviousPage") => Scalar("Boolean!"),
        ("PageInfo", "startCursor" | "endCursor") => Scalar("String"),
        ("ProductVariant", "id") => Scalar("ID!"),
        ("ProductVariant", "title" | "displayName") => Scalar("String!"),
        ("ProductVariant", "sku" | "barcode") => Scalar("String"),
        ("ProductVariant", "price") => Scalar("Money!"),
        ("ProductVariant", "compareAtPrice") => Scalar("Money"),
        ("ProductVariant", "inventoryQuantity") => Scalar("Int"),
        ("ProductVariant", "product") => Object("Product!"),
        ("ProductVariant", "inventoryItem") => Object("InventoryItem!"),
        ("Product", "id") => Scalar("ID!"),
        ("Product", "title") => Scalar("String!"),
        ("Product", "status") => Scalar("ProductStatus!"),
        ("InventoryItem", "id") => Scalar("ID!"),
        ("InventoryItem", "sku") => Scalar("String"),
        ("InventoryItem", "tracked") => Scalar("Boolean!"),
        ("QueryRoot", "shop") => Object("Shop!"),
        ("Shop", "id") => Scalar("ID!"),
        ("Shop", "name" | "myshopifyDomain") => Scalar("String!"),
        ("Shop", "currencyCode") => Scalar("CurrencyCode!"),
        // the productVariantsBulkUpdate payload (shopify_prices.rs)
        ("ProductVariantsBulkUpdatePayload", "product") => Object("Product"),
        ("ProductVariantsBulkUpdatePayload", "productVariants") => Object("[ProductVariant!]"),
        ("ProductVariantsBulkUpdatePayload", "userErrors") => Object("[ProductVariantsBulkUpdateUserError!]!"),
        ("ProductVariantsBulkUpdateUserError", "field") => Scalar("[String!]"),
        ("ProductVariantsBulkUpdateUserError", "message") => Scalar("String!"),
        ("ProductVariantsBulkUpdateUserError", "code") => Scalar("ProductVariantsBulkUpdateUserErrorCode"),
        _ => return None,
    })
}

/// Checks a selection on `ty`; returns the number of objects it selects (its cost).
pub(crate) fn check_selection(ty: &str, sel: &[gql::Field], path: &[String], errors: &mut Vec<gql::Error>) -> u64 {
    let mut cost = 0;
    for f in sel {
        let mut here = path.to_vec();
        here.push(f.key().to_string());
        if let Some(d) = f.directives.first() {
            errors.push(
                gql::Error::new(format!("Directives on fields are not emulated by the sandbox (@{d})."))
                    .at(f.loc)
                    .with_path(here.clone()),
            );
        }
        for (arg, _, loc) in &f.args {
            errors.push(
                gql::Error::new(format!("Field '{}' doesn't accept argument '{arg}'", f.name))
                    .at(*loc)
                    .with_path(here.clone())
                    .with_extensions(json!({"code": "argumentNotAccepted", "name": f.name,
                                            "typeName": "Field", "argumentName": arg})),
            );
        }
        match field_kind(ty, &f.name) {
            None => errors.push(
                gql::Error::new(format!("Field '{}' doesn't exist on type '{ty}'", f.name))
                    .at(f.loc)
                    .with_path(here)
                    .with_extensions(json!({"code": "undefinedField", "typeName": ty, "fieldName": f.name})),
            ),
            Some(Kind::Scalar(t)) => {
                if f.selection.is_some() {
                    errors.push(
                        gql::Error::new(format!(
                            "Selections can't be made on scalars (field '{}' returns {t} but has selections)",
                            f.name
                        ))
                        .at(f.loc)
                        .with_path(here)
                        .with_extensions(json!({"code": "selectionMismatch", "nodeName": f.name, "typeName": t})),
                    );
                }
            }
            Some(Kind::Object(t)) => match &f.selection {
                None => errors.push(
                    gql::Error::new(format!(
                        "Field must have selections (field '{}' returns {t} but has no selections. Did you mean '{} {{ ... }}'?)",
                        f.name, f.name
                    ))
                    .at(f.loc)
                    .with_path(here)
                    .with_extensions(json!({"code": "selectionMismatch", "nodeName": f.name, "typeName": t})),
                ),
                Some(sub) => {
                    let named = t.trim_matches(|c| c == '[' || c == ']' || c == '!');
                    cost += 1 + check_selection(named, sub, &here, errors)
                }
            },
        }
    }
    cost
}

/// The cost of one node of a connection selection: 1 + the objects selected under it (under
/// `nodes` or `edges { node }`, whichever is dearer); 1 when no node is selected.
pub(crate) fn node_cost(sel: &[gql::Field]) -> u64 {
    let mut scratch = Vec::new();
    let mut cost = 1;
    for f in sel {
        let sub = f.selection.as_deref().unwrap_or(&[]);
        match f.name.as_str() {
            "nodes" => cost = cost.max(1 + check_selection("ProductVariant", sub, &[], &mut scratch)),
            "edges" => {
                for g in sub.iter().filter(|g| g.name == "node") {
                    let gsub = g.selection.as_deref().unwrap_or(&[]);
                    cost = cost.max(1 + check_selection("ProductVariant", gsub, &[], &mut scratch));
                }
            }
            _ => {}
        }
    }
    cost
}

const SORT_KEYS: &[&str] = &[
    "FULL_TITLE",
    "ID",
    "INVENTORY_LEVELS_AVAILABLE",
    "INVENTORY_MANAGEMENT",
    "INVENTORY_POLICY",
    "INVENTORY_QUANTITY",
    "NAME",
    "POPULAR",
    "POSITION",
    "RELEVANCE",
    "SKU",
    "TITLE",
];

/// Parses and checks the document; the `productVariants` and `shop` selections to run, in
/// document order, or the errors.
fn prepare(query: &str, variables: &Value) -> Result<Vec<Top>, Vec<gql::Error>> {
    let op = gql::parse(query).map_err(|e| vec![e])?;
    let op_path = match &op.name {
        Some(n) => format!("{} {n}", op.kind),
        None => op.kind.clone(),
    };
    let op_label = match &op.name {
        Some(n) => n.clone(),
        None => format!("anonymous {}", op.kind),
    };
    if op.kind != "query" {
        return Err(vec![gql::Error::new("Only queries are answered here.")]);
    }
    let mut errors = Vec::new();
    // the variables: declared types, values (given, else the default, else null)
    let given = match variables {
        Value::Object(o) => o.clone(),
        Value::Null => Map::new(),
        _ => return Err(vec![gql::Error::new("Variables must be an object")]),
    };
    let mut declared: HashMap<String, String> = HashMap::new();
    let mut values: HashMap<String, Value> = HashMap::new();
    for d in &op.vars {
        let value = given
            .get(&d.name)
            .cloned()
            .or_else(|| d.default.as_ref().map(gql::Val::to_json))
            .unwrap_or(Value::Null);
        let base = d.ty.trim_end_matches('!');
        let fits = match (&value, base) {
            (Value::Null, _) => !d.ty.ends_with('!'),
            (v, "Int") => v.is_i64(),
            (v, "String") => v.is_string(),
            (v, "ID") => v.is_string() || v.is_i64(),
            (v, "Boolean") => v.is_boolean(),
            (v, "ProductVariantSortKeys") => v.as_str().is_some_and(|s| SORT_KEYS.contains(&s)),
            _ => true,
        };
        if !fits {
            let explanation = if value.is_null() {
                "Expected value to not be null".to_string()
            } else {
                format!("Could not coerce value {value} to {base}")
            };
            errors.push(
                gql::Error::new(format!(
                    "Variable ${} of type {} was provided invalid value",
                    d.name, d.ty
                ))
                .at(d.loc)
                .with_extensions(json!({"value": value, "problems": [{"path": [], "explanation": explanation}]})),
            );
        }
        declared.insert(d.name.clone(), d.ty.clone());
        values.insert(d.name.clone(), value);
    }
    let mut used: HashSet<String> = HashSet::new();
    let mut tops = Vec::new();
    for f in &op.selection {
        let path = vec![op_path.clone(), f.key().to_string()];
        if f.name == "shop" {
            // arguments, directives, the selection: checked as any object field (of QueryRoot)
            let cost = check_selection("QueryRoot", std::slice::from_ref(f), &path[..1], &mut errors);
            tops.push(Top::Shop {
                key: f.key().to_string(),
                selection: f.selection.clone().unwrap_or_default(),
                cost,
            });
            continue;
        }
        if f.name != "productVariants" {
            errors.push(
                gql::Error::new(format!(
                    "The sandbox answers only productVariants and shop in a catalog query (found '{}').",
                    f.name
                ))
                .at(f.loc)
                .with_path(path),
            );
            continue;
        }
        if let Some(d) = f.directives.first() {
            errors.push(
                gql::Error::new(format!("Directives on fields are not emulated by the sandbox (@{d})."))
                    .at(f.loc)
                    .with_path(path.clone()),
            );
        }
        let mut args: HashMap<&str, Value> = HashMap::new();
        for (name, val, loc) in &f.args {
            let expected = match name.as_str() {
                "first" | "last" => "Int",
                "after" | "before" | "query" => "String",
                "savedSearchId" => "ID",
                "reverse" => "Boolean",
                "sortKey" => "ProductVariantSortKeys",
                _ => {
                    errors.push(
                        gql::Error::new(format!("Field 'productVariants' doesn't accept argument '{name}'"))
                            .at(*loc)
                            .with_path(path.clone())
                            .with_extensions(json!({"code": "argumentNotAccepted", "name": "productVariants",
                                                    "typeName": "Field", "argumentName": name})),
                    );
                    continue;
                }
            };
            let value = match val {
                gql::Val::Var(v) => {
                    used.insert(v.clone());
                    let Some(ty) = declared.get(v) else {
                        errors.push(
                            gql::Error::new(format!("Variable ${v} is used by {op_label} but not declared"))
                                .at(*loc)
                                .with_path(path.clone())
                                .with_extensions(json!({"code": "variableNotDefined", "variableName": v})),
                        );
                        continue;
                    };
                    if ty.trim_end_matches('!') != expected {
                        errors.push(
                            gql::Error::new(format!(
                                "Type mismatch on variable ${v} and argument {name} ({ty} / {expected})"
                            ))
                            .at(*loc)
                            .with_path(path.clone())
                            .with_extensions(json!({"code": "variableMismatch", "variableName": v,
                                                    "typeName": ty, "argumentName": name})),
                        );
                        continue;
                    }
                    values.get(v).cloned().unwrap_or(Value::Null)
                }
                literal => {
                    let fits = matches!(
                        (literal, expected),
                        (gql::Val::Null, _)
                            | (gql::Val::Int(_), "Int" | "ID")
                            | (gql::Val::Str(_), "String" | "ID")
                            | (gql::Val::Bool(_), "Boolean")
                    ) || matches!(literal, gql::Val::Enum(e) if expected == "ProductVariantSortKeys"
                        && SORT_KEYS.contains(&e.as_str()));
                    if !fits {
                        errors.push(
                            gql::Error::new(format!(
                                "Argument '{name}' on Field 'productVariants' has an invalid value ({}). Expected type '{expected}'.",
                                literal.display()
                            ))
                            .at(*loc)
                            .with_path(path.clone())
                            .with_extensions(json!({"code": "argumentLiteralsIncompatible", "typeName": "Argument",
                                                    "argumentName": name})),
                        );
                        continue;
                    }
                    literal.to_json()
                }
            };
            args.insert(name.as_str(), value);
        }
        let arg = |k: &str| args.get(k).filter(|v| !v.is_null());
        for unsupported in ["last", "before", "query", "savedSearchId"] {
            if arg(unsupported).is_some() {
                errors.push(
                    gql::Error::new(format!(
                        "The sandbox emulates productVariants paging with first/after and sortKey: ID only ('{unsupported}' given)."
                    ))
                    .at(f.loc)
                    .with_path(path.clone()),
                );
            }
        }
        if arg("reverse").and_then(Value::as_bool) == Some(true) {
            errors.push(
                gql::Error::new("The sandbox emulates productVariants in ascending order only (reverse: true given).")
                    .at(f.loc)
                    .with_path(path.clone()),
            );
        }
        if let Some(k) = arg("sortKey").and_then(Value::as_str).filter(|k| *k != "ID") {
            errors.push(
                gql::Error::new(format!(
                    "The sandbox emulates productVariants with sortKey: ID only ({k} given)."
                ))
                .at(f.loc)
                .with_path(path.clone()),
            );
        }
        let first = arg("first").and_then(Value::as_i64);
        if first.is_none() && arg("last").is_none() {
            errors.push(
                gql::Error::new("you must provide one of first or last")
                    .at(f.loc)
                    .with_path(path.clone()),
            );
        }
        if let Some(n) = first.filter(|n| !(1..=MAX_PAGE).contains(n)) {
            errors.push(
                gql::Error::new(format!(
                    "The page size (first: {n}) must be between 1 and {MAX_PAGE}: connections return at most \
                     {MAX_PAGE} objects per page."
                ))
                .at(f.loc)
                .with_path(path.clone())
                .with_extensions(json!({"code": "BAD_REQUEST"})),
            );
        }
        let after = match arg("after").and_then(Value::as_str) {
            None => None,
            Some(c) => match decode_cursor(c) {
                Some(id) => Some(id),
                None => {
                    errors.push(
                        gql::Error::new(format!("Invalid cursor for current pagination sort: {c}"))
                            .at(f.loc)
                            .with_path(path.clone())
                            .with_extensions(json!({"code": "BAD_REQUEST"})),
                    );
                    None
                }
            },
        };
        let Some(selection) = f.selection.clone() else {
            errors.push(
                gql::Error::new(
                    "Field must have selections (field 'productVariants' returns ProductVariantConnection! but has \
                     no selections. Did you mean 'productVariants { ... }'?)",
                )
                .at(f.loc)
                .with_path(path.clone())
                .with_extensions(json!({"code": "selectionMismatch", "nodeName": "productVariants",
                                        "typeName": "ProductVariantConnection!"})),
            );
            continue;
        };
        check_selection("ProductVariantConnection", &selection, &path, &mut errors);
        tops.push(Top::Variants(Conn {
            key: f.key().to_string(),
            first: first.unwrap_or(0).clamp(0, MAX_PAGE) as usize,
            after,
            node_cost: node_cost(&selection),
            selection,
            loc: f.loc,
        }));
    }
    for d in &op.vars {
        if !used.contains(&d.name) {
            errors.push(
                gql::Error::new(format!("Variable ${} is declared by {op_label} but not used", d.name))
                    .at(d.loc)
                    .with_path(vec![op_path.clone()])
                    .with_extensions(json!({"code": "variableNotUsed", "variableName": d.name})),
            );
        }
    }
    if errors.is_empty() {
        Ok(tops)
    } else {
        Err(errors)
    }
}

// ---- the generator ----------------------------------------------------------------------------

/// `POST /_admin/shopify/catalog`: see [`Spec`].
async fn admin_catalog(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let spec = match Spec::from_json(&b) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    };
    let mut m = state.shopify.lock();
    match generate(&mut m, &spec) {
        Ok(s) => Json(s.to_json()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

/// What to build: the fields every marketplace's generator takes ([`Common`]) and Shopify's own.
#[derive(Clone, Debug)]
pub struct Spec {
    pub shop: String,
    pub common: Common,
    /// Decimal text, kept as given.
    pub price: String,
    pub compare_at_price: Option<String>,
    pub status: String,
    pub location_id: u64,
    /// The shop's currency (`shop { currencyCode }`), a 3-letter ISO 4217 code; `None` keeps the
    /// shop's (USD for a new shop).
    pub currency: Option<String>,
}

/// What the generator built: `{"products", "units", "without_sku", "duplicated"}`.
pub type Summary = Counts;

impl Spec {
    /// The body, read as Shopify reads input: a null is an absent field; unknown fields are ignored.
    pub fn from_json(b: &Value) -> Result<Spec, String> {
        let text = |k: &str, default: &str| match b.get(k) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{k} must be a string")),
        };
        let shop = match b.get("shop").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => return Err("shop is required".into()),
        };
        if b.get("products").is_none_or(Value::is_null) {
            return Err("products is required".into());
        }
        let common = Common::from_lenient(b).map_err(|field| match field {
            "sku_prefix" => "sku_prefix must be a string".to_string(),
            "stock" => "stock must be an integer from 0 to 1,000,000,000".to_string(),
            _ => format!("{field} must be a non-negative integer"),
        })?;
        let price = common.price_text()?.to_string();
        if !is_decimal(&price) {
            return Err(format!("price must be decimal text such as \"19.99\", not {price:?}"));
        }
        let compare_at_price = match b.get("compare_at_price") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if is_decimal(s) => Some(s.clone()),
            Some(_) => return Err("compare_at_price must be decimal text such as \"24.99\"".into()),
        };
        let status = text("status", "ACTIVE")?;
        if !["ACTIVE", "DRAFT", "ARCHIVED"].contains(&status.as_str()) {
            return Err("status must be ACTIVE, DRAFT or ARCHIVED".into());
        }
        if !(0..=1_000_000_000).contains(&common.stock) {
            return Err("stock must be an integer from 0 to 1,000,000,000".into());
        }
        let location_id = match b.get("location_id") {
            None | Some(Value::Null) => 1,
            Some(Value::Number(n)) => n.as_u64().ok_or("location_id must be a positive integer")?,
            Some(Value::String(s)) => s
                .rsplit('/')
                .next()
                .and_then(|x| x.parse().ok())
                .ok_or("location_id must be a number or a gid://shopify/Location/N")?,
            Some(_) => return Err("location_id must be a number or a gid://shopify/Location/N".into()),
        };
        let currency = match b.get("currency") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.len() == 3 && s.bytes().all(|c| c.is_ascii_uppercase()) => Some(s.clone()),
            Some(_) => return Err("currency must be a 3-letter code such as \"MXN\"".into()),
        };
        Ok(Spec {
            shop,
            common,
            price,
            compare_at_price,
            status,
            location_id,
            currency,
        })
    }
}

/// Builds the catalog into the shop (added to what it has; ids must not collide). Ids: product
/// i is `first_id + i`; unit n (1-based) is variant `first_id + products + n - 1` with inventory
/// item `first_id + products + units + n - 1`, stocked at `location_id` with `stock` available.
pub fn generate(m: &mut Shopify, spec: &Spec) -> Result<Summary, String> {
    let c = &spec.common;
    if c.variations > MAX_VARIANTS_PER_PRODUCT {
        return Err(format!("variations: at most {MAX_VARIANTS_PER_PRODUCT} per product"));
    }
    let units = c
        .units()
        .filter(|u| *u <= MAX_GENERATED_UNITS)
        .ok_or(format!("at most {MAX_GENERATED_UNITS} units per call"))?;
    let first_id = c.first_id_or(DEFAULT_FIRST_ID);
    let v_start = first_id.checked_add(c.products).ok_or("ids overflow")?;
    let i_start = v_start.checked_add(units).ok_or("ids overflow")?;
    let i_end = i_start.checked_add(units).ok_or("ids overflow")?;
    let shop = spec.shop.clone();
    // collisions with what the shop already has
    if let Some(cat) = m.catalog.shops.get(&shop) {
        if cat.products.keys().any(|id| (first_id..v_start).contains(id)) {
            return Err(format!(
                "product ids {first_id}..{v_start} collide with the shop's catalog: pick another first_id"
            ));
        }
        let at = cat.variants.partition_point(|v| v.id < v_start);
        if cat.variants.get(at).is_some_and(|v| v.id < i_start) {
            return Err(format!(
                "variant ids {v_start}..{i_start} collide with the shop's catalog: pick another first_id"
            ));
        }
    }
    let taken = m
        .levels
        .keys()
        .any(|(s, item, _)| *s == shop && item.parse::<u64>().is_ok_and(|x| (i_start..i_end).contains(&x)));
    if taken {
        return Err(format!(
            "inventory item ids {i_start}..{i_end} already have levels in this shop: pick another first_id"
        ));
    }
    let mut products = Vec::with_capacity(c.products as usize);
    let mut variants: Vec<Variant> = Vec::with_capacity(units as usize);
    let mut plan = c.plan();
    for p in plan.by_ref() {
        let product_id = first_id + p.i;
        products.push(Product {
            id: product_id,
            title: format!("Product {}", p.i),
            status: spec.status.clone(),
        });
        let one = p.units.len() == 1;
        for u in p.units {
            variants.push(Variant {
                id: v_start + u.n - 1,
                product_id,
                title: if one {
                    "Default Title".to_string()
                } else {
                    format!("Option {}", u.j + 1)
                },
                sku: u.sku.unwrap_or_default(),
                price: spec.price.clone(),
                compare_at_price: spec.compare_at_price.clone(),
                inventory_item_id: i_start + u.n - 1,
                location_id: spec.location_id,
                price_writes: 0,
            });
        }
    }
    let location = spec.location_id.to_string();
    m.levels.reserve(variants.len());
    for v in &variants {
        m.levels.insert(
            (shop.clone(), v.inventory_item_id.to_string(), location.clone()),
            Level {
                available: c.stock,
                writes: 0,
            },
        );
    }
    let cat = m.catalog.shops.entry(shop).or_default();
    if let Some(currency) = &spec.currency {
        cat.currency.clone_from(currency);
    }
    cat.products.extend(products.into_iter().map(|p| (p.id, p)));
    let in_order = cat.variants.last().is_none_or(|l| l.id < v_start);
    cat.variants.extend(variants);
    if !in_order {
        cat.variants.sort_unstable_by_key(|v| v.id);
    }
    Ok(plan.counts())
}

// ---- a small GraphQL parser -------------------------------------------------------------------

pub(crate) mod gql {
    use serde_json::{json, Value};

    #[derive(Clone, Debug, PartialEq)]
    pub enum Tok {
        Punct(char),
        Spread,
        Name(String),
        Int(i64),
        Float(f64),
        Str(String),
        Eof,
    }

    #[derive(Clone, Debug)]
    pub struct Token {
        pub tok: Tok,
        pub line: usize,
        pub col: usize,
    }

    /// A GraphQL error as Shopify (graphql-ruby) writes it.
    #[derive(Clone, Debug)]
    pub struct Error {
        pub message: String,
        pub loc: Option<(usize, usize)>,
        pub path: Vec<String>,
        pub extensions: Value,
    }

    impl Error {
        pub fn new(message: impl Into<String>) -> Error {
            Error {
                message: message.into(),
                loc: None,
                path: Vec::new(),
                extensions: Value::Null,
            }
        }
        pub fn at(mut self, loc: (usize, usize)) -> Error {
            self.loc = Some(loc);
            self
        }
        pub fn with_path(mut self, path: Vec<String>) -> Error {
            self.path = path;
            self
        }
        pub fn with_extensions(mut self, ext: Value) -> Error {
            self.extensions = ext;
            self
        }
        pub fn to_json(&self) -> Value {
            let mut e = json!({ "message": self.message });
            if let Some((line, column)) = self.loc {
                e["locations"] = json!([{"line": line, "column": column}]);
            }
            if !self.path.is_empty() {
                e["path"] = json!(self.path);
            }
            if !self.extensions.is_null() {
                e["extensions"] = self.extensions.clone();
            }
            e
        }
    }

    pub fn lex(src: &str) -> Result<Vec<Token>, Error> {
        let chars: Vec<char> = src.chars().collect();
        let (mut i, mut line, mut col) = (0, 1, 1);
        let mut out = Vec::new();
        let err = |line: usize, col: usize, what: &str| {
            Error::new(format!("Parse error on {what} at [{line}, {col}]")).at((line, col))
        };
        while i < chars.len() {
            let c = chars[i];
            match c {
                '\n' => {
                    i += 1;
                    line += 1;
                    col = 1;
                    continue;
                }
                ' ' | '\t' | '\r' | ',' | '\u{feff}' => {
                    i += 1;
                    col += 1;
                    continue;
                }
                '#' => {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                    continue;
                }
                _ => {}
            }
            let (tl, tc) = (line, col);
            let push = |out: &mut Vec<Token>, tok: Tok| out.push(Token { tok, line: tl, col: tc });
            if "!$&()=:@[]{}|".contains(c) {
                push(&mut out, Tok::Punct(c));
                i += 1;
                col += 1;
            } else if c == '.' {
                if chars.get(i + 1) == Some(&'.') && chars.get(i + 2) == Some(&'.') {
                    push(&mut out, Tok::Spread);
                    i += 3;
                    col += 3;
                } else {
                    return Err(err(tl, tc, "\".\""));
                }
            } else if c == '_' || c.is_ascii_alphabetic() {
                let start = i;
                while i < chars.len() && (chars[i] == '_' || chars[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                col += i - start;
                push(&mut out, Tok::Name(chars[start..i].iter().collect()));
            } else if c == '-' || c.is_ascii_digit() {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let mut float = false;
                if chars.get(i) == Some(&'.') {
                    float = true;
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                if matches!(chars.get(i), Some('e' | 'E')) {
                    float = true;
                    i += 1;
                    if matches!(chars.get(i), Some('+' | '-')) {
                        i += 1;
                    }
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let text: String = chars[start..i].iter().collect();
                col += i - start;
                let tok = if float {
                    text.parse().map(Tok::Float)
                } else {
                    text.parse()
                        .map(Tok::Int)
                        .map_err(|_| ())
                        .or_else(|_| text.parse().map(Tok::Float))
                }
                .map_err(|_| err(tl, tc, &format!("{text:?} (number)")))?;
                push(&mut out, tok);
            } else if c == '"' {
                let block = chars.get(i + 1) == Some(&'"') && chars.get(i + 2) == Some(&'"');
                let mut s = String::new();
                if block {
                    i += 3;
                    col += 3;
                    loop {
                        if i >= chars.len() {
                            return Err(err(tl, tc, "an unterminated string"));
                        }
                        if chars[i] == '"' && chars.get(i + 1) == Some(&'"') && chars.get(i + 2) == Some(&'"') {
                            i += 3;
                            col += 3;
                            break;
                        }
                        if chars[i] == '\n' {
                            line += 1;
                            col = 1;
                        } else {
                            col += 1;
                        }
                        s.push(chars[i]);
                        i += 1;
                    }
                } else {
                    i += 1;
                    col += 1;
                    loop {
                        let Some(&ch) = chars.get(i) else {
                            return Err(err(tl, tc, "an unterminated string"));
                        };
                        i += 1;
                        col += 1;
                        match ch {
                            '"' => break,
                            '\n' => return Err(err(tl, tc, "an unterminated string")),
                            '\\' => {
                                let Some(&e) = chars.get(i) else {
                                    return Err(err(tl, tc, "an unterminated string"));
                                };
                                i += 1;
                                col += 1;
                                match e {
                                    'n' => s.push('\n'),
                                    't' => s.push('\t'),
                                    'r' => s.push('\r'),
                                    'b' => s.push('\u{8}'),
                                    'f' => s.push('\u{c}'),
                                    'u' => {
                                        let hex: String = chars.iter().skip(i).take(4).collect();
                                        let ch = u32::from_str_radix(&hex, 16)
                                            .ok()
                                            .and_then(char::from_u32)
                                            .ok_or_else(|| err(tl, tc, "a bad \\u escape"))?;
                                        s.push(ch);
                                        i += 4;
                                        col += 4;
                                    }
                                    other => s.push(other),
                                }
                            }
                            other => s.push(other),
                        }
                    }
                }
                push(&mut out, Tok::Str(s));
            } else {
                return Err(err(tl, tc, &format!("{:?}", c.to_string())));
            }
        }
        out.push(Token {
            tok: Tok::Eof,
            line,
            col,
        });
        Ok(out)
    }

    #[derive(Clone, Debug)]
    pub enum Val {
        Var(String),
        Int(i64),
        Float(f64),
        Str(String),
        Bool(bool),
        Null,
        Enum(String),
        List(Vec<Val>),
        Obj(Vec<(String, Val)>),
    }

    impl Val {
        /// A literal's JSON value (variables become null: resolve them first).
        pub fn to_json(&self) -> Value {
            match self {
                Val::Var(_) | Val::Null => Value::Null,
                Val::Int(i) => json!(i),
                Val::Float(f) => json!(f),
                Val::Str(s) | Val::Enum(s) => json!(s),
                Val::Bool(b) => json!(b),
                Val::List(l) => Value::Array(l.iter().map(Val::to_json).collect()),
                Val::Obj(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
            }
        }

        /// As written in a query.
        pub fn display(&self) -> String {
            match self {
                Val::Var(v) => format!("${v}"),
                Val::Str(s) => format!("{s:?}"),
                Val::Enum(e) => e.clone(),
                other => other.to_json().to_string(),
            }
        }
    }

    /// An argument: name, value, where it is written.
    pub type Arg = (String, Val, (usize, usize));

    #[derive(Clone, Debug)]
    pub struct Field {
        pub alias: Option<String>,
        pub name: String,
        pub args: Vec<Arg>,
        pub directives: Vec<String>,
        pub selection: Option<Vec<Field>>,
        pub loc: (usize, usize),
    }

    impl Field {
        /// The response key: the alias, else the name.
        pub fn key(&self) -> &str {
            self.alias.as_deref().unwrap_or(&self.name)
        }
    }

    #[derive(Clone, Debug)]
    pub struct VarDef {
        pub name: String,
        pub ty: String,
        pub default: Option<Val>,
        pub loc: (usize, usize),
    }

    #[derive(Clone, Debug)]
    pub struct Operation {
        pub kind: String,
        pub name: Option<String>,
        pub vars: Vec<VarDef>,
        pub selection: Vec<Field>,
    }

    struct Parser {
        toks: Vec<Token>,
        pos: usize,
    }

    /// Parses a document holding one operation.
    pub fn parse(src: &str) -> Result<Operation, Error> {
        let mut p = Parser {
            toks: lex(src)?,
            pos: 0,
        };
        let op = p.operation()?;
        match &p.peek().tok {
            Tok::Eof => Ok(op),
            Tok::Punct('{') | Tok::Name(_) => Err(Error::new(
                "The sandbox answers documents holding one operation (no fragments, no second operation).",
            )
            .at(p.loc())),
            _ => Err(p.unexpected()),
        }
    }

    impl Parser {
        fn peek(&self) -> &Token {
            let last = self.toks.len().saturating_sub(1);
            &self.toks[self.pos.min(last)]
        }

        fn loc(&self) -> (usize, usize) {
            let t = self.peek();
            (t.line, t.col)
        }

        fn bump(&mut self) -> Tok {
            let t = self.peek().tok.clone();
            self.pos += 1;
            t
        }

        fn is(&self, c: char) -> bool {
            self.peek().tok == Tok::Punct(c)
        }

        fn unexpected(&self) -> Error {
            let t = self.peek();
            let what = match &t.tok {
                Tok::Punct(c) => format!("\"{c}\""),
                Tok::Spread => "\"...\" (ELLIPSIS)".into(),
                Tok::Name(n) => format!("\"{n}\" (IDENTIFIER)"),
                Tok::Int(i) => format!("\"{i}\" (INT)"),
                Tok::Float(f) => format!("\"{f}\" (FLOAT)"),
                Tok::Str(s) => format!("{s:?} (STRING)"),
                Tok::Eof => "end of file".into(),
            };
            Error::new(format!("Parse error on {what} at [{}, {}]", t.line, t.col)).at((t.line, t.col))
        }

        fn expect(&mut self, c: char) -> Result<(), Error> {
            if self.is(c) {
                self.pos += 1;
                Ok(())
            } else {
                Err(self.unexpected())
            }
        }

        fn name(&mut self) -> Result<String, Error> {
            match &self.peek().tok {
                Tok::Name(n) => {
                    let n = n.clone();
                    self.pos += 1;
                    Ok(n)
                }
                _ => Err(self.unexpected()),
            }
        }

        fn operation(&mut self) -> Result<Operation, Error> {
            if self.is('{') {
                return Ok(Operation {
                    kind: "query".into(),
                    name: None,
                    vars: Vec::new(),
                    selection: self.selection_set()?,
                });
            }
            let kind = match &self.peek().tok {
                Tok::Name(k) if k == "query" || k == "mutation" || k == "subscription" => k.clone(),
                Tok::Name(k) if k == "fragment" => {
                    return Err(Error::new("Fragments are not emulated by the sandbox.").at(self.loc()))
                }
                _ => return Err(self.unexpected()),
            };
            self.pos += 1;
            let name = match &self.peek().tok {
                Tok::Name(_) => Some(self.name()?),
                _ => None,
            };
            let mut vars = Vec::new();
            if self.is('(') {
                self.pos += 1;
                while !self.is(')') {
                    let loc = self.loc();
                    self.expect('$')?;
                    let name = self.name()?;
                    self.expect(':')?;
                    let ty = self.ty()?;
                    let default = if self.is('=') {
                        self.pos += 1;
                        Some(self.value(true)?)
                    } else {
                        None
                    };
                    self.directives()?;
                    vars.push(VarDef { name, ty, default, loc });
                }
                self.pos += 1;
                if vars.is_empty() {
                    return Err(self.unexpected());
                }
            }
            self.directives()?;
            Ok(Operation {
                kind,
                name,
                vars,
                selection: self.selection_set()?,
            })
        }

        fn ty(&mut self) -> Result<String, Error> {
            let mut t = if self.is('[') {
                self.pos += 1;
                let inner = self.ty()?;
                self.expect(']')?;
                format!("[{inner}]")
            } else {
                self.name()?
            };
            if self.is('!') {
                self.pos += 1;
                t.push('!');
            }
            Ok(t)
        }

        fn value(&mut self, constant: bool) -> Result<Val, Error> {
            if self.is('$') && !constant {
                self.pos += 1;
                return Ok(Val::Var(self.name()?));
            }
            if self.is('[') {
                self.pos += 1;
                let mut l = Vec::new();
                while !self.is(']') {
                    if self.peek().tok == Tok::Eof {
                        return Err(self.unexpected());
                    }
                    l.push(self.value(constant)?);
                }
                self.pos += 1;
                return Ok(Val::List(l));
            }
            if self.is('{') {
                self.pos += 1;
                let mut o = Vec::new();
                while !self.is('}') {
                    let k = self.name()?;
                    self.expect(':')?;
                    o.push((k, self.value(constant)?));
                }
                self.pos += 1;
                return Ok(Val::Obj(o));
            }
            let v = match &self.peek().tok {
                Tok::Int(i) => Val::Int(*i),
                Tok::Float(f) => Val::Float(*f),
                Tok::Str(s) => Val::Str(s.clone()),
                Tok::Name(n) if n == "true" => Val::Bool(true),
                Tok::Name(n) if n == "false" => Val::Bool(false),
                Tok::Name(n) if n == "null" => Val::Null,
                Tok::Name(n) => Val::Enum(n.clone()),
                _ => return Err(self.unexpected()),
            };
            self.pos += 1;
            Ok(v)
        }

        /// Directives' names (their arguments are parsed and dropped).
        fn directives(&mut self) -> Result<Vec<String>, Error> {
            let mut out = Vec::new();
            while self.is('@') {
                self.pos += 1;
                out.push(self.name()?);
                if self.is('(') {
                    self.arguments()?;
                }
            }
            Ok(out)
        }

        fn arguments(&mut self) -> Result<Vec<Arg>, Error> {
            self.expect('(')?;
            let mut args = Vec::new();
            while !self.is(')') {
                let loc = self.loc();
                let name = self.name()?;
                self.expect(':')?;
                args.push((name, self.value(false)?, loc));
            }
            if args.is_empty() {
                return Err(self.unexpected());
            }
            self.pos += 1;
            Ok(args)
        }

        fn selection_set(&mut self) -> Result<Vec<Field>, Error> {
            self.expect('{')?;
            let mut fields = Vec::new();
            while !self.is('}') {
                if self.peek().tok == Tok::Spread {
                    return Err(Error::new("Fragments are not emulated by the sandbox.").at(self.loc()));
                }
                fields.push(self.field()?);
            }
            if fields.is_empty() {
                return Err(self.unexpected());
            }
            self.bump();
            Ok(fields)
        }

        fn field(&mut self) -> Result<Field, Error> {
            let loc = self.loc();
            let first = self.name()?;
            let (alias, name) = if self.is(':') {
                self.pos += 1;
                (Some(first), self.name()?)
            } else {
                (None, first)
            };
            let args = if self.is('(') { self.arguments()? } else { Vec::new() };
            let directives = self.directives()?;
            let selection = if self.is('{') {
                Some(self.selection_set()?)
            } else {
                None
            };
            Ok(Field {
                alias,
                name,
                args,
                directives,
                selection,
                loc,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Path;
    use axum::http::{HeaderMap, HeaderValue};

    const SHOP: &str = "cat.myshopify.com";
    const QUERY: &str = "query Catalog($cursor: String, $first: Int!) {
      productVariants(first: $first, after: $cursor, sortKey: ID) {
        pageInfo { hasNextPage endCursor }
        nodes { id sku price compareAtPrice inventoryQuantity inventoryItem { id } product { id title status } }
      }
    }";

    fn setup() -> (Arc<State>, HeaderMap) {
        let state = Arc::new(State::default());
        let mut m = state.shopify.lock();
        m.apps.insert("c".into(), "s".into());
        let g = m.grant(SHOP, "c", false);
        drop(m);
        let mut h = HeaderMap::new();
        h.insert(
            "x-shopify-access-token",
            HeaderValue::from_str(g["access_token"].as_str().unwrap_or_default()).unwrap(),
        );
        (state, h)
    }

    fn build(state: &State, body: Value) -> Summary {
        let spec = Spec::from_json(&body).unwrap();
        generate(&mut state.shopify.lock(), &spec).unwrap()
    }

    async fn call(state: &Arc<State>, h: &HeaderMap, body: Value) -> Value {
        let r = crate::shopify::graphql(AxState(state.clone()), Path("2026-10".into()), h.clone(), Json(body)).await;
        assert_eq!(r.status(), 200);
        let b = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    async fn page(state: &Arc<State>, h: &HeaderMap, first: i64, cursor: Option<&str>) -> Value {
        call(
            state,
            h,
            json!({"query": QUERY, "variables": {"first": first, "cursor": cursor}}),
        )
        .await
    }

    fn roomy_bucket(state: &State) {
        let mut m = state.shopify.lock();
        m.bucket_max = 1e9;
        m.restore_rate = 1e9;
    }

    #[tokio::test]
    async fn pages_cover_every_variant_once_in_id_order() {
        let (state, h) = setup();
        // 300 products, every 10th with 3 variants: 270 + 90 = 360 units
        let s = build(
            &state,
            json!({"shop": SHOP, "products": 300, "variations": 3, "variations_every": 10, "price": "19.99"}),
        );
        assert_eq!(s.units, 360);
        roomy_bucket(&state);
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let v = page(&state, &h, 50, cursor.as_deref()).await;
            let conn = &v["data"]["productVariants"];
            let nodes = conn["nodes"].as_array().unwrap();
            pages += 1;
            for n in nodes {
                seen.push(n["id"].as_str().unwrap().to_string());
                assert_eq!(n["price"], "19.99");
                assert_eq!(n["compareAtPrice"], Value::Null);
                assert_eq!(n["inventoryQuantity"], 5);
                assert!(n["inventoryItem"]["id"]
                    .as_str()
                    .unwrap()
                    .starts_with("gid://shopify/InventoryItem/"));
                assert_eq!(n["product"]["status"], "ACTIVE");
            }
            if conn["pageInfo"]["hasNextPage"] == json!(false) {
                break;
            }
            cursor = conn["pageInfo"]["endCursor"].as_str().map(String::from);
            assert!(pages < 100, "paging does not end");
        }
        assert_eq!(pages, 8);
        let expected: Vec<String> = (0..360)
            .map(|n| format!("gid://shopify/ProductVariant/{}", 1_000_300 + n))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(
            state.counters.lock().get("shopify graphql productVariants").copied(),
            Some(8)
        );
        // literal arguments work too, and the cursor is opaque base64
        let after = super::cursor(1_000_300 + 349);
        let v = call(
            &state,
            &h,
            json!({"query": format!("{{ productVariants(first: 100, after: \"{after}\") {{ edges {{ cursor node {{ id sku }} }} pageInfo {{ hasNextPage hasPreviousPage }} }} }}")}),
        )
        .await;
        let edges = v["data"]["productVariants"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 10);
        assert_eq!(edges[0]["node"]["id"], "gid://shopify/ProductVariant/1000650");
        assert_eq!(v["data"]["productVariants"]["pageInfo"]["hasNextPage"], false);
        assert_eq!(v["data"]["productVariants"]["pageInfo"]["hasPreviousPage"], true);
        assert_eq!(decode_cursor(edges[9]["cursor"].as_str().unwrap()), Some(1_000_659));
    }

    #[tokio::test]
    async fn page_size_arguments_and_variables_are_checked() {
        let (state, h) = setup();
        build(&state, json!({"shop": SHOP, "products": 3}));
        for first in [251, 0, -1] {
            let v = page(&state, &h, first, None).await;
            assert!(v.get("data").is_none());
            assert_eq!(v["errors"][0]["path"], json!(["query Catalog", "productVariants"]));
            assert!(v["errors"][0]["message"].as_str().unwrap().contains("250"), "{v}");
            assert_eq!(v["extensions"]["cost"]["actualQueryCost"], 0);
        }
        let v = call(&state, &h, json!({"query": "{ productVariants { nodes { id } } }"})).await;
        assert_eq!(v["errors"][0]["message"], "you must provide one of first or last");
        let v = call(
            &state,
            &h,
            json!({"query": "{ productVariants(first: \"5\") { nodes { id } } }"}),
        )
        .await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "argumentLiteralsIncompatible");
        let v = call(
            &state,
            &h,
            json!({"query": "{ productVariants(first: 5) { nodes { id weight } } }"}),
        )
        .await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "undefinedField");
        let v = call(
            &state,
            &h,
            json!({"query": "query($c: String) { productVariants(first: 5, after: $d) { nodes { id } } }"}),
        )
        .await;
        let codes: Vec<&Value> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["extensions"]["code"])
            .collect();
        assert_eq!(codes, [&json!("variableNotDefined"), &json!("variableNotUsed")]);
        let v = call(
            &state,
            &h,
            json!({"query": "{ productVariants(first: 5) { nodes { id } }"}),
        )
        .await;
        assert!(v["errors"][0]["message"].as_str().unwrap().starts_with("Parse error"));
        let v = call(&state, &h, json!({"query": QUERY, "variables": {"first": "many"}})).await;
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("invalid value"));
        let v = call(
            &state,
            &h,
            json!({"query": "{ productVariants(first: 5, after: \"!!\") { nodes { id } } }"}),
        )
        .await;
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("Invalid cursor"));
        // a default for $first
        let v = call(
            &state,
            &h,
            json!({"query": "query($first: Int = 2) { productVariants(first: $first) { nodes { id } } }"}),
        )
        .await;
        assert_eq!(v["data"]["productVariants"]["nodes"].as_array().map(Vec::len), Some(2));
        // a mutation is not taken for the catalog query
        assert!(!is_catalog_query(
            "mutation { productVariantsBulkUpdate(productId: \"x\") { userErrors { field } } }"
        ));
        assert!(is_catalog_query(QUERY));
    }

    #[tokio::test]
    async fn cursor_paging_stops_at_25000_objects() {
        let (state, h) = setup();
        let started = std::time::Instant::now();
        let s = build(&state, json!({"shop": SHOP, "products": 25_001}));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(s.units, 25_001);
        roomy_bucket(&state);
        let mut cursor: Option<String> = None;
        let mut count = 0;
        for _ in 0..100 {
            let v = page(&state, &h, 250, cursor.as_deref()).await;
            let conn = &v["data"]["productVariants"];
            count += conn["nodes"].as_array().map(Vec::len).unwrap_or(0);
            assert_eq!(conn["pageInfo"]["hasNextPage"], true);
            cursor = conn["pageInfo"]["endCursor"].as_str().map(String::from);
        }
        assert_eq!(count, PAGINATION_LIMIT);
        let v = page(&state, &h, 250, cursor.as_deref()).await;
        assert_eq!(v["data"], Value::Null);
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains("bulk operations"),
            "{v}"
        );
        assert_eq!(v["errors"][0]["path"], json!(["productVariants"]));
        // a page straddling the limit is cut at it
        let v = page(&state, &h, 240, Some(&super::cursor(1_025_001 + 24_959))).await;
        assert_eq!(v["data"]["productVariants"]["nodes"].as_array().map(Vec::len), Some(40));
        assert_eq!(v["data"]["productVariants"]["pageInfo"]["hasNextPage"], true);
    }

    #[tokio::test]
    async fn cost_is_reported_charged_refunded_and_throttled() {
        let (state, h) = setup();
        build(&state, json!({"shop": SHOP, "products": 10}));
        // 2 + 250 × (variant + inventoryItem + product) requested; 2 + 10 × 3 actually returned
        let v = page(&state, &h, 250, None).await;
        let cost = &v["extensions"]["cost"];
        assert_eq!(cost["requestedQueryCost"], 752);
        assert_eq!(cost["actualQueryCost"], 32);
        assert_eq!(cost["throttleStatus"]["maximumAvailable"], 2000.0);
        assert_eq!(cost["throttleStatus"]["restoreRate"], 100.0);
        let left = cost["throttleStatus"]["currentlyAvailable"].as_f64().unwrap();
        assert!((1968.0..1970.0).contains(&left), "{left}");
        // fewer nested objects, a cheaper query
        let v = call(
            &state,
            &h,
            json!({"query": "{ productVariants(first: 100) { nodes { id sku } } }"}),
        )
        .await;
        assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], 102);
        // over 1,000 points (752 + 252): refused, nothing charged
        let two = "{ a: productVariants(first: 250) { nodes { id product { id } inventoryItem { id } } }
                     b: productVariants(first: 250) { nodes { id } } }";
        let v = call(&state, &h, json!({"query": two})).await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "MAX_COST_EXCEEDED");
        assert_eq!(v["errors"][0]["extensions"]["cost"], 1004);
        assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], 1004);
        assert!(v.get("data").is_none());
        // a short bucket: THROTTLED, HTTP 200, with the cost to wait for
        {
            let mut m = state.shopify.lock();
            m.bucket_max = 800.0;
            m.restore_rate = 0.001;
        }
        // 800 - 752 + 720 given back = 768; then 768 - 752 + 720 = 736, short of 752
        assert!(page(&state, &h, 250, None).await["data"].is_object());
        assert!(page(&state, &h, 250, None).await["data"].is_object());
        let v = page(&state, &h, 250, None).await;
        assert!(v.get("data").is_none());
        assert_eq!(v["errors"][0]["extensions"]["code"], "THROTTLED");
        assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], 752);
        assert!(
            v["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]
                .as_f64()
                .unwrap()
                < 752.0
        );
        assert_eq!(state.counters.lock().get("shopify throttled").copied(), Some(1));
    }

    #[tokio::test]
    async fn shop_answers_the_generated_currency_and_costs_one_point() {
        let (state, h) = setup();
        // before any catalog: USD
        roomy_bucket(&state);
        let v = call(
            &state,
            &h,
            json!({"query": "{ shop { currencyCode } productVariants(first: 1) { nodes { id } } }"}),
        )
        .await;
        assert_eq!(v["data"]["shop"]["currencyCode"], "USD", "{v}");
        build(&state, json!({"shop": SHOP, "products": 10, "currency": "MXN"}));
        let with_shop = "query Catalog($cursor: String, $first: Int!) {
          shop { currencyCode myshopifyDomain }
          productVariants(first: $first, after: $cursor, sortKey: ID) {
            pageInfo { hasNextPage endCursor }
            nodes { id sku price compareAtPrice inventoryQuantity inventoryItem { id } product { id title status } }
          }
        }";
        let v = call(&state, &h, json!({"query": with_shop, "variables": {"first": 250}})).await;
        assert_eq!(
            v["data"]["shop"],
            json!({"currencyCode": "MXN", "myshopifyDomain": SHOP}),
            "{v}"
        );
        assert_eq!(v["data"]["productVariants"]["nodes"].as_array().map(Vec::len), Some(10));
        let without = page(&state, &h, 250, None).await;
        let cost = |v: &Value, k: &str| v["extensions"]["cost"][k].as_u64().unwrap();
        assert_eq!(cost(&without, "requestedQueryCost"), 752);
        assert_eq!(cost(&v, "requestedQueryCost"), 753);
        assert_eq!(cost(&v, "actualQueryCost"), cost(&without, "actualQueryCost") + 1);
        // every Shop field, aliased; a later call without currency keeps it, one with it sets it
        build(&state, json!({"shop": SHOP, "products": 1, "first_id": 5}));
        let all = "{ s: shop { __typename id name domain: myshopifyDomain c: currencyCode }
                     productVariants(first: 1) { nodes { id } } }";
        let v = call(&state, &h, json!({"query": all})).await;
        assert_eq!(
            v["data"]["s"],
            json!({"__typename": "Shop", "id": "gid://shopify/Shop/1", "name": "cat",
                   "domain": SHOP, "c": "MXN"}),
            "{v}"
        );
        build(
            &state,
            json!({"shop": SHOP, "products": 1, "first_id": 7, "currency": "EUR"}),
        );
        let v = call(&state, &h, json!({"query": all})).await;
        assert_eq!(v["data"]["s"]["c"], "EUR");
    }

    #[tokio::test]
    async fn shop_fields_and_arguments_are_checked() {
        let (state, h) = setup();
        build(&state, json!({"shop": SHOP, "products": 1}));
        let v = call(
            &state,
            &h,
            json!({"query": "query Q { shop { currencyCode plan } productVariants(first: 1) { nodes { id } } }"}),
        )
        .await;
        assert!(v.get("data").is_none(), "{v}");
        assert_eq!(
            v["errors"],
            json!([{"message": "Field 'plan' doesn't exist on type 'Shop'", "locations": [{"line": 1, "column": 31}],
                    "path": ["query Q", "shop", "plan"],
                    "extensions": {"code": "undefinedField", "typeName": "Shop", "fieldName": "plan"}}])
        );
        assert_eq!(v["extensions"]["cost"]["actualQueryCost"], 0);
        let v = call(
            &state,
            &h,
            json!({"query": "{ shop(id: 1) { id } productVariants(first: 1) { nodes { id } } }"}),
        )
        .await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "argumentNotAccepted", "{v}");
        assert_eq!(v["errors"][0]["message"], "Field 'shop' doesn't accept argument 'id'");
        let v = call(
            &state,
            &h,
            json!({"query": "{ shop productVariants(first: 1) { nodes { id } } }"}),
        )
        .await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "selectionMismatch", "{v}");
        assert_eq!(v["errors"][0]["path"], json!(["query", "shop"]));
    }

    #[tokio::test]
    async fn the_generator_refuses_a_bad_currency() {
        let (state, _) = setup();
        for bad in [json!("usd"), json!("EURO"), json!("M1N"), json!(""), json!(484)] {
            let r = admin_catalog(
                AxState(state.clone()),
                Json(json!({"shop": SHOP, "products": 1, "currency": bad})),
            )
            .await;
            assert_eq!(r.status(), 400, "{bad}");
            let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v, json!({"error": "currency must be a 3-letter code such as \"MXN\""}));
        }
        assert!(!state.shopify.lock().catalog.shops.contains_key(SHOP));
        let spec = Spec::from_json(&json!({"shop": SHOP, "products": 1, "currency": null})).unwrap();
        assert_eq!(spec.currency, None);
    }

    #[test]
    fn generator_follows_the_shared_rule() {
        let state = State::default();
        // products 0,4,8,12,16 have 3 variants: 15 + 15 = 30 units
        let s = build(
            &state,
            json!({"shop": SHOP, "products": 20, "first_id": 500, "variations": 3, "variations_every": 4,
                   "sku_prefix": "P", "missing_sku_every": 7, "duplicate_sku_every": 5, "price": "19.99",
                   "stock": 3, "status": "DRAFT", "location_id": 9}),
        );
        // without: 7, 14, 21, 28 (every 7th) and 15 (a duplicate of 14, which has none)
        // duplicated: 5, 10, 20, 25, 30
        assert_eq!(
            s,
            Summary {
                products: 20,
                units: 30,
                without_sku: 5,
                duplicated: 5
            }
        );
        let m = state.shopify.lock();
        let c = &m.catalog.shops[SHOP];
        let skus: Vec<&str> = c.variants.iter().map(|v| v.sku.as_str()).collect();
        assert_eq!(&skus[..8], ["P0-0", "P0-1", "P0-2", "P1", "P1", "P3", "", "P4-1"]);
        assert_eq!(skus[14], ""); // unit 15 copies unit 14, which has none
                                  // ids: products 500..520, variants 520..550, inventory items 550..580
        assert_eq!(c.products.len(), 20);
        assert!(c.products.contains_key(&500) && c.products.contains_key(&519));
        assert_eq!(
            c.variants.first().map(|v| (v.id, v.inventory_item_id)),
            Some((520, 550))
        );
        assert_eq!(c.variants.last().map(|v| (v.id, v.inventory_item_id)), Some((549, 579)));
        assert_eq!(c.products[&500].status, "DRAFT");
        assert_eq!(
            m.levels[&(SHOP.to_string(), "579".to_string(), "9".to_string())].available,
            3
        );
        assert_eq!(m.levels.len(), 30);
        drop(m);
        // the same ids again collide
        let spec = Spec::from_json(&json!({"shop": SHOP, "products": 1, "first_id": 500})).unwrap();
        assert!(generate(&mut state.shopify.lock(), &spec).is_err());
        // defaults
        let s = build(&state, json!({"shop": "other.myshopify.com", "products": 4}));
        assert_eq!(
            s,
            Summary {
                products: 4,
                units: 4,
                without_sku: 0,
                duplicated: 0
            }
        );
        let m = state.shopify.lock();
        let v = &m.catalog.shops["other.myshopify.com"].variants[0];
        assert_eq!((v.id, v.sku.as_str(), v.price.as_str()), (1_000_004, "SKU-0", "100.00"));
        assert_eq!(v.location_id, 1);
        drop(m);
        // price is decimal text
        assert!(Spec::from_json(&json!({"shop": SHOP, "products": 1, "price": 19.99})).is_err());
        assert!(Spec::from_json(&json!({"shop": SHOP, "products": 1, "price": "1,5"})).is_err());
        assert!(Spec::from_json(&json!({"shop": SHOP, "products": 1, "status": "active"})).is_err());
    }

    #[tokio::test]
    async fn the_admin_call_answers_the_counts() {
        let (state, _) = setup();
        let r = admin_catalog(
            AxState(state.clone()),
            Json(
                json!({"shop": SHOP, "products": 12_000, "variations": 2, "variations_every": 3,
                        "missing_sku_every": 100, "duplicate_sku_every": 50}),
            ),
        )
        .await;
        assert_eq!(r.status(), 200);
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        // 4,000 products with 2 variants: 16,000 units; 160 without (every 100th); every 50th
        // that is not a 100th duplicates: 160
        assert_eq!(
            v,
            json!({"products": 12_000, "units": 16_000, "without_sku": 160, "duplicated": 160})
        );
        let r = admin_catalog(AxState(state), Json(json!({"products": 1}))).await;
        assert_eq!(r.status(), 400);
    }

    #[tokio::test]
    async fn a_generated_level_takes_inventory_set_quantities() {
        let (state, h) = setup();
        build(
            &state,
            json!({"shop": SHOP, "products": 2, "stock": 7, "location_id": 44}),
        );
        roomy_bucket(&state);
        let v = page(&state, &h, 10, None).await;
        let item = v["data"]["productVariants"]["nodes"][1]["inventoryItem"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(item, "gid://shopify/InventoryItem/1000005");
        let mutation = json!({"query": "mutation($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input) @idempotent(key: \"k-1\") { userErrors { code field message } } }",
            "variables": {"input": {"name": "available", "reason": "correction", "quantities": [
                {"inventoryItemId": item, "locationId": "gid://shopify/Location/44", "quantity": 3, "changeFromQuantity": 7}]}}});
        let r = call(&state, &h, mutation).await;
        assert_eq!(r["data"]["inventorySetQuantities"]["userErrors"], json!([]), "{r}");
        let v = page(&state, &h, 10, None).await;
        assert_eq!(v["data"]["productVariants"]["nodes"][1]["inventoryQuantity"], 3);
        assert_eq!(v["data"]["productVariants"]["nodes"][0]["inventoryQuantity"], 7);
        let m = state.shopify.lock();
        let l = &m.levels[&(SHOP.to_string(), "1000005".to_string(), "44".to_string())];
        assert_eq!((l.available, l.writes), (3, 1));
    }
}
