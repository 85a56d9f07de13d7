//! The one error type of this crate, and its mapping to the API's error envelope.

use events_core::{ApiError, ErrorCode};

/// Why an event file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The Parquet writer or reader failed (including files that are not Parquet).
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Building or reading the Arrow record batches failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The `data` column of a row is not valid JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The file is Parquet, but not an event file this crate can read.
    #[error("corrupt event file: {0}")]
    Corrupt(String),
}

impl From<LakeError> for ApiError {
    /// Every lake failure is a storage failure to the API client.
    fn from(err: LakeError) -> Self {
        ApiError::new(ErrorCode::StorageError, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_storage_error() {
        let api: ApiError = LakeError::Corrupt("no footer".into()).into();
        assert_eq!(api.code, ErrorCode::StorageError);
        assert_eq!(api.http_status(), 500);
        assert!(api.message.contains("no footer"), "{}", api.message);
    }
}
