//! SQL storage: the one storage primitive of an object.

use crate::ObjectResult;

/// The largest integer every host binds and stores exactly (2^53 - 1: values
/// cross JavaScript numbers on Cloudflare). Use it, not `i64::MAX`, as an open
/// upper bound in a query.
pub const MAX_EXACT_INTEGER: i64 = (1 << 53) - 1;
/// The smallest integer every host binds and stores exactly; the open lower bound.
pub const MIN_EXACT_INTEGER: i64 = -MAX_EXACT_INTEGER;

/// A value bound to, or read from, SQL.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL.
    Null,
    /// A 64-bit integer. Every host stores exactly the range
    /// [`MIN_EXACT_INTEGER`]..=[`MAX_EXACT_INTEGER`] (Cloudflare refuses the rest).
    Integer(i64),
    /// A double.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Integer(v)
    }
}
impl From<u32> for SqlValue {
    fn from(v: u32) -> Self {
        SqlValue::Integer(v as i64)
    }
}
impl From<usize> for SqlValue {
    fn from(v: usize) -> Self {
        SqlValue::Integer(v as i64)
    }
}
impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        SqlValue::Integer(v as i64)
    }
}
impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Real(v)
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}
impl From<Vec<u8>> for SqlValue {
    fn from(v: Vec<u8>) -> Self {
        SqlValue::Blob(v)
    }
}
impl From<&[u8]> for SqlValue {
    fn from(v: &[u8]) -> Self {
        SqlValue::Blob(v.to_vec())
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(SqlValue::Null, Into::into)
    }
}

/// One result row, columns by position.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row(pub Vec<SqlValue>);

impl Row {
    /// The value of column `i` (panics if out of range: a query bug).
    pub fn value(&self, i: usize) -> &SqlValue {
        &self.0[i]
    }

    /// Column `i` as an integer (0 for NULL).
    pub fn i64(&self, i: usize) -> i64 {
        match self.value(i) {
            SqlValue::Integer(v) => *v,
            SqlValue::Real(v) => *v as i64,
            _ => 0,
        }
    }

    /// Column `i` as an optional integer.
    pub fn opt_i64(&self, i: usize) -> Option<i64> {
        match self.value(i) {
            SqlValue::Null => None,
            _ => Some(self.i64(i)),
        }
    }

    /// Column `i` as a double.
    pub fn f64(&self, i: usize) -> f64 {
        match self.value(i) {
            SqlValue::Integer(v) => *v as f64,
            SqlValue::Real(v) => *v,
            _ => 0.0,
        }
    }

    /// Column `i` as text ("" for NULL or non-text).
    pub fn str(&self, i: usize) -> &str {
        match self.value(i) {
            SqlValue::Text(s) => s,
            _ => "",
        }
    }

    /// Column `i` as optional text.
    pub fn opt_str(&self, i: usize) -> Option<&str> {
        match self.value(i) {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Column `i` as bytes (text is returned as its UTF-8 bytes).
    pub fn bytes(&self, i: usize) -> &[u8] {
        match self.value(i) {
            SqlValue::Blob(b) => b,
            SqlValue::Text(s) => s.as_bytes(),
            _ => &[],
        }
    }
}

/// An object's SQLite database.
///
/// Calls are synchronous, as on Cloudflare's SQL storage API. Every call runs
/// inside the transaction of the current request; the host commits it.
/// `BEGIN`, `COMMIT` and `SAVEPOINT` statements are not allowed: use
/// [`SqlStorage::transaction`] for an atomic group inside a request.
pub trait SqlStorage {
    /// Runs one statement with bound parameters; returns the rows changed.
    fn execute(&self, sql: &str, params: &[SqlValue]) -> ObjectResult<u64>;

    /// Runs one query and collects its rows.
    fn query(&self, sql: &str, params: &[SqlValue]) -> ObjectResult<Vec<Row>>;

    /// Runs one query, calling `f` per row until it returns `false`.
    /// Use this for large results: rows are not collected.
    fn query_each(&self, sql: &str, params: &[SqlValue], f: &mut dyn FnMut(&Row) -> bool) -> ObjectResult<()>;

    /// Runs several `;`-separated statements without parameters (migrations).
    fn execute_script(&self, sql: &str) -> ObjectResult<()>;

    /// Runs `f` atomically: if it returns an error, none of its writes remain.
    fn transaction<T>(&self, f: impl FnOnce() -> ObjectResult<T>) -> ObjectResult<T>;

    /// The first row of a query, if any.
    fn query_one(&self, sql: &str, params: &[SqlValue]) -> ObjectResult<Option<Row>> {
        let mut first = None;
        self.query_each(sql, params, &mut |row| {
            first = Some(row.clone());
            false
        })?;
        Ok(first)
    }

    /// The database size in bytes.
    fn database_size(&self) -> ObjectResult<u64> {
        let pages = self.query_one("PRAGMA page_count", &[])?.map_or(0, |r| r.i64(0));
        let size = self.query_one("PRAGMA page_size", &[])?.map_or(0, |r| r.i64(0));
        Ok((pages * size) as u64)
    }
}
