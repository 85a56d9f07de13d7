//! Schema validation at ingest: one [`SchemaRegistry`] call per batch, skipped
//! for namespaces known (for [`NO_SCHEMAS_CACHE_TTL`]) to have no schema.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use events_core::{ApiError, ErrorCode, Event};
use events_host_native::NativeHost;
use events_objects::SchemaRegistry;
use events_objects::schema_registry::{EventFailure, SchemaRequest, SchemaResponse, ValidationMode};
use serde_json::{Value, json};

/// How long "this namespace has no schemas" is believed without asking again.
pub const NO_SCHEMAS_CACHE_TTL: Duration = Duration::from_secs(2);
/// Most namespaces remembered as schema-less (cleared when full).
pub const NO_SCHEMAS_CACHE_CAPACITY: usize = 10_000;

/// The ingest-side gate in front of each namespace's [`SchemaRegistry`].
#[derive(Default)]
pub struct SchemaGate {
    no_schemas: Mutex<HashMap<String, Instant>>,
}

pub use events_api::schemas::failure_entries;

impl SchemaGate {
    /// Forgets that `ns` had no schemas (after a registration).
    pub fn invalidate(&self, ns: &str) {
        self.no_schemas.lock().unwrap_or_else(|p| p.into_inner()).remove(ns);
    }

    fn known_empty(&self, ns: &str) -> bool {
        let map = self.no_schemas.lock().unwrap_or_else(|p| p.into_inner());
        map.get(ns).is_some_and(|at| at.elapsed() < NO_SCHEMAS_CACHE_TTL)
    }

    /// Validates a batch: strict failures refuse it (`SCHEMA_VALIDATION_ERROR`);
    /// warn failures come back as warnings, with the events marked.
    pub async fn check(
        &self,
        host: &NativeHost,
        ns: &str,
        events: Vec<Event>,
    ) -> Result<(Vec<Event>, Vec<Value>), ApiError> {
        if self.known_empty(ns) {
            return Ok((events, Vec::new()));
        }
        let answer = host.call_object::<SchemaRegistry>(ns, SchemaRequest::Validate { events }).await?;
        let SchemaResponse::Validated { events, has_schemas, failures } = answer else {
            return Err(ApiError::internal("schema registry answered out of protocol"));
        };
        if !has_schemas {
            let mut map = self.no_schemas.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= NO_SCHEMAS_CACHE_CAPACITY {
                map.clear();
            }
            map.insert(ns.to_string(), Instant::now());
        }
        let (strict, warn): (Vec<EventFailure>, Vec<EventFailure>) =
            failures.into_iter().partition(|f| f.mode == ValidationMode::Strict);
        if !strict.is_empty() {
            let indices: Vec<usize> = strict.iter().map(|f| f.index).collect();
            return Err(ApiError::new(
                ErrorCode::SchemaValidationError,
                format!("{} event(s) failed schema validation; the batch was not stored", strict.len()),
            )
            .with_details(json!({"indices": indices, "errors": failure_entries(&strict)})));
        }
        Ok((events, failure_entries(&warn)))
    }
}
