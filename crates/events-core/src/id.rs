//! ULIDs: 48 bits of milliseconds and 80 random bits, as 26 Crockford base-32 characters.
//!
//! Generation takes the time and the randomness as arguments, because the
//! code that calls it runs on hosts (wasm) where neither comes from `std`.

use crate::time::Timestamp;

/// A ULID string for `ts` with the given 80 random bits (higher bits ignored).
pub fn ulid_string(ts: Timestamp, random: u128) -> String {
    let ms = ts.as_millis().clamp(0, (1 << 48) - 1) as u64;
    ulid::Ulid::from_parts(ms, random & ((1u128 << 80) - 1)).to_string()
}

/// Whether `s` is a well-formed ULID.
pub fn is_ulid(s: &str) -> bool {
    s.len() == 26 && ulid::Ulid::from_string(s).is_ok()
}

/// The millisecond time encoded in a ULID, if `s` is one.
pub fn ulid_time(s: &str) -> Option<Timestamp> {
    ulid::Ulid::from_string(s).ok().map(|u| Timestamp(u.timestamp_ms() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_sort_by_time() {
        let a = ulid_string(Timestamp(1_000), u128::MAX);
        let b = ulid_string(Timestamp(1_001), 0);
        assert!(a < b);
        assert!(is_ulid(&a));
        assert_eq!(ulid_time(&b), Some(Timestamp(1_001)));
        assert!(!is_ulid("not-a-ulid"));
    }
}
