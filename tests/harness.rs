//! End-to-end harness: a real PostgreSQL 15 cluster with the extension preloaded, and the
//! marketplace sandbox on loopback, both started per test and torn down after it.

pub mod installs;
mod receiver;
pub use receiver::Receiver;

use postgres::{Client, NoTls};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The credential master key of every test cluster.
pub const MASTER_KEY: &str = "e2e-master-key-which-is-long-enough";

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL program, as the postgres user when we are root.
fn pg_command(program: &str) -> Command {
    let path = format!("{PG_BIN}/{program}");
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A new, empty directory for a cluster, owned by postgres when we are root.
fn cluster_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("integ-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create cluster dir");
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map(|s| s.success());
        assert_eq!(ok.ok(), Some(true), "chown cluster dir");
    }
    dir
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// initdb + start, with `integration` preloaded and `extra` appended to postgresql.conf.
    pub fn start(name: &str, extra: &str, with_key: bool) -> Cluster {
        let dir = cluster_dir(name);
        let data = dir.join("data");
        let out = pg_command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let key_line = if with_key {
            let key = dir.join("master.key");
            std::fs::write(&key, format!("{MASTER_KEY}\n")).expect("write key");
            format!("integ.key_file = '{}'\n", key.display())
        } else {
            String::new()
        };
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             shared_preload_libraries = 'integration'\n{key_line}\
             integ.database = 'postgres'\nfsync = off\nlogging_collector = off\nlog_min_messages = info\n{extra}\n",
            dir.display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("conf");
        std::io::Write::write_all(&mut f, conf.as_bytes()).expect("write conf");
        let c = Cluster { dir, port };
        c.pg_ctl_start();
        c
    }

    /// A base backup of `primary` (`pg_basebackup -X stream`, with `-R` for a streaming
    /// standby), set up on its own port and key file but not started.
    pub fn base_backup_of(primary: &Cluster, name: &str, standby: bool) -> Cluster {
        let dir = cluster_dir(name);
        std::fs::copy(primary.dir.join("master.key"), dir.join("master.key")).expect("copy key");
        let data = dir.join("data");
        let port = primary.port.to_string();
        let mut args = vec![
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-X",
            "stream",
            "-c",
            "fast",
            "-D",
        ];
        if standby {
            args.insert(0, "-R");
        }
        let out = pg_command("pg_basebackup")
            .args(&args)
            .arg(&data)
            .output()
            .expect("pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let conf = format!(
            "\nport = {port}\nunix_socket_directories = '{}'\ninteg.key_file = '{}'\n",
            dir.display(),
            dir.join("master.key").display()
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("conf");
        std::io::Write::write_all(&mut f, conf.as_bytes()).expect("write conf");
        Cluster { dir, port }
    }

    /// The postmaster's pid.
    pub fn postmaster_pid(&self) -> i32 {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .expect("postmaster.pid")
    }

    pub fn promote(&self) {
        let out = pg_command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("promote")
            .output()
            .expect("pg_ctl promote");
        assert!(
            out.status.success(),
            "pg_ctl promote failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn pg_ctl_start(&self) {
        let out = pg_command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .arg("start")
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    pub fn stop(&self, mode: &str) {
        let _ = pg_command("pg_ctl")
            .args(["-w", "-t", "60", "-m", mode, "-D"])
            .arg(self.data())
            .arg("stop")
            .output();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(
                &format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port),
                NoTls,
            ) {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop("immediate");
        if std::env::var_os("INTEG_KEEP_CLUSTERS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Sim {
    child: Child,
    pub addr: String,
    http: reqwest::blocking::Client,
}

fn sim_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SIM_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target");
    for profile in ["release", "debug"] {
        let p = root.join(profile).join("marketplace-sim");
        if p.exists() {
            return p;
        }
    }
    panic!("marketplace-sim not built: run cargo build -p marketplace-sim (or set SIM_BIN)");
}

impl Sim {
    pub fn start() -> Sim {
        let addr_file = std::env::temp_dir().join(format!("integ-sim-{}-{}", std::process::id(), free_port()));
        let _ = std::fs::remove_file(&addr_file);
        let child = Command::new(sim_binary())
            .args(["--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .stdout(Stdio::null())
            .spawn()
            .expect("start marketplace-sim");
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                if !a.is_empty() {
                    break a;
                }
            }
            assert!(Instant::now() < deadline, "marketplace-sim did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = std::fs::remove_file(&addr_file);
        Sim {
            child,
            addr,
            http: reqwest::blocking::Client::new(),
        }
    }

    pub fn base_url(&self, marketplace: &str) -> String {
        format!("http://{}/{marketplace}", self.addr)
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("http://{}/_admin{path}", self.addr))
            .json(&body)
            .send()
            .expect("sim admin");
        let status = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "sim admin {path}: {status} {v}");
        v
    }

    pub fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("http://{}/_admin{path}", self.addr))
            .send()
            .expect("sim admin")
            .json()
            .unwrap_or(Value::Null)
    }

    pub fn delete(&self, path: &str) {
        self.http
            .delete(format!("http://{}/_admin{path}", self.addr))
            .send()
            .expect("sim admin");
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.get("/stats")["counters"][name].as_u64().unwrap_or(0)
    }

    pub fn item_quantity(&self, id: &str) -> Option<i64> {
        self.get(&format!("/mercadolibre/items/{id}"))["available_quantity"].as_i64()
    }

    pub fn item_writes(&self, id: &str) -> u64 {
        self.get(&format!("/mercadolibre/items/{id}"))["writes"]
            .as_u64()
            .unwrap_or(0)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster and a sandbox with one MercadoLibre seller connected as tenant `tenant`, and an
/// EGDC inventory table `inventory(tenant_id, sku, qty)` tracked by the extension.
pub struct Env {
    pub sim: Sim,
    pub pg: Cluster,
    db: std::cell::RefCell<Client>,
    pub secrets: Vec<String>,
}

/// The callback configuration of a marketplace's app in the sandbox: Shopify sends the app-level
/// URL only the topics the app's configuration lists, so a test that wants every delivery there
/// lists them all.
pub fn app_hooks(sim: &Sim, marketplace: &str, url: &str, delays: &[u64]) {
    let mut body = json!({"marketplace": marketplace, "url": url, "retry_delays_ms": delays});
    if marketplace == "shopify" {
        body["topics"] = json!([
            "orders/create",
            "orders/cancelled",
            "orders/paid",
            "orders/updated",
            "inventory_levels/update",
            "app/uninstalled",
            "customers/data_request",
            "customers/redact",
            "shop/redact"
        ]);
    }
    sim.post("/webhooks", body);
}

pub const TENANT: &str = "acme";
pub const SELLER: u64 = 5001;
pub const CLIENT_ID: &str = "7001";
pub const CLIENT_SECRET: &str = "meli-client-secret-7001";
pub const SHEIN_APPID: &str = "shein-app-1";
pub const TIKTOK_APP_KEY: &str = "tts-app-key-1";
pub const SHOPIFY_CLIENT_ID: &str = "shopify-client-1";
pub const SHOPIFY_CLIENT_SECRET: &str = "shpss_sandbox_secret_77";
pub const TIKTOK_APP_SECRET: &str = "tts-app-secret-0f3a9c";
pub const SHEIN_APP_SECRET: &str = "698E4F20DFBA4B85B2291C2BCB7381C5";

impl Env {
    pub fn new(name: &str) -> Env {
        Self::with_conf(name, "")
    }

    pub fn with_conf(name: &str, extra_conf: &str) -> Env {
        let sim = Sim::start();
        // The sandbox enforces no limit unless a test asks for one; tests not about limits lift
        // the per-tenant default (200/min) out of the way. Timings are compressed: backoff, and a
        // circuit cool-down short enough that a 45%-failing sandbox still drains in seconds.
        let conf = format!(
            "integ.poll_interval = 200\ninteg.backoff_base = 20\ninteg.backoff_max = 500\ninteg.http_timeout = 1000\n\
             integ.rate_limit_mercadolibre = '100000/s:1000'\ninteg.rate_limit_shein = '100000/s:1000'\n\
             integ.rate_limit_tiktok = '100000/s:1000'\ninteg.rate_limit_shopify = '100000/s:1000'\n\
             integ.circuit_cooldown = 200\n\
             integ.max_attempts = 50\ninteg.reconcile_interval = 0\ninteg.refresh_ahead = 0\ninteg.allowed_hosts = '127.0.0.1'\n{extra_conf}"
        );
        let pg = Cluster::start(name, &conf, true);
        let mut db = pg.client();
        db.batch_execute("CREATE EXTENSION integration CASCADE")
            .expect("create extension");
        sim.post(
            "/mercadolibre/apps",
            json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}),
        );
        db.batch_execute(
            "CREATE TABLE inventory (tenant_id text, sku text, qty integer, PRIMARY KEY (tenant_id, sku));
             SELECT integ.track_inventory('inventory', 'tenant_id', 'sku', 'qty');",
        )
        .expect("inventory");
        let mut env = Env {
            sim,
            pg,
            db: std::cell::RefCell::new(db),
            secrets: vec![CLIENT_SECRET.to_string()],
        };
        env.add_tenant(TENANT, SELLER, json!({}));
        env
    }

    /// Connects another tenant as a new sandbox seller; `settings` are merged into the
    /// connection settings.
    pub fn add_tenant(&mut self, tenant: &str, seller: u64, settings: Value) {
        let grant = self.sim.post(
            "/mercadolibre/sellers",
            json!({"user_id": seller, "client_id": CLIENT_ID}),
        );
        let access = grant["access_token"].as_str().expect("access token").to_string();
        let refresh = grant["refresh_token"].as_str().expect("refresh token").to_string();
        let creds = json!({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "access_token": access,
                           "refresh_token": refresh, "expires_in": 21600, "user_id": seller});
        let mut all = json!({"base_url": self.sim.base_url("mercadolibre")});
        if let (Some(a), Some(extra)) = (all.as_object_mut(), settings.as_object()) {
            a.extend(extra.clone());
        }
        // Credentials go as bind parameters, so no statement text ever carries them.
        self.db()
            .query_one(
                "SELECT integ.connect($1, 'mercadolibre', $2, $3)",
                &[&tenant as &(dyn postgres::types::ToSql + Sync), &creds, &all],
            )
            .expect("connect");
        self.secrets.extend([access, refresh]);
    }

    /// Connects `tenant` to the sandbox's SHEIN as a new supplier of app `SHEIN_APPID` (created on
    /// first use); returns the supplier's openKeyId. `settings` are merged as in add_tenant.
    pub fn add_shein_tenant(&mut self, tenant: &str, supplier_id: u64, settings: Value) -> String {
        self.sim.post(
            "/shein/apps",
            json!({"appid": SHEIN_APPID, "app_secret_key": SHEIN_APP_SECRET}),
        );
        let s = self.sim.post(
            "/shein/suppliers",
            json!({"appid": SHEIN_APPID, "supplier_id": supplier_id}),
        );
        let key_id = s["open_key_id"].as_str().expect("open_key_id").to_string();
        let secret = s["secret_key"].as_str().expect("secret_key").to_string();
        let creds = json!({"open_key_id": key_id, "secret_key": secret, "appid": SHEIN_APPID, "supplier_id": supplier_id,
                     "app_secret_key": SHEIN_APP_SECRET});
        let mut all = json!({"base_url": self.sim.base_url("shein")});
        if let (Some(a), Some(extra)) = (all.as_object_mut(), settings.as_object()) {
            a.extend(extra.clone());
        }
        self.db()
            .query_one(
                "SELECT integ.connect($1, 'shein', $2, $3)",
                &[&tenant as &(dyn postgres::types::ToSql + Sync), &creds, &all],
            )
            .expect("connect shein");
        self.secrets.extend([secret, SHEIN_APP_SECRET.to_string()]);
        key_id
    }

    /// Creates sandbox SKU `sku_code` for the supplier and maps `tenant`'s `product` to it.
    pub fn shein_listing(&self, tenant: &str, key_id: &str, product: &str, sku_code: &str) {
        self.sim.post(
            "/shein/skus",
            json!({"open_key_id": key_id, "sku_code": sku_code, "warehouse_code": "WH-1"}),
        );
        self.db()
            .execute(
                "INSERT INTO inventory VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
                &[&tenant as &(dyn postgres::types::ToSql + Sync), &product],
            )
            .expect("insert");
        self.db()
            .query_one(
                "SELECT integ.map_product($1, 'shein', $2, $3, '{\"warehouse_code\": \"WH-1\"}')",
                &[&tenant as &(dyn postgres::types::ToSql + Sync), &product, &sku_code],
            )
            .expect("map shein");
    }

    pub fn shein_quantity(&self, sku_code: &str) -> Option<i64> {
        self.sim.get(&format!("/shein/skus/{sku_code}"))["quantity"].as_i64()
    }

    /// Connects `tenant` to the sandbox's TikTok Shop as shop `shop_cipher` of app
    /// `TIKTOK_APP_KEY`; returns the token grant the sandbox issued.
    pub fn add_tiktok_tenant(&mut self, tenant: &str, shop_cipher: &str, settings: Value) -> Value {
        self.sim.post(
            "/tiktok/apps",
            json!({"app_key": TIKTOK_APP_KEY, "app_secret": TIKTOK_APP_SECRET}),
        );
        let g = self.sim.post(
            "/tiktok/shops",
            json!({"app_key": TIKTOK_APP_KEY, "shop_cipher": shop_cipher}),
        );
        let creds = json!({"app_key": TIKTOK_APP_KEY, "app_secret": TIKTOK_APP_SECRET, "shop_cipher": shop_cipher,
                           "shop_id": g["shop_id"],
                           "access_token": g["access_token"], "refresh_token": g["refresh_token"],
                           "access_token_expire_in": g["access_token_expire_in"]});
        let mut all = json!({"base_url": self.sim.base_url("tiktok")});
        if let (Some(a), Some(extra)) = (all.as_object_mut(), settings.as_object()) {
            a.extend(extra.clone());
        }
        self.db()
            .query_one(
                "SELECT integ.connect($1, 'tiktok', $2, $3)",
                &[&tenant as &(dyn postgres::types::ToSql + Sync), &creds, &all],
            )
            .expect("connect tiktok");
        self.secrets.push(TIKTOK_APP_SECRET.to_string());
        g
    }

    /// Creates sandbox product `product_id` with SKU `sku_id` in warehouse WH-1 of the shop and
    /// maps `tenant`'s `product` to it.
    pub fn tiktok_listing(&self, tenant: &str, shop_cipher: &str, product: &str, product_id: &str, sku_id: &str) {
        self.sim.post(
            "/tiktok/products",
            json!({"shop_cipher": shop_cipher, "product_id": product_id, "skus": [{"id": sku_id, "warehouse_id": "WH-1"}]}),
        );
        self.db()
            .execute(
                "INSERT INTO inventory VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
                &[&tenant as &(dyn postgres::types::ToSql + Sync), &product],
            )
            .expect("insert");
        let settings = json!({"product_id": product_id, "warehouse_id": "WH-1"});
        self.db()
            .query_one(
                "SELECT integ.map_product($1, 'tiktok', $2, $3, $4)",
                &[
                    &tenant as &(dyn postgres::types::ToSql + Sync),
                    &product,
                    &sku_id,
                    &settings,
                ],
            )
            .expect("map tiktok");
    }

    pub fn tiktok_quantity(&self, sku_id: &str) -> Option<i64> {
        self.sim.get(&format!("/tiktok/skus/{sku_id}"))["quantity"].as_i64()
    }

    /// Connects `tenant` to sandbox shop `shop` (an expiring offline token of app
    /// `SHOPIFY_CLIENT_ID`); returns the grant.
    pub fn add_shopify_tenant(&mut self, tenant: &str, shop: &str, settings: Value) -> Value {
        self.sim.post(
            "/shopify/apps",
            json!({"client_id": SHOPIFY_CLIENT_ID, "client_secret": SHOPIFY_CLIENT_SECRET}),
        );
        let g = self.sim.post(
            "/shopify/shops",
            json!({"shop": shop, "client_id": SHOPIFY_CLIENT_ID, "expiring": true}),
        );
        let creds = json!({"shop": shop, "access_token": g["access_token"], "refresh_token": g["refresh_token"],
                           "expires_in": g["expires_in"], "client_id": SHOPIFY_CLIENT_ID,
                           "client_secret": SHOPIFY_CLIENT_SECRET});
        let mut all = json!({"base_url": self.sim.base_url("shopify")});
        if let (Some(a), Some(extra)) = (all.as_object_mut(), settings.as_object()) {
            a.extend(extra.clone());
        }
        self.db()
            .query_one(
                "SELECT integ.connect($1, 'shopify', $2, $3)",
                &[&tenant as &(dyn postgres::types::ToSql + Sync), &creds, &all],
            )
            .expect("connect shopify");
        self.secrets.push(SHOPIFY_CLIENT_SECRET.to_string());
        g
    }

    /// Creates the sandbox inventory level (item at location 1) and maps `tenant`'s `product` to it.
    pub fn shopify_listing(&self, tenant: &str, shop: &str, product: &str, item: u64) {
        self.sim.post(
            "/shopify/levels",
            json!({"shop": shop, "inventory_item_id": item, "location_id": 1, "available": 0}),
        );
        self.db()
            .execute(
                "INSERT INTO inventory VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
                &[&tenant as &(dyn postgres::types::ToSql + Sync), &product],
            )
            .expect("insert");
        let settings = json!({"location_id": 1});
        self.db()
            .query_one(
                "SELECT integ.map_product($1, 'shopify', $2, $3, $4)",
                &[
                    &tenant as &(dyn postgres::types::ToSql + Sync),
                    &product,
                    &item.to_string(),
                    &settings,
                ],
            )
            .expect("map shopify");
    }

    pub fn shopify_available(&self, item: u64) -> Option<i64> {
        self.sim.get(&format!("/shopify/levels/{item}/1"))["available"].as_i64()
    }

    /// Creates `n` sandbox items MLM{100000+i} (stock 0) mapped to products sku-{i} (stock 0).
    pub fn listings(&self, n: usize) -> Vec<(String, String)> {
        self.listings_for(TENANT, SELLER, 100_000, n)
    }

    /// The same for any tenant and seller, items numbered from `first`.
    pub fn listings_for(&self, tenant: &str, seller: u64, first: usize, n: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for i in 0..n {
            let item = format!("MLM{}", first + i);
            let sku = format!("sku-{i}");
            self.sim
                .post("/mercadolibre/items", json!({"id": item, "seller_id": seller}));
            self.db()
                .execute(
                    "INSERT INTO inventory VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
                    &[&tenant as &(dyn postgres::types::ToSql + Sync), &sku],
                )
                .expect("insert");
            self.db()
                .query_one(
                    "SELECT integ.map_product($1, 'mercadolibre', $2, $3)",
                    &[&tenant as &(dyn postgres::types::ToSql + Sync), &sku, &item],
                )
                .expect("map");
            out.push((sku, item));
        }
        out
    }

    /// EGDC's stock of a product in the `inventory` table (-1 when the row is missing).
    pub fn egdc_stock(&self, tenant: &str, sku: &str) -> i64 {
        self.db()
            .query_one(
                "SELECT qty::bigint FROM inventory WHERE tenant_id = $1 AND sku = $2",
                &[&tenant, &sku],
            )
            .map(|r| r.get(0))
            .unwrap_or(-1)
    }

    pub fn set_stock(&self, sku: &str, qty: i32) {
        self.set_stock_of(TENANT, sku, qty);
    }

    pub fn set_stock_of(&self, tenant: &str, sku: &str, qty: i32) {
        self.db()
            .execute(
                "UPDATE inventory SET qty = $3 WHERE tenant_id = $1 AND sku = $2",
                &[&tenant as &(dyn postgres::types::ToSql + Sync), &sku, &qty],
            )
            .expect("update");
    }

    /// Waits until `check` holds, panicking with `what` after `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check() {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {secs}s waiting for: {what}\n--- outbox ---\n{}\n--- server log tail ---\n{}",
                    self.outbox_state(),
                    tail(&self.pg.log(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Jobs, latest log rows, connections and limiters, for a failed wait's message.
    fn outbox_state(&self) -> String {
        let Ok(mut db) = self.db.try_borrow_mut() else {
            return "(database busy)".into();
        };
        let queries = [
            "SELECT string_agg(format('job %s listing %s %s %s attempts %s next %s err %s', id, listing_id, marketplace, state, attempts,
                     next_attempt_at - now(), left(last_error, 80)), E'\n' ORDER BY id) FROM integ.sync_jobs WHERE state <> 'done'",
            "SELECT string_agg(x, E'\n') FROM (SELECT format('log %s %s %s %s stock %s err %s', id, marketplace, operation, outcome, stock,
                     left(error, 80)) AS x FROM integ.sync_log ORDER BY id DESC LIMIT 12) l",
            "SELECT string_agg(format('conn %s %s %s circuit %s q %s', tenant_id, marketplace, status, circuit, queue_depth), E'\n') FROM integ.status",
            "SELECT string_agg(x, E'\n') FROM (SELECT format('webhook %s %s %s %s %s/%s attempts %s: %s', id, marketplace, topic, event_id, status,
                     state, attempts, left(coalesce(reason, error), 100)) AS x FROM integ.webhooks ORDER BY id DESC LIMIT 8) w",
        ];
        queries
            .iter()
            .map(|q| match db.query_one(*q, &[]) {
                Ok(r) => r.get::<_, Option<String>>(0).unwrap_or_default(),
                Err(e) => format!("({e})"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn db(&self) -> std::cell::RefMut<'_, Client> {
        self.db.borrow_mut()
    }

    /// Reconnects after a server restart.
    pub fn reconnect(&self) {
        *self.db.borrow_mut() = self.pg.client();
    }

    /// Waits until every change committed so far has been captured (read from the capture
    /// slot, when stock changes are captured by message) and no job is pending or in flight.
    pub fn wait_idle(&self, secs: u64, what: &str) {
        self.wait_captured(secs, what);
        self.wait_for(secs, what, || {
            self.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state IN ('pending', 'in_flight')") == 0
        });
    }

    /// Waits until the capture worker has read every change committed so far.
    pub fn wait_captured(&self, secs: u64, what: &str) {
        let now = self.scalar_text("SELECT pg_current_wal_lsn()::text");
        let unread = format!(
            "SELECT count(*) FROM integ.capture WHERE mode = 'message' AND coalesce(applied_upto, '0/0') < '{now}'"
        );
        self.wait_for(secs, what, || self.scalar_i64(&unread) == 0);
    }

    pub fn scalar_i64(&self, sql: &str) -> i64 {
        self.db().query_one(sql, &[]).expect(sql).get::<_, i64>(0)
    }

    pub fn scalar_text(&self, sql: &str) -> String {
        self.db().query_one(sql, &[]).expect(sql).get::<_, String>(0)
    }

    /// The capture worker's process id.
    pub fn capture_pid(&self) -> i32 {
        self.scalar_i64("SELECT pid::bigint FROM pg_stat_activity WHERE backend_type = 'integration capture'") as i32
    }

    /// Every issued token, and the client secret, must appear in no table and no log line.
    pub fn assert_no_secrets(&self) {
        let mut secrets = self.secrets.clone();
        secrets.push(MASTER_KEY.to_string());
        for path in [
            "/mercadolibre/issued_tokens",
            "/tiktok/issued_tokens",
            "/shopify/issued_tokens",
        ] {
            if let Some(issued) = self.sim.get(path).as_array() {
                secrets.extend(issued.iter().filter_map(|t| t.as_str().map(str::to_string)));
            }
        }
        assert!(secrets.len() >= 3);
        let tables: Vec<String> = self
            .db()
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'v') AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
                &[],
            )
            .expect("tables")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut dump = String::new();
        for t in tables {
            let rows = self
                .db()
                .query(
                    &format!("SELECT coalesce(string_agg(x::text, E'\\n'), '') FROM {t} x"),
                    &[],
                )
                .expect("dump");
            dump.push_str(&rows[0].get::<_, String>(0));
            // bytea columns render as hex: look for hex-encoded secrets too
        }
        let log = self.pg.log();
        for s in &secrets {
            let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(!dump.contains(s.as_str()), "a secret appears in a table");
            assert!(!dump.contains(&hex), "a secret appears hex-encoded in a table");
            assert!(!log.contains(s.as_str()), "a secret appears in the server log");
        }
    }
}

/// CPU seconds (user + system) the integration workers have used so far.
pub fn worker_cpu_seconds(env: &Env) -> f64 {
    let pids: Vec<i32> = env
        .db()
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type IN ('integration worker', 'integration capture')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    pids.iter().map(|p| process_cpu_seconds(*p)).sum()
}

/// User plus system CPU seconds of a process (`/proc/<pid>/stat`; 0 when it is gone).
pub fn process_cpu_seconds(pid: i32) -> f64 {
    let tick = 100.0; // USER_HZ
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let f: Vec<&str> = s.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (ut + st) / tick
        })
        .unwrap_or(0.0)
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to a process.
pub fn signal(pid: i32, signal: &str) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "kill -{signal} {pid}");
}
