//! The short-lived token a /connect link carries, minted by the EGDC application with the
//! gateway's secret: `<expiry>.<mac>`, where expiry is unix seconds and mac the lowercase hex
//! HMAC-SHA256 of "tenant|marketplace|expiry". It proves EGDC sent this tenant to connect this
//! marketplace, recently; the gateway keeps nothing to check it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Tokens further ahead than this are refused: a leaked link must not work for long.
pub const MAX_LIFETIME_S: u64 = 600;

#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Expired,
    TooFarAhead,
    Forged,
}

fn mac(secret: &[u8], tenant: &str, marketplace: &str, expiry: u64) -> Hmac<Sha256> {
    // new_from_slice accepts a key of any length
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(format!("{tenant}|{marketplace}|{expiry}").as_bytes());
    m
}

/// What the EGDC application does (see gateway/README.md for the SQL one-liner).
#[cfg(test)]
pub fn mint(secret: &[u8], tenant: &str, marketplace: &str, expiry: u64) -> String {
    let tag = mac(secret, tenant, marketplace, expiry).finalize().into_bytes();
    format!("{expiry}.{}", hex::encode(tag))
}

pub fn verify(secret: &[u8], tenant: &str, marketplace: &str, token: &str, now: u64) -> Result<(), TokenError> {
    let (expiry, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
    if expiry.is_empty() || expiry.len() > 12 || !expiry.bytes().all(|b| b.is_ascii_digit()) || tag.len() != 64 {
        return Err(TokenError::Malformed);
    }
    let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    let tag = hex::decode(tag).map_err(|_| TokenError::Malformed)?;
    // the signature first: an expiry is only worth judging once it is known to be EGDC's
    mac(secret, tenant, marketplace, expiry)
        .verify_slice(&tag)
        .map_err(|_| TokenError::Forged)?;
    if expiry < now {
        return Err(TokenError::Expired);
    }
    if expiry > now + MAX_LIFETIME_S {
        return Err(TokenError::TooFarAhead);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a-connect-secret-of-at-least-32-characters";

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let t = mint(SECRET, "acme", "shopify", 1_000_300);
        assert_eq!(verify(SECRET, "acme", "shopify", &t, 1_000_000), Ok(()));
        assert_eq!(verify(SECRET, "acme", "shopify", &t, 1_000_300), Ok(()));
        assert_eq!(
            verify(SECRET, "acme", "shopify", &t, 1_000_301),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn another_tenant_marketplace_secret_or_expiry_is_forged() {
        let t = mint(SECRET, "acme", "shopify", 1_000_300);
        assert_eq!(
            verify(SECRET, "other", "shopify", &t, 1_000_000),
            Err(TokenError::Forged)
        );
        assert_eq!(verify(SECRET, "acme", "tiktok", &t, 1_000_000), Err(TokenError::Forged));
        assert_eq!(
            verify(b"another-secret", "acme", "shopify", &t, 1_000_000),
            Err(TokenError::Forged)
        );
        let later = t.replacen("1000300", "1000400", 1);
        assert_eq!(
            verify(SECRET, "acme", "shopify", &later, 1_000_000),
            Err(TokenError::Forged)
        );
    }

    #[test]
    fn a_token_valid_for_too_long_is_refused() {
        let t = mint(SECRET, "acme", "shopify", 1_000_000 + MAX_LIFETIME_S + 1);
        assert_eq!(
            verify(SECRET, "acme", "shopify", &t, 1_000_000),
            Err(TokenError::TooFarAhead)
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for t in [
            "",
            ".",
            "123",
            "abc.def",
            "1.zz",
            &format!("1.{}", "g".repeat(64)),
            &format!("-1.{}", "0".repeat(64)),
        ] {
            assert_eq!(
                verify(SECRET, "acme", "shopify", t, 0),
                Err(TokenError::Malformed),
                "{t}"
            );
        }
    }
}
