//! The soak's end checks: drift, reconciliation, the ledger against the orders made, and the
//! stock arithmetic.

use super::*;

/// A listing's stock in the sandbox.
pub(super) fn remote_quantity(env: &Env, t: &Tenant, external: &str) -> Option<i64> {
    streams::sandbox_quantity(&env.sim, t.marketplace, external)
}

/// Listings whose sandbox stock is not what EGDC publishes (no stock rules: its stock, and 0 for
/// a stock below 0, which a sale that outran another channel's update leaves): (tenant,
/// marketplace, product, what differs).
pub(super) fn drift(env: &Env, tenants: &[Tenant]) -> Vec<(String, &'static str, String, String)> {
    let egdc: HashMap<(String, String), i64> = env
        .db()
        .query("SELECT tenant_id, sku, qty::bigint FROM inventory", &[])
        .expect("inventory")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let mut out = Vec::new();
    for t in tenants {
        for (product, external) in &t.listings {
            let egdc = egdc.get(&(t.name.clone(), product.clone())).copied();
            let want = egdc.map(|q| q.max(0));
            let got = remote_quantity(env, t, external);
            if want != got {
                let what = format!(
                    "{} {} {product} ({external}): sandbox {got:?}, EGDC {egdc:?}",
                    t.name, t.marketplace
                );
                out.push((t.name.clone(), t.marketplace, product.clone(), what));
            }
        }
    }
    out
}

/// What happened to a product lately, in order (the last 30 events; seconds since the stream
/// started): EGDC's changes, sales and cancellations in the sandbox, the orders applied (and
/// given back), and the listing's sync log; then the listing's row.
pub(super) fn history(
    env: &Env,
    tenants: &[Tenant],
    orders: &[Order],
    tenant: &str,
    product: &str,
    t0: f64,
) -> Vec<String> {
    let mut events: Vec<(f64, String)> = Vec::new();
    for o in orders.iter().filter(|o| tenants[o.tenant].name == tenant) {
        let q: i64 = o.lines.iter().filter(|l| l.1 == product).map(|l| l.2).sum();
        if q == 0 {
            continue;
        }
        events.push((o.made_at, format!("sale in the sandbox: order {} -{q}", o.id)));
        if let Some(at) = o.cancelled_at {
            events.push((at, format!("cancelled in the sandbox: order {} +{q}", o.id)));
        }
    }
    for r in env
        .db()
        .query(
            "SELECT extract(epoch FROM at)::float8, format('EGDC change %s', delta) FROM soak_changes
              WHERE tenant = $1 AND product = $2
             UNION ALL
             SELECT extract(epoch FROM applied_at)::float8, format('order %s applied: -%s (webhook %s)', order_id, quantity, webhook_id)
               FROM integ.order_lines WHERE tenant_id = $1 AND product_id = $2
             UNION ALL
             SELECT extract(epoch FROM cancelled_at)::float8, format('order %s given back: +%s', order_id, quantity)
               FROM integ.order_lines WHERE tenant_id = $1 AND product_id = $2 AND cancelled_at IS NOT NULL
             UNION ALL
             SELECT extract(epoch FROM l.at)::float8,
                    format('log %s %s %s job %s stock %s egdc %s remote %s http %s attempt %s %s', l.id, l.operation, l.outcome,
                           l.job_id, l.stock, l.egdc_stock, l.remote_stock, l.http_status, l.attempt, coalesce(left(l.error, 80), ''))
               FROM integ.sync_log l JOIN integ.listings li ON li.id = l.listing_id
              WHERE li.tenant_id = $1 AND li.product_id = $2",
            &[&tenant, &product],
        )
        .expect("history")
    {
        events.push((r.get(0), r.get(1)));
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let skip = events.len().saturating_sub(30);
    let mut out: Vec<String> = events
        .into_iter()
        .skip(skip)
        .map(|(at, what)| format!("{:>8.3} s {what}", at - t0))
        .collect();
    for r in env
        .db()
        .query(
            "SELECT format('listing %s: desired %s, last pushed %s, remote %s', id, desired_stock, last_pushed_stock, remote_stock)
               FROM integ.listings WHERE tenant_id = $1 AND product_id = $2",
            &[&tenant, &product],
        )
        .expect("listing")
    {
        out.push(r.get(0));
    }
    out
}

/// `integ.reconcile` on every connection: everything checked and in sync, nothing repaired,
/// skipped, in conflict or failed, no missed notification.
pub(super) fn reconcile_all(env: &Env, tenants: &[Tenant]) -> Vec<String> {
    let mut out = Vec::new();
    let mut total = 0;
    let connections = tenants
        .iter()
        .map(|t| (t.name.as_str(), t.marketplace, t.listings.len() as i64))
        .chain([(TENANT, "mercadolibre", 0)]);
    for (tenant, marketplace, listings) in connections {
        let report: Value = match env
            .db()
            .query_one("SELECT integ.reconcile($1, $2)", &[&tenant, &marketplace])
        {
            Ok(r) => r.get(0),
            Err(e) => {
                out.push(format!("{tenant} {marketplace}: reconcile failed: {e}"));
                continue;
            }
        };
        total += report["checked"].as_i64().unwrap_or(0);
        let n = |k: &str| report[k].as_i64().unwrap_or(-1);
        if n("checked") != listings
            || n("in_sync") != listings
            || n("repaired") != 0
            || n("conflicts") != 0
            || n("skipped") != 0
            || n("errors") != 0
            || n("missed_notifications") != 0
        {
            out.push(format!("{tenant} {marketplace}: {report}"));
        }
    }
    println!(
        "SOAK reconcile: {total} listings checked on {} connections",
        tenants.len() + 1
    );
    out
}

/// Reads each TikTok Shop order back (signed `GET /order/202309/orders`, 50 ids a call, with the
/// shop's token) and puts its real line ids in place of the soak's placeholders.
pub(super) fn tiktok_lines(sim: &Sim, tenants: &[Tenant], orders: &mut [Order]) {
    let http = reqwest::blocking::Client::new();
    for (ti, t) in tenants.iter().enumerate().filter(|(_, t)| t.marketplace == "tiktok") {
        let ids: Vec<String> = orders.iter().filter(|o| o.tenant == ti).map(|o| o.id.clone()).collect();
        let mut read: HashMap<String, Value> = HashMap::new();
        for chunk in ids.chunks(50) {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let query: BTreeMap<String, String> = [
                ("app_key", TIKTOK_APP_KEY.to_string()),
                ("timestamp", timestamp.to_string()),
                ("shop_cipher", t.account.clone()),
                ("ids", chunk.join(",")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            let sign = marketplace_signing::tiktok_request(TIKTOK_APP_SECRET, "/order/202309/orders", &query, b"");
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let url = format!(
                "{}/order/202309/orders?{}&sign={sign}",
                sim.base_url("tiktok"),
                q.join("&")
            );
            let answer: Value = http
                .get(&url)
                .header("x-tts-access-token", t.token.as_deref().unwrap_or(""))
                .send()
                .and_then(|r| r.json())
                .expect("TikTok Shop orders");
            let got = answer["data"]["orders"]
                .as_array()
                .unwrap_or_else(|| panic!("TikTok Shop orders of {}: {answer}", t.name));
            for o in got {
                read.insert(id_text(&o["id"]), o.clone());
            }
        }
        for o in orders.iter_mut().filter(|o| o.tenant == ti) {
            let Some(r) = read.get(&o.id) else {
                panic!("TikTok Shop does not know order {} of {}", o.id, t.name);
            };
            assert_eq!(
                r["status"] == "CANCELLED",
                o.cancelled,
                "TikTok Shop order {} status {}",
                o.id,
                r["status"]
            );
            let mut lines: Vec<Line> = r["line_items"]
                .as_array()
                .expect("line_items")
                .iter()
                .map(|l| (id_text(&l["id"]), t.product_of(l["sku_id"].as_str().unwrap_or("")), 1))
                .collect();
            lines.sort();
            let units = |ls: &[Line]| {
                let mut v: Vec<String> = ls.iter().map(|l| l.1.clone()).collect();
                v.sort();
                v
            };
            assert_eq!(
                units(&lines),
                units(&o.lines),
                "TikTok Shop order {}: the units sold",
                o.id
            );
            o.lines = lines;
        }
    }
}

/// `integ.order_lines` against the orders made: per (marketplace, tenant, order) the same lines
/// (id, product, quantity), cancelled exactly when the order was; no order missing, none extra.
pub(super) fn ledger(env: &Env, tenants: &[Tenant], orders: &[Order]) -> Vec<String> {
    type Key = (String, String, String);
    let mut want: BTreeMap<Key, (bool, Vec<Line>)> = BTreeMap::new();
    for o in orders {
        let key = (o.marketplace.to_string(), tenants[o.tenant].name.clone(), o.id.clone());
        want.insert(key, (o.cancelled, o.lines.clone()));
    }
    let mut got: BTreeMap<Key, (Vec<bool>, Vec<Line>)> = BTreeMap::new();
    for r in env
        .db()
        .query(
            "SELECT marketplace, tenant_id, order_id, line_id, product_id, quantity::bigint, cancelled_at IS NOT NULL
               FROM integ.order_lines",
            &[],
        )
        .expect("order lines")
    {
        let e = got.entry((r.get(0), r.get(1), r.get(2))).or_default();
        e.0.push(r.get(6));
        e.1.push((r.get(3), r.get(4), r.get(5)));
    }
    let mut out = Vec::new();
    for (key, (cancelled, lines)) in &want {
        match got.get_mut(key) {
            None => out.push(format!("order {key:?} missing from integ.order_lines")),
            Some((flags, got_lines)) => {
                got_lines.sort();
                if got_lines != lines {
                    out.push(format!("order {key:?}: lines {got_lines:?}, made {lines:?}"));
                }
                if flags.iter().any(|c| c != cancelled) {
                    out.push(format!(
                        "order {key:?}: cancelled {flags:?} in the ledger, cancelled {cancelled} on the marketplace"
                    ));
                }
            }
        }
    }
    for key in got.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("order {key:?} in integ.order_lines was never made"));
    }
    out
}

/// Per product: EGDC's stock = INITIAL + Σ soak_changes.delta - Σ units sold (orders not
/// cancelled), from the soak's own records.
pub(super) fn stock_arithmetic(env: &Env, tenants: &[Tenant], orders: &[Order]) -> Vec<String> {
    let mut sold: HashMap<(String, String), i64> = HashMap::new();
    for o in orders.iter().filter(|o| !o.cancelled) {
        for (_, product, q) in &o.lines {
            *sold
                .entry((tenants[o.tenant].name.clone(), product.clone()))
                .or_default() += q;
        }
    }
    let mut out = Vec::new();
    for r in env
        .db()
        .query(
            "SELECT i.tenant_id, i.sku, i.qty::bigint, coalesce(sum(c.delta), 0)::bigint
               FROM inventory i LEFT JOIN soak_changes c ON c.tenant = i.tenant_id AND c.product = i.sku
              WHERE i.tenant_id <> $1 GROUP BY 1, 2, 3 ORDER BY 1, 2",
            &[&TENANT],
        )
        .expect("stock")
    {
        let (tenant, product, qty, changes): (String, String, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let s = sold.get(&(tenant.clone(), product.clone())).copied().unwrap_or(0);
        let want = INITIAL + changes - s;
        if qty != want {
            out.push(format!(
                "{tenant} {product}: EGDC {qty}, expected {want} ({INITIAL} + {changes} changed - {s} sold)"
            ));
        }
    }
    out
}
