//! integ.connect: validate, store the connection and its encrypted credentials.

use super::json_in::JsonIn;
use super::{check_tenant, connector_for, shown};
use crate::marketplaces::Marketplace;
use crate::spi_util::{first, invalid, OrRaise};
use crate::{credentials, marketplaces, shmem};
use pgrx::prelude::*;
use pgrx::JsonB;

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn connect(tenant_id: &str, marketplace: &str, credentials: JsonIn, settings: default!(JsonIn, "'{}'")) -> i64 {
    check_tenant(tenant_id);
    upsert(tenant_id, marketplace, &credentials.0, &settings.0)
}

/// Validates and stores a connection and its encrypted credentials (status back to active);
/// the connection id. Also the end of an authorization flow.
pub(crate) fn upsert(
    tenant_id: &str,
    marketplace: &str,
    credentials: &serde_json::Value,
    settings: &serde_json::Value,
) -> i64 {
    let (m, connector) = connector_for(marketplace);
    check_settings(connector, settings, &crate::gucs::allowed_hosts()).unwrap_or_else(|e| invalid(e));
    let creds = connector.split_credentials(credentials).unwrap_or_else(|e| invalid(e));
    // Fail on a missing master key before writing anything.
    credentials::require_master_key();
    let id = Spi::get_one_with_args::<i64>(
        "INSERT INTO integ.connections AS c (tenant_id, marketplace, settings)
         VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, marketplace) DO UPDATE
            SET settings = EXCLUDED.settings, status = 'active', last_error = NULL, updated_at = now(),
                subscriptions_due_at = now()
         RETURNING c.id",
        &[tenant_id.into(), m.as_str().into(), JsonB(settings.clone()).into()],
    )
    .or_raise("storing the connection")
    .unwrap_or_else(|| {
        invalid(format!(
            "could not store the connection of tenant \"{}\"",
            shown(tenant_id)
        ))
    });
    credentials::store(id, tenant_id, m.as_str(), &creds);
    shmem::wake_workers_at_commit();
    id
}

/// A connection's settings, every key known to the marketplace and every value in range.
pub(crate) fn check_settings(
    connector: &dyn marketplaces::Connector,
    settings: &serde_json::Value,
    allowed_hosts: &[String],
) -> Result<(), String> {
    let obj = settings.as_object().ok_or("settings must be a JSON object")?;
    marketplaces::check_setting_keys(connector, obj)?;
    marketplaces::base_url(connector, settings, allowed_hosts)?;
    crate::rules::validate(settings)?;
    crate::price_rules::validate(settings)?;
    crate::inbound::drift::validate(settings)?;
    match settings.get("rate_limit") {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::String(r)) => crate::limits::Quota::parse(r)
            .map(|_| ())
            .map_err(|e| format!("settings.rate_limit: {e}")),
        Some(_) => Err("settings.rate_limit must be a string such as \"200/min\" or \"4/s:40\"".into()),
    }
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn disconnect(tenant_id: &str, marketplace: &str) {
    check_tenant(tenant_id);
    let m: Marketplace = marketplace.parse().unwrap_or_else(|e: String| invalid(e));
    let id = first::<i64>(
        "DELETE FROM integ.connections WHERE tenant_id = $1 AND marketplace = $2 RETURNING id",
        &[tenant_id.into(), m.as_str().into()],
    );
    match id {
        Some(id) => credentials::forget(id),
        None => crate::spi_util::not_found(format!("tenant \"{}\" has no {m} connection", shown(tenant_id))),
    }
}

#[cfg(test)]
mod tests {
    use super::check_settings;
    use crate::marketplaces::{connector, Marketplace};
    use serde_json::{json, Value};

    fn check(m: Marketplace, settings: Value) -> Result<(), String> {
        check_settings(connector(m).expect("connector"), &settings, &["127.0.0.1".to_string()])
    }

    #[test]
    fn every_documented_setting_is_accepted_valid_and_refused_invalid() {
        let common = [
            (
                "base_url",
                json!("http://127.0.0.1:9/x"),
                json!("ftp://127.0.0.1"),
                "settings.base_url",
            ),
            (
                "base_url",
                json!("http://127.0.0.1:9/x"),
                json!("https://evil.example"),
                "integ.allowed_hosts",
            ),
            (
                "conflict_strategy",
                json!("manual"),
                json!("coin_flip"),
                "settings.conflict_strategy",
            ),
            ("rate_limit", json!("50/min"), json!("fast"), "settings.rate_limit"),
            ("rate_limit", json!("4/s:40"), json!(50), "settings.rate_limit"),
            (
                "stock_rules",
                json!({"buffer": 2, "max": 10}),
                json!({"buffer": -1}),
                "stock_rules.buffer",
            ),
            (
                "stock_rules",
                json!({"allocation_percent": 50}),
                json!({"bufer": 1}),
                "unknown key \"bufer\"",
            ),
        ];
        for m in Marketplace::ALL {
            for (key, good, bad, why) in &common {
                assert_eq!(check(m, json!({*key: good})), Ok(()), "{m} {key} {good}");
                let e = check(m, json!({*key: bad})).expect_err(key);
                assert!(e.contains(why), "{m} {key} {bad}: {e}");
            }
        }
        let own = [
            (
                Marketplace::Shopify,
                "api_version",
                json!("2026-10"),
                json!("latest"),
                "settings.api_version",
            ),
            (
                Marketplace::Shopify,
                "api_version",
                json!("2025-07"),
                json!("2026-13"),
                "settings.api_version",
            ),
            (
                Marketplace::Shein,
                "webhook_path",
                json!("/hooks/shein"),
                json!("hooks"),
                "settings.webhook_path",
            ),
            (
                Marketplace::Shein,
                "webhook_path",
                json!("/"),
                json!("/a?b=1"),
                "settings.webhook_path",
            ),
        ];
        for (m, key, good, bad, why) in &own {
            assert_eq!(check(*m, json!({*key: good})), Ok(()), "{m} {key}");
            let e = check(*m, json!({*key: bad})).expect_err(key);
            assert!(e.contains(why), "{m} {key} {bad}: {e}");
            // another marketplace's key is unknown there
            let other = if *m == Marketplace::Shopify {
                Marketplace::Shein
            } else {
                Marketplace::Shopify
            };
            let e = check(other, json!({*key: good})).expect_err(key);
            assert!(e.contains(&format!("unknown key \"{key}\"")), "{e}");
        }
    }

    #[test]
    fn an_unknown_or_misspelt_key_is_refused_by_name() {
        let e = check(
            Marketplace::MercadoLibre,
            json!({"conflict_stratgy": "manual", "rate_limt": "50/min"}),
        )
        .expect_err("misspelt");
        assert!(
            e.starts_with("mercadolibre settings: unknown key \"conflict_stratgy\""),
            "{e}"
        );
        assert!(
            e.contains("(allowed: base_url, conflict_strategy, price_rules, rate_limit, stock_rules)"),
            "{e}"
        );
        let e = check(Marketplace::Shopify, json!({"colour": "red"})).expect_err("unknown");
        assert!(e.contains("unknown key \"colour\"") && e.contains("api_version"), "{e}");
        assert_eq!(check(Marketplace::TikTok, json!({})), Ok(()));
        assert!(check(Marketplace::TikTok, json!([])).is_err());
    }
}
