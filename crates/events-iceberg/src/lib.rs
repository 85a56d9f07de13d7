//! Apache Iceberg v2 table metadata for events.do, with no I/O, so the
//! Catalog object that uses it builds for `wasm32-unknown-unknown`.
//!
//! - [`metadata`]: the table metadata JSON model (schemas, snapshots, refs).
//! - [`commit`]: REST-catalog requirements and updates, applied atomically.
//! - [`evolve`]: schema evolution from observed columns (add, promote, refuse).
//! - [`manifest`]: manifests and manifest lists as Avro files.
//! - [`avro`]: the small Avro object-container writer and reader they use.

#![warn(missing_docs)]

pub mod avro;
pub mod commit;
pub mod evolve;
pub mod manifest;
pub mod metadata;

/// Why an Iceberg operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IcebergError {
    /// A requirement does not hold: the commit was built on stale metadata.
    #[error("commit conflict: {0}")]
    Conflict(String),
    /// The table (or namespace) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is not valid metadata.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A malformed Avro file.
    #[error("avro: {0}")]
    Avro(String),
    /// JSON (de)serialization.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl IcebergError {
    pub(crate) fn avro(msg: &str) -> Self {
        IcebergError::Avro(msg.to_string())
    }
}
