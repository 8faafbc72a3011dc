//! From a listing and a token to a marketplace request, and from the reply to an outbox
//! outcome. Shared by the workers and `integ.sync_product`.

use crate::gucs::{self, Tuning};
use crate::limits::{self, Quota};
use crate::marketplaces::{self, Connector, Credentials, Marketplace, PushKind, PushRequest, PushResult};
use crate::outbox::{backoff, Outcome};
use serde_json::Value;

/// Sending 2% under the quota: marketplaces count arrivals in windows, and network jitter can
/// bunch requests that left evenly spaced.
const SAFETY_MARGIN_PERCENT: i64 = 2;

/// A connection's per-tenant quota: its `settings.rate_limit`, else the marketplace's GUC,
/// else the built-in default.
pub fn quota_for(marketplace: &str, connection_settings: &Value) -> Quota {
    let q = connection_settings
        .get("rate_limit")
        .and_then(Value::as_str)
        .and_then(|s| Quota::parse(s).ok())
        .or_else(|| gucs::marketplace_rate_limit(marketplace).and_then(|s| Quota::parse(&s).ok()))
        .unwrap_or_else(|| limits::default_quota(marketplace));
    Quota {
        emission_ns: q.emission_ns * (100 + SAFETY_MARGIN_PERCENT) / 100,
        burst: q.burst,
    }
}

/// Where one listing lives, as `prepare` needs it.
pub struct ListingRef<'a> {
    pub marketplace: &'a str,
    pub connection_settings: &'a Value,
    pub external_id: &'a str,
    pub listing_settings: &'a Value,
    /// What the marketplace last reported holding (for compare-and-set).
    pub last_known: Option<i32>,
}

/// A request about a connection rather than a listing (catalog pages, webhook subscriptions).
pub fn connection_request(
    marketplace: &str,
    connection_settings: &Value,
    access_token: String,
    credentials: Credentials,
) -> Result<(&'static dyn Connector, PushRequest), String> {
    let listing = ListingRef {
        marketplace,
        connection_settings,
        external_id: "",
        listing_settings: &Value::Null,
        last_known: None,
    };
    prepare(&listing, 0, access_token, credentials, String::new())
}

/// Resolves the connector and builds the request for one listing.
pub fn prepare(
    listing: &ListingRef,
    quantity: i32,
    access_token: String,
    credentials: Credentials,
    idempotency_key: String,
) -> Result<(&'static dyn Connector, PushRequest), String> {
    let m: Marketplace = listing.marketplace.parse()?;
    let connector = marketplaces::connector(m)?;
    let base_url = marketplaces::base_url(connector, listing.connection_settings, &gucs::allowed_hosts())?;
    Ok((
        connector,
        PushRequest {
            base_url,
            external_id: listing.external_id.to_string(),
            listing_settings: crate::price_rules::without_rules(&crate::rules::without_rules(listing.listing_settings)),
            quantity: quantity as i64,
            access_token,
            credentials,
            idempotency_key,
            last_known: listing.last_known.map(i64::from),
            connection_settings: listing.connection_settings.clone(),
            price: None,
            read_price: false,
        },
    ))
}

/// The idempotency key of a job's write: the same for every retry of the same quantity.
pub fn idempotency_key(job_id: i64, quantity: i32) -> String {
    format!("integ-{job_id}-{quantity}")
}

/// The outbox outcome of a push result for attempt `attempt` (1-based).
pub fn decide(result: &PushResult, stock: i32, attempt: i32, tuning: &Tuning, rng: &mut impl rand::Rng) -> Outcome {
    match &result.kind {
        PushKind::Applied { remote } => Outcome::Pushed {
            stock,
            remote: remote.map(clamp_i32),
        },
        PushKind::Permanent { error } => Outcome::Dead {
            stock,
            error: error.clone(),
        },
        PushKind::Retry { error, retry_after } => retry(
            stock,
            attempt,
            error,
            retry_after.map(|d| d.as_millis() as u64),
            tuning,
            rng,
        ),
        PushKind::Unauthorized { error } => retry(stock, attempt, error, None, tuning, rng),
        // the marketplace's throttling costs no attempt: the limiter already slowed down
        PushKind::Throttled { error, retry_after } => Outcome::Retry {
            stock,
            error: error.clone(),
            delay_ms: backoff::delay_ms(
                1,
                tuning.backoff_base_ms,
                tuning.backoff_max_ms,
                Some(retry_after.map(|d| d.as_millis() as u64).unwrap_or(1_000)),
                rng,
            ) as i64,
            burn: false,
        },
    }
}

pub fn retry(
    stock: i32,
    attempt: i32,
    error: &str,
    retry_after_ms: Option<u64>,
    tuning: &Tuning,
    rng: &mut impl rand::Rng,
) -> Outcome {
    if attempt >= tuning.max_attempts {
        return Outcome::Dead {
            stock,
            error: format!("gave up after {attempt} attempts: {error}"),
        };
    }
    let delay = backoff::delay_ms(
        attempt,
        tuning.backoff_base_ms,
        tuning.backoff_max_ms,
        retry_after_ms,
        rng,
    );
    Outcome::Retry {
        stock,
        error: error.to_string(),
        delay_ms: delay as i64,
        burn: true,
    }
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::time::Duration;

    fn tuning() -> Tuning {
        Tuning {
            http_concurrency: 4,
            max_attempts: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            http_timeout_ms: 1_000,
            poll_interval_ms: 100,
            done_retention_s: 0,
            webhook_retention_s: 86_400,
            reconcile_interval_s: 0,
            refresh_ahead_s: 0,
            circuit_failures: 5,
            circuit_cooldown_ns: 1_000_000_000,
        }
    }

    fn result(kind: PushKind) -> PushResult {
        PushResult {
            kind,
            http_status: Some(200),
            latency_ms: 1.0,
            learned: None,
        }
    }

    #[test]
    fn decisions() {
        let mut rng = StdRng::seed_from_u64(0);
        let t = tuning();
        let ok = decide(&result(PushKind::Applied { remote: Some(5) }), 5, 1, &t, &mut rng);
        assert!(matches!(
            ok,
            Outcome::Pushed {
                stock: 5,
                remote: Some(5)
            }
        ));
        let dead = decide(
            &result(PushKind::Permanent {
                error: "HTTP 400 x".into(),
            }),
            5,
            1,
            &t,
            &mut rng,
        );
        assert!(matches!(dead, Outcome::Dead { .. }));
        let r = decide(
            &result(PushKind::Retry {
                error: "HTTP 503".into(),
                retry_after: Some(Duration::from_secs(3)),
            }),
            5,
            1,
            &t,
            &mut rng,
        );
        match r {
            Outcome::Retry {
                delay_ms, burn: true, ..
            } => assert!(delay_ms >= 3_000),
            other => panic!("{other:?}"),
        }
        // throttling waits at least Retry-After and burns no attempt, even at the last one
        let throttled = decide(
            &result(PushKind::Throttled {
                error: "HTTP 429".into(),
                retry_after: Some(Duration::from_secs(2)),
            }),
            5,
            3,
            &t,
            &mut rng,
        );
        match throttled {
            Outcome::Retry {
                delay_ms, burn: false, ..
            } => assert!(delay_ms >= 2_000),
            other => panic!("{other:?}"),
        }
        let gave_up = decide(
            &result(PushKind::Retry {
                error: "HTTP 500".into(),
                retry_after: None,
            }),
            5,
            3,
            &t,
            &mut rng,
        );
        match gave_up {
            Outcome::Dead { error, .. } => assert!(error.starts_with("gave up after 3 attempts"), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prepare_checks_marketplace_and_settings() {
        let at = |marketplace, settings: &Value| {
            let l = ListingRef {
                marketplace,
                connection_settings: settings,
                external_id: "MLM1",
                listing_settings: &Value::Null,
                last_known: None,
            };
            prepare(&l, 4, "t".into(), Credentials::default(), idempotency_key(7, 4))
        };
        let (_, req) = at(
            "mercadolibre",
            &serde_json::json!({"base_url": "https://api.mercadolibre.com/"}),
        )
        .unwrap();
        assert_eq!(req.base_url, "https://api.mercadolibre.com");
        // outside PostgreSQL no host is listed in integ.allowed_hosts
        assert!(at("mercadolibre", &serde_json::json!({"base_url": "http://127.0.0.1:1"})).is_err());
        assert_eq!(req.idempotency_key, "integ-7-4");
        assert!(at("ebay", &Value::Null).is_err());
        assert!(at("mercadolibre", &serde_json::json!({"base_url": 1})).is_err());
    }
}
