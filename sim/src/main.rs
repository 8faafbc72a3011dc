//! marketplace-sim: emulates the marketplaces' APIs on loopback for tests, benchmarks and the
//! demo. See sim/README.md for the CLI and the admin API.

// Handlers return `Result<_, Response>` to answer early with the marketplace's error shape.
#![allow(clippy::result_large_err)]

mod admin;
mod authorize;
mod catalog_rule;
mod faults;
mod mercadolibre;
mod mercadolibre_catalog;
mod mercadolibre_notifications;
mod shein;
mod shein_catalog;
mod shein_orders;
mod shein_prices;
mod shopify;
mod shopify_catalog;
mod shopify_prices;
mod shopify_privacy;
mod shopify_webhooks;
mod state;
mod tiktok;
mod tiktok_catalog;
mod tiktok_orders;
mod tiktok_prices;
mod tiktok_webhooks;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

fn usage() -> ! {
    eprintln!("usage: marketplace-sim [--listen 127.0.0.1:8700] [--addr-file PATH]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 8700).into();
    let mut addr_file: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| usage()),
            "--addr-file" => addr_file = Some(args.next().unwrap_or_else(|| usage())),
            "-h" | "--help" => usage(),
            _ => usage(),
        }
    }
    let state = Arc::new(state::State::default());
    let app = axum::Router::new()
        .nest("/mercadolibre", mercadolibre::router())
        .nest("/shein", shein::router())
        .nest("/shopify", shopify::router())
        .nest("/tiktok", tiktok::router())
        .layer(axum::middleware::from_fn_with_state(state.clone(), faults::inject))
        .nest("/_admin", admin::router())
        .with_state(state);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("marketplace-sim: cannot listen on {listen}: {e}");
            std::process::exit(1)
        }
    };
    let bound = listener.local_addr().unwrap_or(listen);
    if let Some(path) = addr_file {
        if let Err(e) = std::fs::write(&path, bound.to_string()) {
            eprintln!("marketplace-sim: cannot write {path}: {e}");
            std::process::exit(1)
        }
    }
    println!("marketplace-sim listening on http://{bound}");
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("marketplace-sim: {e}");
        std::process::exit(1)
    }
}
