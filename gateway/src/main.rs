//! `integ-gateway`: the integration extension's HTTP edge (see gateway/README.md).

mod auth;
mod charts;
mod config;
mod connect_token;
mod db;
mod receiving;
mod routes;

use clap::Parser;
use routes::{AppState, Shared};
use std::process::ExitCode;
use std::sync::Arc;

pub fn now_rfc3339() -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("{} shutting down: finishing requests in flight", now_rfc3339());
}

async fn run(mut config: config::Config) -> Result<(), String> {
    config.validate()?;
    let pool = db::pool(&config)?;
    // never as a superuser: row-level security and the extension's role checks would not apply
    let superuser: bool = db::one(&pool, db::IS_SUPERUSER, &[])
        .await
        .map_err(|e| format!("cannot query the database ({}): check --dsn", e.code()))?;
    if superuser {
        return Err("the database role is a superuser: connect as a role granted integ_application and integ_operator (see gateway/README.md)".into());
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let receiver = receiving::Receiver::start(pool.clone(), config.webhook_concurrency, config.webhook_batch);
    let state: Shared = Arc::new(AppState {
        config,
        pool,
        receiver,
        templates: routes::dashboard::templates()?,
        webhook_limit: Default::default(),
    });
    eprintln!("{} integ-gateway listening on http://{addr}", now_rfc3339());
    axum::serve(listener, routes::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))
}

fn main() -> ExitCode {
    let config = config::Config::parse();
    let runtime = match config.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("integ-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("integ-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
