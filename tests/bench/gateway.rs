//! The gateway's cost: signed Shopify deliveries through `integ-gateway` (HTTP, keep-alive)
//! against the same deliveries handed to `integ.receive_webhook` directly, alternating rounds in
//! one run, at each of several numbers of concurrent senders (a marketplace delivers many at
//! once); the capacity of each path is its best rate over them. Then one client alone for the
//! latency the gateway adds, and the gateway's memory under that load. Workers are off, so only
//! receiving is measured. `BENCH_GATEWAY_CLIENTS` (4,16,64,128), `BENCH_GATEWAY_SECS` (2 per round).

#[allow(dead_code)]
#[path = "../gateway_support.rs"]
mod gateway_support;

use crate::{env_number, status_kib};
use e2e::*;
use gateway_support::Gateway;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Delivery = (Vec<(String, String)>, Vec<u8>);

/// Deliveries handed out once each across threads.
struct Pool {
    items: Vec<Delivery>,
    next: AtomicUsize,
}

impl Pool {
    fn take(&self) -> Option<&Delivery> {
        self.items.get(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// A keep-alive HTTP/1.1 client doing only what the benchmark needs, as a load generator like
/// wrk does: one write per request, reads until the answer's declared length. The marketplaces
/// send from other machines; a general client here (reqwest's blocking one hops to its own
/// thread for every request) cost as much CPU as the gateway and took it from the 2 cores.
struct KeepAlive {
    stream: TcpStream,
    host: String,
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl KeepAlive {
    fn connect(addr: &str) -> KeepAlive {
        let stream = TcpStream::connect(addr).expect("connect to the gateway");
        stream.set_nodelay(true).expect("nodelay");
        KeepAlive {
            stream,
            host: addr.to_string(),
            request: Vec::new(),
            answer: Vec::new(),
        }
    }

    /// POSTs and returns the answer's status.
    fn post(&mut self, path: &str, headers: &[(String, String)], body: &[u8]) -> u16 {
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        )
        .expect("request");
        for (k, v) in headers {
            write!(self.request, "{k}: {v}\r\n").expect("request");
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).expect("send");
        self.answer.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).expect("read the answer");
            assert!(n > 0, "the gateway closed the connection");
            self.answer.extend_from_slice(&chunk[..n]);
            let Some(end) = self.answer.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&self.answer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("an answer with a content-length");
            if self.answer.len() >= end + 4 + length {
                assert_eq!(self.answer.len(), end + 4 + length, "one answer per request");
                return head.get(9..12).and_then(|s| s.parse().ok()).expect("a status line");
            }
        }
    }
}

/// (deliveries per second, latencies in ms) of `clients` threads each running `send` for `secs`.
fn round<C: Send>(
    clients: usize,
    secs: f64,
    pool: &Arc<Pool>,
    connect: impl Fn() -> C + Sync,
    send: impl Fn(&mut C, &Delivery) + Sync,
) -> (f64, Vec<f64>) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let per_thread: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut c = connect();
                    let mut ms = Vec::new();
                    while Instant::now() < end {
                        let Some(d) = pool.take() else { break };
                        let t = Instant::now();
                        send(&mut c, d);
                        ms.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    ms
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client")).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut ms: Vec<f64> = per_thread.into_iter().flatten().collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    (ms.len() as f64 / elapsed, ms)
}

pub fn gateway() {
    let levels: Vec<usize> = std::env::var("BENCH_GATEWAY_CLIENTS")
        .unwrap_or_else(|_| "4,16,64,128".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let secs: f64 = env_number("BENCH_GATEWAY_SECS", 2.0);
    let mut env = Env::with_conf("bench-gateway", "integ.workers = 0");
    env.add_shopify_tenant(TENANT, "bench.myshopify.com", json!({}));
    let n = 1_000_000;
    let rows = env
        .db()
        .query(
            &format!(
                "SELECT jsonb_build_object('X-Shopify-Hmac-Sha256', encode(hmac(b, '{SHOPIFY_CLIENT_SECRET}', 'sha256'), 'base64'),
                                           'X-Shopify-Topic', 'orders/create', 'X-Shopify-Shop-Domain', 'bench.myshopify.com',
                                           'X-Shopify-Webhook-Id', 'bench-' || i, 'X-Shopify-API-Version', '2026-10',
                                           'Content-Type', 'application/json'), b
                   FROM (SELECT i, convert_to(json_build_object('id', i, 'line_items',
                                  json_build_array(json_build_object('id', i, 'sku', 'p1', 'quantity', 1)))::text, 'UTF8') AS b
                           FROM generate_series(1, {n}) i) s"
            ),
            &[],
        )
        .expect("deliveries");
    let items: Vec<Delivery> = rows
        .iter()
        .map(|r| {
            let h: Value = r.get(0);
            let headers = h
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (headers, r.get::<_, Vec<u8>>(1))
        })
        .collect();
    let pool = Arc::new(Pool {
        items,
        next: AtomicUsize::new(0),
    });
    let g = Gateway::start(&env);
    let gateway_pid = g.child.id();
    let pg = &env.pg;

    let direct_connect = || {
        let mut c = pg.client();
        let s = c
            .prepare("SELECT integ.receive_webhook('shopify', $1, $2)")
            .expect("prepare");
        (c, s)
    };
    let direct_send = |(c, s): &mut (postgres::Client, postgres::Statement), d: &Delivery| {
        let headers: serde_json::Map<String, Value> = d.0.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let answer: Value = c
            .query_one(&*s, &[&Value::Object(headers), &d.1])
            .expect("receive")
            .get(0);
        assert_eq!(answer["status"], "accepted", "{answer}");
    };
    let addr = g.addr.clone();
    let http_connect = || KeepAlive::connect(&addr);
    let http_send = |c: &mut KeepAlive, d: &Delivery| {
        let status = c.post("/webhooks/shopify", &d.0, &d.1);
        assert_eq!(status, 200, "delivered through the gateway");
    };
    let me = std::process::id() as i32;
    let cpu = |pid: i32| process_cpu_seconds(pid);

    let mut peak_rss = 0;
    // CPU seconds of the gateway and of this client per delivery through the gateway
    let (mut gateway_cpu, mut client_cpu, mut through_n) = (0.0, 0.0, 0usize);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // (senders, direct rate, rate through the gateway) at each level of concurrency
    let mut sweep: Vec<(usize, f64, f64)> = Vec::new();
    for &clients in &levels {
        let (mut direct, mut through, mut direct_ms, mut through_ms) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..2 {
            let (r, ms) = round(clients, secs, &pool, direct_connect, direct_send);
            direct.push(r);
            direct_ms.extend(ms);
            let (g0, c0) = (cpu(gateway_pid as i32), cpu(me));
            let (r, ms) = round(clients, secs, &pool, http_connect, http_send);
            gateway_cpu += cpu(gateway_pid as i32) - g0;
            client_cpu += cpu(me) - c0;
            through_n += ms.len();
            through.push(r);
            through_ms.extend(ms);
            peak_rss = peak_rss.max(status_kib(gateway_pid, "VmRSS:").unwrap_or(0));
        }
        direct_ms.sort_by(|a, b| a.total_cmp(b));
        through_ms.sort_by(|a, b| a.total_cmp(b));
        let (d, t) = (mean(&direct), mean(&through));
        println!(
            "BENCH gateway ({clients} senders): through the gateway {t:.0}/s (rounds {through:.0?}), directly {d:.0}/s \
             (rounds {direct:.0?}): {:.1}%; p50/p99 {:.2}/{:.2} ms through, {:.2}/{:.2} ms directly",
            100.0 * t / d,
            percentile(&through_ms, 50.0),
            percentile(&through_ms, 99.0),
            percentile(&direct_ms, 50.0),
            percentile(&direct_ms, 99.0),
        );
        sweep.push((clients, d, t));
    }
    // what each path takes at its best concurrency: the database's capacity directly, and
    // through the gateway (which receives what arrives together in one statement)
    let best = |pick: fn(&(usize, f64, f64)) -> f64| {
        sweep
            .iter()
            .max_by(|a, b| pick(a).total_cmp(&pick(b)))
            .map(|s| (s.0, pick(s)))
            .unwrap_or((0, 0.0))
    };
    let ((dc, d), (tc, t)) = (best(|s| s.1), best(|s| s.2));
    println!(
        "BENCH gateway capacity: through the gateway {t:.0}/s ({tc} senders), directly {d:.0}/s ({dc} senders): \
         {:.1}% (goal >= 80%)",
        100.0 * t / d
    );
    // one client alone: the latency the gateway adds to one delivery
    let (_, alone_direct) = round(1, secs, &pool, direct_connect, direct_send);
    let (_, alone_through) = round(1, secs, &pool, http_connect, http_send);
    let used = pool.next.load(Ordering::Relaxed).min(n);
    assert!(used < n, "more calls than prepared deliveries: raise n");
    let accepted = env.scalar_i64("SELECT count(*) FROM integ.webhooks WHERE status = 'accepted' AND verified");
    assert_eq!(
        accepted as usize, used,
        "every delivery was received once, verified and new"
    );
    println!(
        "BENCH gateway (1 client): p50/p99 {:.2}/{:.2} ms through, {:.2}/{:.2} ms directly: added p50 {:.2} ms, \
         p99 {:.2} ms (goal < 2 ms); gateway memory VmRSS peak sample {:.1} MB, VmHWM {:.1} MB; CPU per delivery: \
         gateway {:.0} µs, the client {:.0} µs; {accepted} deliveries",
        percentile(&alone_through, 50.0),
        percentile(&alone_through, 99.0),
        percentile(&alone_direct, 50.0),
        percentile(&alone_direct, 99.0),
        percentile(&alone_through, 50.0) - percentile(&alone_direct, 50.0),
        percentile(&alone_through, 99.0) - percentile(&alone_direct, 99.0),
        peak_rss as f64 / 1024.0,
        status_kib(gateway_pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0,
        gateway_cpu / through_n.max(1) as f64 * 1e6,
        client_cpu / through_n.max(1) as f64 * 1e6,
    );
    drop(g);
}
