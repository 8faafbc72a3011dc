//! Webhook subscriptions in one shape: what a marketplace reports, what its calls' failures mean,
//! and the plan that points each topic the extension needs at our address.

use super::PushKind;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// One webhook subscription as the marketplace reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteSubscription {
    pub topic: String,
    pub address: String,
    pub remote_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SubscriptionError {
    /// The marketplace configures webhooks per application, in its console.
    Unsupported,
    /// The access token was refused: refresh and try again.
    Unauthorized(String),
    /// Slow down (429, THROTTLED).
    Throttled {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Network trouble, timeout, 5xx: try again later.
    Transient(String),
    /// Refused as it is (userErrors, other 4xx, business error codes): retrying will not help.
    Failed(String),
}

impl fmt::Display for SubscriptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscriptionError::Unsupported => {
                f.write_str("webhooks are configured per application in the marketplace's console")
            }
            SubscriptionError::Unauthorized(e)
            | SubscriptionError::Throttled { error: e, .. }
            | SubscriptionError::Transient(e)
            | SubscriptionError::Failed(e) => f.write_str(e),
        }
    }
}

/// A call's outcome as connectors classify it, as a subscription error (`Applied`: none).
pub(super) fn check(kind: PushKind) -> Result<(), SubscriptionError> {
    Err(match kind {
        PushKind::Applied { .. } => return Ok(()),
        PushKind::Unauthorized { error } => SubscriptionError::Unauthorized(error),
        PushKind::Throttled { error, retry_after } => SubscriptionError::Throttled { error, retry_after },
        PushKind::Retry { error, .. } => SubscriptionError::Transient(error),
        PushKind::Permanent { error } => SubscriptionError::Failed(error),
    })
}

/// Where a marketplace's subscription objects keep their fields (`id` None: there are no ids).
pub(super) struct Fields {
    pub marketplace: &'static str,
    pub topic: &'static str,
    pub address: &'static str,
    pub id: Option<&'static str>,
}

impl Fields {
    /// One subscription; one we cannot read is an error (a new one would only duplicate it).
    pub(super) fn read(&self, v: &Value) -> Result<RemoteSubscription, SubscriptionError> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        match (text(self.topic), text(self.address), self.id.map(text)) {
            (Some(topic), Some(address), id @ (None | Some(Some(_)))) => Ok(RemoteSubscription {
                topic,
                address,
                remote_id: id.flatten(),
            }),
            _ => {
                let keys: Vec<&str> = self.id.into_iter().chain([self.topic, self.address]).collect();
                Err(SubscriptionError::Failed(format!(
                    "{} answered with a webhook subscription without one of {}",
                    self.marketplace,
                    keys.join(", ")
                )))
            }
        }
    }

    /// A list of subscriptions (absent or null: none).
    pub(super) fn read_list(&self, list: Option<&Value>) -> Result<Vec<RemoteSubscription>, SubscriptionError> {
        match list {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(|v| self.read(v)).collect(),
            Some(_) => Err(SubscriptionError::Failed(format!(
                "{}'s webhook subscriptions are not a list",
                self.marketplace
            ))),
        }
    }
}

/// What to do for one wanted topic.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Already there at the address.
    Keep(RemoteSubscription),
    Create {
        topic: String,
    },
    /// There, at another address: point it at ours.
    Update {
        topic: String,
        remote_id: Option<String>,
    },
}

/// For each wanted topic (in order): keep a subscription already at `address`, else update the
/// first one of that topic (a wrong address), else create one. Subscriptions of other topics
/// and extra ones are left alone. A topic wanted twice gets one step.
pub fn plan(wanted: &[&str], address: &str, remote: &[RemoteSubscription]) -> Vec<Step> {
    let mut steps = Vec::with_capacity(wanted.len());
    for (i, topic) in wanted.iter().enumerate() {
        if wanted[..i].contains(topic) {
            continue;
        }
        let mut of_topic = remote.iter().filter(|s| s.topic == *topic);
        let step = match of_topic.clone().find(|s| s.address == address) {
            Some(ours) => Step::Keep(ours.clone()),
            None => match of_topic.next() {
                Some(other) => Step::Update {
                    topic: topic.to_string(),
                    remote_id: other.remote_id.clone(),
                },
                None => Step::Create {
                    topic: topic.to_string(),
                },
            },
        };
        steps.push(step);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "https://hooks.example/shopify/1";

    fn sub(topic: &str, address: &str, id: &str) -> RemoteSubscription {
        RemoteSubscription {
            topic: topic.into(),
            address: address.into(),
            remote_id: Some(id.into()),
        }
    }

    #[test]
    fn each_wanted_topic_is_kept_updated_or_created_in_order() {
        let remote = [
            sub("ORDERS_CREATE", OURS, "1"),
            sub("APP_UNINSTALLED", "https://old.example", "2"),
            sub("PRODUCTS_UPDATE", "https://elsewhere.example", "3"),
        ];
        let steps = plan(&["APP_UNINSTALLED", "ORDERS_CREATE", "ORDERS_CANCELLED"], OURS, &remote);
        assert_eq!(
            steps,
            vec![
                Step::Update {
                    topic: "APP_UNINSTALLED".into(),
                    remote_id: Some("2".into())
                },
                Step::Keep(remote[0].clone()),
                Step::Create {
                    topic: "ORDERS_CANCELLED".into()
                },
            ],
            "PRODUCTS_UPDATE is not wanted: left alone"
        );
        assert!(plan(&[], OURS, &remote).is_empty());
    }

    #[test]
    fn duplicates_keep_ours_or_update_only_the_first() {
        let remote = [
            sub("ORDERS_CREATE", "https://a.example", "1"),
            sub("ORDERS_CREATE", OURS, "2"),
            sub("APP_UNINSTALLED", "https://a.example", "3"),
            sub("APP_UNINSTALLED", "https://b.example", "4"),
        ];
        assert_eq!(
            plan(&["ORDERS_CREATE", "APP_UNINSTALLED", "ORDERS_CREATE"], OURS, &remote),
            vec![
                Step::Keep(remote[1].clone()),
                Step::Update {
                    topic: "APP_UNINSTALLED".into(),
                    remote_id: Some("3".into())
                },
            ]
        );
        // one address per topic (TikTok): no id to name
        let tiktok = [RemoteSubscription {
            topic: "ORDER_STATUS_CHANGE".into(),
            address: "https://old.example".into(),
            remote_id: None,
        }];
        assert_eq!(
            plan(&["ORDER_STATUS_CHANGE"], OURS, &tiktok),
            vec![Step::Update {
                topic: "ORDER_STATUS_CHANGE".into(),
                remote_id: None
            }]
        );
    }

    #[test]
    fn subscriptions_are_read_whole_or_refused() {
        let shopify = Fields {
            marketplace: "Shopify",
            topic: "topic",
            address: "uri",
            id: Some("id"),
        };
        let node = serde_json::json!({"id": "7", "topic": "ORDERS_CREATE", "uri": OURS});
        assert_eq!(shopify.read(&node), Ok(sub("ORDERS_CREATE", OURS, "7")));
        assert_eq!(
            shopify.read(&serde_json::json!({"topic": "ORDERS_CREATE", "uri": OURS})),
            Err(SubscriptionError::Failed(
                "Shopify answered with a webhook subscription without one of id, topic, uri".into()
            ))
        );
        assert_eq!(shopify.read_list(None), Ok(vec![]));
        assert_eq!(shopify.read_list(Some(&Value::Null)), Ok(vec![]));
        assert!(shopify.read_list(Some(&serde_json::json!({}))).is_err());
    }

    #[test]
    fn connectors_subscribe_or_say_they_cannot_and_never_show_the_token() {
        use crate::marketplaces::{connector, Marketplace};
        let mut req = crate::proptests::request("http://127.0.0.1:1", "", Value::Null);
        req.access_token = "SECRET-TOKEN".into();
        let agent = crate::marketplaces::http::agent(Duration::from_secs(2), 1);
        for m in Marketplace::ALL {
            let c = connector(m).expect("a connector");
            let got = [
                c.list_subscriptions(&agent, &req).map(|_| ()),
                c.subscribe(&agent, &req, "T", OURS, None).map(|_| ()),
            ];
            for e in got {
                let e = e.expect_err("nothing listens there");
                match (m, c.webhook_topics().is_empty()) {
                    (Marketplace::Shopify | Marketplace::TikTok, false) => {
                        assert!(matches!(e, SubscriptionError::Transient(_)), "{m}: {e:?}")
                    }
                    (Marketplace::MercadoLibre | Marketplace::Shein, true) => {
                        assert_eq!(e, SubscriptionError::Unsupported, "{m}")
                    }
                    (_, empty) => panic!("{m}: topics empty {empty}"),
                }
                assert!(!e.to_string().contains("SECRET"), "{m}: {e}");
            }
        }
    }

    #[test]
    fn failures_keep_their_class_and_text() {
        assert_eq!(check(PushKind::Applied { remote: None }), Ok(()));
        let wait = Some(Duration::from_secs(2));
        assert_eq!(
            check(PushKind::Retry {
                error: "timeout".into(),
                retry_after: wait
            }),
            Err(SubscriptionError::Transient("timeout".into()))
        );
        assert_eq!(
            check(PushKind::Throttled {
                error: "slow".into(),
                retry_after: wait
            }),
            Err(SubscriptionError::Throttled {
                error: "slow".into(),
                retry_after: wait
            })
        );
        let failed = check(PushKind::Permanent { error: "no".into() }).unwrap_err();
        assert_eq!(
            (failed.to_string(), failed),
            ("no".into(), SubscriptionError::Failed("no".into()))
        );
        assert!(SubscriptionError::Unsupported.to_string().contains("console"));
    }
}
