//! Reads reconstructed from the lake files (the path a lake reader takes).

use events_core::{ApiError, ErrorCode, Timestamp};
use events_lake::cdc::{DocState, ReconstructInput, StateRef, reconstruct};
use events_runtime::{BlobStore, Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;

impl CdcProcessor {
    /// A page of documents at `at` reconstructed from the lake files plus
    /// pending changes (tombstones only if `include_deleted`).
    pub(super) async fn read_files<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        at: i64,
        base: FileBase,
        page: (Option<String>, usize),
        include_deleted: bool,
    ) -> ObjectResult<(Vec<DocView>, Option<String>)> {
        let (after, limit) = (page.0.unwrap_or_default(), page.1.clamp(1, MAX_READ_PAGE));
        let start = if after.is_empty() { String::new() } else { format!("{after}\0") }; // the least id after `after`
        let mut out = Vec::new();
        let mut more = false;
        self.lake_states(cx, at, base, &start, &mut |s| {
            if (s.deleted && !include_deleted) || s.id <= after {
                return true;
            }
            if out.len() == limit {
                more = true;
                return false;
            }
            out.push(s);
            true
        })
        .await?;
        let next = if more { out.last().map(|d| d.id.clone()) } else { None };
        Ok((out.into_iter().map(doc_view).collect::<ObjectResult<_>>()?, next))
    }

    /// One document at `at`, reconstructed from the lake files plus pending changes.
    pub(super) async fn read_file_doc<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        at: i64,
        id: &str,
    ) -> ObjectResult<Option<DocState>> {
        let mut found = None;
        self.lake_states(cx, at, FileBase::Auto, id, &mut |s| match s.id.as_str().cmp(id) {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Equal => {
                found = Some(s);
                false
            }
            std::cmp::Ordering::Greater => false,
        })
        .await?;
        Ok(found)
    }

    /// Streams the state at `at` of every document whose id is `start` or
    /// later (tombstones included), in id order, from `base` plus the delta
    /// files after it plus the pending changes, to `emit` until it returns
    /// `false`. Memory: one file of the base's live documents and one of its
    /// tombstones at a time (files entirely before `start` are not read),
    /// plus the delta files; delta files whose changes are all later than
    /// `at` are not read.
    async fn lake_states<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        at: i64,
        base: FileBase,
        start: &str,
        emit: &mut dyn FnMut(DocState) -> bool,
    ) -> ObjectResult<()> {
        let db = cx.storage();
        let bases: Vec<StateRef> = db
            .query(
                &format!("SELECT {STATE_REF_COLUMNS} FROM files WHERE kind IN ('current', 'daily', 'monthly') ORDER BY last_seq DESC"),
                &[],
            )?
            .iter()
            .map(|r| state_ref(db, r))
            .collect::<ObjectResult<_>>()?;
        let chosen = match &base {
            FileBase::DeltasOnly => None,
            FileBase::Auto => bases.into_iter().find(|b| b.max_ts <= at),
            FileBase::Current => Some(
                bases
                    .into_iter()
                    .find(|b| b.kind == "current")
                    .ok_or_else(|| ApiError::not_found("the collection has no current table yet: compact it first"))?,
            ),
            FileBase::Snapshot { kind, label } => Some(
                bases
                    .into_iter()
                    .find(|b| b.kind == kind.as_str() && b.label == *label)
                    .ok_or_else(|| ApiError::not_found(format!("no {} snapshot {label}", kind.as_str())))?,
            ),
        };
        if let Some(b) = &chosen
            && b.max_ts > at
        {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("the {} base holds changes up to {}, after {}", b.kind, Timestamp(b.max_ts), Timestamp(at)),
            ));
        }
        let upto = chosen.as_ref().map_or(0, |b| b.upto_seq);
        let deltas = db.query(
            "SELECT key, first_seq, last_seq, min_ts FROM files WHERE kind = 'delta' AND last_seq > ?1 ORDER BY first_seq",
            &[upto.into()],
        )?;
        // The deltas must cover every change after the base without a gap.
        let mut covered = upto;
        for d in &deltas {
            if d.i64(1) > covered + 1 {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!(
                        "changes {}..{} are no longer in delta files (compacted away); read from a later base",
                        covered + 1,
                        d.i64(1) - 1
                    ),
                ));
            }
            covered = covered.max(d.i64(2));
        }
        if covered < self.counters.flushed_seq {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!(
                    "changes {}..{} are no longer in delta files (compacted away); read from a later base",
                    covered + 1,
                    self.counters.flushed_seq
                ),
            ));
        }
        let get = async |key: &str| -> ObjectResult<bytes::Bytes> {
            let bytes = cx
                .host()
                .blobs()
                .get(key)
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::StorageError, format!("lake file {key} is missing")))?;
            Ok(bytes::Bytes::from(bytes))
        };
        let base_parts: Vec<StatePart> = match &chosen {
            Some(b) => state_parts(db, b)?.into_iter().filter(|p| p.rows > 0).collect(),
            None => Vec::new(),
        };
        // Read once; every window merges them (`Bytes` clones share the buffer).
        let mut delta_files = Vec::new();
        for d in deltas.iter().filter(|d| d.i64(3) <= at) {
            delta_files.push(get(d.str(0)).await?);
        }
        let pending =
            change_rows(db, "seq > ?1 AND ts <= ?2", &[covered.max(self.counters.flushed_seq).into(), at.into()])?;
        // Windows of the id space, each ending where the first base file
        // (live or tombstones) still wanted ends: a window loads at most one
        // file of each, since the files of a kind hold consecutive id ranges.
        let mut start = start.to_string();
        loop {
            let wanted: Vec<&StatePart> =
                base_parts.iter().filter(|p| p.ids.as_ref().is_none_or(|(_, last)| *last >= start)).collect();
            // A file without a recorded range (written before ranges were): one window for everything.
            let end: Option<String> = if wanted.iter().any(|p| p.ids.is_none()) {
                None
            } else {
                [false, true]
                    .iter()
                    .filter_map(|kind| wanted.iter().find(|p| p.tombstones == *kind))
                    .filter_map(|p| p.ids.as_ref().map(|(_, last)| last.clone()))
                    .min()
            };
            let mut input = ReconstructInput {
                base: Vec::new(),
                base_upto_seq: upto,
                deltas: delta_files.clone(),
                pending: pending.clone(),
            };
            for p in &wanted {
                let in_window = match (&end, &p.ids) {
                    (Some(end), Some((first, _))) => first <= end,
                    _ => true,
                };
                if in_window {
                    input.base.push(get(&p.key).await?);
                }
            }
            let mut stopped = false;
            reconstruct(input, at, &mut |s| {
                if s.id < start {
                    return true;
                }
                if end.as_ref().is_some_and(|e| s.id > *e) {
                    return false; // the next window's
                }
                stopped = !emit(s);
                !stopped
            })?;
            match end {
                Some(end) if !stopped => {
                    assert!(end >= start, "a window ends at or after its start");
                    start = format!("{end}\0"); // the least id after `end`
                }
                _ => return Ok(()),
            }
        }
    }
}
