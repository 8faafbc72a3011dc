//! `integ.signature(marketplace, input)`: exactly what a connector or webhook verifier computes,
//! for debugging and support. Pass secrets as bound parameters, not literals.

use super::json_in::JsonIn;
use crate::signing;
use crate::spi_util::invalid;
use pgrx::prelude::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

fn text<'a>(input: &'a Map<String, Value>, key: &str, forms: &str) -> &'a str {
    match input.get(key) {
        Some(Value::String(s)) => s,
        Some(_) => invalid(format!("integ.signature: \"{key}\" must be a string")),
        None => invalid(format!("integ.signature: \"{key}\" is missing; expected {forms}")),
    }
}

/// Query parameters as the marketplace sees them: every value as text.
fn query(input: &Map<String, Value>) -> BTreeMap<String, String> {
    match input.get("query") {
        Some(Value::Object(q)) => q
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        _ => invalid("integ.signature: \"query\" must be an object of parameters"),
    }
}

#[pg_extern(immutable, parallel_safe)]
fn signature(marketplace: &str, input: JsonIn) -> String {
    let Value::Object(input) = input.0 else {
        invalid("integ.signature: input must be a JSON object")
    };
    match marketplace {
        "shopify" => {
            let forms = "{\"secret\", \"body\"} (webhook) or {\"secret\", \"query\"} (OAuth callback)";
            let secret = text(&input, "secret", forms);
            if input.contains_key("query") {
                signing::shopify_oauth(secret, &query(&input))
            } else {
                signing::shopify_webhook(secret, text(&input, "body", forms).as_bytes())
            }
        }
        "tiktok" => {
            let forms = "{\"app_secret\", \"path\", \"query\", \"body\"} (request) or \
                         {\"app_key\", \"app_secret\", \"body\"} (webhook)";
            let secret = text(&input, "app_secret", forms);
            if input.contains_key("app_key") {
                signing::tiktok_webhook(
                    text(&input, "app_key", forms),
                    secret,
                    text(&input, "body", forms).as_bytes(),
                )
            } else {
                let body = input.get("body").and_then(Value::as_str).unwrap_or("");
                signing::tiktok_request(secret, text(&input, "path", forms), &query(&input), body.as_bytes())
            }
        }
        "shein" => {
            let forms = "{\"open_key_id\", \"secret_key\", \"path\", \"timestamp\", \"random_key\"}";
            let random_key = text(&input, "random_key", forms);
            if random_key.chars().count() != signing::SHEIN_RANDOM_KEY_LEN {
                invalid("integ.signature: SHEIN's random_key is 5 characters");
            }
            signing::shein(
                text(&input, "open_key_id", forms),
                text(&input, "secret_key", forms),
                text(&input, "path", forms),
                text(&input, "timestamp", forms),
                random_key,
            )
        }
        "mercadolibre" => invalid("integ.signature: MercadoLibre signs nothing (its notifications are unsigned)"),
        other => invalid(format!(
            "integ.signature: unknown marketplace \"{}\" (shopify, tiktok or shein)",
            super::shown(other)
        )),
    }
}
