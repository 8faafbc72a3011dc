//! Shopify webhook subscriptions: the GraphQL Admin `webhookSubscriptions` connection (100 a
//! page, one call each), `webhookSubscriptionCreate` and `webhookSubscriptionUpdate`. The address
//! goes in `uri`, never `callbackUrl` (deprecated since 2025-10, refused there by the sandbox).

use super::http::{self, Reply};
use super::shopify::{call_failure, gid, graphql};
use super::subscriptions::{check, Fields, RemoteSubscription, SubscriptionError};
use super::PushRequest;
use serde_json::{json, Value};

/// The topics the extension applies: orders, stock levels, and the app's removal.
pub const TOPICS: &[&str] = &[
    "ORDERS_CREATE",
    "ORDERS_CANCELLED",
    "INVENTORY_LEVELS_UPDATE",
    "APP_UNINSTALLED",
];
const FIELDS: Fields = Fields {
    marketplace: "Shopify",
    topic: "topic",
    address: "uri",
    id: Some("id"),
};
/// Subscriptions per page (the API's maximum).
const PAGE_SIZE: u64 = 100;
/// Pages a listing follows at most: a shop with more subscriptions is not one we set up.
const MAX_PAGES: usize = 50;

const LIST_QUERY: &str = "query($first:Int!,$after:String){ webhookSubscriptions(first:$first, after:$after){ nodes{ id topic uri } pageInfo{ hasNextPage endCursor } } }";
const CREATE_MUTATION: &str = "mutation($topic: WebhookSubscriptionTopic!, $sub: WebhookSubscriptionInput!){ webhookSubscriptionCreate(topic:$topic, webhookSubscription:$sub){ webhookSubscription{ id topic uri } userErrors{ field message } } }";
const UPDATE_MUTATION: &str = "mutation($id: ID!, $sub: WebhookSubscriptionInput!){ webhookSubscriptionUpdate(id:$id, webhookSubscription:$sub){ webhookSubscription{ id topic uri } userErrors{ field message } } }";

/// Every subscription of the shop, a page per call.
pub fn list(agent: &ureq::Agent, req: &PushRequest) -> Result<Vec<RemoteSubscription>, SubscriptionError> {
    list_with(|after| graphql(agent, req, LIST_QUERY, json!({"first": PAGE_SIZE, "after": after})))
}

/// The listing, each page asked of `fetch` (given the cursor it goes on from).
fn list_with(
    mut fetch: impl FnMut(Option<&str>) -> Result<Reply, String>,
) -> Result<Vec<RemoteSubscription>, SubscriptionError> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let reply = fetch(after.as_deref()).map_err(SubscriptionError::Transient)?;
        let (page, next) = parse_page(&reply)?;
        all.extend(page);
        match next {
            Some(cursor) => after = Some(cursor),
            None => return Ok(all),
        }
    }
    Err(SubscriptionError::Failed(format!(
        "Shopify listed more than {} webhook subscriptions ({MAX_PAGES} pages); not following further",
        MAX_PAGES as u64 * PAGE_SIZE
    )))
}

/// A reply's data, or what its failure (HTTP, THROTTLED, GraphQL errors) means.
fn data(reply: &Reply) -> Result<Value, SubscriptionError> {
    call_failure(reply).map_or(Ok(()), check)?;
    let v = reply
        .json()
        .ok_or_else(|| SubscriptionError::Transient("Shopify answered with a body that is not JSON".into()))?;
    Ok(v.get("data").cloned().unwrap_or(Value::Null))
}

/// One page: its subscriptions and the cursor of the next (None: the last).
fn parse_page(reply: &Reply) -> Result<(Vec<RemoteSubscription>, Option<String>), SubscriptionError> {
    let data = data(reply)?;
    let conn = data
        .get("webhookSubscriptions")
        .filter(|c| c.is_object())
        .ok_or_else(|| SubscriptionError::Failed("Shopify's webhookSubscriptions answered without data".into()))?;
    let subs = FIELDS.read_list(conn.get("nodes"))?;
    let more = conn.pointer("/pageInfo/hasNextPage").and_then(Value::as_bool) == Some(true);
    let end = conn.pointer("/pageInfo/endCursor").and_then(Value::as_str);
    match (more, end) {
        (false, _) => Ok((subs, None)),
        (true, Some(end)) if !end.is_empty() => Ok((subs, Some(end.to_string()))),
        (true, _) => Err(SubscriptionError::Failed(
            "Shopify said more webhook subscriptions follow but gave no cursor".into(),
        )),
    }
}

/// Points `topic` at `address`: updates `remote_id` when given, else creates one.
pub fn subscribe(
    agent: &ureq::Agent,
    req: &PushRequest,
    topic: &str,
    address: &str,
    remote_id: Option<&str>,
) -> Result<RemoteSubscription, SubscriptionError> {
    let (query, variables, field) = mutation(topic, address, remote_id);
    let reply = graphql(agent, req, query, variables).map_err(SubscriptionError::Transient)?;
    parse_mutation(&reply, field)
}

/// The mutation for a subscribe, its variables and the payload field it answers in.
fn mutation(topic: &str, address: &str, remote_id: Option<&str>) -> (&'static str, Value, &'static str) {
    let sub = json!({"uri": address, "format": "JSON"});
    match remote_id {
        Some(id) => (
            UPDATE_MUTATION,
            json!({"id": gid("WebhookSubscription", id), "sub": sub}),
            "webhookSubscriptionUpdate",
        ),
        None => (
            CREATE_MUTATION,
            json!({"topic": topic, "sub": sub}),
            "webhookSubscriptionCreate",
        ),
    }
}

/// A mutation payload: the subscription as it now stands, or the userErrors that refused it.
fn parse_mutation(reply: &Reply, field: &str) -> Result<RemoteSubscription, SubscriptionError> {
    let data = data(reply)?;
    let payload = data
        .get(field)
        .filter(|p| p.is_object())
        .ok_or_else(|| SubscriptionError::Failed(format!("Shopify's {field} answered without a payload")))?;
    let errors: Vec<String> = payload
        .get("userErrors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(user_error)
        .collect();
    if !errors.is_empty() {
        return Err(SubscriptionError::Failed(http::truncate(
            &format!("Shopify refused the webhook subscription: {}", errors.join("; ")),
            500,
        )));
    }
    match payload.get("webhookSubscription").filter(|s| s.is_object()) {
        Some(node) => FIELDS.read(node),
        None => Err(SubscriptionError::Failed(format!(
            "Shopify's {field} answered with neither a subscription nor userErrors"
        ))),
    }
}

/// `field.path: message` (the field is a path of names, or absent).
fn user_error(e: &Value) -> String {
    let message = e.get("message").and_then(Value::as_str).unwrap_or("refused");
    let path: Vec<&str> = e
        .get("field")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{}: {message}", path.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn page(nodes: Value, more: bool, end: Value) -> Reply {
        let body = json!({"data": {"webhookSubscriptions": {"nodes": nodes,
                                   "pageInfo": {"hasNextPage": more, "endCursor": end}}}});
        Reply::new(200, body.to_string())
    }

    fn node(id: u64, topic: &str, uri: &str) -> Value {
        json!({"id": format!("gid://shopify/WebhookSubscription/{id}"), "topic": topic, "uri": uri})
    }

    fn sub(id: u64, topic: &str, uri: &str) -> RemoteSubscription {
        RemoteSubscription {
            topic: topic.into(),
            address: uri.into(),
            remote_id: Some(format!("gid://shopify/WebhookSubscription/{id}")),
        }
    }

    #[test]
    fn the_listing_follows_every_page() {
        let mut asked = Vec::new();
        let got = list_with(|after| {
            asked.push(after.map(str::to_string));
            Ok(match after {
                None => page(json!([node(7, "ORDERS_CREATE", "https://a/1")]), true, json!("c1")),
                Some(_) => page(json!([node(8, "APP_UNINSTALLED", "https://a/2")]), false, Value::Null),
            })
        });
        assert_eq!(
            got,
            Ok(vec![
                sub(7, "ORDERS_CREATE", "https://a/1"),
                sub(8, "APP_UNINSTALLED", "https://a/2")
            ])
        );
        assert_eq!(asked, vec![None, Some("c1".to_string())]);
        assert_eq!(list_with(|_| Ok(page(json!([]), false, Value::Null))), Ok(vec![]));
    }

    #[test]
    fn endless_or_broken_pages_fail_clearly() {
        let mut calls = 0;
        let endless = list_with(|_| {
            calls += 1;
            Ok(page(json!([]), true, json!("again")))
        });
        assert!(
            matches!(&endless, Err(SubscriptionError::Failed(e)) if e.contains("more than 5000")),
            "{endless:?}"
        );
        assert_eq!(calls, MAX_PAGES);
        for (nodes, more, end) in [
            (json!([]), true, Value::Null),
            (
                json!([{"id": "gid://shopify/WebhookSubscription/1", "topic": "ORDERS_CREATE"}]),
                false,
                Value::Null,
            ),
            (json!("x"), false, Value::Null),
        ] {
            assert!(matches!(
                list_with(|_| Ok(page(nodes.clone(), more, end.clone()))),
                Err(SubscriptionError::Failed(_))
            ));
        }
        let no_data = list_with(|_| Ok(Reply::new(200, r#"{"data":null}"#)));
        assert!(matches!(no_data, Err(SubscriptionError::Failed(_))));
        let network = list_with(|_| Err("timeout".into()));
        assert_eq!(network, Err(SubscriptionError::Transient("timeout".into())));
    }

    #[test]
    fn every_failure_has_its_class() {
        let throttled = r#"{"errors":[{"message":"Throttled","extensions":{"code":"THROTTLED"}}],
            "extensions":{"cost":{"requestedQueryCost":12,"actualQueryCost":0,
            "throttleStatus":{"maximumAvailable":2000,"currentlyAvailable":2,"restoreRate":100}}}}"#;
        let class = |status: u16, body: &str| parse_page(&Reply::new(status, body)).unwrap_err();
        assert_eq!(
            class(200, throttled),
            SubscriptionError::Throttled {
                error: "Shopify THROTTLED".into(),
                retry_after: Some(Duration::from_secs_f64(0.1))
            }
        );
        assert!(matches!(class(429, "{}"), SubscriptionError::Throttled { .. }));
        assert!(matches!(
            class(401, r#"{"errors":"[API] Invalid API key or access token"}"#),
            SubscriptionError::Unauthorized(_)
        ));
        assert!(matches!(class(502, "<html>"), SubscriptionError::Transient(_)));
        assert!(matches!(class(200, "<html>"), SubscriptionError::Transient(_)));
        assert!(matches!(class(404, "{}"), SubscriptionError::Failed(_)));
        match class(
            200,
            r#"{"errors":[{"message":"Field 'uri' doesn't exist on type 'WebhookSubscription'"}]}"#,
        ) {
            SubscriptionError::Failed(e) => assert!(e.contains("Field 'uri' doesn't exist"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_and_update_send_uri_and_read_the_subscription() {
        let (query, vars, field) = mutation("ORDERS_CREATE", "https://a/1", None);
        assert_eq!((query, field), (CREATE_MUTATION, "webhookSubscriptionCreate"));
        assert_eq!(
            vars,
            json!({"topic": "ORDERS_CREATE", "sub": {"uri": "https://a/1", "format": "JSON"}})
        );
        let (query, vars, field) = mutation("ORDERS_CREATE", "https://a/1", Some("7"));
        assert_eq!((query, field), (UPDATE_MUTATION, "webhookSubscriptionUpdate"));
        assert_eq!(vars["id"], "gid://shopify/WebhookSubscription/7");
        assert_eq!(vars["sub"]["uri"], "https://a/1");
        for q in [LIST_QUERY, CREATE_MUTATION, UPDATE_MUTATION] {
            assert!(!q.contains("callbackUrl") && q.contains("uri"), "{q}");
        }
        let answer = |field: &str, payload: Value| Reply::new(200, json!({"data": {field: payload}}).to_string());
        let created = answer(
            "webhookSubscriptionCreate",
            json!({"webhookSubscription": node(9, "ORDERS_CREATE", "https://a/1"), "userErrors": []}),
        );
        assert_eq!(
            parse_mutation(&created, "webhookSubscriptionCreate"),
            Ok(sub(9, "ORDERS_CREATE", "https://a/1"))
        );
        let refused = answer(
            "webhookSubscriptionUpdate",
            json!({"webhookSubscription": null, "userErrors": [
                {"field": ["webhookSubscription", "uri"], "message": "Address is invalid"},
                {"field": null, "message": "Address for this topic has already been taken"}]}),
        );
        assert_eq!(
            parse_mutation(&refused, "webhookSubscriptionUpdate"),
            Err(SubscriptionError::Failed(
                "Shopify refused the webhook subscription: webhookSubscription.uri: Address is invalid; Address for this topic has already been taken".into()
            ))
        );
        for payload in [
            json!({"webhookSubscription": null, "userErrors": []}),
            json!({}),
            Value::Null,
        ] {
            let r = answer("webhookSubscriptionCreate", payload);
            assert!(matches!(
                parse_mutation(&r, "webhookSubscriptionCreate"),
                Err(SubscriptionError::Failed(e)) if e.contains("webhookSubscriptionCreate")
            ));
        }
        assert!(matches!(
            parse_mutation(&Reply::new(401, "{}"), "webhookSubscriptionCreate"),
            Err(SubscriptionError::Unauthorized(_))
        ));
    }
}
