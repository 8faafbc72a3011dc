//! integration: keeps EGDC inventory in sync with marketplaces, from inside PostgreSQL.
//!
//! `_PG_init` defines the GUCs, reserves shared memory and registers the background workers
//! when the library is preloaded. See `../shared/design.md` for how the pieces fit.

use pgrx::prelude::*;

pub mod alerts;
pub mod api;
pub mod capture;
pub mod credentials;
pub mod gucs;
pub mod inbound;
pub mod installation;
pub mod keys;
pub mod limits;
pub mod marketplaces;
pub mod operations;
pub mod outbox;
pub mod price_rules;
pub mod push;
pub mod reconcile;
pub mod rules;
pub mod shmem;
pub use marketplace_signing as signing;
pub mod spi_util;
pub mod tokens;
pub mod version;
pub mod worker;

#[cfg(test)]
mod proptests;

pgrx::pg_module_magic!();

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/api.sql", name = "api", finalize);
extension_sql_file!(
    "../sql/operations.sql",
    name = "operations",
    requires = [
        "api",
        histogram_count,
        histogram_add,
        histogram_quantile,
        json_count,
        metrics
    ]
);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Only the postmaster, loading us from shared_preload_libraries, may reserve shared memory,
    // define postmaster settings and register workers.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    gucs::define(preloading);
    if preloading {
        credentials::load_master_key_at_startup();
        shmem::init();
        worker::register_workers();
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    include!("pg_tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'integration'",
            "integ.key_file = '/tmp/integ-pg-test.key'",
            "integ.allowed_hosts = '127.0.0.1'",
        ]
    }
}
