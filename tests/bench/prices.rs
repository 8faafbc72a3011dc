//! Price throughput (`bench/run prices`): the stock throughput benchmark's 100 tenants x 100
//! MercadoLibre listings, each product's price tracked; one UPDATE changes every stock, then one
//! UPDATE changes every price, in the same run. Goal: price pushes/s at least 80% of stock
//! pushes/s. Every write is counted by the sandbox (stock writes, price writes).

use crate::{env_number, measure_pushes, throughput_env};

pub fn throughput() {
    let (env, total) = throughput_env(
        "bench-prices",
        "CREATE TABLE prices (tenant_id text, sku text, price numeric(12,2), PRIMARY KEY (tenant_id, sku));
         INSERT INTO prices SELECT tenant_id, sku, 100.00 FROM inventory;
         SELECT integ.track_prices('prices', 'tenant_id', 'sku', 'price');",
    );
    let rounds: usize = env_number("BENCH_PRICE_ROUNDS", 3);
    if std::env::var_os("BENCH_PRICE_PROBE").is_some() {
        // where the time goes: capture applied, jobs claimed, pushes done
        let start = std::time::Instant::now();
        env.db().batch_execute("UPDATE prices SET price = 99.00").unwrap();
        let mut marks = Vec::new();
        loop {
            let applied = env.scalar_i64("SELECT count(*) FROM integ.listings WHERE desired_price = 99.00");
            let done = env.scalar_i64("SELECT count(*) FROM integ.listings WHERE last_pushed_price = 99.00");
            let pending = env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'pending'");
            let flight = env.scalar_i64("SELECT count(*) FROM integ.sync_jobs WHERE state = 'in_flight'");
            marks.push(format!(
                "{:.2}s applied {applied} pending {pending} in_flight {flight} done {done}",
                start.elapsed().as_secs_f64()
            ));
            if done >= total as i64 || start.elapsed().as_secs() > 60 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        println!("BENCH prices probe:\n{}", marks.join("\n"));
        println!(
            "BENCH prices probe latency: {}",
            env.scalar_text(
                "SELECT string_agg(operation || ' avg ' || round(avg::numeric, 1) || ' ms, max ' || round(max::numeric, 1) || ' ms, n ' || n, '; ')
                   FROM (SELECT operation, avg(latency_ms) avg, max(latency_ms) max, count(*) n FROM integ.sync_log
                          WHERE operation IN ('push', 'price') GROUP BY operation) x"
            )
        );
        env.wait_idle(60, "the probe's pushes");
    }
    let (mut stock, mut price) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let s = measure_pushes(
            &env,
            "mercadolibre stock writes",
            &format!("UPDATE inventory SET qty = {}", 10 + round),
            total,
        );
        let p = measure_pushes(
            &env,
            "mercadolibre price writes",
            &format!("UPDATE prices SET price = {}.00", 120 + round),
            total,
        );
        println!(
            "BENCH prices round {round}: stock {:.0} pushes/s ({} logged, first at {:.2} s), price {:.0} pushes/s ({} logged, first at {:.2} s), worker CPU {:.1} / {:.1} s",
            s.per_second(total),
            s.logged,
            s.first_push,
            p.per_second(total),
            p.logged,
            p.first_push,
            s.cpu,
            p.cpu
        );
        stock.push(s.per_second(total));
        price.push(p.per_second(total));
    }
    // every listing ends with its product's last price, published
    let wrong = env.scalar_i64(
        "SELECT count(*) FROM integ.listings l JOIN prices p ON p.tenant_id = l.tenant_id AND p.sku = l.product_id
          WHERE l.last_pushed_price IS DISTINCT FROM p.price",
    );
    assert_eq!(wrong, 0, "listings whose published price is not their product's last");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "BENCH prices: {total} listings, 20 ms per call: stock {:.0} pushes/s, price {:.0} pushes/s = {:.1}% (goal >= 80%); rounds stock {stock:.0?} price {price:.0?}",
        mean(&stock),
        mean(&price),
        mean(&price) / mean(&stock) * 100.0
    );
}
