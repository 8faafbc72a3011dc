//! The application's webhook endpoint, as EGDC would run it: an HTTP server on loopback that
//! hands every delivery (`POST /hooks/{marketplace}`) to `integ.receive_webhook` and answers with
//! the `http_status` it returns. While PostgreSQL is down it answers 503, so the sandbox retries.

use postgres::{Client, NoTls};
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Receiver {
    pub addr: String,
    stop: Arc<AtomicBool>,
    /// Deliveries answered 2xx, and refused (any other status).
    pub accepted: Arc<AtomicU64>,
    pub refused: Arc<AtomicU64>,
}

impl Receiver {
    pub fn start(pg_port: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let (s, a, r) = (stop.clone(), accepted.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (a, r) = (a.clone(), r.clone());
                // one thread per delivery: the sandbox may deliver several at once
                std::thread::spawn(move || {
                    let ok = serve(stream, pg_port);
                    if ok { &a } else { &r }.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        Receiver {
            addr,
            stop,
            accepted,
            refused,
        }
    }

    pub fn url(&self, marketplace: &str) -> String {
        format!("http://{}/hooks/{marketplace}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Serves one request; whether it was answered 2xx.
fn serve(stream: TcpStream, pg_port: u16) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return false,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return false;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Map::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse().unwrap_or(0);
            }
            headers.insert(k, Value::String(v));
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return false;
    }
    let marketplace = path.strip_prefix("/hooks/").unwrap_or("").to_string();
    let status = Client::connect(
        &format!("host=127.0.0.1 port={pg_port} user=postgres dbname=postgres connect_timeout=2"),
        NoTls,
    )
    .ok()
    .and_then(|mut c| {
        c.query_one(
            "SELECT (integ.receive_webhook($1, $2, $3) ->> 'http_status')::int",
            &[&marketplace, &Value::Object(headers), &body],
        )
        .ok()
        .map(|r| r.get::<_, i32>(0))
    })
    .unwrap_or(503);
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    (200..300).contains(&status)
}
