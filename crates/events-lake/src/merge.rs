//! Compaction: many small event files of a partition into one.

use std::collections::HashSet;

use crate::columns::DataColumn;
use crate::decode::decode_events;
use crate::encode::encode_events_with;
use crate::error::LakeError;

/// Merges event files into one, returning its bytes and row count.
///
/// Events are ordered by `(ts, id)` (ties keep the order of `files`), and of
/// several events with the same namespace and id only the first in that order
/// is kept: ids are unique within a namespace, so the others are copies left
/// by a retried write.
pub fn merge_event_files(files: &[Vec<u8>]) -> Result<(Vec<u8>, usize), LakeError> {
    merge_event_files_with(files, &[])
}

/// [`merge_event_files`], writing the data columns `columns` (re-derived from `data`).
pub fn merge_event_files_with(files: &[Vec<u8>], columns: &[DataColumn]) -> Result<(Vec<u8>, usize), LakeError> {
    let mut events = Vec::new();
    for file in files {
        events.extend(decode_events(file)?);
    }
    events.sort_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
    let mut seen = HashSet::with_capacity(events.len());
    let kept: Vec<_> = events.iter().filter(|e| seen.insert((e.ns.as_str(), e.id.as_str()))).collect();
    Ok((encode_events_with(&kept, columns)?, kept.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::file_stats;
    use crate::encode::encode_events;
    use crate::testdata::{refs, varied_events};
    use events_core::{Event, Timestamp};
    use serde_json::json;
    use std::collections::BTreeSet;

    fn encode(events: &[Event]) -> Vec<u8> {
        encode_events(&refs(events)).unwrap()
    }

    #[test]
    fn merge_drops_duplicates_and_keeps_every_distinct_id() {
        let events = varied_events(300, 11);
        // Overlapping files, as a retried flush leaves them.
        let files = [encode(&events[..200]), encode(&events[100..]), encode(&events[150..250])];
        let (merged, rows) = merge_event_files(&files).unwrap();
        let back = decode_events(&merged).unwrap();

        let distinct: BTreeSet<(&str, &str)> = events.iter().map(|e| (e.ns.as_str(), e.id.as_str())).collect();
        let got: BTreeSet<(&str, &str)> = back.iter().map(|e| (e.ns.as_str(), e.id.as_str())).collect();
        assert_eq!(rows, distinct.len());
        assert_eq!(back.len(), rows, "no id twice");
        assert_eq!(got, distinct);
        assert!(back.windows(2).all(|w| (w[0].ts, &w[0].id) <= (w[1].ts, &w[1].id)));
        assert_eq!(file_stats(&merged).unwrap().rows, rows);
    }

    #[test]
    fn merge_keeps_the_first_copy_by_ts_then_file_order() {
        let e = |id: &str, ns: &str, ms: i64, v: i32| Event {
            id: id.into(),
            ns: ns.into(),
            ts: Timestamp(ms),
            event_type: "t".into(),
            source: None,
            data: json!({ "v": v }).as_object().unwrap().clone(),
        };
        let first = [e("a", "acme", 10, 1), e("b", "acme", 20, 1)];
        let second = [e("a", "acme", 5, 2), e("b", "acme", 20, 2), e("b", "other", 20, 3)];
        let (merged, rows) = merge_event_files(&[encode(&first), encode(&second)]).unwrap();
        let back = decode_events(&merged).unwrap();
        assert_eq!(rows, 3);
        // `a`: the copy with the earlier ts; `b` in acme: same (ts, id), so the earlier file;
        // `b` in another namespace is another event.
        assert_eq!(back, [e("a", "acme", 5, 2), e("b", "acme", 20, 1), e("b", "other", 20, 3)]);
    }

    #[test]
    fn merge_of_nothing_is_an_empty_file() {
        let (merged, rows) = merge_event_files(&[]).unwrap();
        assert_eq!(rows, 0);
        assert!(decode_events(&merged).unwrap().is_empty());
    }
}
