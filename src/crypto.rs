//! The crypto of hookflow, in one place and on well-kept crates (RustCrypto's `sha2` and `hmac`,
//! `subtle`): key digests and their constant-time check (admin keys, inbound keys), and
//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the `webhook-id`,
//! `webhook-timestamp` and `webhook-signature` headers, `v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`.

use base64::Engine;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// HMAC-SHA256 of the concatenation of `msg` with `key` (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[&[u8]]) -> [u8; 32] {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in msg {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The `webhook-signature` value for one delivery.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mac = hmac_sha256(secret, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac))
}

/// A `webhook-id` that is the same for every attempt (and a replay) of one output and differs
/// between outputs: derived from the session, the output's Seq and its body (which carries the
/// input's unique traceId).
pub fn webhook_id(endpoint: &str, user: &str, session: &str, seq: i64, body: &str) -> String {
    let mut h = Sha256::new();
    for part in [endpoint.as_bytes(), user.as_bytes(), session.as_bytes(), seq.to_string().as_bytes(), body.as_bytes()]
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    format!("msg_{}", crate::util::hex(&h.finalize()[..16]))
}

/// sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What to do with a key given in plain text: we store only digests, so a leaked config file
/// does not leak the keys.
const PLAIN_KEY_HINT: &str = "expected \"sha256:\" followed by 64 hex digits (the digest of a \
     key, never the key itself); run \"hookflow keygen\" and put the \"sha256:...\" form it \
     prints here";

/// Parses `sha256:<64 hex digits>` (either case) into the digest; otherwise a message saying
/// what would be right (without echoing the value, which may be a plain key).
pub fn parse_key_digest(s: &str) -> Result<[u8; 32], String> {
    let hex = s.strip_prefix("sha256:").ok_or(PLAIN_KEY_HINT)?;
    if hex.len() != 64 {
        return Err(format!("expected 64 hex digits after \"sha256:\", got {} characters", hex.chars().count()));
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let (Some(high), Some(low)) = (hex_value(pair[0]), hex_value(pair[1])) else {
            return Err("expected only hex digits (0-9, a-f) after \"sha256:\"".into());
        };
        *byte = high << 4 | low;
    }
    Ok(digest)
}

/// Whether sha256(`presented`) equals any of `digests`.
///
/// Every digest is compared in full, with no early exit on a mismatch, so timing tells nothing
/// about how close a guess was.
pub fn key_matches(presented: &str, digests: &[[u8; 32]]) -> bool {
    let got = sha256(presented.as_bytes());
    let mut found = subtle::Choice::from(0);
    for want in digests {
        found |= got.ct_eq(want);
    }
    found.into()
}

/// Equality without an early exit on the first differing byte (lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(crate::util::hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks specification's reference libraries.
        let secret = base64::engine::general_purpose::STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn webhook_ids_are_stable_and_distinct() {
        let a = webhook_id("e", "u", "s", 1, "{}");
        assert_eq!(a, webhook_id("e", "u", "s", 1, "{}"));
        assert_ne!(a, webhook_id("e", "u", "s", 2, "{}"));
        assert_ne!(a, webhook_id("e", "us", "", 1, "{}"));
        assert!(a.starts_with("msg_") && a.len() == 36);
    }
}
