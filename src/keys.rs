//! Master key versions. Version 1 is the key in `integ.key_file` (read at server start); each
//! `integ.rotate_key(new_key_file)` adds the next version, recorded in `integ.master_keys` as the
//! file's path and a fingerprint (never the key), and re-encrypts every secret under it in one
//! transaction. A process meeting a version it has not loaded reads that file then, so rotation
//! needs no restart. Every encrypted blob says its version: blobs of version 2 and later start
//! with `IKv` and the version (4 bytes, big endian); older blobs are version 1.

use crate::spi_util::{fail, first, OrRaise};
use parking_lot::Mutex;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::collections::HashMap;

const MAGIC: &[u8] = b"IKv";
pub const MIN_KEY_LEN: usize = 16;

/// Keys of versions 2 and later by version, as `integ.master_keys` named them; a re-created
/// extension numbers its versions again (see `crate::installation`).
static LOADED: Mutex<Option<HashMap<u32, String>>> = Mutex::new(None);

pub fn forget_loaded() {
    *LOADED.lock() = None;
}

/// What a fingerprint is made of: not the key, and not a plain hash of it either.
pub fn fingerprint(key: &str) -> String {
    crate::signing::sha256_hex(format!("integ-master-key-fingerprint\n{key}").as_bytes())
}

/// The version a blob was encrypted under, and the pgcrypto message itself.
pub fn split(blob: &[u8]) -> (u32, &[u8]) {
    if blob.len() > MAGIC.len() + 4 && blob.starts_with(MAGIC) {
        let mut v = [0u8; 4];
        v.copy_from_slice(&blob[MAGIC.len()..MAGIC.len() + 4]);
        (u32::from_be_bytes(v), &blob[MAGIC.len() + 4..])
    } else {
        (1, blob)
    }
}

pub fn seal(version: u32, message: Vec<u8>) -> Vec<u8> {
    if version <= 1 {
        return message;
    }
    let mut out = Vec::with_capacity(message.len() + 7);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend(message);
    out
}

/// The version new secrets are encrypted under.
pub fn current_version() -> u32 {
    first::<i32>("SELECT max(version) FROM integ.master_keys", &[]).map_or(1, |v| v.max(1) as u32)
}

/// Reads and checks a key file (the message names the problem, never the key).
pub fn read_key(path: &str) -> Result<String, String> {
    let raw = std::fs::read_to_string(path).map_err(|e| format!("cannot read the key file {path}: {}", e.kind()))?;
    let key = raw.trim().to_string();
    if key.len() < MIN_KEY_LEN {
        return Err(format!("the key in {path} must be at least {MIN_KEY_LEN} characters"));
    }
    Ok(key)
}

/// The key of `version` (version 1: `integ.key_file`).
pub fn key(version: u32) -> String {
    if version <= 1 {
        return crate::credentials::startup_key().to_string();
    }
    crate::installation::check();
    if let Some(k) = LOADED.lock().get_or_insert_with(HashMap::new).get(&version) {
        return k.clone();
    }
    let row = Spi::connect(|c| {
        let t = c.select(
            "SELECT key_file, fingerprint FROM integ.master_keys WHERE version = $1",
            None,
            &[(version as i32).into()],
        )?;
        if t.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        let t = t.first();
        Ok(Some((
            t.get::<String>(1)?.unwrap_or_default(),
            t.get::<String>(2)?.unwrap_or_default(),
        )))
    })
    .or_raise("reading the master key versions");
    let Some((path, print)) = row else {
        fail(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("secrets are encrypted under master key version {version}, which integ.master_keys does not know"),
        );
    };
    let k = read_key(&path).unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR, e));
    if fingerprint(&k) != print {
        fail(
            PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
            format!("the key file {path} no longer holds master key version {version}: restore it"),
        );
    }
    LOADED
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(version, k.clone());
    k
}

#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn rotate_key(new_key_file: &str) -> pgrx::JsonB {
    // reading a server file is a superuser's power
    if !unsafe { pg_sys::superuser_arg(pg_sys::GetOuterUserId()) } {
        fail(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "permission denied: integ.rotate_key reads a server file and needs a superuser",
        );
    }
    let new = read_key(new_key_file).unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR, e));
    // writers of secrets wait until the rotation commits
    Spi::run("LOCK TABLE integ.credential_store, integ.apps, integ.authorizations IN SHARE ROW EXCLUSIVE MODE")
        .or_raise("locking the secrets");
    let old_version = current_version();
    if key(old_version) == new {
        crate::spi_util::invalid("the new key is the current key");
    }
    let version = old_version + 1;
    Spi::run_with_args(
        "INSERT INTO integ.master_keys (version, key_file, fingerprint) VALUES ($1, $2, $3)",
        &[(version as i32).into(), new_key_file.into(), fingerprint(&new).into()],
    )
    .or_raise("recording the new master key");
    LOADED.lock().get_or_insert_with(HashMap::new).insert(version, new);
    let mut counts = serde_json::Map::new();
    for (table, column, key_col, extra) in [
        (
            "credential_store",
            "secrets",
            "connection_id::text",
            ", key_version = $3, generation = generation + 1",
        ),
        ("apps", "secrets", "marketplace", ", key_version = $3"),
        ("authorizations", "code_verifier", "state_sha256", ""),
    ] {
        let rows: Vec<(String, Vec<u8>)> = Spi::connect(|c| {
            c.select(
                &format!("SELECT {key_col}, {column} FROM integ.{table} WHERE {column} IS NOT NULL"),
                None,
                &[],
            )?
            .map(|r| {
                Ok((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<Vec<u8>>(2)?.unwrap_or_default(),
                ))
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .or_raise("reading secrets to re-encrypt");
        for (id, blob) in &rows {
            let plain = crate::credentials::decrypt_bytes(blob);
            let sealed = crate::credentials::encrypt_bytes(&plain);
            Spi::run_with_args(
                &format!("UPDATE integ.{table} SET {column} = $2{extra} WHERE {key_col} = $1"),
                &[id.as_str().into(), sealed.into(), (version as i32).into()],
            )
            .or_raise("re-encrypting secrets");
        }
        counts.insert(table.to_string(), serde_json::json!(rows.len()));
    }
    counts.insert("version".into(), serde_json::json!(version));
    pgrx::JsonB(serde_json::Value::Object(counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_say_their_version() {
        let m = vec![0xC3, 0x0D, 1, 2, 3];
        assert_eq!(split(&m), (1, &m[..]));
        let s = seal(7, m.clone());
        assert_eq!(split(&s), (7, &m[..]));
        assert_eq!(seal(1, m.clone()), m);
        assert_ne!(fingerprint("a-key-of-sixteen!"), fingerprint("a-key-of-sixteen?"));
        assert!(!fingerprint("a-key-of-sixteen!").contains("sixteen"));
    }
}
