//! How schema validation failures are reported to clients.

use events_objects::schema_registry::EventFailure;
use serde_json::{Value, json};

/// One failure per error, as reported to clients (`details.errors`, `warnings`).
pub fn failure_entries(failures: &[EventFailure]) -> Vec<Value> {
    failures
        .iter()
        .flat_map(|f| {
            f.errors.iter().map(move |e| {
                json!({
                    "index": f.index, "type": f.event_type, "path": e.path, "message": e.message,
                    "schema": f.subject, "version": f.version,
                })
            })
        })
        .collect()
}
