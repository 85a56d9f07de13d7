//! Event helpers: building events and checking what the server stored.

use serde_json::{Value, json};

use crate::{Auth, TestServer, iso_now};

/// An event of type `ty` with the client id `id`, timestamped now.
pub fn event(ty: &str, id: &str) -> Value {
    json!({ "type": ty, "ts": iso_now(), "id": id })
}

/// The `id`s of `events`, sorted (duplicates kept).
pub fn sorted_ids(events: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_else(|| panic!("event without a string id: {e}")).to_string())
        .collect();
    ids.sort();
    ids
}

/// Asserts that `GET /events` with `auth` returns exactly the events with
/// `expected` ids (each once), polling up to [`DEADLINE`] for them to appear.
pub async fn assert_stored_ids(server: &TestServer, auth: &Auth, expected: &[&str]) -> Vec<Value> {
    let events = server.wait_for_events(auth, "", expected.len()).await;
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(sorted_ids(&events), want, "stored events: {}", Value::Array(events.clone()));
    events
}
