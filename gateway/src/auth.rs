//! The dashboard's HTTP basic auth and the metrics bearer token, compared in constant time.

use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Equal in constant time whatever the lengths: the SHA-256 digests are compared.
fn same(given: &[u8], expected: &[u8]) -> bool {
    Sha256::digest(given).ct_eq(&Sha256::digest(expected)).into()
}

/// The value of `Authorization: <scheme> <value>` (scheme case-insensitive).
fn credentials<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (given_scheme, rest) = value.split_once(' ')?;
    given_scheme.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

pub fn basic_ok(headers: &HeaderMap, user: &str, password: &str) -> bool {
    let Some(encoded) = credentials(headers, "Basic") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|&b| b == b':') else {
        return false;
    };
    let (u, p) = (&decoded[..colon], &decoded[colon + 1..]);
    // both compared, always: no early exit tells which one was wrong
    same(u, user.as_bytes()) & same(p, password.as_bytes())
}

pub fn bearer_ok(headers: &HeaderMap, token: &str) -> bool {
    credentials(headers, "Bearer").is_some_and(|t| same(t.as_bytes(), token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn basic_auth_needs_both_user_and_password() {
        let ok = base64::engine::general_purpose::STANDARD.encode("admin:pass:word");
        assert!(basic_ok(&with_auth(&format!("Basic {ok}")), "admin", "pass:word"));
        assert!(basic_ok(&with_auth(&format!("basic {ok}")), "admin", "pass:word"));
        assert!(!basic_ok(&with_auth(&format!("Basic {ok}")), "admin", "pass"));
        assert!(!basic_ok(&with_auth(&format!("Basic {ok}")), "root", "pass:word"));
        assert!(!basic_ok(&with_auth("Basic !!!"), "admin", "pass:word"));
        assert!(!basic_ok(&with_auth(&format!("Bearer {ok}")), "admin", "pass:word"));
        assert!(!basic_ok(&HeaderMap::new(), "admin", "pass:word"));
    }

    #[test]
    fn the_bearer_token_must_match() {
        assert!(bearer_ok(&with_auth("Bearer s3cret-token"), "s3cret-token"));
        assert!(!bearer_ok(&with_auth("Bearer s3cret-toke"), "s3cret-token"));
        assert!(!bearer_ok(&with_auth("s3cret-token"), "s3cret-token"));
    }
}
