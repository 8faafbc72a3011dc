//! marketplace-signing: every signature the marketplaces use, as pure functions: the connectors sign with them, the
//! webhook verifiers check with them, and `integ.signature` exposes them for support.
//! The worked examples of `../shared/marketplaces.md` are the unit tests.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // new_from_slice accepts keys of any length for HMAC
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Lowercase hex SHA-256 of some bytes (a stable id for deliveries that carry none).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&Sha256::digest(bytes))
}

/// Constant-time comparison of two byte strings (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---- Shopify ---------------------------------------------------------------------------------

/// Standard base64 (with padding).
pub fn base64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// PKCE (RFC 7636) S256: base64url, unpadded, of SHA-256 of the code verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// `X-Shopify-Hmac-Sha256`: base64 of HMAC-SHA256(app secret, raw body).
pub fn shopify_webhook(secret: &str, body: &[u8]) -> String {
    B64.encode(hmac_sha256(secret.as_bytes(), &[body]))
}

/// The OAuth callback `hmac`: drop `hmac` and `signature`, sort by key, join `k=v` with `&`,
/// lowercase hex HMAC-SHA256 with the app secret.
pub fn shopify_oauth(secret: &str, query: &BTreeMap<String, String>) -> String {
    let message = query
        .iter()
        .filter(|(k, _)| k.as_str() != "hmac" && k.as_str() != "signature")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    hex(&hmac_sha256(secret.as_bytes(), &[message.as_bytes()]))
}

// ---- TikTok Shop -----------------------------------------------------------------------------

/// The request `sign` (API 202309): query without `sign` and `access_token`, sorted by key,
/// `{key}{value}` concatenated, prefixed by the path, followed by the raw body, wrapped in the
/// app secret; lowercase hex HMAC-SHA256 keyed with the app secret.
pub fn tiktok_request(app_secret: &str, path: &str, query: &BTreeMap<String, String>, body: &[u8]) -> String {
    let mut message = Vec::with_capacity(app_secret.len() * 2 + path.len() + body.len() + 64);
    message.extend_from_slice(app_secret.as_bytes());
    message.extend_from_slice(path.as_bytes());
    for (k, v) in query {
        if k != "sign" && k != "access_token" {
            message.extend_from_slice(k.as_bytes());
            message.extend_from_slice(v.as_bytes());
        }
    }
    message.extend_from_slice(body);
    message.extend_from_slice(app_secret.as_bytes());
    hex(&hmac_sha256(app_secret.as_bytes(), &[&message]))
}

/// The webhook `Authorization` header: lowercase hex HMAC-SHA256(app secret, app key + raw body).
pub fn tiktok_webhook(app_key: &str, app_secret: &str, body: &[u8]) -> String {
    hex(&hmac_sha256(app_secret.as_bytes(), &[app_key.as_bytes(), body]))
}

// ---- SHEIN -----------------------------------------------------------------------------------

/// Length of SHEIN's random key, the first characters of `x-lt-signature`.
pub const SHEIN_RANDOM_KEY_LEN: usize = 5;

/// `x-lt-signature`: random key + base64 of the lowercase hex HMAC-SHA256, keyed with secret key
/// + random key, of `openKeyId&timestamp&path` (for callbacks: appid and the app secret key).
pub fn shein(open_key_id: &str, secret_key: &str, path: &str, timestamp: &str, random_key: &str) -> String {
    let value = format!("{open_key_id}&{timestamp}&{path}");
    let key = format!("{secret_key}{random_key}");
    let digest_hex = hex(&hmac_sha256(key.as_bytes(), &[value.as_bytes()]));
    format!("{random_key}{}", B64.encode(digest_hex.as_bytes()))
}

/// A fresh random key for `shein` (alphanumeric).
pub fn shein_random_key(rng: &mut impl rand::Rng) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..SHEIN_RANDOM_KEY_LEN)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

const SHEIN_IV: &[u8; 16] = b"space-station-de";

fn shein_key(app_secret_key: &str) -> Result<[u8; 16], String> {
    let b = app_secret_key.as_bytes();
    if b.len() < 16 {
        return Err("the SHEIN app secret key is shorter than 16 characters".into());
    }
    let mut k = [0u8; 16];
    k.copy_from_slice(&b[..16]);
    Ok(k)
}

/// Decrypts SHEIN's AES-128-CBC/PKCS7 base64 (the `secretKey` of get-by-token, callback
/// `eventData`): key = first 16 bytes of the app secret key, IV = `space-station-de`.
pub fn shein_decrypt(app_secret_key: &str, base64_input: &str) -> Result<String, String> {
    let key = shein_key(app_secret_key)?;
    let data = B64
        .decode(base64_input.trim())
        .map_err(|_| "the SHEIN ciphertext is not base64".to_string())?;
    let plain = cbc::Decryptor::<aes::Aes128>::new(&key.into(), SHEIN_IV.into())
        .decrypt_padded_vec_mut::<Pkcs7>(&data)
        .map_err(|_| "the SHEIN ciphertext does not decrypt with this key".to_string())?;
    String::from_utf8(plain).map_err(|_| "the SHEIN plaintext is not UTF-8".to_string())
}

/// The inverse of `shein_decrypt` (the sandbox encrypts with it).
pub fn shein_encrypt(app_secret_key: &str, plain: &str) -> Result<String, String> {
    let key = shein_key(app_secret_key)?;
    let data = cbc::Encryptor::<aes::Aes128>::new(&key.into(), SHEIN_IV.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plain.as_bytes());
    Ok(B64.encode(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn shopify_worked_examples() {
        assert_eq!(
            shopify_webhook("hush", b"\"my secret message\""),
            "hMTq0K2x7oyOjoBwGYeTj5oxfnaVYXzbanUG9aajpKI="
        );
        let q = query(&[
            ("code", "a94a110d86d2452eb3e2af4cfb8a3828"),
            ("shop", "some-shop.myshopify.com"),
            ("timestamp", "1337178173"),
            ("hmac", "ignored"),
            ("signature", "ignored too"),
        ]);
        assert_eq!(
            shopify_oauth("hush", &q),
            "2cb1a277650a659f1b11e92a4a64275b128e037f2c3390e3c8fd2d8721dac9e2"
        );
    }

    #[test]
    fn tiktok_worked_example_and_exclusions() {
        let q = query(&[("foo", "bar")]);
        let sign = tiktok_request("app_secret", "/test-api", &q, b"");
        assert_eq!(sign, "d3cb7fe11ecae942802ceeca67e7cf10120cc12f1517d45fbc1c8cfe5413c80f");
        // sign and access_token never take part
        let with = query(&[("foo", "bar"), ("sign", "x"), ("access_token", "y")]);
        assert_eq!(tiktok_request("app_secret", "/test-api", &with, b""), sign);
        // the body does, byte for byte
        assert_ne!(tiktok_request("app_secret", "/test-api", &q, b"{}"), sign);
        assert_ne!(
            tiktok_request("app_secret", "/test-api", &q, b"{ }"),
            tiktok_request("app_secret", "/test-api", &q, b"{}")
        );
        assert_eq!(tiktok_webhook("k", "s", b"body").len(), 64);
        assert_ne!(tiktok_webhook("k", "s", b"body"), tiktok_webhook("k2", "s", b"body"));
    }

    #[test]
    fn shein_worked_examples() {
        assert_eq!(
            shein(
                "B96C15416C9240DF96BAA0BC9B367C6D",
                "6BEC9C4B668B4B14B17EEF106BB98AE5",
                "/open-api/order/purchase-order-info",
                "1740709414000",
                "test1"
            ),
            "test1ZDZjYTJjNzg5ZjUzMDdkZTU2N2Y3NzcxN2ZjZjA5OGIxMTRhZWI0MTU1MzQxNjZlNjFkMGQxOTJiYTk1YWNjYQ=="
        );
        assert_eq!(
            shein_decrypt(
                "698E4F20DFBA4B85B2291C2BCB7381C5",
                "Um6W8uVjabRyt5zJI3hw/38ke8dvUq1o6Vkk1f/Gzjt+sWGeUpYBIFTk7/xVHhJy"
            )
            .unwrap(),
            "E547DCB619824189AD3A532546AE37F9"
        );
        let c = shein_encrypt("698E4F20DFBA4B85B2291C2BCB7381C5", "hello").unwrap();
        assert_eq!(shein_decrypt("698E4F20DFBA4B85B2291C2BCB7381C5", &c).unwrap(), "hello");
        let mut rng = rand::thread_rng();
        assert_eq!(shein_random_key(&mut rng).len(), SHEIN_RANDOM_KEY_LEN);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(shein_decrypt("short", "AAAA").is_err());
        assert!(shein_decrypt("698E4F20DFBA4B85B2291C2BCB7381C5", "not base64!").is_err());
        assert!(shein_decrypt("698E4F20DFBA4B85B2291C2BCB7381C5", "AAAAAAAAAAAAAAAAAAAAAA==").is_err());
        assert!(shein_decrypt(
            "0000000000000000",
            "Um6W8uVjabRyt5zJI3hw/38ke8dvUq1o6Vkk1f/Gzjt+sWGeUpYBIFTk7/xVHhJy"
        )
        .is_err());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn pkce_rfc7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
