//! `Directory`: the list of writer shards that exist, so that `POST /admin/flush`
//! can reach every one of them. Natively the host lists its object folders;
//! Durable Objects cannot be enumerated, so the Worker records each writer
//! name here the first time it sends it events.

use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult, SqlStorage};
use serde::{Deserialize, Serialize};

/// The one directory object's name.
pub const DIRECTORY_NAME: &str = "all";

/// Requests to the directory.
#[derive(Debug, Serialize, Deserialize)]
pub enum DirectoryRequest {
    /// Records a writer name (idempotent).
    AddWriter(String),
    /// Every recorded writer name.
    Writers,
}

/// Answers of the directory.
#[derive(Debug, Serialize, Deserialize)]
pub enum DirectoryResponse {
    /// Recorded.
    Added,
    /// The writer names, sorted.
    Writers(Vec<String>),
}

/// The directory object.
pub struct Directory;

const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "writers", sql: "CREATE TABLE writers (name TEXT PRIMARY KEY) WITHOUT ROWID;" }];

impl DurableObject for Directory {
    const CLASS: &'static str = "Directory";
    type Request = DirectoryRequest;
    type Response = DirectoryResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(_cx: &ObjectContext<H>) -> ObjectResult<Self> {
        Ok(Directory)
    }

    async fn handle<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        req: DirectoryRequest,
    ) -> ObjectResult<DirectoryResponse> {
        let db = cx.storage();
        match req {
            DirectoryRequest::AddWriter(name) => {
                db.execute("INSERT OR IGNORE INTO writers (name) VALUES (?1)", &[name.into()])?;
                Ok(DirectoryResponse::Added)
            }
            DirectoryRequest::Writers => {
                let rows = db.query("SELECT name FROM writers ORDER BY name", &[])?;
                Ok(DirectoryResponse::Writers(rows.iter().map(|r| r.str(0).to_string()).collect()))
            }
        }
    }
}
