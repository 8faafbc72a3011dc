//! TikTok Shop webhooks (event API 202309): `GET /event/202309/webhooks` lists the shop's
//! webhooks in one call (no pages), `PUT` sets the one address of an event type. Both are signed
//! like every shop call; the envelope's `code` is classified as for the other calls.

use super::http::Reply;
use super::subscriptions::{check, Fields, RemoteSubscription, SubscriptionError};
use super::tiktok::{classify, signed, signed_put};
use super::PushRequest;
use serde_json::{json, Value};

/// The event types the extension applies: order changes and the end of the authorization.
pub const TOPICS: &[&str] = &[
    "ORDER_STATUS_CHANGE",
    "SELLER_DEAUTHORIZATION",
    "UPCOMING_AUTHORIZATION_EXPIRATION",
];
const FIELDS: Fields = Fields {
    marketplace: "TikTok Shop",
    topic: "event_type",
    address: "address",
    id: None,
};
const PATH: &str = "/event/202309/webhooks";

/// The shop's webhooks (one call).
pub fn list(agent: &ureq::Agent, req: &PushRequest) -> Result<Vec<RemoteSubscription>, SubscriptionError> {
    let reply = signed(agent, req, PATH, &[], None).map_err(SubscriptionError::Transient)?;
    parse_list(&reply)
}

/// Sets the address of `topic` (TikTok keeps one per event type, so there is no id to name).
pub fn subscribe(
    agent: &ureq::Agent,
    req: &PushRequest,
    topic: &str,
    address: &str,
) -> Result<RemoteSubscription, SubscriptionError> {
    let body = json!({"address": address, "event_type": topic});
    let reply = signed_put(agent, req, PATH, &body).map_err(SubscriptionError::Transient)?;
    check(classify(&reply))?;
    Ok(RemoteSubscription {
        topic: topic.to_string(),
        address: address.to_string(),
        remote_id: None,
    })
}

/// A list reply's webhooks, or what its failure means.
fn parse_list(reply: &Reply) -> Result<Vec<RemoteSubscription>, SubscriptionError> {
    check(classify(reply))?;
    let v = reply.json().unwrap_or(Value::Null);
    let data = v
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| SubscriptionError::Failed("TikTok Shop's webhook list answered without data".into()))?;
    FIELDS.read_list(data.get("webhooks"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marketplaces::http;
    use std::io::{Read, Write};
    use std::time::Duration;

    fn hook(topic: &str, address: &str) -> RemoteSubscription {
        RemoteSubscription {
            topic: topic.into(),
            address: address.into(),
            remote_id: None,
        }
    }

    #[test]
    fn the_list_reads_every_webhook() {
        let body = r#"{"code":0,"message":"Success","request_id":"r1","data":{"webhooks":[
            {"event_type":"ORDER_STATUS_CHANGE","address":"https://a/1","create_time":1,"update_time":1},
            {"event_type":"PRODUCT_STATUS_CHANGE","address":"https://b/2","create_time":1,"update_time":2}],
            "total_count":2}}"#;
        assert_eq!(
            parse_list(&Reply::new(200, body)),
            Ok(vec![
                hook("ORDER_STATUS_CHANGE", "https://a/1"),
                hook("PRODUCT_STATUS_CHANGE", "https://b/2")
            ])
        );
        let none = r#"{"code":0,"message":"Success","data":{"total_count":0}}"#;
        assert_eq!(parse_list(&Reply::new(200, none)), Ok(vec![]));
        for bad in [
            r#"{"code":0,"message":"Success","data":null}"#,
            r#"{"code":0,"message":"Success","data":{"webhooks":{}}}"#,
            r#"{"code":0,"message":"Success","data":{"webhooks":[{"event_type":"ORDER_STATUS_CHANGE"}]}}"#,
        ] {
            assert!(
                matches!(parse_list(&Reply::new(200, bad)), Err(SubscriptionError::Failed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn failures_are_classified_as_for_other_calls() {
        let class = |status: u16, body: &str| parse_list(&Reply::new(status, body)).unwrap_err();
        assert!(matches!(
            class(401, r#"{"code":105002,"message":"Access token is expired."}"#),
            SubscriptionError::Unauthorized(_)
        ));
        assert!(matches!(
            class(200, r#"{"code":36009004,"message":"Too many requests."}"#),
            SubscriptionError::Throttled { .. }
        ));
        assert!(matches!(class(429, ""), SubscriptionError::Throttled { .. }));
        assert!(matches!(class(503, ""), SubscriptionError::Transient(_)));
        assert!(matches!(class(200, "<html>"), SubscriptionError::Transient(_)));
        assert_eq!(
            class(200, r#"{"code":36009003,"message":"Invalid address."}"#),
            SubscriptionError::Failed("TikTok Shop 36009003: Invalid address.".into())
        );
    }

    /// Answers one request with `reply` and hands back the request as received.
    fn capture(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let served = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // the whole body is there once it reads as JSON
            let complete = |got: &[u8]| {
                let text = String::from_utf8_lossy(got);
                text.split_once("\r\n\r\n")
                    .is_some_and(|(_, b)| serde_json::from_str::<Value>(b).is_ok())
            };
            while !complete(&got) {
                let n = s.read(&mut buf).expect("read");
                assert!(n > 0, "the request ended early");
                got.extend_from_slice(&buf[..n]);
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
            s.write_all(answer.as_bytes()).expect("write");
            String::from_utf8_lossy(&got).into_owned()
        });
        (base, served)
    }

    #[test]
    fn subscribe_puts_a_signed_body() {
        let (base, served) = capture(r#"{"code":0,"message":"Success","request_id":"r","data":{}}"#);
        let req = crate::proptests::request(&base, "", Value::Null);
        let agent = http::agent(Duration::from_secs(5), 1);
        let got = subscribe(&agent, &req, "ORDER_STATUS_CHANGE", "https://a/1");
        assert_eq!(got, Ok(hook("ORDER_STATUS_CHANGE", "https://a/1")));
        let raw = served.join().expect("served");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a request");
        let target = head.split(' ').nth(1).expect("a target");
        assert!(head.starts_with("PUT "), "{head}");
        let (path, query) = target.split_once('?').expect("a query");
        assert_eq!(path, PATH);
        let mut params: std::collections::BTreeMap<String, String> = query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sign = params.remove("sign").expect("signed");
        assert_eq!(params.get("shop_cipher").map(String::as_str), Some("C"));
        assert_eq!(
            sign,
            crate::signing::tiktok_request("s", PATH, &params, body.as_bytes())
        );
        assert_eq!(
            serde_json::from_str::<Value>(body).ok(),
            Some(json!({"address": "https://a/1", "event_type": "ORDER_STATUS_CHANGE"}))
        );
    }
}
