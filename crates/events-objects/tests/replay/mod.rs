//! The oracle of the CDC tests: what a reader should see of a collection,
//! by a plain replay of its changes.

use std::collections::BTreeMap;

use events_core::cdc::{Change, ChangeOp};
use serde_json::Value;

/// What a reader should see of one document: (data, version, deleted).
pub type Expected = BTreeMap<String, (Option<Value>, i64, bool)>;

/// The straightforward replay: changes (in arrival order, duplicates
/// removed) sorted by (event time, arrival), applied one by one up to `at`;
/// the version counts every change up to `at`.
pub fn replay(changes: &[Change], at: i64) -> Expected {
    let mut sorted: Vec<(usize, &Change)> =
        changes.iter().enumerate().filter(|(_, c)| c.ts.as_millis() <= at).collect();
    sorted.sort_by_key(|(i, c)| (c.ts, *i));
    let mut state = Expected::new();
    for (_, c) in sorted {
        let entry = state.entry(c.doc_id.clone()).or_insert((None, 0, false));
        entry.1 += 1;
        match c.op {
            ChangeOp::Delete => (entry.0, entry.2) = (c.before.clone(), true),
            _ => (entry.0, entry.2) = (c.after.clone(), false),
        }
    }
    state
}

/// The live documents of `e` (tombstones left out).
pub fn live(e: &Expected) -> Expected {
    e.iter().filter(|(_, v)| !v.2).map(|(k, v)| (k.clone(), v.clone())).collect()
}
