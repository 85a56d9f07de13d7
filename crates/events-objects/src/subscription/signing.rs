//! Standard Webhooks signing secrets and signatures.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use events_core::{ApiError, ErrorCode};
use events_runtime::{Host, ObjectContext, ObjectResult};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;

/// The key bytes of a `whsec_` secret.
pub fn secret_key(secret: &str) -> ObjectResult<Vec<u8>> {
    let bad = || ApiError::new(ErrorCode::InvalidConfig, "secret must be whsec_ followed by 16-64 base64 bytes");
    let key = B64.decode(secret.strip_prefix(SECRET_PREFIX).ok_or_else(bad)?).map_err(|_| bad())?;
    if !SECRET_BYTES_RANGE.contains(&key.len()) {
        return Err(bad());
    }
    Ok(key)
}

/// The Standard Webhooks signature `v1,<base64>` of one message.
pub fn sign(key: &[u8], msg_id: &str, timestamp_s: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key size");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

impl Subscriptions {
    pub(super) fn new_secret<H: Host>(cx: &ObjectContext<H>) -> String {
        let mut bytes = Vec::with_capacity(SECRET_BYTES);
        while bytes.len() < SECRET_BYTES {
            bytes.extend_from_slice(&cx.host().random().to_le_bytes());
        }
        bytes.truncate(SECRET_BYTES);
        format!("{SECRET_PREFIX}{}", B64.encode(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // Example of the Standard Webhooks specification.
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_validated() {
        assert!(secret_key("nope").is_err());
        assert!(secret_key("whsec_!!!").is_err());
        assert!(secret_key("whsec_AAAA").is_err());
    }
}
