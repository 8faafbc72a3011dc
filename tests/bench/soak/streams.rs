//! The soak's two streams: EGDC stock changes (each recorded with its delta in the same
//! statement) and marketplace orders whose deliveries the soak hands to integ.receive_webhook.

use super::*;

pub(super) fn connect(port: u16) -> Option<Client> {
    Client::connect(
        &format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2 options='-c statement_timeout=15000'"
        ),
        NoTls,
    )
    .ok()
}

/// The client, connecting when there is none; None while PostgreSQL is down.
pub(super) fn connected(db: &mut Option<Client>, port: u16) -> Option<&mut Client> {
    if db.is_none() {
        *db = connect(port);
    }
    db.as_mut()
}

/// Sleeps until `next`, then moves it one period on (never into a backlog).
pub(super) fn pace(next: &mut Instant, every: Duration) {
    let now = Instant::now();
    if *next > now {
        std::thread::sleep(*next - now);
    }
    *next = (*next + every).max(Instant::now());
}

/// EGDC's stock changes: `qty = qty + d` on a random product, never below 0, recorded in
/// `soak_changes` in the same transaction (one statement).
pub(super) fn stock_stream(port: u16, products: &[(String, String)], seed: u64, stop: &AtomicBool) -> StockStats {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut db = None;
    let mut s = StockStats::default();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        pace(&mut next, STOCK_EVERY);
        let Some(c) = connected(&mut db, port) else {
            s.failed += 1;
            continue;
        };
        let (tenant, product) = products.choose(&mut rng).expect("products");
        let delta: i32 = [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5][rng.gen_range(0..10)];
        match c.execute(
            "WITH changed AS (UPDATE inventory SET qty = qty + $3 WHERE tenant_id = $1 AND sku = $2 AND qty + $3 >= 0
                              RETURNING tenant_id, sku)
             INSERT INTO soak_changes (tenant, product, delta) SELECT tenant_id, sku, $3 FROM changed",
            &[tenant, product, &delta],
        ) {
            Ok(1) => s.committed += 1,
            Ok(_) => s.refused += 1,
            Err(_) => {
                s.failed += 1;
                db = None;
            }
        }
    }
    s
}

/// The order stream: sales (1 or 2 of the tenant's listings, 1 to 3 units each) and
/// cancellations of earlier sales, made in the sandbox with `"send": false`; their deliveries
/// are handed to `integ.receive_webhook` oldest first, each kept until it is answered. After
/// `stop`, what is still waiting is handed over before returning.
pub(super) fn order_stream(
    sim: &Sim,
    port: u16,
    tenants: &[Tenant],
    seed: u64,
    stop: &AtomicBool,
    abort: &AtomicBool,
) -> (Vec<Order>, Handover) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut db = None;
    let mut orders: Vec<Order> = Vec::new();
    let mut queue: VecDeque<Delivery> = VecDeque::new();
    let mut h = Handover::default();
    let mut next = Instant::now();
    let mut flush_deadline: Option<Instant> = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping {
            let deadline = *flush_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(120));
            if queue.is_empty() || Instant::now() > deadline || abort.load(Ordering::Relaxed) {
                h.left = queue.len();
                break;
            }
        } else if Instant::now() >= next {
            next += ORDER_EVERY;
            let open: Vec<usize> = (0..orders.len()).filter(|i| !orders[*i].cancelled).collect();
            let delivery = if rng.gen_bool(CANCEL_SHARE) && !open.is_empty() {
                let i = *open.choose(&mut rng).expect("open order");
                let o = &mut orders[i];
                o.cancelled = true;
                o.cancelled_at = Some(unix_now());
                *h.cancellations.entry(o.marketplace).or_default() += 1;
                let made = sim.post(
                    &format!("/{}/orders/{}/cancel", o.marketplace, o.id),
                    json!({"send": false}),
                );
                Some(delivery_of(o.marketplace, &made))
            } else {
                let ti = rng.gen_range(0..tenants.len());
                match new_order(sim, &tenants[ti], ti, &mut rng) {
                    Some((o, made)) => {
                        *h.orders.entry(o.marketplace).or_default() += 1;
                        let d = delivery_of(o.marketplace, &made);
                        orders.push(o);
                        Some(d)
                    }
                    None => {
                        h.sold_out += 1;
                        None
                    }
                }
            };
            queue.extend(delivery);
        }
        // hand over what waits, oldest first, until a call fails
        let mut failed = false;
        while let Some(d) = queue.front() {
            let Some(c) = connected(&mut db, port) else {
                h.retries += 1;
                failed = true;
                break;
            };
            match c.query_one(
                "SELECT integ.receive_webhook($1, $2::jsonb, $3::bytea)",
                &[&d.marketplace, &d.headers, &d.body],
            ) {
                Ok(row) => {
                    let answer: Value = row.get(0);
                    let status = answer["status"].as_str().unwrap_or("?").to_string();
                    if status == "rejected" {
                        h.rejected.push(format!("{} delivery: {answer}", d.marketplace));
                    }
                    *h.answers.entry(status).or_default() += 1;
                    let d = queue.pop_front().expect("delivery");
                    h.handed += 1;
                    if !d.resent && rng.gen_bool(RESEND_SHARE) {
                        h.resent += 1;
                        queue.push_back(Delivery { resent: true, ..d });
                    }
                }
                Err(_) => {
                    h.retries += 1;
                    db = None;
                    failed = true;
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(if failed { 100 } else { 10 }));
    }
    (orders, h)
}

pub(super) fn delivery_of(marketplace: &'static str, made: &Value) -> Delivery {
    let d = &made["delivery"];
    Delivery {
        marketplace,
        headers: d["headers"].clone(),
        body: d["body"].as_str().expect("the delivery's body").as_bytes().to_vec(),
        resent: false,
    }
}

pub(super) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(super) fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A listing's stock in the sandbox: what its marketplace shows and sells.
pub(super) fn sandbox_quantity(sim: &Sim, marketplace: &str, external: &str) -> Option<i64> {
    let (path, field) = match marketplace {
        "mercadolibre" => (format!("/mercadolibre/items/{external}"), "available_quantity"),
        "shopify" => (format!("/shopify/levels/{external}/1"), "available"),
        "tiktok" => (format!("/tiktok/skus/{external}"), "quantity"),
        _ => (format!("/shein/skus/{external}"), "quantity"),
    };
    sim.get(&path)[field].as_i64()
}

/// A sale on the tenant's marketplace of what it shows in stock (1 or 2 listings, 1 to 3 units,
/// at most what the listing shows); the order as the soak expects the ledger to hold it, and the
/// sandbox's answer (with the delivery). None when the tenant shows nothing in stock: a
/// marketplace does not sell a listing at 0 (a sale can still outrun a change on another channel,
/// and EGDC's stock then goes below 0, which publishes as 0).
pub(super) fn new_order(sim: &Sim, t: &Tenant, ti: usize, rng: &mut StdRng) -> Option<(Order, Value)> {
    let n = rng.gen_range(1..=2);
    let in_stock: Vec<(&(String, String), i64)> = t
        .listings
        .iter()
        .filter_map(|l| Some((l, sandbox_quantity(sim, t.marketplace, &l.1).filter(|q| *q > 0)?)))
        .collect();
    if in_stock.is_empty() {
        return None;
    }
    let chosen: Vec<&(&(String, String), i64)> = in_stock.choose_multiple(rng, n).collect();
    let picks: Vec<Line> = chosen
        .into_iter()
        .map(|((p, e), shown)| (p.clone(), e.clone(), rng.gen_range(1..=3).min(*shown)))
        .collect();
    let (made, lines) = match t.marketplace {
        "mercadolibre" => {
            let items: Vec<Value> = picks
                .iter()
                .map(|(_, item, q)| json!({"item_id": item, "quantity": q}))
                .collect();
            let made = sim.post(
                "/mercadolibre/orders",
                json!({"seller": t.account.parse::<u64>().expect("seller"), "items": items, "send": false}),
            );
            // one line per item (and variation): `{item}-{variation or 0}`
            let lines = picks
                .iter()
                .map(|(p, item, q)| (format!("{item}-0"), p.clone(), *q))
                .collect();
            (made, lines)
        }
        "shopify" => {
            let lines: Vec<Value> = picks
                .iter()
                .map(|(p, item, q)| {
                    json!({"inventory_item_id": item.parse::<u64>().expect("item"), "location_id": 1, "sku": p, "quantity": q})
                })
                .collect();
            let made = sim.post(
                "/shopify/orders",
                json!({"shop": t.account, "lines": lines, "send": false}),
            );
            let body: Value =
                serde_json::from_str(made["delivery"]["body"].as_str().unwrap_or("")).expect("the order's body");
            let lines = body["line_items"]
                .as_array()
                .expect("line_items")
                .iter()
                .map(|l| {
                    (
                        id_text(&l["id"]),
                        l["sku"].as_str().unwrap_or("").to_string(),
                        l["quantity"].as_i64().unwrap_or(0),
                    )
                })
                .collect();
            (made, lines)
        }
        "tiktok" => {
            let lines: Vec<Value> = picks
                .iter()
                .map(|(_, sku, q)| json!({"sku_id": sku, "quantity": q}))
                .collect();
            let made = sim.post(
                "/tiktok/orders",
                json!({"shop_cipher": t.account, "lines": lines, "send": false}),
            );
            // one line per unit, ids the shop's own: read back at the end
            let lines = picks
                .iter()
                .flat_map(|(p, _, q)| (0..*q).map(move |_| (String::new(), p.clone(), 1)))
                .collect();
            (made, lines)
        }
        _ => {
            let lines: Vec<Value> = picks
                .iter()
                .map(|(_, code, q)| json!({"sku_code": code, "quantity": q}))
                .collect();
            let made = sim.post(
                "/shein/orders",
                json!({"open_key_id": t.account, "lines": lines, "send": false}),
            );
            // the line ids are in the encrypted event
            let event = shein_event(made["delivery"]["body"].as_str().unwrap_or(""));
            let lines = event["orderGoodsInfoList"]
                .as_array()
                .expect("orderGoodsInfoList")
                .iter()
                .map(|l| {
                    (
                        id_text(&l["orderGoodsId"]),
                        t.product_of(l["skuCode"].as_str().unwrap_or("")),
                        l["quantity"].as_i64().unwrap_or(0),
                    )
                })
                .collect();
            (made, lines)
        }
    };
    let mut o = Order {
        marketplace: t.marketplace,
        tenant: ti,
        id: id_text(&made["event"]["order_id"]),
        lines,
        cancelled: false,
        made_at: unix_now(),
        cancelled_at: None,
    };
    o.lines.sort();
    Some((o, made))
}

/// A SHEIN callback's decrypted event (`eventData=<form-escaped base64>`).
pub(super) fn shein_event(body: &str) -> Value {
    let field = body
        .split('&')
        .find_map(|kv| kv.strip_prefix("eventData="))
        .expect("eventData");
    let mut bytes = Vec::new();
    let raw = field.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' if i + 3 <= raw.len() => {
                let hex = std::str::from_utf8(&raw[i + 1..i + 3]).unwrap_or("");
                bytes.push(u8::from_str_radix(hex, 16).expect("a %-escape"));
                i += 3;
            }
            b'+' => {
                bytes.push(b' ');
                i += 1;
            }
            c => {
                bytes.push(c);
                i += 1;
            }
        }
    }
    let cipher = String::from_utf8(bytes).expect("base64 text");
    let plain = marketplace_signing::shein_decrypt(SHEIN_APP_SECRET, &cipher).expect("decrypt a SHEIN event");
    serde_json::from_str(&plain).expect("a SHEIN event")
}
