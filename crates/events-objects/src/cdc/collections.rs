//! [`CdcCollections`]: the list of a namespace's collections.

use events_core::{ApiError, ErrorCode};
use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult, SqlStorage, SqlValue};
use serde::{Deserialize, Serialize};

/// Requests to [`CdcCollections`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CollectionsRequest {
    /// Records a collection (no-op if known).
    Register {
        /// Collection name.
        collection: String,
    },
    /// Every known collection, by name.
    List,
}

/// Answers of [`CdcCollections`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CollectionsResponse {
    /// Done.
    Ok,
    /// Collection names.
    Collections(Vec<String>),
}

/// Most collections per namespace.
pub const MAX_COLLECTIONS_PER_NAMESPACE: usize = 10_000;

/// The collections of one namespace that received changes, named `<ns>`.
/// Processors register themselves on their first change; it calls no one.
pub struct CdcCollections;

const COLLECTIONS_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "collections",
    sql: "CREATE TABLE collections (name TEXT PRIMARY KEY, registered_at INTEGER NOT NULL) WITHOUT ROWID;",
}];

impl DurableObject for CdcCollections {
    const CLASS: &'static str = "CdcCollections";
    type Request = CollectionsRequest;
    type Response = CollectionsResponse;

    fn migrations() -> &'static [Migration] {
        COLLECTIONS_MIGRATIONS
    }

    async fn load<H: Host>(_cx: &ObjectContext<H>) -> ObjectResult<Self> {
        Ok(CdcCollections)
    }

    async fn handle<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        req: CollectionsRequest,
    ) -> ObjectResult<CollectionsResponse> {
        match req {
            CollectionsRequest::Register { collection } => Self::register(cx, collection),
            CollectionsRequest::List => Self::list(cx.storage()),
        }
    }
}

impl CdcCollections {
    /// Records a collection unless known ([`CollectionsRequest::Register`]).
    fn register<H: Host>(cx: &ObjectContext<H>, collection: String) -> ObjectResult<CollectionsResponse> {
        let db = cx.storage();
        let count = db.query_one("SELECT COUNT(*) FROM collections", &[])?.map_or(0, |r| r.i64(0)) as usize;
        let known = db.query_one("SELECT 1 FROM collections WHERE name = ?1", &[collection.as_str().into()])?;
        if known.is_none() {
            if count >= MAX_COLLECTIONS_PER_NAMESPACE {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("a namespace has at most {MAX_COLLECTIONS_PER_NAMESPACE} collections"),
                ));
            }
            db.execute(
                "INSERT INTO collections (name, registered_at) VALUES (?1, ?2)",
                &[SqlValue::Text(collection), cx.now().as_millis().into()],
            )?;
        }
        Ok(CollectionsResponse::Ok)
    }

    /// Every known collection, by name ([`CollectionsRequest::List`]).
    fn list<S: SqlStorage>(db: &S) -> ObjectResult<CollectionsResponse> {
        Ok(CollectionsResponse::Collections(
            db.query("SELECT name FROM collections ORDER BY name", &[])?.iter().map(|r| r.str(0).to_string()).collect(),
        ))
    }
}
