//! [`OutboxRelay`]: moves a writer shard's accepted events to one consumer,
//! so that the writer never waits on any of them.
//!
//! One relay per (writer shard, consumer), named `<ns>/<shard>/<consumer>`:
//! - [`LAKE`] flushes the buffer to Parquet files, commits them to the
//!   catalog and compacts closed hours (the flush protocol is described in
//!   [`crate::event_writer`]);
//! - every consumer in [`fanout::CONSUMERS`] gets the events after its
//!   cursor, in order, and the cursor moves only once it accepted them.
//!
//! A relay keeps no state of its own beyond its alarm: plans, cursors and
//! errors live in the writer, so a relay can crash anywhere. The writer
//! wakes a relay with a [`RelayRequest::Wake`] it does not wait for, and
//! again from its alarm while the relay has work, in case a wake-up is lost.
//! A slow or failing consumer only delays its own relay: the writer keeps
//! appending, and its outbox holds the backlog (bounded by
//! `writer.outbox_max_events`).

use events_core::{ApiError, ErrorCode};
use events_lake::{StoredEvent, encode_events_with, event_file_key, hour_prefix, observe_columns, partition_by_hour};
use events_runtime::{BlobStore, DurableObject, Host, Migration, ObjectContext, ObjectResult, Placement};
use serde::{Deserialize, Serialize};

use crate::alarm::AlarmSlot;
use crate::catalog::{CatalogRequest, CatalogResponse, EVENTS_TABLE, MaintainOptions, NewFile};
use crate::event_writer::{
    FlushPlan, MAX_OUTBOX_READ, OutboxRow, WriterConfig, WriterRequest, WriterResponse, corrupt,
};
use crate::fanout::{self, LAKE};
use crate::{Catalog, EventWriter};

/// Most flush plans one alarm run executes before it yields (and runs again at once).
pub const MAX_FLUSHES_PER_RUN: usize = 4;
/// Most outbox batches one alarm run hands over before it yields.
pub const MAX_BATCHES_PER_RUN: usize = 16;
/// Most plans one explicit [`RelayRequest::Flush`] executes (6.4 M events at
/// the largest plans), so that a flush under steady ingest ends.
pub const MAX_FLUSHES_PER_REQUEST: usize = 64;
/// Longest wait between retries of a failing consumer or object store (ms).
pub const MAX_RETRY_MS: i64 = 30_000;

/// Name of the relay of `consumer` for the writer shard called `writer`.
pub fn relay_name(writer: &str, consumer: &str) -> String {
    format!("{writer}/{consumer}")
}

/// Flushes everything the writer shard `writer` buffers, through its lake
/// relay, and answers the files written: what hosts call for shutdown and
/// `POST /admin/flush`.
pub async fn flush_writer<H: Host>(host: &H, writer: &str) -> ObjectResult<Vec<String>> {
    match host.call::<OutboxRelay>(&relay_name(writer, LAKE), RelayRequest::Flush).await? {
        RelayResponse::Files(files) => Ok(files),
        other => Err(out_of_protocol("lake relay (Flush)", other)),
    }
}

/// Requests to an [`OutboxRelay`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RelayRequest {
    /// The writer has work for this relay: run soon.
    Wake,
    /// Flushes everything buffered now and answers the files written
    /// (shutdown, `POST /admin/flush`, tests). Lake relay only.
    Flush,
    /// Compacts the closed hours now and answers the files written. Lake relay only.
    Compact,
}

/// Answers of an [`OutboxRelay`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RelayResponse {
    /// Done.
    Ok,
    /// Files written.
    Files(Vec<String>),
}

/// The relay object.
pub struct OutboxRelay {
    /// The writer shard's object name.
    writer: String,
    ns: String,
    /// The shard as it appears in file names (`0003`).
    shard: String,
    consumer: &'static str,
    config: WriterConfig,
    alarm: AlarmSlot,
    /// Delay before the next retry after consecutive failures (0: none failed).
    retry_ms: i64,
}

fn out_of_protocol(what: &str, answer: impl std::fmt::Debug) -> ApiError {
    ApiError::internal(format!("{what} answered {answer:?}"))
}

impl OutboxRelay {
    async fn writer<H: Host>(&self, cx: &ObjectContext<H>, req: WriterRequest) -> ObjectResult<WriterResponse> {
        cx.stub::<EventWriter>(self.writer.clone()).call(req).await
    }

    async fn catalog<H: Host>(&self, cx: &ObjectContext<H>, req: CatalogRequest) -> ObjectResult<CatalogResponse> {
        cx.stub::<Catalog>(self.ns.clone()).call(req).await
    }

    fn require_lake(&self) -> ObjectResult<()> {
        if self.consumer != LAKE {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "only the lake relay flushes and compacts"));
        }
        Ok(())
    }

    /// Executes one flush plan (the open one, or a new one when due or
    /// `force`d). `None` when there was nothing to flush.
    async fn flush_once<H: Host>(&self, cx: &ObjectContext<H>, force: bool) -> ObjectResult<Option<Vec<String>>> {
        let plan = match self.writer(cx, WriterRequest::TakeFlush { force }).await? {
            WriterResponse::Plan(plan) => plan,
            other => return Err(out_of_protocol("writer", other)),
        };
        let Some(plan) = plan else { return Ok(None) };
        assert!(plan.first <= plan.last, "a flush plan is a non-empty range: {plan:?}");
        let rows = self.read_plan(cx, plan).await?;
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
        let report =
            WriterRequest::FlushCommitted { plan, files: keys.len() as u64, events: events.len() as u64, hours };
        self.writer(cx, report).await?;
        metrics::counter!("events_flushed_total").increment(events.len() as u64);
        Ok(Some(keys))
    }

    /// The rows holding the plan's events, read a page at a time.
    async fn read_plan<H: Host>(&self, cx: &ObjectContext<H>, plan: FlushPlan) -> ObjectResult<Vec<OutboxRow>> {
        let mut all = Vec::new();
        let mut after = plan.first - 1;
        while after < plan.last {
            let rows = match self.writer(cx, WriterRequest::ReadFlush { plan, after, limit: MAX_OUTBOX_READ }).await? {
                WriterResponse::Rows { rows, .. } => rows,
                other => return Err(out_of_protocol("writer (ReadFlush)", other)),
            };
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
    async fn compact<H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        let closed = cx.now().as_millis() - events_lake::layout::HOUR_MS - self.config.compact_grace_ms;
        let prefixes = match self.writer(cx, WriterRequest::DueCompactions { closed }).await? {
            WriterResponse::Prefixes(prefixes) => prefixes,
            other => return Err(out_of_protocol("writer (DueCompactions)", other)),
        };
        let mut written = Vec::new();
        for prefix in prefixes {
            let options = MaintainOptions { compact: true, compact_prefix: Some(prefix.clone()), ..Default::default() };
            match self.catalog(cx, CatalogRequest::Maintain { table: Some(EVENTS_TABLE.into()), options }).await? {
                CatalogResponse::Maintained(reports) => {
                    written.extend(reports.into_iter().flat_map(|r| r.compacted_files));
                }
                other => return Err(out_of_protocol("catalog (Maintain)", other)),
            }
            self.writer(cx, WriterRequest::Compacted { prefix }).await?;
        }
        Ok(written)
    }

    /// One alarm run of the lake relay. Answers whether work is left.
    async fn run_lake<H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<bool> {
        for _ in 0..MAX_FLUSHES_PER_RUN {
            if self.flush_once(cx, false).await?.is_none() {
                self.compact(cx).await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One alarm run of a fan-out relay. Answers whether work is left.
    async fn run_fanout<H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<bool> {
        let consumer = self.consumer.to_string();
        for _ in 0..MAX_BATCHES_PER_RUN {
            let read = WriterRequest::ReadOutbox { consumer: consumer.clone(), limit: fanout::FANOUT_BATCH };
            let (after, rows) = match self.writer(cx, read).await? {
                WriterResponse::Rows { after, rows } => (after, rows),
                other => return Err(out_of_protocol("writer (ReadOutbox)", other)),
            };
            // An empty read also tells the writer this relay is going idle.
            let Some(upto) = rows.last().map(|r| r.last_seq) else { return Ok(false) };
            fanout::deliver(cx, &self.ns, self.consumer, &rows, after).await?;
            self.writer(cx, WriterRequest::AckOutbox { consumer: consumer.clone(), upto }).await?;
            metrics::counter!("events_outbox_relayed_total", "consumer" => self.consumer).increment(upto - after);
        }
        Ok(true)
    }
}

impl DurableObject for OutboxRelay {
    const CLASS: &'static str = "OutboxRelay";
    const PLACEMENT: Placement = Placement::Background;
    type Request = RelayRequest;
    type Response = RelayResponse;

    fn migrations() -> &'static [Migration] {
        &[]
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let bad_name = || ApiError::internal(format!("{:?} is not <ns>/<shard>/<consumer>", cx.name()));
        let (writer, consumer) = cx.name().rsplit_once('/').ok_or_else(bad_name)?;
        let (ns, shard) = writer.rsplit_once('/').ok_or_else(bad_name)?;
        let consumer = fanout::RELAYED.iter().copied().find(|c| *c == consumer).ok_or_else(bad_name)?;
        Ok(OutboxRelay {
            writer: writer.to_string(),
            ns: ns.to_string(),
            shard: format!("{:04}", shard.parse::<u32>().map_err(|_| bad_name())?),
            consumer,
            config: WriterConfig::from_host(cx.host()),
            alarm: AlarmSlot::load(cx.storage()).await?,
            retry_ms: 0,
        })
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: RelayRequest) -> ObjectResult<RelayResponse> {
        match req {
            RelayRequest::Wake => {
                // During a retry back-off the relay keeps its later alarm.
                let now = cx.now().as_millis();
                if self.retry_ms == 0 {
                    self.alarm.arm(cx.storage(), now).await?;
                }
                Ok(RelayResponse::Ok)
            }
            RelayRequest::Flush => {
                self.require_lake()?;
                let mut files = Vec::new();
                for _ in 0..MAX_FLUSHES_PER_REQUEST {
                    match self.flush_once(cx, true).await? {
                        Some(keys) => files.extend(keys),
                        None => break,
                    }
                }
                Ok(RelayResponse::Files(files))
            }
            RelayRequest::Compact => {
                self.require_lake()?;
                Ok(RelayResponse::Files(self.compact(cx).await?))
            }
        }
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        self.alarm.fired();
        let outcome = if self.consumer == LAKE { self.run_lake(cx).await } else { self.run_fanout(cx).await };
        let now = cx.now().as_millis();
        match outcome {
            Ok(more) => {
                self.retry_ms = 0;
                if more {
                    self.alarm.arm(cx.storage(), now).await?;
                }
            }
            Err(e) => {
                // The work stays in the writer's outbox; try again later.
                metrics::counter!("events_outbox_relay_failures_total", "consumer" => self.consumer).increment(1);
                let report =
                    WriterRequest::ConsumerFailed { consumer: self.consumer.to_string(), error: e.to_string() };
                // Best effort: the error is only shown in the writer's stats.
                let _ = self.writer(cx, report).await;
                self.retry_ms = (self.retry_ms * 2).clamp(fanout::FANOUT_RETRY_MS, MAX_RETRY_MS);
                self.alarm.arm(cx.storage(), now + self.retry_ms).await?;
            }
        }
        Ok(())
    }
}
