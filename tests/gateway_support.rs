//! The gateway end-to-end test's support: the gateway started as a child process, raw and
//! ordinary HTTP clients, connect tokens minted in SQL, headless Chromium, and the malformed
//! requests of the sweep.

use e2e::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SHOP: &str = "gw-sales.myshopify.com";
pub const CONNECT_SECRET: &str = "gw-connect-secret-0123456789abcdef-xyz";
pub const METRICS_TOKEN: &str = "gw-metrics-token-0123456789";
pub const DASH_USER: &str = "ops";
pub const DASH_PASSWORD: &str = "dashboard-pass-42";
pub const SUCCESS: &str = "https://egdc.example/integrations/connected";
pub const FAILURE: &str = "https://egdc.example/integrations/failed";
/// The grants the gateway's role needs (gateway/README.md says why).
pub const GATEWAY_ROLE: &str = "CREATE ROLE gw LOGIN PASSWORD 'gw-role-password';
     GRANT integ_application, integ_operator TO gw;";

pub fn gateway_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("INTEG_GATEWAY_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/gateway-<hash> -> target/<profile>/integ-gateway
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent()?.parent().map(|d| d.join("integ-gateway")));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    beside
        .into_iter()
        .chain(["release", "debug"].map(|p| root.join(p).join("integ-gateway")))
        .find(|p| p.exists())
        .expect("integ-gateway not built: cargo build --release -p integ-gateway (or set INTEG_GATEWAY_BIN)")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Gateway {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl Gateway {
    pub fn start(env: &Env) -> Gateway {
        env.db().batch_execute(GATEWAY_ROLE).expect("the gateway's role");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("integ-gateway-{}-{port}.log", std::process::id()));
        let child = Command::new(gateway_binary())
            .env(
                "INTEG_GATEWAY_DSN",
                // the server's socket directory, as a gateway on the database's host would
                format!(
                    "host={} port={} user=gw password=gw-role-password dbname=postgres",
                    env.pg.dir.display(),
                    env.pg.port
                ),
            )
            .env("INTEG_GATEWAY_LISTEN", &addr)
            .env("INTEG_GATEWAY_PUBLIC_URL", format!("http://{addr}"))
            .env("INTEG_GATEWAY_DASHBOARD_USER", DASH_USER)
            .env("INTEG_GATEWAY_DASHBOARD_PASSWORD", DASH_PASSWORD)
            .env("INTEG_GATEWAY_METRICS_TOKEN", METRICS_TOKEN)
            .env("INTEG_GATEWAY_CONNECT_SECRET", CONNECT_SECRET)
            .env("INTEG_GATEWAY_SUCCESS_URL", SUCCESS)
            .env("INTEG_GATEWAY_FAILURE_URL", FAILURE)
            .env("INTEG_GATEWAY_POOL_WAIT_MS", "1000")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("gateway log"))
            .spawn()
            .expect("start integ-gateway");
        let mut g = Gateway { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while raw(
            &g.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ) != Some(200)
        {
            assert!(g.alive(), "the gateway exited:\n{}", g.log());
            assert!(Instant::now() < deadline, "the gateway did not start:\n{}", g.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        g
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Sends raw bytes as a request; the status of the answer (None: no HTTP answer).
pub fn raw(addr: &str, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    // the server may answer (and close) before it read everything: a failed write is not the answer
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// POSTs a sandbox-made delivery (`{"headers", "body"}`) to the gateway; its status and body.
pub fn deliver(g: &Gateway, marketplace: &str, d: &Value, body: &[u8]) -> (u16, String) {
    let mut req = http().post(g.url(&format!("/webhooks/{marketplace}")));
    for (k, v) in d["headers"].as_object().expect("headers") {
        req = req.header(k.as_str(), v.as_str().unwrap_or(""));
    }
    let r = req.body(body.to_vec()).send().expect("deliver");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

/// The sandbox's delivery attempts so far: marketplace and the status answered (0: no answer).
pub fn hook_log(env: &Env) -> Vec<(String, i64)> {
    env.sim.get("/webhooks")["log"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    (
                        e["marketplace"].as_str().unwrap_or("").to_string(),
                        e["status"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn hooks(env: &Env, g: &Gateway, marketplace: &str, delays: &[u64]) {
    app_hooks(
        &env.sim,
        marketplace,
        &g.url(&format!("/webhooks/{marketplace}")),
        delays,
    );
}

/// The gateway's log holds one line per request and never a query string or a body.
pub fn assert_clean_log(g: &Gateway, never: &[&str]) {
    let log = g.log();
    for s in never {
        assert!(!s.is_empty() && !log.contains(s), "the gateway log holds {s:?}:\n{log}");
    }
    assert!(!log.contains('?'), "a query string in the gateway log:\n{log}");
}

/// `<expiry>.<mac>` minted the way gateway/README.md tells EGDC to: pgcrypto's hmac() in SQL.
pub fn mint(env: &Env, tenant: &str, marketplace: &str, expires_in_s: i64) -> String {
    env.db()
        .query_one(
            "SELECT e || '.' || encode(hmac(format('%s|%s|%s', $1::text, $2::text, e), $3::text, 'sha256'), 'hex')
               FROM (SELECT (extract(epoch FROM now())::bigint + $4::bigint)::text AS e) t",
            &[&tenant, &marketplace, &CONNECT_SECRET, &expires_in_s],
        )
        .expect("mint")
        .get(0)
}

pub fn location(r: &reqwest::blocking::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Headless Chromium's rendered DOM of `url` (and a screenshot, when `screenshot` is given).
pub fn chromium(url: &str, screenshot: Option<&Path>) -> String {
    let profile = std::env::temp_dir().join(format!("integ-gw-chromium-{}", std::process::id()));
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(p) => {
            c.arg(format!("--screenshot={}", p.display()))
                .arg("--window-size=1500,1000");
        }
        None => {
            c.arg("--dump-dom");
        }
    }
    let out = c
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .expect("chromium (apt-get install chromium)");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with id `id` in a DOM dump.
pub fn by_id<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].trim())
}

/// At least 100 requests no route may answer with anything but a 4xx: bad paths, methods,
/// headers, bodies, huge headers, invalid UTF-8, unknown marketplaces, wrong content types.
pub fn malformed_requests() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |what: String, r: Vec<u8>| out.push((what, r));
    let get = |path: &str, headers: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").into_bytes()
    };
    let post = |path: &str, headers: &str, body: &[u8]| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    // paths
    for p in [
        "/nope",
        "/webhooks",
        "/webhooks/",
        "/webhooks/amazon",
        "/webhooks/SHOPIFY",
        "/webhooks/shopify/extra",
        "/webhooks/%00",
        "/webhooks/..%2f..%2fetc",
        "/connect",
        "/connect/",
        "/oauth/shopify",
        "/oauth/x/callback",
        "/oauth/shopify/callback/x",
        "/metrics/x",
        "/readyz/x",
        "/%ff%fe",
        "/webhooks/%c3%28",
        "/index.html",
        "/admin",
        "/.env",
        "//",
        "/connect/amazon?tenant=a&token=b",
    ] {
        add(format!("GET {p}"), get(p, ""));
        add(format!("POST {p}"), post(p, "", b"{}"));
    }
    // methods
    for m in ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"] {
        for p in [
            "/webhooks/shopify",
            "/",
            "/metrics",
            "/connect/shopify",
            "/oauth/shopify/callback",
        ] {
            add(
                format!("{m} {p}"),
                format!("{m} {p} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes(),
            );
        }
    }
    add("GET on a webhook".into(), get("/webhooks/shopify", ""));
    add("POST to the dashboard".into(), post("/", "", b"x"));
    // invalid UTF-8 and control bytes in the path
    add(
        "raw invalid UTF-8 path".into(),
        b"GET /webhooks/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    );
    add(
        "raw invalid UTF-8 connect".into(),
        b"GET /connect/shop\xc3\x28ify?tenant=a&token=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    );
    add(
        "a tab in the path".into(),
        b"GET /web\thooks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    );
    add("no path".into(), b"GET HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    add("garbage request line".into(), b"\x00\x01\x02 garbage\r\n\r\n".to_vec());
    // headers
    add(
        "huge header".into(),
        get("/webhooks/shopify", &format!("X-Big: {}\r\n", "a".repeat(1_000_000))),
    );
    add(
        "many headers".into(),
        get("/", &(0..2_000).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()),
    );
    add(
        "header without colon".into(),
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nBroken header\r\n\r\n".to_vec(),
    );
    add(
        "bad content-length".into(),
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
    );
    add(
        "two content-lengths".into(),
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec(),
    );
    add(
        "bad chunk".into(),
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
            .to_vec(),
    );
    add(
        "binary header value".into(),
        post("/webhooks/shopify", "X-Shopify-Hmac-Sha256: \u{80}\u{81}\r\n", b"{}"),
    );
    for auth in [
        "Basic",
        "Basic !!!!",
        "Basic YWRtaW4=",
        "Bearer",
        "Bearer x",
        "Digest a=b",
        "Basic b3BzOndyb25n",
    ] {
        add(
            format!("dashboard with {auth}"),
            get("/", &format!("Authorization: {auth}\r\n")),
        );
        add(
            format!("metrics with {auth}"),
            get("/metrics", &format!("Authorization: {auth}\r\n")),
        );
    }
    // bodies and content types, to each marketplace: none verifies
    let bodies: [(&str, &[u8]); 7] = [
        ("empty", b""),
        ("not JSON", b"hello"),
        ("truncated JSON", b"{\"id\":"),
        ("invalid UTF-8", b"\xff\xfe\xfd"),
        ("a JSON array", b"[1,2,3]"),
        ("a form", b"eventData=abc&x=1"),
        ("nested", b"{\"a\":{\"a\":{\"a\":{\"a\":[[[[[[]]]]]]}}}}"),
    ];
    for m in ["mercadolibre", "shopify", "tiktok", "shein"] {
        for (what, body) in bodies {
            for ct in ["application/json", "text/plain"] {
                add(
                    format!("{m} {what} as {ct}"),
                    post(&format!("/webhooks/{m}"), &format!("Content-Type: {ct}\r\n"), body),
                );
            }
        }
        add(
            format!("{m} unsigned JSON with the headers' names"),
            post(
                &format!("/webhooks/{m}"),
                "X-Shopify-Topic: orders/create\r\nX-Shopify-Shop-Domain: nobody.myshopify.com\r\nX-Shopify-Hmac-Sha256: AAAA\r\nAuthorization: deadbeef\r\nx-lt-signature: x\r\n",
                b"{\"shop_id\":\"1\",\"type\":1,\"data\":{}}",
            ),
        );
    }
    // connect and callback queries
    for q in [
        "",
        "?tenant=",
        "?token=",
        "?tenant=a",
        "?tenant=a&token=",
        "?tenant=a&token=1.00",
        "?tenant=%ff&token=1.2",
        "?tenant=a&token=99999999999999999999.ab",
        "?tenant=a&token=a.b.c",
    ] {
        add(format!("connect{q}"), get(&format!("/connect/shopify{q}"), ""));
    }
    add(
        "callback with invalid UTF-8".into(),
        get("/oauth/shopify/callback?code=%ff", ""),
    );
    add(
        "callback with too many parameters".into(),
        get(
            &format!(
                "/oauth/shopify/callback?{}",
                (0..40).map(|i| format!("p{i}=1")).collect::<Vec<_>>().join("&")
            ),
            "",
        ),
    );
    add(
        "callback with a huge value".into(),
        get(&format!("/oauth/shopify/callback?code={}", "a".repeat(5_000)), ""),
    );
    add(
        "callback of an unknown marketplace".into(),
        get("/oauth/amazon/callback?code=1&state=2", ""),
    );
    out
}
