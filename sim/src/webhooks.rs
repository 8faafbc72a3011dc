//! Webhook deliveries as the marketplaces send them. Each marketplace module builds its own
//! (real headers, signing and body shape); this module hands a delivery back to the admin caller
//! (so a test can pass it straight to `integ.receive_webhook`) and/or POSTs it to its addresses,
//! retrying like the marketplace does (delays scaled down and configurable). A delivery goes to
//! the addresses it names (Shopify and TikTok Shop route by subscription) or else to the URL
//! registered for its marketplace (MercadoLibre and SHEIN configure notifications per
//! application). MercadoLibre notifications never acknowledged go to its missed feeds.

use crate::state::State;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One delivery: the body exactly as sent, and its headers.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub marketplace: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The addresses it goes to; None = the marketplace's registered URL (`Hooks::urls`).
    pub targets: Option<Vec<String>>,
}

impl Delivery {
    pub fn to_json(&self) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({"marketplace": self.marketplace, "headers": headers, "body": self.body})
    }
}

#[derive(Default)]
pub struct Hooks {
    /// marketplace -> callback URL (the app-level subscription: Shopify's `shopify.app.toml`,
    /// TikTok's Partner Center setting, MercadoLibre's and SHEIN's application console)
    pub urls: HashMap<String, String>,
    /// marketplace -> the topics its app-level URL takes (Shopify: header form such as
    /// `orders/create`; TikTok: event type names); absent = the marketplace's default
    pub topics: HashMap<String, Vec<String>>,
    /// marketplace -> delays before each retry, in ms (the default schedule when absent)
    pub retry_delays_ms: HashMap<String, Vec<u64>>,
    /// Copies sent of every delivery (at-least-once delivery, as the marketplaces do it).
    pub copies: u32,
    /// Every attempt: {marketplace, attempt, status | error}
    pub log: Vec<Value>,
    /// MercadoLibre notifications never acknowledged: app id -> notifications
    pub missed: HashMap<String, Vec<Value>>,
}

/// The retry schedules, scaled down from the real ones: Shopify retries 8 times over 4 hours,
/// MercadoLibre for about an hour; TikTok and SHEIN do not publish theirs.
fn default_delays(marketplace: &str) -> Vec<u64> {
    match marketplace {
        "shopify" => vec![500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000],
        "mercadolibre" => vec![1_000; 20],
        _ => vec![1_000, 2_000, 4_000, 8_000, 16_000],
    }
}

impl Hooks {
    /// The marketplace's app-level URL and, when configured, the topics it takes.
    pub fn app_level(&self, marketplace: &str) -> Option<(String, Option<&[String]>)> {
        let url = self.urls.get(marketplace)?.clone();
        Some((url, self.topics.get(marketplace).map(Vec::as_slice)))
    }
}

/// The callback path a marketplace signs over (SHEIN signs the callback's own path).
pub fn callback_path(state: &State, marketplace: &str) -> String {
    let hooks = state.hooks.lock();
    hooks
        .urls
        .get(marketplace)
        .and_then(|u| u.split("://").nth(1))
        .and_then(|rest| {
            rest.find('/')
                .map(|i| rest[i..].split('?').next().unwrap_or("/").to_string())
        })
        .unwrap_or_else(|| "/".to_string())
}

/// Sends a delivery to each of its addresses in the background (each with its own retries and
/// copies); the addresses it went to. `missed_key` files an unacknowledged MercadoLibre
/// notification under its application.
pub fn emit(state: &Arc<State>, d: &Delivery, missed_key: Option<String>) -> Vec<String> {
    let (urls, delays, copies) = {
        let h = state.hooks.lock();
        let mut urls: Vec<String> = match &d.targets {
            Some(t) => t.clone(),
            None => h.urls.get(d.marketplace).cloned().into_iter().collect(),
        };
        // one POST per address, however many subscriptions name it
        let mut seen = std::collections::HashSet::new();
        urls.retain(|u| seen.insert(u.clone()));
        let delays = h
            .retry_delays_ms
            .get(d.marketplace)
            .cloned()
            .unwrap_or_else(|| default_delays(d.marketplace));
        (urls, delays, h.copies.max(1))
    };
    if urls.is_empty() {
        if d.targets.is_some() {
            state.count(format!("{} webhooks unsubscribed", d.marketplace));
        }
        if let Some(app) = missed_key {
            file_missed(state, &app, &d.body);
        }
        return urls;
    }
    for url in &urls {
        for _ in 0..copies {
            let (state, d, url, delays, missed_key) = (
                state.clone(),
                d.clone(),
                url.clone(),
                delays.clone(),
                missed_key.clone(),
            );
            tokio::spawn(async move { deliver(state, d, url, delays, missed_key).await });
        }
    }
    urls
}

/// One copy to one address, retried after each delay until a 2xx.
async fn deliver(state: Arc<State>, d: Delivery, url: String, delays: Vec<u64>, missed_key: Option<String>) {
    for attempt in 0..=delays.len() {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(delays[attempt - 1])).await;
        }
        let mut body = d.body.clone();
        if d.marketplace == "mercadolibre" {
            body = with_attempts(&body, attempt + 1);
        }
        let (url2, headers, sent) = (url.clone(), d.headers.clone(), body.clone());
        let result = tokio::task::spawn_blocking(move || send_once(&url2, &headers, &sent))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let entry = match &result {
            Ok(status) => json!({"marketplace": d.marketplace, "url": url, "attempt": attempt + 1, "status": status}),
            Err(e) => json!({"marketplace": d.marketplace, "url": url, "attempt": attempt + 1, "error": e}),
        };
        state.hooks.lock().log.push(entry);
        state.count(format!("{} webhook attempts", d.marketplace));
        if matches!(result, Ok(s) if (200..300).contains(&s)) {
            state.count(format!("{} webhooks delivered", d.marketplace));
            return;
        }
    }
    state.count(format!("{} webhooks given up", d.marketplace));
    if let Some(app) = missed_key {
        file_missed(&state, &app, &d.body);
    }
}

fn with_attempts(body: &str, attempts: usize) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(mut v) => {
            v["attempts"] = json!(attempts);
            v.to_string()
        }
        Err(_) => body.to_string(),
    }
}

/// Files a MercadoLibre notification in its application's missed feeds.
pub fn file_missed(state: &State, app: &str, body: &str) {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        state.hooks.lock().missed.entry(app.to_string()).or_default().push(v);
    }
}

fn send_once(url: &str, headers: &[(String, String)], body: &str) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(1)))
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.send(body.as_bytes())
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

// ---- admin (/_admin/webhooks) -----------------------------------------------------------------

pub fn admin_router() -> Router<Arc<State>> {
    Router::new().route("/", post(configure).get(show).delete(reset))
}

/// `{"marketplace", "url"?: string | null, "topics"?: [..] | null, "retry_delays_ms"?: [..],
/// "copies"?: n}`. Giving `url` or `topics` replaces both (as redeploying the app's config does).
async fn configure(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let mut h = state.hooks.lock();
    if let Some(m) = b.get("marketplace").and_then(Value::as_str) {
        if b.get("url").is_some() || b.get("topics").is_some() {
            match b.get("topics").and_then(Value::as_array) {
                Some(t) => {
                    let topics = t.iter().filter_map(Value::as_str).map(str::to_string).collect();
                    h.topics.insert(m.to_string(), topics);
                }
                None => {
                    h.topics.remove(m);
                }
            }
        }
        match b.get("url") {
            Some(Value::String(u)) => {
                h.urls.insert(m.to_string(), u.clone());
            }
            Some(Value::Null) => {
                h.urls.remove(m);
            }
            _ => {}
        }
        if let Some(d) = b.get("retry_delays_ms").and_then(Value::as_array) {
            let delays = d.iter().filter_map(Value::as_u64).collect();
            h.retry_delays_ms.insert(m.to_string(), delays);
        }
    }
    if let Some(c) = b.get("copies").and_then(Value::as_u64) {
        h.copies = c.clamp(1, 100) as u32;
    }
    Json(json!({"ok": true})).into_response()
}

async fn show(AxState(state): AxState<Arc<State>>) -> Response {
    let h = state.hooks.lock();
    Json(json!({"urls": h.urls, "topics": h.topics, "copies": h.copies.max(1), "log": h.log, "missed": h.missed}))
        .into_response()
}

async fn reset(AxState(state): AxState<Arc<State>>) -> Response {
    *state.hooks.lock() = Hooks::default();
    Json(json!({"ok": true})).into_response()
}

/// The admin answer for a new event: its id, the delivery, and the addresses it was sent to
/// (`sent_to`; none with `"send": false`).
pub fn produced(state: &Arc<State>, body: &Value, event: Value, d: &Delivery, missed_key: Option<String>) -> Response {
    let send = body.get("send").and_then(Value::as_bool).unwrap_or(true);
    let lose = body.get("lose").and_then(Value::as_bool).unwrap_or(false);
    let mut sent_to = Vec::new();
    if lose {
        // the notification never reached the app (it was down): only the missed feeds have it
        if let Some(app) = &missed_key {
            file_missed(state, app, &d.body);
        }
    } else if send {
        sent_to = emit(state, d, missed_key);
    }
    Json(json!({"event": event, "delivery": d.to_json(), "sent_to": sent_to})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn topics_come_and_go_with_the_app_level_url() {
        let state = Arc::new(State::default());
        let set = |b: Value| configure(AxState(state.clone()), Json(b));
        set(json!({"marketplace": "shopify", "url": "https://app.example/h", "topics": ["orders/create"]})).await;
        let topics = |s: &State| {
            s.hooks
                .lock()
                .app_level("shopify")
                .and_then(|(_, t)| t.map(<[String]>::to_vec))
        };
        assert_eq!(topics(&state), Some(vec!["orders/create".to_string()]));
        // a retry schedule alone keeps them; a new url without topics drops them
        set(json!({"marketplace": "shopify", "retry_delays_ms": []})).await;
        assert_eq!(topics(&state), Some(vec!["orders/create".to_string()]));
        set(json!({"marketplace": "shopify", "url": "https://app.example/h"})).await;
        assert_eq!(topics(&state), None);
        // a delivery without targets goes to its marketplace's URL, as before
        let d = Delivery {
            marketplace: "shein",
            headers: Vec::new(),
            body: String::new(),
            targets: None,
        };
        assert!(emit(&state, &d, None).is_empty());
        set(json!({"marketplace": "shein", "url": "http://127.0.0.1:9/h", "retry_delays_ms": []})).await;
        assert_eq!(emit(&state, &d, None), vec!["http://127.0.0.1:9/h"]);
        assert!(state.counters.lock().get("shein webhooks unsubscribed").is_none());
    }
}
