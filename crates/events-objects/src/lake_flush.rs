//! The lake flush: how a writer shard's `lake` relay moves the buffer to
//! Parquet files, commits them to the catalog and compacts closed hours.
//! The flush protocol (exactly once, across crashes) is described in
//! [`crate::event_writer`]; this side reaches the writer only through
//! [`Outbox`].

use events_lake::{StoredEvent, encode_events_with, event_file_key, hour_prefix, observe_columns, partition_by_hour};
use events_runtime::{BlobStore, Host, ObjectContext, ObjectResult};

use crate::Catalog;
use crate::catalog::{CatalogRequest, CatalogResponse, EVENTS_TABLE, MaintainOptions, NewFile};
use crate::outbox::{FlushPlan, FlushReport, LakeConfig, MAX_OUTBOX_READ, Outbox, OutboxRow, corrupt};

/// Most flush plans one alarm run executes before it yields (and runs again at once).
pub const MAX_FLUSHES_PER_RUN: usize = 4;

/// One writer shard's flush to the lake.
pub struct LakeFlush {
    /// The writer shard's object name.
    pub writer: String,
    /// Its namespace (names the catalog).
    pub ns: String,
    /// The shard as it appears in file names (`0003`).
    pub shard: String,
    /// Where the files go, when hours are compacted.
    pub config: LakeConfig,
}

fn out_of_protocol(what: &str, answer: impl std::fmt::Debug) -> events_core::ApiError {
    events_core::ApiError::internal(format!("{what} answered {answer:?}"))
}

impl LakeFlush {
    async fn catalog<H: Host>(&self, cx: &ObjectContext<H>, req: CatalogRequest) -> ObjectResult<CatalogResponse> {
        cx.stub::<Catalog>(self.ns.clone()).call(req).await
    }

    /// Executes one flush plan (the open one, or a new one when due or
    /// `force`d). `None` when there was nothing to flush.
    pub async fn flush_once<W: Outbox, H: Host>(
        &self,
        cx: &ObjectContext<H>,
        force: bool,
    ) -> ObjectResult<Option<Vec<String>>> {
        let Some(plan) = W::take_flush(cx.host(), &self.writer, force).await? else { return Ok(None) };
        assert!(plan.first <= plan.last, "a flush plan is a non-empty range: {plan:?}");
        let rows = self.read_plan::<W, H>(cx, plan).await?;
        // Borrowed from the rows, undecoded but for what the file needs.
        let mut events = Vec::new();
        for row in &rows {
            for (seq, raw) in row.raw_events(plan.first - 1)? {
                if seq <= plan.last {
                    events.push(StoredEvent::parse(raw.get()).map_err(corrupt)?);
                }
            }
        }
        // Named by the first sequence number only: a flush that ran but did
        // not commit (crash) is retried from the same first row with the same
        // range, so it overwrites the same files.
        let file_id = format!("{}-{:016}", self.shard, plan.first);
        let mut keys = Vec::new();
        let mut hours = Vec::new();
        if !events.is_empty() {
            // The table's columns, evolved for the fields this batch carries.
            let columns = match self
                .catalog(
                    cx,
                    CatalogRequest::PrepareColumns { table: EVENTS_TABLE.into(), observed: observe_columns(&events) },
                )
                .await?
            {
                CatalogResponse::Columns(columns) => columns,
                other => return Err(out_of_protocol("catalog (PrepareColumns)", other)),
            };
            let groups = partition_by_hour(&events);
            // Recorded before the first put, so orphan cleanup never deletes a
            // file of this plan before its commit (a retry intends the same keys).
            let intended =
                groups.keys().map(|(ns, hour)| event_file_key(&self.config.prefix, ns, *hour, &file_id)).collect();
            self.catalog(cx, CatalogRequest::IntendFiles { table: EVENTS_TABLE.into(), keys: intended }).await?;
            let mut added = Vec::new();
            for ((ns, hour), group) in groups {
                let key = event_file_key(&self.config.prefix, &ns, hour, &file_id);
                let parquet = encode_events_with(&group, &columns)?;
                added.push(NewFile { key: key.clone(), rows: group.len() as i64, bytes: parquet.len() as i64 });
                cx.host().blobs().put(&key, parquet).await?;
                hours.push((hour_prefix(&self.config.prefix, &ns, hour), hour.as_millis()));
                keys.push(key);
            }
            // Committed to the table before the rows are marked flushed: a
            // crash in between re-flushes the same keys, and the catalog
            // replaces them.
            self.catalog(cx, CatalogRequest::CommitFiles { table: EVENTS_TABLE.into(), added, removed: Vec::new() })
                .await?;
        }
        let report = FlushReport { plan, files: keys.len() as u64, events: events.len() as u64, hours };
        W::flush_committed(cx.host(), &self.writer, report).await?;
        metrics::counter!("events_flushed_total").increment(events.len() as u64);
        Ok(Some(keys))
    }

    /// The rows holding the plan's events, read a page at a time.
    async fn read_plan<W: Outbox, H: Host>(
        &self,
        cx: &ObjectContext<H>,
        plan: FlushPlan,
    ) -> ObjectResult<Vec<OutboxRow>> {
        let mut all = Vec::new();
        let mut after = plan.first - 1;
        while after < plan.last {
            let rows = W::read_flush(cx.host(), &self.writer, plan, after, MAX_OUTBOX_READ).await?;
            let Some(last) = rows.last().map(|r| r.last_seq.min(plan.last)) else { break };
            assert!(last > after, "flush pages move forward");
            all.extend(rows);
            after = last;
        }
        Ok(all)
    }

    /// Asks the catalog to compact the small files of each closed hour that
    /// got files since (one `replace` snapshot per hour; the inputs stay
    /// readable by older snapshots until those expire).
    pub async fn compact<W: Outbox, H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        let closed = cx.now().as_millis() - events_lake::layout::HOUR_MS - self.config.compact_grace_ms;
        let prefixes = W::due_compactions(cx.host(), &self.writer, closed).await?;
        let mut written = Vec::new();
        for prefix in prefixes {
            let options = MaintainOptions { compact: true, compact_prefix: Some(prefix.clone()), ..Default::default() };
            match self.catalog(cx, CatalogRequest::Maintain { table: Some(EVENTS_TABLE.into()), options }).await? {
                CatalogResponse::Maintained(reports) => {
                    written.extend(reports.into_iter().flat_map(|r| r.compacted_files));
                }
                other => return Err(out_of_protocol("catalog (Maintain)", other)),
            }
            W::compacted(cx.host(), &self.writer, prefix).await?;
        }
        Ok(written)
    }

    /// One alarm run. Answers whether work is left.
    pub async fn run<W: Outbox, H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<bool> {
        for _ in 0..MAX_FLUSHES_PER_RUN {
            if self.flush_once::<W, H>(cx, false).await?.is_none() {
                self.compact::<W, H>(cx).await?;
                return Ok(false);
            }
        }
        Ok(true)
    }
}
