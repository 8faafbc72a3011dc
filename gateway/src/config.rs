//! Flags and environment variables (each flag has one), documented by `--help`.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

/// The integration extension's HTTP edge: marketplace webhooks, OAuth connect and callback,
/// Prometheus metrics and a health dashboard. It holds no state: every decision is a call of a
/// fixed SQL function of the extension.
///
/// It speaks plain HTTP: put it behind a TLS-terminating reverse proxy (nginx, Caddy, a load
/// balancer) and give that proxy's address as --public-url.
///
/// Pass the DSN and the secrets through the environment rather than as flags: flags show in `ps`.
///
/// The database role must not be a superuser (the gateway refuses to start as one). It needs
/// `GRANT integ_application, integ_operator TO <role>` (see gateway/README.md for the rest).
#[derive(Parser, Debug, Clone)]
#[command(name = "integ-gateway", version, about, long_about)]
pub struct Config {
    /// libpq-style connection string of the database where the extension is installed, e.g.
    /// "host=127.0.0.1 port=5432 dbname=egdc user=gateway password=...".
    #[arg(long, env = "INTEG_GATEWAY_DSN", hide_env_values = true)]
    pub dsn: String,

    /// Address and port to listen on.
    #[arg(long, env = "INTEG_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The public base URL the marketplaces and browsers reach this gateway at (the TLS proxy's
    /// URL), without a trailing slash: OAuth redirect URIs are <public-url>/oauth/<marketplace>/callback.
    #[arg(long, env = "INTEG_GATEWAY_PUBLIC_URL")]
    pub public_url: String,

    /// Dashboard (GET /) user for HTTP basic auth.
    #[arg(long, env = "INTEG_GATEWAY_DASHBOARD_USER", default_value = "admin")]
    pub dashboard_user: String,

    /// Dashboard password for HTTP basic auth (at least 12 characters). Without it the dashboard
    /// answers 404.
    #[arg(long, env = "INTEG_GATEWAY_DASHBOARD_PASSWORD", hide_env_values = true)]
    pub dashboard_password: Option<String>,

    /// Bearer token GET /metrics requires (at least 16 characters). Without it /metrics answers 404.
    #[arg(long, env = "INTEG_GATEWAY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Secret the EGDC application signs /connect tokens with (HMAC-SHA256, at least 32
    /// characters; see gateway/README.md). Without it /connect answers 404.
    #[arg(long, env = "INTEG_GATEWAY_CONNECT_SECRET", hide_env_values = true)]
    pub connect_secret: Option<String>,

    /// Where the browser goes after a completed authorization; `?connection=<id>` is appended.
    #[arg(long, env = "INTEG_GATEWAY_SUCCESS_URL")]
    pub success_url: String,

    /// Where the browser goes after a failed authorization; `?reason=<code>` is appended
    /// (denied, invalid_state, expired, already_used, invalid_request, exchange_failed,
    /// unavailable, error).
    #[arg(long, env = "INTEG_GATEWAY_FAILURE_URL")]
    pub failure_url: String,

    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "INTEG_GATEWAY_POOL_SIZE", default_value_t = 16)]
    pub pool_size: usize,

    /// Statements receiving webhooks that run at once. Deliveries that arrive while they run
    /// are received together by the next one (still one call of integ.receive_webhook each, in
    /// one transaction): fewer, larger statements is what lets the database keep up. Around the
    /// database's cores; at most --pool-size.
    #[arg(long, env = "INTEG_GATEWAY_WEBHOOK_CONCURRENCY", default_value_t = 4)]
    pub webhook_concurrency: usize,

    /// The most deliveries one statement receives.
    #[arg(long, env = "INTEG_GATEWAY_WEBHOOK_BATCH", default_value_t = 32)]
    pub webhook_batch: usize,

    /// How long a request waits for a pooled connection, and for a new one to be made, in ms;
    /// past it the answer is 503.
    #[arg(long, env = "INTEG_GATEWAY_POOL_WAIT_MS", default_value_t = 1_000)]
    pub pool_wait_ms: u64,

    /// statement_timeout of the gateway's sessions, in ms: under Shopify's 5 s delivery timeout.
    #[arg(long, env = "INTEG_GATEWAY_STATEMENT_TIMEOUT_MS", default_value_t = 3_000)]
    pub statement_timeout_ms: u64,

    /// Threads serving requests. One is the default: the work is waiting on PostgreSQL, and
    /// tasks handing each query to a connection on another thread cost more CPU in wake-ups
    /// than the requests themselves (a third of the throughput at 4 clients on 2 cores).
    #[arg(long, env = "INTEG_GATEWAY_THREADS", default_value_t = 1)]
    pub threads: usize,

    /// /readyz fails when the capture worker is this many WAL bytes behind.
    #[arg(long, env = "INTEG_GATEWAY_MAX_CAPTURE_LAG_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_capture_lag_bytes: i64,
}

impl Config {
    /// Checks what clap cannot: lengths of secrets, URL shapes.
    pub fn validate(&mut self) -> Result<(), String> {
        self.public_url = self.public_url.trim_end_matches('/').to_string();
        for (name, url) in [
            ("--public-url", &self.public_url),
            ("--success-url", &self.success_url),
            ("--failure-url", &self.failure_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.chars().any(char::is_whitespace) {
                return Err(format!("{name} must be an http(s) URL without spaces"));
            }
        }
        if self.public_url.contains(['?', '#']) {
            return Err("--public-url must have no query or fragment".into());
        }
        for (name, value, min) in [
            ("--dashboard-password", &self.dashboard_password, 12),
            ("--metrics-token", &self.metrics_token, 16),
            ("--connect-secret", &self.connect_secret, 32),
        ] {
            if value.as_ref().is_some_and(|v| v.len() < min) {
                return Err(format!("{name} must be at least {min} characters"));
            }
        }
        if self.pool_size == 0 {
            return Err("--pool-size must be at least 1".into());
        }
        if self.webhook_concurrency == 0 || self.webhook_concurrency > self.pool_size {
            return Err("--webhook-concurrency must be between 1 and --pool-size".into());
        }
        if !(1..=1000).contains(&self.webhook_batch) {
            return Err("--webhook-batch must be between 1 and 1000".into());
        }
        Ok(())
    }

    pub fn pool_wait(&self) -> Duration {
        Duration::from_millis(self.pool_wait_ms.max(1))
    }

    /// The path part of the public URL ("" at the root, "/integ" behind a proxy prefix).
    pub fn public_path(&self) -> &str {
        self.public_url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(public: &str) -> Config {
        Config::parse_from([
            "integ-gateway",
            "--dsn",
            "host=x",
            "--public-url",
            public,
            "--success-url",
            "https://egdc.example/ok",
            "--failure-url",
            "https://egdc.example/failed",
        ])
    }

    #[test]
    fn the_public_path_is_what_follows_the_host() {
        let mut c = config("https://gw.example/integ/");
        c.validate().unwrap();
        assert_eq!(c.public_url, "https://gw.example/integ");
        assert_eq!(c.public_path(), "/integ");
        assert_eq!(config("https://gw.example").public_path(), "");
    }

    #[test]
    fn short_secrets_and_bad_urls_are_refused() {
        let mut c = config("ftp://gw.example");
        assert!(c.validate().is_err());
        let mut c = config("https://gw.example");
        c.connect_secret = Some("short".into());
        assert!(c.validate().unwrap_err().contains("--connect-secret"));
    }
}
