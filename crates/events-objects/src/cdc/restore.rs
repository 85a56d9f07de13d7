//! Restoring a collection to its state at an earlier time, as new changes.

use events_core::cdc::{Change, ChangeOp};
use events_core::{ApiError, ErrorCode, Timestamp};
use events_lake::cdc::DocState;
use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;

impl CdcProcessor {
    /// One restore step (see [`CdcRequest::Restore`]).
    pub(super) async fn restore<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        at: i64,
        restore_id: &str,
        after: Option<String>,
    ) -> ObjectResult<(usize, usize, Option<String>)> {
        let db = cx.storage();
        let after = after.unwrap_or_default();
        let docs: Vec<DocState> = db
            .query(
                &format!("SELECT {DOC_COLUMNS} FROM docs WHERE doc_id > ?1 ORDER BY doc_id LIMIT ?2"),
                &[after.as_str().into(), MAX_RESTORE_STEP.into()],
            )?
            .iter()
            .map(doc_state_row)
            .collect();
        let examined = docs.len();
        let next = (examined == MAX_RESTORE_STEP).then(|| docs.last().map(|d| d.id.clone())).flatten();
        // Restore changes are newer than everything: they win over every earlier change.
        let ts = Timestamp(cx.now().as_millis().max(self.counters.max_ts));
        let bookmark = Some(format!("restore:{}", Timestamp(at)));
        let mut changes = Vec::new();
        for now in docs {
            let then = Self::doc_at(db, &now.id, at)?;
            let then_live = then.as_ref().filter(|t| !t.deleted);
            let change = match (then_live, now.deleted) {
                (None, false) => Some((ChangeOp::Delete, None)),
                (None, true) => None,
                (Some(t), true) => Some((ChangeOp::Insert, t.data.clone())),
                (Some(t), false) if t.data != now.data => Some((ChangeOp::Update, t.data.clone())),
                (Some(_), false) => None,
            };
            if let Some((op, data)) = change {
                changes.push(Change {
                    event_id: format!("{restore_id}:{}", now.id),
                    collection: self.collection.clone(),
                    doc_id: now.id.clone(),
                    op,
                    ts,
                    before: parse_json(now.data.as_deref())?,
                    after: parse_json(data.as_deref())?,
                    bookmark: bookmark.clone(),
                });
            }
        }
        let applied = if changes.is_empty() { 0 } else { self.apply(cx, changes).await?.applied };
        Ok((applied, examined, next))
    }

    /// One restore step ([`CdcRequest::Restore`]), refused at a time before
    /// the trimmed history.
    pub(super) async fn restore_step<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        at: Timestamp,
        restore_id: &str,
        after: Option<String>,
    ) -> ObjectResult<(usize, usize, Option<String>)> {
        if !self.history_covers(at.as_millis()) {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!(
                    "a restore reaches back to {} at most: the collection's older history is trimmed",
                    Timestamp(self.counters.history_from)
                ),
            ));
        }
        self.restore(cx, at.as_millis(), restore_id, after).await
    }
}
