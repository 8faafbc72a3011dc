//! Webhook subscriptions over the loopback: any listing or subscribe reply, of Shopify or TikTok
//! Shop, is read or refused with a bounded error that never carries the access token.

use super::*;
use crate::marketplaces::subscriptions::{RemoteSubscription, SubscriptionError};
use crate::marketplaces::{shopify::Shopify, tiktok::TikTok, Connector};
use serde_json::json;
use std::time::Duration;

const TOKEN: &str = "TOKEN-never-shown-7f3a";

fn cases() -> Config {
    config_with_default_cases(48)
}

/// A value where a string belongs: mostly one, sometimes anything.
fn text() -> BoxedStrategy<Value> {
    prop_oneof![3 => word().prop_map(Value::String), 1 => json_leaf()].boxed()
}

fn shopify_node() -> BoxedStrategy<Value> {
    (text(), text(), text())
        .prop_map(|(id, topic, uri)| json!({"id": id, "topic": topic, "uri": uri}))
        .boxed()
}

/// A webhookSubscriptions page or a mutation payload of any shape, errors and all.
fn shopify_reply() -> BoxedStrategy<Canned> {
    let page = (prop::collection::vec(shopify_node(), 0..4), json_leaf(), text()).prop_map(|(nodes, more, end)| {
        json!({"webhookSubscriptions": {"nodes": nodes, "pageInfo": {"hasNextPage": more, "endCursor": end}}})
    });
    let user_errors = prop::collection::vec(
        (json_leaf(), text()).prop_map(|(f, m)| json!({"field": f, "message": m})),
        0..3,
    );
    let payload = (prop::option::of(shopify_node()), user_errors).prop_map(|(sub, errors)| {
        let p = json!({"webhookSubscription": sub, "userErrors": errors});
        json!({"webhookSubscriptionCreate": p.clone(), "webhookSubscriptionUpdate": p})
    });
    let errors = prop::option::of(
        (prop::sample::select(vec!["THROTTLED", "ACCESS_DENIED"]), word())
            .prop_map(|(code, m)| json!([{"message": m, "extensions": {"code": code}}])),
    );
    prop_oneof![
        3 => (prop_oneof![page, payload, json_value()], errors).prop_map(|(data, errors)| {
            let mut v = json!({"data": data});
            if let Some(e) = errors {
                v["errors"] = e;
            }
            Canned::new(200, v.to_string())
        }),
        1 => canned(),
    ]
    .boxed()
}

/// An event API envelope of any shape.
fn tiktok_reply() -> BoxedStrategy<Canned> {
    let hook = (text(), text()).prop_map(|(t, a)| json!({"event_type": t, "address": a, "create_time": 1}));
    let data = prop_oneof![
        prop::collection::vec(hook, 0..4).prop_map(|h| json!({"webhooks": h, "total_count": h.len()})),
        json_value(),
    ];
    let code = prop::sample::select(vec![0i64, 0, 105_002, 106_001, 36_009_004, 36_009_003]);
    prop_oneof![
        3 => (code, word(), data).prop_map(|(c, m, d)| Canned::new(200, json!({"code": c, "message": m, "data": d}).to_string())),
        1 => canned(),
    ]
    .boxed()
}

fn error_ok(e: &SubscriptionError) -> Result<(), TestCaseError> {
    let text = e.to_string();
    prop_assert!(!matches!(e, SubscriptionError::Unsupported));
    prop_assert!(!text.is_empty() && text.len() <= 600, "{text}");
    prop_assert!(!text.contains(TOKEN), "{text}");
    if let SubscriptionError::Throttled { retry_after, .. } = e {
        prop_assert!(retry_after.is_none_or(|d| d <= Duration::from_secs(86_400)));
    }
    Ok(())
}

/// A listing is bounded (Shopify stops after 50 pages); a failure passes `error_ok`.
fn check(got: Result<Vec<RemoteSubscription>, SubscriptionError>) -> Result<(), TestCaseError> {
    match got {
        Ok(subs) => prop_assert!(subs.len() <= 50 * 100),
        Err(e) => error_ok(&e)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases())]

    /// Shopify: listings (following pages while they say more) and subscribes read or refused.
    #[test]
    fn shopify_subscription_replies_are_read_or_refused(
        replies in prop::collection::vec(shopify_reply(), 1..4),
        answer in shopify_reply(),
        remote_id in prop::option::of("[0-9]{1,4}"),
    ) {
        let server = Loopback::start();
        let mut req = request(&server.base, "", Value::Null);
        req.access_token = TOKEN.into();
        let agent = agent();
        server.answer(replies);
        let got = Shopify.list_subscriptions(&agent, &req);
        prop_assert!(server.served() <= 50);
        server.answer(vec![answer]);
        check(got)?;
        match Shopify.subscribe(&agent, &req, "ORDERS_CREATE", "https://h/1", remote_id.as_deref()) {
            Ok(s) => prop_assert!(s.remote_id.is_some()),
            Err(e) => error_ok(&e)?,
        }
    }

    /// TikTok Shop: one listing call and one PUT, read or refused.
    #[test]
    fn tiktok_subscription_replies_are_read_or_refused(list in tiktok_reply(), answer in tiktok_reply()) {
        let server = Loopback::start();
        let mut req = request(&server.base, "", Value::Null);
        req.access_token = TOKEN.into();
        let agent = agent();
        server.answer(vec![list, answer]);
        let got = TikTok.list_subscriptions(&agent, &req);
        let set = TikTok.subscribe(&agent, &req, "ORDER_STATUS_CHANGE", "https://h/1", None);
        prop_assert_eq!(server.served(), 2);
        check(got)?;
        match set {
            Ok(s) => prop_assert_eq!((s.topic.as_str(), s.address.as_str()), ("ORDER_STATUS_CHANGE", "https://h/1")),
            Err(e) => error_ok(&e)?,
        }
    }
}
