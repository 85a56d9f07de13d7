//! The [`DurableObject`] implementation: load, request dispatch and the alarm.

use events_core::cdc::valid_collection_name;
use events_core::{ApiError, ErrorCode, Timestamp};
use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult, SqlStorage};

use super::*;

impl DurableObject for CdcProcessor {
    const CLASS: &'static str = "CdcProcessor";
    const PLACEMENT: events_runtime::Placement = events_runtime::Placement::Background;
    const STORAGE_CACHE_KIB: Option<u32> = Some(STORAGE_CACHE_KIB);
    type Request = CdcRequest;
    type Response = CdcResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let (ns, collection) = cx
            .name()
            .split_once('/')
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "processor names are <ns>/<collection>"))?;
        if !valid_collection_name(collection) {
            return Err(ApiError::new(ErrorCode::InvalidRequest, format!("invalid collection name {collection:?}")));
        }
        let mut counters = Counters { next_seq: 1, ..Default::default() };
        let rows = cx.storage().query("SELECT name, value FROM counters", &[])?;
        for r in rows {
            if let Some(i) = COUNTER_NAMES.iter().position(|n| *n == r.str(0)) {
                *counters.slots()[i] = r.i64(1);
            }
        }
        let oldest_pending = cx
            .storage()
            .query_one("SELECT MIN(received_at) FROM changes WHERE seq > ?1", &[counters.flushed_seq.into()])?
            .and_then(|r| r.opt_i64(0));
        let oldest_unfolded = cx
            .storage()
            .query_one("SELECT MIN(received_at) FROM changes WHERE seq > ?1", &[counters.folded_seq.into()])?
            .and_then(|r| r.opt_i64(0));
        Ok(CdcProcessor {
            ns: ns.to_string(),
            collection: collection.to_string(),
            config: CdcConfig::from_host(cx.host()),
            saved: counters.clone(),
            counters,
            oldest_pending,
            oldest_unfolded,
            publish_error: None,
        })
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: CdcRequest) -> ObjectResult<CdcResponse> {
        // A failed request is rolled back: so are the in-memory counters.
        let start = (self.counters.clone(), self.saved.clone(), self.oldest_pending, self.oldest_unfolded);
        let result = self.dispatch(cx, req).await;
        if result.is_err() {
            (self.counters, self.saved, self.oldest_pending, self.oldest_unfolded) = start;
        }
        result
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let now = cx.now();
        // First, and only what earlier commits made garbage: files retired
        // by this run's own compaction are deleted by the next run, after
        // this one committed.
        self.collect_garbage(cx).await?;
        let due = self.pending() >= self.config.flush_max_changes
            || self.oldest_pending.is_some_and(|t| now.as_millis() - t >= self.config.flush_max_age_ms)
            || self.counters.plan_first > 0;
        if due {
            self.flush(cx).await?;
        }
        // The tail is folded when it is full or old, not at every flush:
        // larger folds visit each page of `docs` once for more changes.
        let fold_due = self.unfolded() >= self.config.fold_max_changes
            || self.oldest_unfolded.is_some_and(|t| now.as_millis() - t >= self.config.flush_max_age_ms);
        if fold_due {
            self.fold(cx.storage())?;
        }
        if self.compaction_due(cx.storage())? {
            self.compact(cx).await?;
        } else {
            self.publish_current(cx).await; // a no-op unless an earlier commit failed
        }
        // Scheduled snapshots: the snapshot labelled with a day (month) is
        // taken at the first alarm after that period ended, if a change
        // received before its end is not yet in a snapshot of that kind.
        for kind in [SnapshotKind::Daily, SnapshotKind::Monthly] {
            let keep = match kind {
                SnapshotKind::Daily => self.config.keep_daily,
                SnapshotKind::Monthly => self.config.keep_monthly,
            };
            let period_start = kind.period_start(now);
            let label = kind.label(Timestamp(period_start - 1));
            let db = cx.storage();
            let taken = db
                .query_one(
                    "SELECT 1 FROM files WHERE kind = ?1 AND label = ?2",
                    &[kind.as_str().into(), label.as_str().into()],
                )?
                .is_some();
            if keep == 0 || taken {
                continue;
            }
            let last = db
                .query_one("SELECT MAX(last_seq) FROM files WHERE kind = ?1", &[kind.as_str().into()])?
                .and_then(|r| r.opt_i64(0))
                .unwrap_or(0);
            let first_new = db
                .query_one("SELECT received_at FROM changes WHERE seq > ?1 ORDER BY seq LIMIT 1", &[last.into()])?
                .map(|r| r.i64(0));
            // Trimmed changes after the last snapshot are older than any
            // kept one: count them as received before the period ended.
            let first_new = if last < self.counters.trimmed_seq { Some(i64::MIN) } else { first_new };
            if first_new.is_some_and(|t| t < period_start) {
                self.snapshot(cx, kind, label).await?;
            }
        }
        self.trim_due(cx.storage(), now.as_millis())?;
        self.save_counters(cx.storage())?;
        self.schedule(cx).await
    }
}

impl CdcProcessor {
    async fn dispatch<H: Host>(&mut self, cx: &ObjectContext<H>, req: CdcRequest) -> ObjectResult<CdcResponse> {
        let db = cx.storage();
        // Whatever reads the documents' state folds the appended tail first,
        // so that it sees every acknowledged change.
        let reads_state = matches!(
            req,
            CdcRequest::Stats
                | CdcRequest::ReadState { .. }
                | CdcRequest::ReadDoc { .. }
                | CdcRequest::History { .. }
                | CdcRequest::TrimHistory
                | CdcRequest::Restore { .. }
        );
        if reads_state {
            self.fold(db)?;
        }
        match req {
            CdcRequest::Apply { changes } => Ok(CdcResponse::Applied(self.apply(cx, changes).await?)),
            CdcRequest::Flush => Ok(CdcResponse::Files(self.flush(cx).await?)),
            CdcRequest::Compact => Ok(CdcResponse::Files(self.compact_now(cx).await?)),
            CdcRequest::Snapshot { kind } => Ok(CdcResponse::Snapshot(self.snapshot_now(cx, kind).await?)),
            CdcRequest::Stats => Ok(CdcResponse::Stats(self.stats(db)?)),
            CdcRequest::Manifest => Ok(CdcResponse::Manifest(self.manifest(db, cx.now().as_millis())?)),
            CdcRequest::ReadState { at, after, limit, include_deleted } => {
                let (docs, next) = self.read_docs(cx, at, after, limit, include_deleted).await?;
                Ok(CdcResponse::Docs { docs, next })
            }
            CdcRequest::ReadDoc { id, at } => Ok(CdcResponse::Doc(self.read_doc(cx, &id, at).await?)),
            CdcRequest::History { id, after, limit } => {
                let (changes, next) = Self::history(db, &id, after, limit)?;
                Ok(CdcResponse::History { changes, next, history_from: self.history_from() })
            }
            CdcRequest::ReadFiles { at, base, after, limit } => {
                let (docs, next) = self.read_files(cx, at.as_millis(), base, (after, limit), false).await?;
                Ok(CdcResponse::Docs { docs, next })
            }
            CdcRequest::TrimHistory => Ok(CdcResponse::Trimmed(self.trim_now(cx).await?)),
            CdcRequest::Restore { at, restore_id, after } => {
                let (changes, examined, next) = self.restore_step(cx, at, &restore_id, after).await?;
                Ok(CdcResponse::Restored { changes, examined, next })
            }
        }
    }
}
