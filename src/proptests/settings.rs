//! What `integ.connect` and `integ.map_product` take: each connector's credentials, listings
//! and settings, the base URL override, and the rate limit.

use super::*;
use crate::api::connections::check_settings;
use crate::limits::Quota;
use crate::marketplaces::{base_url, check_setting_keys, connector, Connector, Marketplace, COMMON_SETTINGS};
use serde_json::json;

fn marketplace() -> BoxedStrategy<Marketplace> {
    prop::sample::select(Marketplace::ALL.to_vec()).boxed()
}

/// Every key any connector's credentials take.
const CREDENTIAL_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "refresh_token",
    "access_token",
    "expires_in",
    "user_id",
    "shop",
    "webhook_secret",
    "previous_webhook_secret",
    "app_key",
    "app_secret",
    "shop_cipher",
    "access_token_expire_in",
    "shop_id",
    "open_id",
    "open_key_id",
    "secret_key",
    "appid",
    "supplier_id",
    "app_secret_key",
];

/// The keys that are secrets, per marketplace (never stored readable).
fn secret_keys(m: Marketplace) -> &'static [&'static str] {
    match m {
        Marketplace::MercadoLibre => &["client_secret", "refresh_token", "access_token"],
        Marketplace::Shopify => &[
            "access_token",
            "client_secret",
            "refresh_token",
            "webhook_secret",
            "previous_webhook_secret",
        ],
        Marketplace::TikTok => &["app_secret", "refresh_token", "access_token"],
        Marketplace::Shein => &["secret_key", "app_secret_key"],
    }
}

fn required(m: Marketplace) -> (&'static [&'static str], &'static [&'static str]) {
    match m {
        Marketplace::MercadoLibre => (&["client_id"], &["client_secret", "refresh_token"]),
        Marketplace::Shopify => (&["shop"], &["access_token"]),
        Marketplace::TikTok => (&["app_key", "shop_cipher"], &["app_secret", "refresh_token"]),
        Marketplace::Shein => (&["open_key_id"], &["secret_key"]),
    }
}

fn credential_value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => "[a-zA-Z0-9_.-]{1,20}".prop_map(Value::String),
        1 => "[a-z0-9-]{1,12}\\.myshopify\\.com".prop_map(Value::String),
        1 => json_leaf(),
        1 => json_number(),
    ]
    .boxed()
}

/// A credentials document near a valid one: known keys mostly, values of any kind.
fn credentials() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => prop::collection::vec((prop_oneof![
            6 => prop::sample::select(CREDENTIAL_KEYS).prop_map(str::to_string),
            1 => key(),
        ], credential_value()), 0..12)
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        1 => json_value(),
    ]
    .boxed()
}

/// A string of any kind where an id belongs.
fn id_text() -> BoxedStrategy<String> {
    prop_oneof![
        2 => "[A-Za-z0-9_-]{1,20}",
        1 => "[0-9]{1,22}",
        1 => "gid://shopify/(InventoryItem|Location|Product)/[0-9]{0,22}",
        1 => ".{0,70}",
        1 => "[ -~]{95,110}",
    ]
    .boxed()
}

fn listing_settings() -> BoxedStrategy<Value> {
    let keys = prop_oneof![
        4 => prop::sample::select(vec![
            "variation_id", "kind", "location_id", "variant_id", "product_id", "warehouse_id", "warehouse_code",
            "spu_name", "skc_name",
        ]).prop_map(str::to_string),
        1 => key(),
    ];
    let values = prop_oneof![
        3 => id_text().prop_map(Value::String),
        1 => prop::sample::select(vec!["item", "user_product", "bundle"]).prop_map(Value::from),
        2 => json_number(),
        1 => json_leaf(),
    ];
    prop_oneof![
        5 => prop::collection::vec((keys, values), 0..5).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        1 => json_value(),
    ]
    .boxed()
}

fn ok_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn numeric_or_gid(v: &Value, kind: &str) -> bool {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return false,
    };
    let tail = s.strip_prefix(&format!("gid://shopify/{kind}/")).unwrap_or(&s);
    !tail.is_empty() && tail.len() <= 20 && tail.bytes().all(|b| b.is_ascii_digit())
}

fn printable(s: &str) -> bool {
    !s.is_empty() && s.len() <= 100 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The hosts each marketplace's API lives on, as documented.
fn real_host(m: Marketplace, host: &str) -> bool {
    match m {
        Marketplace::MercadoLibre => host == "api.mercadolibre.com",
        Marketplace::Shopify => host.ends_with(".myshopify.com"),
        Marketplace::TikTok => ["open-api.tiktokglobalshop.com", "auth.tiktok-shops.com"].contains(&host),
        Marketplace::Shein => ["openapi.sheincorp.com", "openapi-sem.sheincorp.com"].contains(&host),
    }
}

/// A URL near one a tenant may write: real, allowed or other hosts, ports, userinfo, paths, and
/// characters that split URLs differently in different parsers.
fn url() -> BoxedStrategy<String> {
    let scheme = prop::sample::select(vec!["https://", "http://", "HTTPS://", "ftp://", "", "https:/", "//"]);
    let host = prop_oneof![
        prop::sample::select(vec![
            "api.mercadolibre.com",
            "acme.myshopify.com",
            "open-api.tiktokglobalshop.com",
            "auth.tiktok-shops.com",
            "openapi.sheincorp.com",
            "openapi-sem.sheincorp.com",
            "127.0.0.1",
            "localhost",
            "169.254.169.254",
            "evil.example",
            "myshopify.com",
            "[::1]",
            "API.MercadoLibre.COM",
            "api.mercadolibre.com.",
        ])
        .prop_map(str::to_string),
        "[a-z0-9.-]{1,16}",
    ];
    let port = prop::option::of(prop_oneof![
        (0u32..70000).prop_map(|p| p.to_string()),
        "[0-9a-z]{0,4}".prop_map(String::from)
    ]);
    let junk = prop::collection::vec(
        prop::sample::select(vec![
            '@', '\\', '#', '?', '%', ' ', '\t', '.', ':', '/', '[', ']', ';', '\u{0}', 'é',
        ]),
        0..3,
    );
    (
        scheme,
        prop::option::of("[a-z]{1,6}"),
        host.clone(),
        port,
        "(/[a-z0-9]{0,6}){0,3}/?",
        junk,
        any::<prop::sample::Index>(),
        host,
    )
        .prop_map(|(scheme, user, host, port, path, junk, at, other)| {
            let mut u = scheme.to_string();
            if let Some(user) = user {
                u.push_str(&format!("{user}@"));
            }
            u.push_str(&host);
            if let Some(p) = port {
                u.push_str(&format!(":{p}"));
            }
            u.push_str(&path);
            if !junk.is_empty() {
                let i = at.index(u.len() + 1);
                let i = (0..=i).rev().find(|i| u.is_char_boundary(*i)).unwrap_or(0);
                let extra: String = junk.into_iter().collect::<String>() + &other;
                u.insert_str(i, &extra);
            }
            u
        })
        .boxed()
}

fn allowed_hosts() -> BoxedStrategy<Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "127.0.0.1",
                "127.0.0.1:8700",
                "localhost",
                "sandbox.test",
                "[::1]"
            ])
            .prop_map(str::to_string),
            "[a-z0-9.:-]{0,12}",
        ],
        0..3,
    )
    .boxed()
}

/// A rate limit as a tenant may write it (`requests/period[:burst]`), odd ones included; the
/// numbers stay below what `bug_rate_limit_*` records.
fn rate_limit() -> BoxedStrategy<String> {
    let period = prop_oneof![
        prop::sample::select(vec![
            "s", "sec", "second", "m", "min", "minute", "h", "hour", "ms", "d", "", "x"
        ])
        .prop_map(str::to_string),
        (
            "[0-9]{1,3}(\\.[0-9]{1,3})?",
            prop::sample::select(vec!["s", "ms", "min", "h"])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        "[-+0-9.a-z ]{0,4}",
    ];
    prop_oneof![
        4 => ("[0-9]{1,6}", period, prop::option::of("[0-9]{1,3}"))
            .prop_map(|(r, p, b)| format!("{r}/{p}{}", b.map_or(String::new(), |b| format!(":{b}")))),
        1 => ".{0,16}",
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config())]

    /// Each connector's credentials: split or refused with a reason; what is accepted has every
    /// required key, keeps secrets out of the readable identifiers, and a non-negative expiry.
    #[test]
    fn credentials_are_split_or_refused(m in marketplace(), input in credentials()) {
        let c = connector(m).expect("a connector");
        match c.split_credentials(&input) {
            Err(e) => prop_assert!(!e.is_empty()),
            Ok(creds) => {
                let obj = input.as_object().expect("only objects are accepted");
                let (ids, secrets) = required(m);
                for k in ids {
                    // (MercadoLibre's client_id may be blank text: only emptiness is refused)
                    prop_assert!(creds.identifier(k).is_some_and(|v| !v.is_empty()), "{k} missing");
                }
                for k in secrets {
                    prop_assert!(creds.secret(k).is_some_and(|v| !v.trim().is_empty()), "{k} missing");
                }
                for k in secret_keys(m) {
                    prop_assert!(!creds.identifiers.contains_key(*k), "secret {k} stored readable");
                }
                for (k, v) in &creds.secrets {
                    prop_assert!(secret_keys(m).contains(&k.as_str()), "{k} kept as a secret");
                    prop_assert!(v.as_str().is_some_and(|s| !s.trim().is_empty()), "{k}: {v}");
                    prop_assert_eq!(obj.get(k), Some(v), "a secret is stored as given");
                }
                prop_assert!(creds.identifiers.values().all(|v| v.as_str().is_some_and(|s| !s.is_empty())));
                prop_assert!(creds.expires_in.is_none_or(|e| e >= 0));
                if m == Marketplace::Shopify {
                    let shop = creds.identifier("shop").unwrap_or_default();
                    prop_assert!(shop.ends_with(".myshopify.com") && shop.len() <= 255);
                    prop_assert!(shop.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
                }
            }
        }
    }

    /// Each connector's listings: accepted only with a valid external id and settings.
    #[test]
    fn listings_are_checked(m in marketplace(), id in id_text(), settings in listing_settings()) {
        let c = connector(m).expect("a connector");
        if c.check_listing(&id, &settings).is_err() {
            return Ok(());
        }
        let get = |k: &str| settings.get(k);
        match m {
            Marketplace::MercadoLibre => {
                prop_assert!(ok_id(&id), "{id}");
                prop_assert!(settings.is_null() || settings.is_object());
                if let Some(v) = get("variation_id").filter(|v| !v.is_null()) {
                    let n = v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
                    prop_assert!(n.is_some(), "variation_id {v}");
                }
            }
            Marketplace::Shopify => {
                prop_assert!(numeric_or_gid(&json!(id), "InventoryItem"), "{id}");
                prop_assert!(get("location_id").is_some_and(|l| numeric_or_gid(l, "Location")));
                prop_assert_eq!(get("variant_id").is_some(), get("product_id").is_some());
                if let (Some(v), Some(p)) = (get("variant_id"), get("product_id")) {
                    prop_assert!(numeric_or_gid(v, "ProductVariant") && numeric_or_gid(p, "Product"));
                }
            }
            Marketplace::TikTok => {
                prop_assert!(ok_id(&id), "{id}");
                for k in ["product_id", "warehouse_id"] {
                    prop_assert!(get(k).and_then(Value::as_str).is_some_and(ok_id), "{k}");
                }
            }
            Marketplace::Shein => {
                prop_assert!(printable(&id), "{id}");
                prop_assert!(get("warehouse_code").is_none_or(Value::is_string));
                for k in ["spu_name", "skc_name"] {
                    prop_assert!(get(k).is_none_or(|v| v.as_str().is_some_and(printable)), "{k}");
                }
            }
        }
    }

    /// Connection settings keys: accepted only when every key is known to the marketplace and
    /// its own values are in range.
    #[test]
    fn setting_keys_are_checked(
        m in marketplace(),
        kv in prop::collection::vec((prop_oneof![
            4 => prop::sample::select(vec![
                "base_url", "conflict_strategy", "price_rules", "rate_limit", "stock_rules", "api_version",
                "location_id", "webhook_path", "site", "shop_mode", "bufer",
            ]).prop_map(str::to_string),
            1 => key(),
        ], prop_oneof![
            2 => prop::sample::select(vec![
                "2026-10", "2026-04", "2025-13", "2026-1", "/hooks/shein", "hooks", "/a b", "/x?y", "shein-mx",
                "shein mx", "self_operated", "semi_managed", "managed", "905684977", "gid://shopify/Location/1",
            ]).prop_map(Value::from),
            1 => json_leaf(),
        ]), 0..6),
    ) {
        let c = connector(m).expect("a connector");
        let settings: serde_json::Map<String, Value> = kv.into_iter().collect();
        if check_setting_keys(c, &settings).is_err() {
            return Ok(());
        }
        for k in settings.keys() {
            prop_assert!(COMMON_SETTINGS.contains(&k.as_str()) || c.own_setting_keys().contains(&k.as_str()), "{k}");
        }
        let s = |k: &str| settings.get(k).filter(|v| !v.is_null());
        if let Some(v) = s("api_version") {
            let v = v.as_str().unwrap_or("");
            prop_assert!(v.len() == 7 && v.as_bytes()[4] == b'-' && ["01", "04", "07", "10"].contains(&&v[5..]), "{v}");
        }
        if let Some(l) = s("location_id") {
            prop_assert!(numeric_or_gid(l, "Location"), "{l}");
        }
        if let Some(p) = s("webhook_path") {
            let p = p.as_str().unwrap_or("");
            prop_assert!(p.starts_with('/') && !p.contains(['?', '#', ' ']), "{p}");
        }
        if let Some(m) = s("shop_mode") {
            prop_assert!(["self_operated", "semi_managed", "fully_managed"].contains(&m.as_str().unwrap_or("")));
        }
        if let Some(site) = s("site") {
            prop_assert!(site.as_str().is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')));
        }
    }

    /// A base URL override is accepted only as http(s) to the marketplace's own hosts or an
    /// allowed one, and the host the HTTP client then connects to is that host.
    #[test]
    fn base_urls_lead_only_to_real_or_allowed_hosts(m in marketplace(), u in url(), allowed in allowed_hosts(), other in json_leaf()) {
        let c = connector(m).expect("a connector");
        let settings = json!({ "base_url": u });
        let Ok(got) = base_url(c, &settings, &allowed) else {
            return Ok(());
        };
        prop_assert!(got.starts_with("https://") || got.starts_with("http://"), "{got}");
        prop_assert!(!got.ends_with('/'));
        prop_assert!(!got.contains(char::is_whitespace));
        let rest = got.split_once("://").map_or("", |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("").to_ascii_lowercase();
        prop_assert!(!authority.contains('@') && !authority.contains('\\'), "{got}");
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority.as_str(),
        };
        prop_assert!(real_host(m, host) || allowed.iter().any(|a| *a == authority || *a == host), "{got} via {allowed:?}");
        // what the HTTP client makes of it (a URL it cannot parse is never called)
        if let Ok(uri) = format!("{got}/x").parse::<ureq::http::Uri>() {
            let client_host = uri.host().unwrap_or("").to_ascii_lowercase();
            let client_authority = uri.authority().map_or(String::new(), |a| a.as_str().to_ascii_lowercase());
            prop_assert!(
                real_host(m, &client_host) || allowed.iter().any(|a| *a == client_authority || *a == client_host),
                "{got}: the client connects to {client_host}"
            );
        }
        // a value that is not a string is refused; null is the default
        let odd = base_url(c, &json!({ "base_url": other }), &allowed);
        match other {
            Value::Null => prop_assert_eq!(odd, Ok(c.default_base_url().to_string())),
            Value::String(_) => {}
            _ => prop_assert!(odd.is_err()),
        }
    }

    /// Whole connection settings (`integ.connect`): any JSON is accepted or refused with a
    /// reason, never a panic.
    #[test]
    fn connection_settings_are_checked(
        m in marketplace(),
        settings in prop_oneof![
            json_value(),
            (url(), rate_limit(), json_value(), json_value(), prop::sample::select(vec!["egdc_wins", "manual", "x"]))
                .prop_map(|(u, r, s, p, cs)| json!({"base_url": u, "rate_limit": r, "stock_rules": s, "price_rules": p, "conflict_strategy": cs})),
        ],
        allowed in allowed_hosts(),
    ) {
        let c: &dyn Connector = connector(m).expect("a connector");
        if let Err(e) = check_settings(c, &settings, &allowed) {
            prop_assert!(!e.is_empty());
        }
    }

    /// A rate limit is parsed or refused; an accepted one has a positive interval and burst,
    /// and the connection's quota is computed from it without overflow.
    #[test]
    fn rate_limits_are_parsed_or_refused(r in rate_limit()) {
        let Ok(q) = Quota::parse(&r) else { return Ok(()) };
        prop_assert!(q.emission_ns >= 1 && q.burst >= 1, "{r}: {q:?}");
        let applied = crate::push::quota_for("shopify", &json!({ "rate_limit": r }));
        prop_assert!(applied.emission_ns >= q.emission_ns && applied.burst == q.burst, "{r}: {applied:?}");
        prop_assert!(crate::limits::available(0, 0, applied) >= 0);
        prop_assert!(crate::limits::wait_for_one(0, 0, applied) >= 0);
    }
}

/// Regression, now fixed (found by `rate_limits_are_parsed_or_refused`): `limits::Quota::parse` panics on a period
/// whose number is too big for a `Duration`: `"1/99999999999999999999s"` (also `…min`, `…h`)
/// reaches `Duration::from_secs_f64(1e20)`, which panics ("value is either too big or NaN").
/// `integ.connect` checks `settings.rate_limit` with it (a panic becomes an ERROR there), and a
/// worker parses the per-marketplace rate-limit GUC with it (`push::quota_for`). Fix: refuse
/// periods above some bound (`Duration::try_from_secs_f64`).
#[test]
fn regression_rate_limit_with_a_huge_period_panics() {
    let got = std::panic::catch_unwind(|| Quota::parse("1/99999999999999999999s").is_err());
    assert_eq!(got.ok(), Some(true), "refused, not a panic");
}

/// Regression, now fixed (found by `rate_limits_are_parsed_or_refused` with longer numbers; minimal input
/// `"1/100000000000s"`): a rate limit `Quota::parse` accepts can overflow the arithmetic done
/// with it. An interval above ~9.04e16 ns (`"1/26000h"`; longer periods are capped at i64::MAX
/// ns) is multiplied by 102 in `push::quota_for` ("attempt to multiply with overflow" in debug
/// builds, a negative interval in release); with a big burst (`"1/2562047h:4294967295"`) so do
/// `limits::available` and `limits::wait_for_one` (`emission_ns * burst`). Fix: bound the
/// period (and burst) in `Quota::parse`, or use saturating arithmetic.
#[test]
fn regression_rate_limit_with_a_long_period_overflows() {
    for r in ["1/100000000000s", "1/26000h", "1/2562047h:4294967295"] {
        // a period over a day is refused; what is accepted never overflows
        let Ok(q) = Quota::parse(r) else { continue };
        let got = std::panic::catch_unwind(|| {
            let applied = crate::push::quota_for("shopify", &json!({ "rate_limit": r }));
            (
                applied.emission_ns,
                crate::limits::available(0, 0, q),
                crate::limits::wait_for_one(0, 0, q),
            )
        });
        let (emission, available, wait) = got.expect("no overflow");
        assert!(emission >= q.emission_ns && available >= 0 && wait >= 0, "{r}");
    }
}
