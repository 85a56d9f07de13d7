//! A small key/value API, stored in the object's own SQLite database.
//!
//! Values are JSON. The table is created by the runtime's system migration
//! (see [`crate::migrate::SYSTEM_MIGRATIONS`]), so every object has it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sql::{SqlStorage, SqlValue};
use crate::{ApiError, ErrorCode, ObjectResult};

/// Key/value access over an object's [`SqlStorage`].
pub struct Kv<'a, S: SqlStorage>(pub &'a S);

impl<S: SqlStorage> Kv<'_, S> {
    /// The value under `key`, if any.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> ObjectResult<Option<T>> {
        let row = self.0.query_one("SELECT value FROM _kv WHERE key = ?1", &[key.into()])?;
        row.map(|r| decode(key, r.bytes(0))).transpose()
    }

    /// Stores `value` under `key`, replacing any previous value.
    pub fn put<T: Serialize>(&self, key: &str, value: &T) -> ObjectResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| ApiError::internal(format!("kv encode {key}: {e}")))?;
        self.0.execute(
            "INSERT INTO _kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            &[key.into(), SqlValue::Blob(bytes)],
        )?;
        Ok(())
    }

    /// Removes `key`; returns whether it existed.
    pub fn delete(&self, key: &str) -> ObjectResult<bool> {
        Ok(self.0.execute("DELETE FROM _kv WHERE key = ?1", &[key.into()])? > 0)
    }

    /// Every `(key, value)` whose key starts with `prefix`, in key order.
    pub fn list<T: DeserializeOwned>(&self, prefix: &str) -> ObjectResult<Vec<(String, T)>> {
        // Keys in [prefix, prefix + U+10FFFF) share the prefix.
        let end = format!("{prefix}\u{10FFFF}");
        let rows = self.0.query(
            "SELECT key, value FROM _kv WHERE key >= ?1 AND key < ?2 ORDER BY key",
            &[prefix.into(), end.into()],
        )?;
        rows.iter().map(|r| Ok((r.str(0).to_string(), decode(r.str(0), r.bytes(1))?))).collect()
    }
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> ObjectResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::StorageError, format!("kv value {key:?} does not decode: {e}")))
}
