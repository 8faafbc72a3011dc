//! Shopify webhook subscriptions through GraphQL (handed over by shopify.rs when
//! [`is_webhook_document`] says so): `webhookSubscriptions(first:, after:, topics:, uri:)`,
//! `webhookSubscriptionCreate(topic:, webhookSubscription:)`, `webhookSubscriptionUpdate(id:,
//! webhookSubscription:)`, `webhookSubscriptionDelete(id:)`, and where a Shopify delivery goes.
//!
//! Subscriptions belong to the shop and the app it installed. A delivery of topic T for shop S
//! goes to every API subscription of S whose topic is T, and to the app-level URL
//! (`/_admin/webhooks`, standing for `shopify.app.toml`) when its `topics` list T. Without
//! `topics` the app-level URL takes only the compliance topics, which Shopify sends there alone
//! (they cannot be subscribed through the API).
//!
//! Decisions where Shopify publishes nothing exact ([?]): arguments are taken from variables or
//! literals without the schema checks of the catalog query; the answer carries every field of the
//! payload whatever the selection; the node also has `callbackUrl` before 2025-10; argument errors
//! (bad topic, `first` out of range) are graphql-ruby top-level errors that cost nothing.

use crate::shopify::{Shopify, MUTATION_COST, QUERY_COST};
use crate::shopify_catalog::{cursor, decode_cursor, gql};
use crate::state::{rfc3339_now, State};
use crate::webhooks::Delivery;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// `WebhookSubscriptionTopic` values emulated, with the topic as deliveries name it.
pub const TOPICS: &[(&str, &str)] = &[
    ("ORDERS_CREATE", "orders/create"),
    ("ORDERS_CANCELLED", "orders/cancelled"),
    ("ORDERS_PAID", "orders/paid"),
    ("ORDERS_UPDATED", "orders/updated"),
    ("INVENTORY_LEVELS_UPDATE", "inventory_levels/update"),
    ("APP_UNINSTALLED", "app/uninstalled"),
    ("PRODUCTS_UPDATE", "products/update"),
];

/// Mandatory compliance topics: configured in the app's settings only, sent to the app-level URL.
pub const COMPLIANCE: &[&str] = &["customers/data_request", "customers/redact", "shop/redact"];

/// From this version the input's address is `uri` (`callbackUrl` is gone).
const URI_FROM: &str = "2025-10";
const MAX_PAGE: i64 = 250;

#[derive(Clone, Debug)]
pub struct Subscription {
    pub shop: String,
    pub app: String,
    /// the enum name, e.g. ORDERS_CREATE
    pub topic: &'static str,
    pub uri: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Default)]
pub struct Subscriptions {
    /// id -> subscription, in id order (the order `webhookSubscriptions` pages in)
    pub by_id: BTreeMap<u64, Subscription>,
    next_id: u64,
    /// accept http:// addresses (loopback tests); Shopify takes https only
    pub allow_http: bool,
    /// shop -> the app it uninstalled (its `shop/redact` is still signed with that app)
    pub former_apps: HashMap<String, String>,
}

impl Subscriptions {
    fn add(&mut self, s: Subscription) -> u64 {
        self.next_id = self.next_id.max(1_000_000) + 1;
        self.by_id.insert(self.next_id, s);
        self.next_id
    }

    /// Removes every subscription of the shop; how many there were.
    pub fn remove_shop(&mut self, shop: &str) -> usize {
        let before = self.by_id.len();
        self.by_id.retain(|_, s| s.shop != shop);
        before - self.by_id.len()
    }
}

fn gid(id: u64) -> String {
    format!("gid://shopify/WebhookSubscription/{id}")
}

fn delivery_topic(name: &str) -> Option<&'static str> {
    TOPICS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

fn topic_name(v: &Value) -> Option<&'static str> {
    let s = v.as_str()?;
    TOPICS.iter().find(|(n, _)| *n == s).map(|(n, _)| *n)
}

/// Where a delivery of `topic` (header form) for `shop` goes: the API subscriptions of the shop
/// and its app for the topic, then the app-level URL when its topics name it (compliance topics:
/// the app-level URL only, always).
pub fn targets(state: &State, m: &Shopify, shop: &str, topic: &str) -> Vec<String> {
    let compliance = COMPLIANCE.contains(&topic);
    let app = m.shop_apps.get(shop);
    let mut out: Vec<String> = m
        .webhooks
        .by_id
        .values()
        .filter(|s| !compliance && s.shop == shop && Some(&s.app) == app && delivery_topic(s.topic) == Some(topic))
        .map(|s| s.uri.clone())
        .collect();
    if let Some((url, topics)) = state.hooks.lock().app_level("shopify") {
        if compliance || topics.is_some_and(|t| t.iter().any(|x| x == topic)) {
            out.push(url);
        }
    }
    out
}

/// A Shopify delivery signed with the shop's app and routed to its subscribers.
pub fn delivery(state: &State, m: &Shopify, shop: &str, topic: &str, body: &Value) -> Result<Delivery, String> {
    let mut d = m.delivery(shop, topic, body)?;
    d.targets = Some(targets(state, m, shop, topic));
    Ok(d)
}

// ---- GraphQL ----------------------------------------------------------------------------------

/// Whether the document names a `webhookSubscription...` field.
pub fn is_webhook_document(query: &str) -> bool {
    match gql::lex(query) {
        Ok(toks) => toks
            .iter()
            .any(|t| matches!(&t.tok, gql::Tok::Name(n) if n.starts_with("webhookSubscription"))),
        Err(_) => query.contains("webhookSubscription"),
    }
}

/// A top-level error that stops the document before it runs (no data, nothing charged).
fn refused(m: &mut Shopify, shop: &str, errors: Vec<Value>) -> Value {
    let available = m.spend(shop, 0.0).unwrap_or_else(|a| a);
    json!({"errors": errors, "extensions": m.cost(0.0, 0.0, available)})
}

/// graphql-ruby's error for a variable (or literal) that does not coerce.
fn invalid(var: Option<&str>, arg: &str, ty: &str, value: &Value, explanation: &str) -> Value {
    let message = match var {
        Some(v) => format!("Variable ${v} of type {ty} was provided invalid value"),
        None => format!("Argument '{arg}' has an invalid value ({value}). Expected type '{ty}'."),
    };
    json!({"message": message, "extensions": {"code": "INVALID_VARIABLE", "value": value,
           "problems": [{"path": [], "explanation": explanation}]}})
}

/// An argument's value (a variable resolved, or the literal) and the variable's name, if any.
fn arg(f: &gql::Field, name: &str, vars: &Value) -> (Value, Option<String>) {
    match f.args.iter().find(|(n, _, _)| n == name).map(|(_, v, _)| v) {
        Some(gql::Val::Var(v)) => (vars.get(v).cloned().unwrap_or(Value::Null), Some(v.clone())),
        Some(lit) => (lit.to_json(), None),
        None => (Value::Null, None),
    }
}

fn topic_problem(v: &Value) -> String {
    let names: Vec<&str> = TOPICS.iter().map(|(n, _)| *n).collect();
    if v.is_null() {
        "Expected value to not be null".into()
    } else {
        format!("Expected {v} to be one of: {}", names.join(", "))
    }
}

/// A checked operation, run once its cost is taken.
enum Plan {
    List {
        first: usize,
        after: Option<u64>,
        topics: Option<Vec<&'static str>>,
        uri: Option<String>,
    },
    One(Option<u64>),
    Count,
    Create {
        topic: &'static str,
        address: Option<(String, &'static str)>,
        input: Value,
    },
    Update {
        id: Option<u64>,
        address: Option<(String, &'static str)>,
        input: Value,
    },
    Delete(Option<u64>),
}

/// Answers the document for `shop` (always HTTP 200, as Shopify), `extensions.cost` on every reply.
pub fn answer(state: &State, m: &mut Shopify, shop: &str, version: &str, query: &str, vars: &Value) -> Value {
    let op = match gql::parse(query) {
        Ok(op) => op,
        Err(e) => return refused(m, shop, vec![e.to_json()]),
    };
    let Some(f) = op.selection.iter().find(|f| f.name.starts_with("webhookSubscription")) else {
        return refused(
            m,
            shop,
            vec![json!({"message": "No webhookSubscription field in the document"})],
        );
    };
    let plan = match prepare(&op.kind, f, vars, version) {
        Ok(p) => p,
        Err(errors) => return refused(m, shop, errors),
    };
    let mutation = op.kind == "mutation";
    let cost = if mutation { MUTATION_COST } else { QUERY_COST };
    let ext = match crate::shopify::charge(state, m, shop, cost) {
        Ok(ext) => ext,
        Err(throttled) => return throttled,
    };
    state.count(format!("shopify graphql {}", f.name));
    let app = m.shop_apps.get(shop).cloned().unwrap_or_default();
    let payload = execute(m, shop, &app, version, plan);
    json!({"data": {f.key(): payload}, "extensions": ext})
}

/// Checks the field's arguments: the plan, or top-level errors.
fn prepare(kind: &str, f: &gql::Field, vars: &Value, version: &str) -> Result<Plan, Vec<Value>> {
    let mutation = matches!(
        f.name.as_str(),
        "webhookSubscriptionCreate" | "webhookSubscriptionUpdate" | "webhookSubscriptionDelete"
    );
    let query = matches!(
        f.name.as_str(),
        "webhookSubscriptions" | "webhookSubscription" | "webhookSubscriptionsCount"
    );
    if !(mutation && kind == "mutation" || query && kind == "query") {
        let ty = if kind == "mutation" { "Mutation" } else { "QueryRoot" };
        return Err(vec![
            json!({"message": format!("Field '{}' doesn't exist on type '{ty}'", f.name),
                   "extensions": {"code": "undefinedField", "typeName": ty, "fieldName": f.name}}),
        ]);
    }
    let id = || parse_id(&arg(f, "id", vars).0);
    match f.name.as_str() {
        "webhookSubscriptions" => prepare_list(f, vars),
        "webhookSubscription" => Ok(Plan::One(id())),
        "webhookSubscriptionsCount" => Ok(Plan::Count),
        "webhookSubscriptionCreate" => {
            let (topic_v, topic_var) = arg(f, "topic", vars);
            let Some(topic) = topic_name(&topic_v) else {
                let why = topic_problem(&topic_v);
                let e = invalid(
                    topic_var.as_deref(),
                    "topic",
                    "WebhookSubscriptionTopic!",
                    &topic_v,
                    &why,
                );
                return Err(vec![e]);
            };
            let (input, input_var) = arg(f, "webhookSubscription", vars);
            let address = input_address(&input, input_var.as_deref(), version).map_err(|e| vec![e])?;
            Ok(Plan::Create { topic, address, input })
        }
        "webhookSubscriptionUpdate" => {
            let (input, input_var) = arg(f, "webhookSubscription", vars);
            let address = input_address(&input, input_var.as_deref(), version).map_err(|e| vec![e])?;
            Ok(Plan::Update {
                id: id(),
                address,
                input,
            })
        }
        _ => Ok(Plan::Delete(id())),
    }
}

fn prepare_list(f: &gql::Field, vars: &Value) -> Result<Plan, Vec<Value>> {
    let mut errors = Vec::new();
    let first = match arg(f, "first", vars).0.as_i64() {
        Some(n) if (1..=MAX_PAGE).contains(&n) => n as usize,
        Some(n) => {
            errors.push(json!({"message": format!(
                "The page size (first: {n}) must be between 1 and {MAX_PAGE}: connections return at most \
                 {MAX_PAGE} objects per page."),
                "extensions": {"code": "BAD_REQUEST"}}));
            0
        }
        None => {
            errors.push(json!({"message": "you must provide one of first or last"}));
            0
        }
    };
    let after = match arg(f, "after", vars).0 {
        Value::Null => None,
        v => {
            let id = v.as_str().and_then(decode_cursor);
            if id.is_none() {
                let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                errors.push(json!({"message": format!("Invalid cursor for current pagination sort: {shown}")}));
            }
            id
        }
    };
    let (topics_v, topics_var) = arg(f, "topics", vars);
    let topics = if topics_v.is_null() {
        None
    } else {
        let items = topics_v.as_array().cloned().unwrap_or_else(|| vec![topics_v.clone()]);
        let mut names = Vec::new();
        for t in &items {
            match topic_name(t) {
                Some(n) => names.push(n),
                None => errors.push(invalid(
                    topics_var.as_deref(),
                    "topics",
                    "[WebhookSubscriptionTopic!]",
                    &topics_v,
                    &topic_problem(t),
                )),
            }
        }
        Some(names)
    };
    let uri = arg(f, "uri", vars).0.as_str().map(str::to_string);
    if errors.is_empty() {
        Ok(Plan::List {
            first,
            after,
            topics,
            uri,
        })
    } else {
        Err(errors)
    }
}

fn execute(m: &mut Shopify, shop: &str, app: &str, version: &str, plan: Plan) -> Value {
    let mine = |s: &Subscription| s.shop == shop && s.app == app;
    match plan {
        Plan::List {
            first,
            after,
            topics,
            uri,
        } => {
            let mut matching = m.webhooks.by_id.iter().filter(|(id, s)| {
                mine(s)
                    && after.is_none_or(|a| **id > a)
                    && topics.as_ref().is_none_or(|t| t.contains(&s.topic))
                    && uri.as_ref().is_none_or(|u| *u == s.uri)
            });
            let page: Vec<(u64, Value)> = matching
                .by_ref()
                .take(first)
                .map(|(id, s)| (*id, node(*id, s, version)))
                .collect();
            let more = matching.next().is_some();
            let edges: Vec<Value> = page
                .iter()
                .map(|(id, n)| json!({"cursor": cursor(*id), "node": n}))
                .collect();
            let end = page.last().map(|(id, _)| json!(cursor(*id))).unwrap_or(Value::Null);
            let nodes: Vec<Value> = page.into_iter().map(|(_, n)| n).collect();
            json!({"nodes": nodes, "edges": edges, "pageInfo": {"hasNextPage": more, "endCursor": end}})
        }
        Plan::One(id) => owned(m, id, shop, app)
            .and_then(|id| m.webhooks.by_id.get(&id).map(|s| node(id, s, version)))
            .unwrap_or(Value::Null),
        Plan::Count => {
            let n = m.webhooks.by_id.values().filter(|s| mine(s)).count();
            json!({"count": n, "precision": "EXACT"})
        }
        Plan::Create { topic, address, input } => {
            let address = address.unwrap_or_else(|| (String::new(), "uri"));
            let mut errors = address_errors(&m.webhooks, shop, app, topic, &address, None);
            errors.extend(format_errors(&input));
            if !errors.is_empty() {
                return payload(Value::Null, errors);
            }
            let now = rfc3339_now();
            let sub = Subscription {
                shop: shop.to_string(),
                app: app.to_string(),
                topic,
                uri: address.0,
                created_at: now.clone(),
                updated_at: now,
            };
            let id = m.webhooks.add(sub.clone());
            payload(node(id, &sub, version), Vec::new())
        }
        Plan::Update { id, address, input } => {
            let Some(id) = owned(m, id, shop, app) else {
                return payload(Value::Null, missing());
            };
            let topic = m.webhooks.by_id.get(&id).map(|s| s.topic).unwrap_or_default();
            let mut errors = match &address {
                Some(a) => address_errors(&m.webhooks, shop, app, topic, a, Some(id)),
                None => Vec::new(),
            };
            errors.extend(format_errors(&input));
            if !errors.is_empty() {
                return payload(Value::Null, errors);
            }
            let Some(s) = m.webhooks.by_id.get_mut(&id) else {
                return payload(Value::Null, missing());
            };
            if let Some((uri, _)) = address {
                s.uri = uri;
            }
            s.updated_at = rfc3339_now();
            payload(node(id, s, version), Vec::new())
        }
        Plan::Delete(id) => match owned(m, id, shop, app) {
            Some(id) => {
                m.webhooks.by_id.remove(&id);
                json!({"deletedWebhookSubscriptionId": gid(id), "userErrors": []})
            }
            None => json!({"deletedWebhookSubscriptionId": null, "userErrors": missing()}),
        },
    }
}

fn node(id: u64, s: &Subscription, version: &str) -> Value {
    let mut n = json!({"id": gid(id), "topic": s.topic, "uri": s.uri, "format": "JSON",
                       "createdAt": s.created_at, "updatedAt": s.updated_at});
    if version < URI_FROM {
        n["callbackUrl"] = json!(s.uri);
    }
    n
}

/// The address in a `WebhookSubscriptionInput` (and the input field it came from): `Ok(None)`
/// when not given; a top-level error for a field the version does not define.
fn input_address(input: &Value, var: Option<&str>, version: &str) -> Result<Option<(String, &'static str)>, Value> {
    let mut fields = vec!["uri", "format", "includeFields", "filter", "metafieldNamespaces"];
    if version < URI_FROM {
        fields.push("callbackUrl");
    }
    let ty = "WebhookSubscriptionInput!";
    let Some(o) = input.as_object() else {
        let why = if input.is_null() {
            "Expected value to not be null".to_string()
        } else {
            format!("Expected {input} to be a key-value object.")
        };
        return Err(invalid(var, "webhookSubscription", ty, input, &why));
    };
    if let Some(k) = o.keys().find(|k| !fields.contains(&k.as_str())) {
        let v = var.unwrap_or("webhookSubscription");
        let why = "Field is not defined on WebhookSubscriptionInput";
        return Err(
            json!({"message": format!("Variable ${v} of type {ty} was provided invalid value for {k} ({why})"),
            "extensions": {"code": "INVALID_VARIABLE", "value": input, "problems": [{"path": [k], "explanation": why}]}}),
        );
    }
    let pick = |k: &'static str| o.get(k).map(|v| (v.as_str().unwrap_or("").trim().to_string(), k));
    Ok(pick("uri").or_else(|| pick("callbackUrl")))
}

fn user_error(field: Value, message: &str) -> Value {
    json!({"field": field, "message": message})
}

/// The address rules of create and update as userErrors (none when the address is good).
fn address_errors(
    subs: &Subscriptions,
    shop: &str,
    app: &str,
    topic: &str,
    address: &(String, &str),
    except: Option<u64>,
) -> Vec<Value> {
    let (uri, key) = address;
    let field = json!(["webhookSubscription", key]);
    if uri.is_empty() {
        return vec![user_error(field, "Address can't be blank")];
    }
    let scheme_ok = uri.starts_with("https://") || (subs.allow_http && uri.starts_with("http://"));
    if !scheme_ok {
        let message = match uri.split_once("://") {
            Some((scheme, _)) => format!("Address protocol {scheme}:// is not supported"),
            None => "Address is invalid".to_string(),
        };
        return vec![user_error(field, &message)];
    }
    let taken = subs
        .by_id
        .iter()
        .any(|(id, s)| Some(*id) != except && s.shop == shop && s.app == app && s.topic == topic && s.uri == *uri);
    if taken {
        return vec![user_error(field, "Address for this topic has already been taken")];
    }
    Vec::new()
}

/// A given format must be JSON (Shopify also has XML; the sandbox sends JSON only).
fn format_errors(input: &Value) -> Vec<Value> {
    match input.get("format") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(f)) if f == "JSON" => Vec::new(),
        Some(_) => vec![user_error(
            json!(["webhookSubscription", "format"]),
            "The sandbox sends JSON deliveries only",
        )],
    }
}

fn payload(sub: Value, errors: Vec<Value>) -> Value {
    json!({"webhookSubscription": sub, "userErrors": errors})
}

/// The numeric id of a `gid://shopify/WebhookSubscription/<n>` (or a bare number).
fn parse_id(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s
            .strip_prefix("gid://shopify/WebhookSubscription/")
            .unwrap_or(s)
            .parse()
            .ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// The id when it names a subscription of this shop and app.
fn owned(m: &Shopify, id: Option<u64>, shop: &str, app: &str) -> Option<u64> {
    id.filter(|id| m.webhooks.by_id.get(id).is_some_and(|s| s.shop == shop && s.app == app))
}

fn missing() -> Vec<Value> {
    vec![user_error(json!(["id"]), "Webhook subscription does not exist")]
}

// ---- admin (/_admin/shopify/...) --------------------------------------------------------------

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/shops/{shop}/subscriptions", get(admin_list))
        .route("/subscriptions/{id}", delete(admin_delete))
}

/// The shop's API subscriptions (any app), with the topic deliveries carry.
async fn admin_list(AxState(state): AxState<Arc<State>>, Path(shop): Path<String>) -> Response {
    let m = state.shopify.lock();
    let subs: Vec<Value> = m
        .webhooks
        .by_id
        .iter()
        .filter(|(_, s)| s.shop == shop)
        .map(|(id, s)| {
            let mut n = node(*id, s, URI_FROM);
            n["app"] = json!(s.app);
            n["delivery_topic"] = json!(delivery_topic(s.topic));
            n
        })
        .collect();
    Json(json!({"subscriptions": subs})).into_response()
}

/// Removes one subscription, as Shopify does after repeated delivery failures.
async fn admin_delete(AxState(state): AxState<Arc<State>>, Path(id): Path<String>) -> Response {
    let Some(id) = id
        .parse::<u64>()
        .ok()
        .filter(|n| state.shopify.lock().webhooks.by_id.remove(n).is_some())
    else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "no such subscription"}))).into_response();
    };
    state.count("shopify webhook subscriptions removed");
    Json(json!({"deleted": gid(id)})).into_response()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    pub(crate) const A: &str = "a.myshopify.com";
    const CREATE: &str =
        "mutation C($topic: WebhookSubscriptionTopic!, $webhookSubscription: WebhookSubscriptionInput!) {
        webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
          webhookSubscription { id topic uri format createdAt updatedAt } userErrors { field message } } }";
    const UPDATE: &str = "mutation U($id: ID!, $webhookSubscription: WebhookSubscriptionInput!) {
        webhookSubscriptionUpdate(id: $id, webhookSubscription: $webhookSubscription) {
          webhookSubscription { id uri } userErrors { field message } } }";
    const DELETE: &str = "mutation D($id: ID!) { webhookSubscriptionDelete(id: $id) {
        deletedWebhookSubscriptionId userErrors { field message } } }";
    const LIST: &str = "query L($first: Int!, $after: String, $topics: [WebhookSubscriptionTopic!], $uri: String) {
        webhookSubscriptions(first: $first, after: $after, topics: $topics, uri: $uri) {
          nodes { id topic uri } edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }";

    /// App `c` (secret `s`) installed on shops a and b; their access tokens.
    pub(crate) fn setup() -> (Arc<State>, String, String) {
        let state = Arc::new(State::default());
        let mut m = state.shopify.lock();
        m.apps.insert("c".into(), "s".into());
        let a = m.grant(A, "c", true)["access_token"].as_str().unwrap().to_string();
        let b = m.grant("b.myshopify.com", "c", true)["access_token"]
            .as_str()
            .unwrap()
            .to_string();
        drop(m);
        (state, a, b)
    }

    pub(crate) async fn body_json(r: Response) -> Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    pub(crate) async fn call(state: &Arc<State>, token: &str, version: &str, query: &str, vars: Value) -> Value {
        let mut h = HeaderMap::new();
        h.insert("x-shopify-access-token", HeaderValue::from_str(token).unwrap());
        let body = Json(json!({"query": query, "variables": vars}));
        body_json(crate::shopify::graphql(AxState(state.clone()), Path(version.into()), h, body).await).await
    }

    /// webhookSubscriptionCreate's payload (the whole reply when it has no data).
    pub(crate) async fn subscribe(state: &Arc<State>, token: &str, topic: &str, uri: &str) -> Value {
        let v = call(
            state,
            token,
            "2026-01",
            CREATE,
            json!({"topic": topic, "webhookSubscription": {"uri": uri}}),
        )
        .await;
        if v["data"].is_null() {
            return v;
        }
        v["data"]["webhookSubscriptionCreate"].clone()
    }

    #[tokio::test]
    async fn create_list_update_delete_and_user_errors() {
        let (state, a, b) = setup();
        let created = subscribe(&state, &a, "ORDERS_CREATE", "https://app.example/hooks").await;
        assert_eq!(created["userErrors"], json!([]));
        let sub = &created["webhookSubscription"];
        assert_eq!(sub["topic"], "ORDERS_CREATE");
        assert_eq!(sub["format"], "JSON");
        assert!(sub["id"]
            .as_str()
            .unwrap()
            .starts_with("gid://shopify/WebhookSubscription/"));
        let id = sub["id"].clone();
        // userErrors, nothing created
        let errors = |v: &Value| v["userErrors"][0]["message"].as_str().unwrap_or("").to_string();
        let dup = subscribe(&state, &a, "ORDERS_CREATE", "https://app.example/hooks").await;
        assert_eq!(errors(&dup), "Address for this topic has already been taken");
        assert_eq!(dup["userErrors"][0]["field"], json!(["webhookSubscription", "uri"]));
        assert!(dup["webhookSubscription"].is_null());
        assert_eq!(
            errors(&subscribe(&state, &a, "ORDERS_CREATE", "").await),
            "Address can't be blank"
        );
        let http = subscribe(&state, &a, "ORDERS_CREATE", "http://127.0.0.1:9/h").await;
        assert_eq!(errors(&http), "Address protocol http:// is not supported");
        // the same address for another topic, or for another shop, is fine
        assert_eq!(
            subscribe(&state, &a, "ORDERS_PAID", "https://app.example/hooks").await["userErrors"],
            json!([])
        );
        assert_eq!(
            subscribe(&state, &b, "ORDERS_CREATE", "https://app.example/hooks").await["userErrors"],
            json!([])
        );
        // the list is the shop's own, in id order, paged
        let page = call(&state, &a, "2026-01", LIST, json!({"first": 1})).await;
        let conn = &page["data"]["webhookSubscriptions"];
        assert_eq!(conn["nodes"][0]["id"], id);
        assert_eq!(conn["pageInfo"]["hasNextPage"], true);
        assert_eq!(page["extensions"]["cost"]["actualQueryCost"], QUERY_COST);
        let after = conn["pageInfo"]["endCursor"].clone();
        assert_eq!(conn["edges"][0]["cursor"], after);
        let next = call(&state, &a, "2026-01", LIST, json!({"first": 5, "after": after})).await;
        let conn = &next["data"]["webhookSubscriptions"];
        assert_eq!(conn["nodes"].as_array().map(Vec::len), Some(1));
        assert_eq!(conn["nodes"][0]["topic"], "ORDERS_PAID");
        assert_eq!(conn["pageInfo"]["hasNextPage"], false);
        let filtered = call(
            &state,
            &a,
            "2026-01",
            LIST,
            json!({"first": 5, "topics": ["ORDERS_PAID"]}),
        )
        .await;
        assert_eq!(
            filtered["data"]["webhookSubscriptions"]["nodes"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        let by_uri = call(
            &state,
            &a,
            "2026-01",
            LIST,
            json!({"first": 5, "uri": "https://other.example"}),
        )
        .await;
        assert_eq!(by_uri["data"]["webhookSubscriptions"]["nodes"], json!([]));
        for first in [0, 251] {
            let v = call(&state, &a, "2026-01", LIST, json!({"first": first})).await;
            assert!(v["data"].is_null() && v["errors"][0]["message"].is_string(), "{v}");
        }
        // update: the address moves; another shop's id does not exist for this one
        let upd = |token: String, id: Value, uri: &'static str| {
            let state = state.clone();
            async move {
                call(
                    &state,
                    &token,
                    "2026-01",
                    UPDATE,
                    json!({"id": id, "webhookSubscription": {"uri": uri}}),
                )
                .await["data"]["webhookSubscriptionUpdate"]
                    .clone()
            }
        };
        let moved = upd(a.clone(), id.clone(), "https://app.example/v2").await;
        assert_eq!(moved["webhookSubscription"]["uri"], "https://app.example/v2");
        let foreign = upd(b.clone(), id.clone(), "https://x.example").await;
        assert_eq!(foreign["userErrors"][0]["field"], json!(["id"]));
        assert_eq!(errors(&foreign), "Webhook subscription does not exist");
        assert_eq!(errors(&upd(a.clone(), id.clone(), "").await), "Address can't be blank");
        assert_eq!(
            errors(&upd(a.clone(), id.clone(), "ftp://x").await),
            "Address protocol ftp:// is not supported"
        );
        // delete, then it is gone
        let del = call(&state, &a, "2026-01", DELETE, json!({"id": id})).await;
        let del = &del["data"]["webhookSubscriptionDelete"];
        assert_eq!(del["deletedWebhookSubscriptionId"], id);
        assert_eq!(del["userErrors"], json!([]));
        let again = call(&state, &a, "2026-01", DELETE, json!({"id": id})).await;
        let again = &again["data"]["webhookSubscriptionDelete"];
        assert!(again["deletedWebhookSubscriptionId"].is_null());
        assert_eq!(errors(again), "Webhook subscription does not exist");
    }

    #[tokio::test]
    async fn unknown_and_compliance_topics_are_invalid_variables() {
        let (state, a, _) = setup();
        for topic in [
            "CUSTOMERS_REDACT",
            "SHOP_REDACT",
            "CUSTOMERS_DATA_REQUEST",
            "ORDERS_NOPE",
        ] {
            let v = subscribe(&state, &a, topic, "https://app.example/h").await;
            assert_eq!(
                v["errors"][0]["message"],
                "Variable $topic of type WebhookSubscriptionTopic! was provided invalid value"
            );
            assert_eq!(v["errors"][0]["extensions"]["code"], "INVALID_VARIABLE");
            assert!(v.get("data").is_none());
        }
        assert!(state.shopify.lock().webhooks.by_id.is_empty());
    }

    #[tokio::test]
    async fn callback_url_is_refused_from_2025_10() {
        let (state, a, _) = setup();
        let vars = json!({"topic": "ORDERS_CREATE", "webhookSubscription": {"callbackUrl": "https://old.example/h"}});
        let v = call(&state, &a, "2025-10", CREATE, vars.clone()).await;
        assert_eq!(
            v["errors"][0]["message"],
            "Variable $webhookSubscription of type WebhookSubscriptionInput! was provided invalid value for \
             callbackUrl (Field is not defined on WebhookSubscriptionInput)"
        );
        assert_eq!(v["errors"][0]["extensions"]["code"], "INVALID_VARIABLE");
        // an older version takes it as the address
        let v = call(&state, &a, "2025-07", CREATE, vars).await;
        let sub = &v["data"]["webhookSubscriptionCreate"]["webhookSubscription"];
        assert_eq!(sub["uri"], "https://old.example/h");
        assert_eq!(sub["callbackUrl"], "https://old.example/h");
    }

    #[tokio::test]
    async fn http_addresses_need_the_admin_switch_and_mutations_cost_10() {
        let (state, a, _) = setup();
        let config = |v: bool| {
            let state = state.clone();
            async move {
                let r = crate::shopify::admin_config(AxState(state), Json(json!({"allow_http_webhooks": v}))).await;
                assert_eq!(r.status(), 200);
            }
        };
        config(true).await;
        let v = call(
            &state,
            &a,
            "2026-01",
            CREATE,
            json!({"topic": "ORDERS_CREATE", "webhookSubscription": {"uri": "http://127.0.0.1:9/h"}}),
        )
        .await;
        assert_eq!(v["data"]["webhookSubscriptionCreate"]["userErrors"], json!([]));
        assert_eq!(v["extensions"]["cost"]["actualQueryCost"], MUTATION_COST);
        config(false).await;
        let v = subscribe(&state, &a, "ORDERS_PAID", "http://127.0.0.1:9/h").await;
        assert_eq!(
            v["userErrors"][0]["message"],
            "Address protocol http:// is not supported"
        );
        // short of points: THROTTLED, nothing created
        {
            let mut m = state.shopify.lock();
            m.bucket_max = 5.0;
            m.restore_rate = 0.001;
        }
        let v = subscribe(&state, &a, "ORDERS_UPDATED", "https://app.example/h").await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "THROTTLED");
        assert_eq!(state.shopify.lock().webhooks.by_id.len(), 1);
    }

    #[tokio::test]
    async fn deliveries_go_only_to_subscribed_topics() {
        let (state, a, b) = setup();
        subscribe(&state, &a, "ORDERS_CREATE", "https://a.example/create").await;
        subscribe(&state, &a, "INVENTORY_LEVELS_UPDATE", "https://a.example/levels").await;
        subscribe(&state, &b, "ORDERS_CREATE", "https://b.example/create").await;
        let to = |shop: &str, topic: &str| targets(&state, &state.shopify.lock(), shop, topic);
        // no app-level URL: API subscriptions only
        assert_eq!(to(A, "orders/create"), vec!["https://a.example/create"]);
        assert!(to(A, "orders/cancelled").is_empty());
        assert!(to(A, "customers/redact").is_empty());
        // an app-level URL without topics takes the compliance topics alone
        state
            .hooks
            .lock()
            .urls
            .insert("shopify".into(), "https://app.example/toml".into());
        assert_eq!(to(A, "orders/create"), vec!["https://a.example/create"]);
        assert_eq!(to(A, "shop/redact"), vec!["https://app.example/toml"]);
        assert!(to(A, "orders/cancelled").is_empty());
        // with topics, the ones listed too
        state.hooks.lock().topics.insert(
            "shopify".into(),
            vec!["orders/cancelled".into(), "orders/create".into()],
        );
        assert_eq!(
            to(A, "orders/create"),
            vec!["https://a.example/create", "https://app.example/toml"]
        );
        assert_eq!(to(A, "orders/cancelled"), vec!["https://app.example/toml"]);
        assert_eq!(to(A, "inventory_levels/update"), vec!["https://a.example/levels"]);
        // compliance topics still reach the app-level URL, never API subscriptions
        assert_eq!(to(A, "customers/data_request"), vec!["https://app.example/toml"]);
        // a delivery nobody subscribed to is not sent, and counted
        state.hooks.lock().topics.clear();
        let d = delivery(&state, &state.shopify.lock(), A, "orders/cancelled", &json!({"id": 1})).unwrap();
        assert_eq!(d.targets, Some(Vec::new()));
        assert!(crate::webhooks::emit(&state, &d, None).is_empty());
        assert_eq!(state.counters.lock().get("shopify webhooks unsubscribed"), Some(&1));
    }

    #[tokio::test]
    async fn the_admin_lists_and_removes_subscriptions() {
        let (state, a, _) = setup();
        subscribe(&state, &a, "ORDERS_CREATE", "https://a.example/create").await;
        let list = body_json(admin_list(AxState(state.clone()), Path(A.into())).await).await;
        let sub = &list["subscriptions"][0];
        assert_eq!(sub["delivery_topic"], "orders/create");
        let id = sub["id"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
        assert_eq!(
            admin_delete(AxState(state.clone()), Path(id.clone())).await.status(),
            200
        );
        assert_eq!(admin_delete(AxState(state.clone()), Path(id)).await.status(), 404);
        assert_eq!(
            admin_delete(AxState(state.clone()), Path("x".into())).await.status(),
            404
        );
        assert!(targets(&state, &state.shopify.lock(), A, "orders/create").is_empty());
    }
}
