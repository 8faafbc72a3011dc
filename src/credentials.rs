//! Credentials at rest: one pgcrypto-encrypted JSON document of secrets per connection, under a
//! master key (version 1 read from `integ.key_file` at server start; later versions from
//! `integ.rotate_key`, see `keys`). The key reaches pgcrypto only as a
//! bound SPI parameter; decrypted credentials are cached per process by generation.

use crate::marketplaces::Credentials;
use crate::spi_util::{fail, OrRaise};
use parking_lot::Mutex;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Keys shorter than this are refused: they would be guessable.
const MIN_KEY_LEN: usize = 16;

/// Only a successfully read key is kept; a missing one is looked for again on next use.
static MASTER_KEY: OnceLock<String> = OnceLock::new();

fn read_key_file() -> Result<String, String> {
    let path = crate::gucs::key_file()
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| {
            "no credential master key: set integ.key_file in postgresql.conf to a file holding the key and restart the server".to_string()
        })?;
    let raw = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read the credential master key file named by integ.key_file: {}",
            e.kind()
        )
    })?;
    let key = raw.trim().to_string();
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "the credential master key in integ.key_file must be at least {MIN_KEY_LEN} characters"
        ));
    }
    Ok(key)
}

/// Called from `_PG_init` in the postmaster: every process forked later inherits the key.
pub fn load_master_key_at_startup() {
    match read_key_file() {
        Ok(k) => {
            let _ = MASTER_KEY.set(k);
        }
        // The message names the problem, never the key.
        Err(e) => pgrx::log!("integration: {e}"),
    }
}

/// Raises the clear "no master key" error now, before anything is written.
pub fn require_master_key() {
    let _ = crate::keys::key(crate::keys::current_version());
}

/// The version-1 master key, from `integ.key_file`.
pub fn startup_key() -> &'static str {
    if let Some(k) = MASTER_KEY.get() {
        return k.as_str();
    }
    match read_key_file() {
        Ok(k) => MASTER_KEY.get_or_init(|| k).as_str(),
        Err(e) => fail(PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR, e),
    }
}

/// The schema pgcrypto lives in, quoted, so calls do not depend on search_path.
fn pgcrypto_schema() -> String {
    Spi::get_one::<String>(
        "SELECT quote_ident(n.nspname) FROM pg_catalog.pg_extension e \
         JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'",
    )
    .or_raise("looking up pgcrypto")
    .unwrap_or_else(|| {
        fail(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            "integration needs the pgcrypto extension",
        )
    })
}

/// Encrypts under the current master key version; the blob says which.
pub fn encrypt_bytes(plain: &[u8]) -> Vec<u8> {
    let version = crate::keys::current_version();
    let key = crate::keys::key(version);
    let sql = format!(
        "SELECT {}.pgp_sym_encrypt_bytea($1, $2, 'cipher-algo=aes256, compress-algo=0')",
        pgcrypto_schema()
    );
    let message = Spi::get_one_with_args::<Vec<u8>>(&sql, &[plain.to_vec().into(), key.into()])
        .or_raise("encrypting secrets")
        .unwrap_or_else(|| {
            fail(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "encrypting secrets returned nothing",
            )
        });
    crate::keys::seal(version, message)
}

/// Decrypts with the master key version the blob names. A wrong key is pgcrypto's clear
/// "Wrong key or corrupt data" (its integrity check), never garbage.
pub fn decrypt_bytes(blob: &[u8]) -> Vec<u8> {
    let (version, message) = crate::keys::split(blob);
    let key = crate::keys::key(version);
    let sql = format!("SELECT {}.pgp_sym_decrypt_bytea($1, $2)", pgcrypto_schema());
    Spi::get_one_with_args::<Vec<u8>>(&sql, &[message.to_vec().into(), key.into()])
        .or_raise(&format!("decrypting secrets with master key version {version}"))
        .unwrap_or_default()
}

pub fn encrypt(secrets: &Map<String, Value>) -> Vec<u8> {
    encrypt_bytes(Value::Object(secrets.clone()).to_string().as_bytes())
}

pub fn decrypt(cipher: Vec<u8>) -> Map<String, Value> {
    match serde_json::from_slice::<Value>(&decrypt_bytes(&cipher)) {
        Ok(Value::Object(m)) => m,
        _ => fail(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            "stored credentials are not a JSON object",
        ),
    }
}

/// Insert or replace a connection's credentials; bumps the generation.
pub fn store(connection_id: i64, tenant: &str, marketplace: &str, creds: &Credentials) {
    let cipher = encrypt(&creds.secrets);
    let identifiers = pgrx::JsonB(Value::Object(creds.identifiers.clone()));
    Spi::run_with_args(
        "INSERT INTO integ.credential_store AS c (connection_id, tenant_id, marketplace, identifiers, secrets, access_expires_at,
                                                  updated_at, key_version)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), now(), $7)
         ON CONFLICT (connection_id) DO UPDATE
            SET identifiers = EXCLUDED.identifiers, secrets = EXCLUDED.secrets,
                access_expires_at = EXCLUDED.access_expires_at, generation = c.generation + 1,
                updated_at = now(), key_version = EXCLUDED.key_version",
        &[
            connection_id.into(),
            tenant.into(),
            marketplace.into(),
            identifiers.into(),
            cipher.clone().into(),
            creds.expires_in.map(|s| s as f64).into(),
            (crate::keys::split(&cipher).0 as i32).into(),
        ],
    )
    .or_raise("storing credentials");
    cache_remove(connection_id);
}

/// Credentials as the pushing code needs them.
#[derive(Clone)]
pub struct Loaded {
    pub marketplace: String,
    pub generation: i64,
    pub creds: Credentials,
    /// Seconds from now until the access token expires (negative: expired); None: unknown.
    pub expires_in_s: Option<f64>,
}

impl Loaded {
    pub fn access_token(&self) -> Option<&str> {
        self.creds.secret("access_token")
    }
    /// Credentials we may sign with now: permanent keys (SHEIN), or an access token that is not
    /// about to expire (unknown expiry counts as usable until a 401 says not).
    pub fn usable(&self) -> bool {
        let permanent_keys = self
            .marketplace
            .parse::<crate::marketplaces::Marketplace>()
            .ok()
            .and_then(|m| crate::marketplaces::connector(m).ok())
            .is_some_and(|c| !c.refreshes_tokens());
        permanent_keys || (self.access_token().is_some() && self.expires_in_s.is_none_or(|s| s > 60.0))
    }
}

/// Decrypted credentials by connection id, with their generation; both repeat across
/// installations, so `crate::installation::check` empties this when the installation changes.
static CACHE: Mutex<Option<HashMap<i64, (i64, Credentials)>>> = Mutex::new(None);

pub fn forget_cached() {
    *CACHE.lock() = None;
}

/// Load (and decrypt, unless this process already holds that generation) a connection's
/// credentials. None when the connection has none.
pub fn load(connection_id: i64) -> Option<Loaded> {
    crate::installation::check();
    // One statement for the generation and the secrets: read apart, a refresh committed in
    // between (another backend's) left the second read empty.
    let row = crate::spi_util::run_kept(
        "SELECT generation, extract(epoch FROM access_expires_at - now())::float8, marketplace,
                identifiers, secrets
           FROM integ.credential_store WHERE connection_id = $1",
        &[connection_id.into()],
        |t| {
            if t.is_empty() {
                return Ok(None);
            }
            let t = t.first();
            let generation = t.get::<i64>(1)?.unwrap_or(0);
            let expires_in_s = t.get::<f64>(2)?;
            let marketplace = t.get::<String>(3)?.unwrap_or_default();
            let cached = CACHE
                .lock()
                .get_or_insert_with(HashMap::new)
                .get(&connection_id)
                .filter(|(g, _)| *g == generation)
                .map(|(_, c)| c.clone());
            // the encrypted secrets are only copied out when this process must decrypt them
            let sealed = match cached {
                Some(c) => Ok(c),
                None => Err((t.get::<pgrx::JsonB>(4)?, t.get::<Vec<u8>>(5)?)),
            };
            Ok(Some((generation, expires_in_s, marketplace, sealed)))
        },
    )
    .or_raise("reading credentials")?;
    let (generation, expires_in_s, marketplace, sealed) = row;
    let (identifiers, cipher) = match sealed {
        Ok(creds) => {
            return Some(Loaded {
                marketplace,
                generation,
                creds,
                expires_in_s,
            })
        }
        Err(sealed) => sealed,
    };
    let identifiers = match identifiers.map(|j| j.0) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let secrets = decrypt(cipher.unwrap_or_default());
    let creds = Credentials {
        identifiers,
        secrets,
        expires_in: None,
    };
    CACHE
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(connection_id, (generation, creds.clone()));
    Some(Loaded {
        marketplace,
        generation,
        creds,
        expires_in_s,
    })
}

/// Replace the tokens after a refresh. The rotated refresh token is stored in the same
/// statement as the access token, before anyone uses either.
pub fn store_refreshed(
    connection_id: i64,
    mut creds: Credentials,
    grant: &crate::marketplaces::TokenGrant,
) -> Credentials {
    creds
        .secrets
        .insert("access_token".into(), grant.access_token.clone().into());
    if let Some(r) = &grant.refresh_token {
        creds.secrets.insert("refresh_token".into(), r.clone().into());
    }
    let cipher = encrypt(&creds.secrets);
    Spi::run_with_args(
        "UPDATE integ.credential_store
            SET secrets = $2, access_expires_at = now() + make_interval(secs => $3),
                generation = generation + 1, refreshed_at = now(), updated_at = now(), key_version = $4
          WHERE connection_id = $1",
        &[
            connection_id.into(),
            cipher.clone().into(),
            grant.expires_in.map(|s| s as f64).into(),
            (crate::keys::split(&cipher).0 as i32).into(),
        ],
    )
    .or_raise("storing refreshed credentials");
    cache_remove(connection_id);
    creds
}

pub fn forget(connection_id: i64) {
    cache_remove(connection_id);
}

fn cache_remove(connection_id: i64) {
    if let Some(m) = CACHE.lock().as_mut() {
        m.remove(&connection_id);
    }
}
