//! Inbound deliveries, in plain Rust: each marketplace's signature check (constant time), and
//! what a delivery says about itself (shop, event id, topic). `integ.verify_webhook` and
//! `integ.receive_webhook` are built on these.

use super::Marketplace;
use marketplace_signing as signing;
use serde_json::{Map, Value};

/// Header names, lowercased (HTTP header names are case-insensitive).
pub type Headers = Map<String, Value>;

pub fn lowercase_headers(h: &Value) -> Result<Headers, String> {
    let obj = h.as_object().ok_or("headers must be a JSON object of name -> value")?;
    Ok(obj.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect())
}

pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.get(name).and_then(Value::as_str).map(str::trim)
}

/// Checks a delivery against the secrets it should be signed with. `secrets`:
/// shopify `{"secret"}` or `{"secrets": [current, previous]}` (a rotation window);
/// tiktok `{"app_key", "app_secret"}`; shein `{"appid", "app_secret_key", "path"}`;
/// mercadolibre (unsigned) `{"client_id"}`: the notification must name that application.
pub fn verify(m: Marketplace, headers: &Headers, body: &[u8], secrets: &Value) -> Result<bool, String> {
    let s = |k: &str| secrets.get(k).and_then(Value::as_str);
    match m {
        Marketplace::Shopify => {
            let Some(given) = header(headers, "x-shopify-hmac-sha256") else {
                return Ok(false);
            };
            if body.is_empty() {
                return Ok(false);
            }
            let mut candidates: Vec<&str> = s("secret").into_iter().collect();
            if let Some(list) = secrets.get("secrets").and_then(Value::as_array) {
                candidates.extend(list.iter().filter_map(Value::as_str));
            }
            if candidates.is_empty() {
                return Err("shopify: secrets needs \"secret\" or \"secrets\"".into());
            }
            // check every candidate, so the time does not say which one matched
            let mut ok = false;
            for c in candidates {
                ok |= signing::constant_time_eq(signing::shopify_webhook(c, body).as_bytes(), given.as_bytes());
            }
            Ok(ok)
        }
        Marketplace::TikTok => {
            let (Some(key), Some(secret)) = (s("app_key"), s("app_secret")) else {
                return Err("tiktok: secrets needs \"app_key\" and \"app_secret\"".into());
            };
            let Some(given) = header(headers, "authorization") else {
                return Ok(false);
            };
            Ok(signing::constant_time_eq(
                signing::tiktok_webhook(key, secret, body).as_bytes(),
                given.to_ascii_lowercase().as_bytes(),
            ))
        }
        Marketplace::Shein => {
            let (Some(appid), Some(secret), Some(path)) = (s("appid"), s("app_secret_key"), s("path")) else {
                return Err("shein: secrets needs \"appid\", \"app_secret_key\" and \"path\"".into());
            };
            let (Some(ts), Some(sig)) = (header(headers, "x-lt-timestamp"), header(headers, "x-lt-signature")) else {
                return Ok(false);
            };
            if header(headers, "x-lt-appid").is_some_and(|a| a != appid) {
                return Ok(false);
            }
            let n = signing::SHEIN_RANDOM_KEY_LEN;
            if sig.len() <= n || !sig.is_char_boundary(n) {
                return Ok(false);
            }
            let want = signing::shein(appid, secret, path, ts, &sig[..n]);
            Ok(signing::constant_time_eq(want.as_bytes(), sig.as_bytes()))
        }
        Marketplace::MercadoLibre => {
            let Some(client_id) = s("client_id") else {
                return Err("mercadolibre: secrets needs \"client_id\"".into());
            };
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            Ok(id_text(v.get("application_id")).as_deref() == Some(client_id))
        }
    }
}

/// A JSON id that may come as a whole number or a string. A fractional or out-of-range number is
/// no id: read as a float, its text would change from one reading to the next (and two orders
/// could share one), so exactly-once could not hold.
pub fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// What a delivery says about itself before anything is trusted.
#[derive(Debug, Default, PartialEq)]
pub struct Envelope {
    /// How to find the connection: (identifier name, value), e.g. ("shop", "acme.myshopify.com").
    pub account: Option<(&'static str, String)>,
    pub event_id: Option<String>,
    pub topic: Option<String>,
}

/// Reads the routing facts of a delivery; Err is a malformed delivery (HTTP 400).
pub fn envelope(m: Marketplace, headers: &Headers, body: &[u8]) -> Result<Envelope, String> {
    match m {
        Marketplace::Shopify => {
            let need = |h: &str| header(headers, h).filter(|v| !v.is_empty()).map(str::to_string);
            let shop = need("x-shopify-shop-domain").ok_or("missing X-Shopify-Shop-Domain")?;
            need("x-shopify-hmac-sha256").ok_or("missing X-Shopify-Hmac-Sha256")?;
            if body.is_empty() {
                return Err("empty body".into());
            }
            Ok(Envelope {
                account: Some(("shop", shop)),
                event_id: Some(need("x-shopify-webhook-id").ok_or("missing X-Shopify-Webhook-Id")?),
                topic: need("x-shopify-topic"),
            })
        }
        Marketplace::TikTok => {
            let v: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
            let shop = id_text(v.get("shop_id")).ok_or("the body has no shop_id")?;
            let event = id_text(v.get("tts_notification_id")).unwrap_or_else(|| signing::sha256_hex(body));
            Ok(Envelope {
                account: Some(("shop_id", shop)),
                event_id: Some(event),
                topic: v.get("type").and_then(Value::as_i64).map(|t| format!("type {t}")),
            })
        }
        Marketplace::MercadoLibre => {
            let v: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
            let user = id_text(v.get("user_id")).ok_or("the notification has no user_id")?;
            Ok(Envelope {
                account: Some(("user_id", user)),
                event_id: Some(id_text(v.get("_id")).ok_or("the notification has no _id")?),
                topic: v.get("topic").and_then(Value::as_str).map(str::to_string),
            })
        }
        Marketplace::Shein => {
            let appid = header(headers, "x-lt-appid")
                .filter(|v| !v.is_empty())
                .ok_or("missing x-lt-appid")?;
            Ok(Envelope {
                account: Some(("appid", appid.to_string())),
                event_id: Some(signing::sha256_hex(body)),
                topic: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(v: Value) -> Headers {
        lowercase_headers(&v).unwrap()
    }

    #[test]
    fn shopify_worked_example_rotation_and_case() {
        let body = b"\"my secret message\"";
        let h = headers(json!({"X-Shopify-Hmac-SHA256": "hMTq0K2x7oyOjoBwGYeTj5oxfnaVYXzbanUG9aajpKI="}));
        assert_eq!(
            verify(Marketplace::Shopify, &h, body, &json!({"secret": "hush"})),
            Ok(true)
        );
        assert_eq!(
            verify(Marketplace::Shopify, &h, body, &json!({"secret": "other"})),
            Ok(false)
        );
        // during a rotation either secret verifies
        assert_eq!(
            verify(Marketplace::Shopify, &h, body, &json!({"secrets": ["new", "hush"]})),
            Ok(true)
        );
        assert_eq!(
            verify(Marketplace::Shopify, &h, b"", &json!({"secret": "hush"})),
            Ok(false)
        );
        assert!(verify(Marketplace::Shopify, &h, body, &json!({})).is_err());
    }

    #[test]
    fn tiktok_and_shein_and_mercadolibre() {
        let body = br#"{"type":1,"shop_id":"7494726673780148744","tts_notification_id":"n1"}"#;
        let auth = signing::tiktok_webhook("k", "s", body);
        let h = headers(json!({"Authorization": auth}));
        assert_eq!(
            verify(
                Marketplace::TikTok,
                &h,
                body,
                &json!({"app_key": "k", "app_secret": "s"})
            ),
            Ok(true)
        );
        assert_eq!(
            verify(
                Marketplace::TikTok,
                &h,
                b"{}",
                &json!({"app_key": "k", "app_secret": "s"})
            ),
            Ok(false)
        );
        let e = envelope(Marketplace::TikTok, &h, body).unwrap();
        assert_eq!(e.account, Some(("shop_id", "7494726673780148744".to_string())));
        assert_eq!(e.event_id.as_deref(), Some("n1"));

        let sig = signing::shein("app1", "SECRETKEY0123456", "/hooks/shein", "1740709414000", "abcde");
        let h = headers(json!({"x-lt-appid": "app1", "x-lt-timestamp": "1740709414000", "x-lt-signature": sig}));
        let secrets = json!({"appid": "app1", "app_secret_key": "SECRETKEY0123456", "path": "/hooks/shein"});
        assert_eq!(verify(Marketplace::Shein, &h, b"eventData=x", &secrets), Ok(true));
        let wrong_path = json!({"appid": "app1", "app_secret_key": "SECRETKEY0123456", "path": "/other"});
        assert_eq!(verify(Marketplace::Shein, &h, b"eventData=x", &wrong_path), Ok(false));

        let n = br#"{"_id":"abc","resource":"/orders/1","user_id":5001,"topic":"orders_v2","application_id":7001}"#;
        assert_eq!(
            verify(
                Marketplace::MercadoLibre,
                &Headers::new(),
                n,
                &json!({"client_id": "7001"})
            ),
            Ok(true)
        );
        assert_eq!(
            verify(
                Marketplace::MercadoLibre,
                &Headers::new(),
                n,
                &json!({"client_id": "9"})
            ),
            Ok(false)
        );
        assert_eq!(
            envelope(Marketplace::MercadoLibre, &Headers::new(), n).unwrap().account,
            Some(("user_id", "5001".to_string()))
        );
        assert!(envelope(Marketplace::MercadoLibre, &Headers::new(), b"not json").is_err());
        assert!(envelope(Marketplace::Shopify, &headers(json!({})), b"{}").is_err());
    }

    #[test]
    fn missing_headers_truncated_and_tampered_bodies_fail() {
        let body = br#"{"id":1,"line_items":[{"id":2,"sku":"P1","quantity":1}]}"#;
        let secrets = json!({"secret": "hush"});
        let good = headers(json!({"X-Shopify-Hmac-Sha256": signing::shopify_webhook("hush", body)}));
        assert_eq!(verify(Marketplace::Shopify, &good, body, &secrets), Ok(true));
        assert_eq!(
            verify(Marketplace::Shopify, &good, &body[..body.len() - 1], &secrets),
            Ok(false)
        );
        let mut tampered = body.to_vec();
        tampered[10] = b'9';
        assert_eq!(verify(Marketplace::Shopify, &good, &tampered, &secrets), Ok(false));
        assert_eq!(verify(Marketplace::Shopify, &Headers::new(), body, &secrets), Ok(false));
        // a signature that is not 32 bytes of base64 never matches
        let short = headers(json!({"X-Shopify-Hmac-Sha256": "c2hvcnQ="}));
        assert_eq!(verify(Marketplace::Shopify, &short, body, &secrets), Ok(false));

        let tk = json!({"app_key": "k", "app_secret": "s"});
        let auth = headers(json!({"authorization": signing::tiktok_webhook("k", "s", body)}));
        assert_eq!(verify(Marketplace::TikTok, &auth, &body[..20], &tk), Ok(false));
        assert_eq!(verify(Marketplace::TikTok, &Headers::new(), body, &tk), Ok(false));
        let wrong = json!({"app_key": "k", "app_secret": "other"});
        assert_eq!(verify(Marketplace::TikTok, &auth, body, &wrong), Ok(false));

        let sh = json!({"appid": "app1", "app_secret_key": "SECRETKEY0123456", "path": "/hooks/shein"});
        let sig = signing::shein("app1", "SECRETKEY0123456", "/hooks/shein", "1740709414000", "abcde");
        let mut forged = sig.clone();
        forged.replace_range(6..7, if &sig[6..7] == "A" { "B" } else { "A" });
        for h in [
            json!({"x-lt-appid": "app1", "x-lt-timestamp": "1740709414001", "x-lt-signature": sig}),
            json!({"x-lt-appid": "app1", "x-lt-timestamp": "1740709414000", "x-lt-signature": forged}),
            json!({"x-lt-appid": "app1", "x-lt-timestamp": "1740709414000", "x-lt-signature": "abc"}),
            json!({"x-lt-appid": "app1", "x-lt-timestamp": "1740709414000"}),
            json!({"x-lt-appid": "app2", "x-lt-timestamp": "1740709414000", "x-lt-signature": sig}),
        ] {
            assert_eq!(
                verify(Marketplace::Shein, &headers(h.clone()), b"eventData=x", &sh),
                Ok(false),
                "{h}"
            );
        }
        assert!(envelope(Marketplace::Shein, &Headers::new(), b"eventData=x").is_err());
        assert!(envelope(Marketplace::TikTok, &Headers::new(), &body[..20]).is_err());
    }
}
