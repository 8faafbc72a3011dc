//! HTTP plumbing shared by connectors: agents that reuse connections and resolved addresses,
//! replies read into plain data, and the mapping of statuses to retry decisions.

use super::PushKind;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// Largest response body we read; marketplaces answer stock calls with small JSON.
const MAX_BODY: u64 = 2 * 1024 * 1024;

/// An HTTP agent: keeps up to `max_idle` connections open for reuse and resolves host names
/// through `CachingResolver`.
pub fn agent(timeout: Duration, max_idle: usize) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_idle_connections(max_idle.max(4))
        .max_idle_connections_per_host(max_idle.max(4))
        .user_agent("integration-pg/0.1")
        .build();
    ureq::Agent::with_parts(config, DefaultConnector::new(), CachingResolver::default())
}

/// How long a resolved address is reused before the name is looked up again.
const RESOLVED_FOR: Duration = Duration::from_secs(60);

/// ureq's resolver, with each answer kept for `RESOLVED_FOR`. With a timeout set, ureq looks
/// every request's host up again on a new thread (so that a slow lookup can be abandoned):
/// a thread start per push, ~4% of a worker's CPU at 3,000 pushes/s.
#[derive(Debug, Default)]
struct CachingResolver {
    inner: DefaultResolver,
    answers: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for CachingResolver {
    fn resolve(&self, uri: &Uri, config: &Config, timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        if let Some((at, addrs)) = self.answers.lock().ok().and_then(|a| a.get(&key).cloned()) {
            if at.elapsed() < RESOLVED_FOR {
                return Ok(addrs);
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        if let Ok(mut answers) = self.answers.lock() {
            answers.insert(key, (Instant::now(), addrs.clone()));
        }
        Ok(addrs)
    }
}

/// A reply read to the end.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<Duration>,
    pub x_version: Option<String>,
}

impl Reply {
    /// A reply with no headers of note (tests and decoders).
    pub fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            retry_after: None,
            x_version: None,
        }
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// Network-level failure, always retryable. The text never carries request headers or bodies.
#[derive(Debug, Clone)]
pub struct TransportError(pub String);

pub fn read(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, TransportError> {
    let mut resp = result.map_err(|e| TransportError(describe(&e)))?;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
    let x_version = header("x-version");
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| TransportError(describe(&e)))?;
    Ok(Reply {
        status,
        body,
        retry_after,
        x_version,
    })
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timeout".to_string(),
        ureq::Error::Io(io) => format!("connection error: {}", io.kind()),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        other => format!(
            "transport error: {}",
            other.to_string().chars().take(200).collect::<String>()
        ),
    }
}

/// `Retry-After` in seconds (fractions allowed, as Shopify sends); dates are ignored.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    if secs.is_finite() && secs >= 0.0 {
        Some(Duration::from_secs_f64(secs.min(86_400.0)))
    } else {
        None
    }
}

/// The failure kind of a non-2xx reply.
pub fn classify_failure(reply: &Reply) -> PushKind {
    let error = error_text(reply);
    match reply.status {
        401 => PushKind::Unauthorized { error },
        429 => PushKind::Throttled {
            error,
            retry_after: reply.retry_after,
        },
        408 | 425 | 500..=599 => PushKind::Retry {
            error,
            retry_after: reply.retry_after,
        },
        _ => PushKind::Permanent { error },
    }
}

/// A short, secret-free description of an error reply: status plus the marketplace's own
/// message fields. Bodies are never echoed whole.
pub fn error_text(reply: &Reply) -> String {
    let detail = reply.json().map(|v| {
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let mut parts = Vec::new();
        if let Some(m) = field("message").or_else(|| field("msg")) {
            parts.push(m);
        }
        if let Some(e) = field("error") {
            parts.push(format!("({e})"));
        }
        // MercadoLibre's reasons: `cause[]{code, message}` (the part that says what was wrong)
        let causes: Vec<String> = v
            .get("cause")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let text = |k: &str| c.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
                match (text("code"), text("message")) {
                    (Some(code), Some(m)) => Some(format!("{code}: {m}")),
                    (code, m) => code.or(m).map(str::to_string),
                }
            })
            .collect();
        if !causes.is_empty() {
            parts.push(format!("— {}", causes.join("; ")));
        }
        parts.join(" ")
    });
    let detail = detail.filter(|d| !d.is_empty()).unwrap_or_else(|| {
        if reply.body.trim().is_empty() {
            String::new()
        } else {
            "non-JSON error body".to_string()
        }
    });
    let text = format!("HTTP {} {}", reply.status, detail);
    truncate(text.trim(), 500)
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub fn elapsed_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply::new(status, body)
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn statuses_map_to_decisions() {
        assert!(matches!(classify_failure(&reply(500, "")), PushKind::Retry { .. }));
        assert!(matches!(classify_failure(&reply(429, "")), PushKind::Throttled { .. }));
        assert!(matches!(
            classify_failure(&reply(401, "")),
            PushKind::Unauthorized { .. }
        ));
        assert!(matches!(classify_failure(&reply(400, "")), PushKind::Permanent { .. }));
        assert!(matches!(classify_failure(&reply(404, "")), PushKind::Permanent { .. }));
    }

    #[test]
    fn error_text_uses_marketplace_fields_only() {
        let r = reply(
            400,
            r#"{"message":"quantity invalid","error":"bad_request","status":400,"cause":["x"]}"#,
        );
        assert_eq!(error_text(&r), "HTTP 400 quantity invalid (bad_request)");
        let ml = reply(
            400,
            r#"{"message":"Validation error","error":"validation_error","status":400,"cause":[{"code":"item.price.invalid","message":"price 4.99 is below the minimum price 5 of site MLM"}]}"#,
        );
        assert_eq!(
            error_text(&ml),
            "HTTP 400 Validation error (validation_error) — item.price.invalid: price 4.99 is below the minimum price 5 of site MLM"
        );
        assert_eq!(
            error_text(&reply(502, "<html>oops</html>")),
            "HTTP 502 non-JSON error body"
        );
        assert_eq!(error_text(&reply(503, "")), "HTTP 503");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
