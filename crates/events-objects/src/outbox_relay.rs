//! [`Relay`]: moves a writer shard's accepted events to one consumer,
//! so that the writer never waits on any of them.
//!
//! One relay per (writer shard, consumer), named `<ns>/<shard>/<consumer>`:
//! - [`LAKE`] flushes the buffer to Parquet files, commits them to the
//!   catalog and compacts closed hours ([`crate::lake_flush`]; the flush
//!   protocol is described in [`crate::event_writer`]);
//! - every consumer in [`outbox::CONSUMERS`] gets the events after its
//!   cursor, in order, and the cursor moves only once it accepted them
//!   ([`crate::fanout`]).
//!
//! A relay keeps no state of its own beyond its alarm: plans, cursors and
//! errors live in the writer, so a relay can crash anywhere. The writer
//! wakes a relay with a [`RelayRequest::Wake`] it does not wait for, and
//! again from its alarm while the relay has work, in case a wake-up is lost.
//! A slow or failing consumer only delays its own relay: the writer keeps
//! appending, and its outbox holds the backlog (bounded by
//! `writer.outbox_max_events`).
//!
//! The relay reaches its writer only through the [`Outbox`] trait `W`
//! implements; [`crate::OutboxRelay`] is the relay of the
//! [`crate::EventWriter`].

use std::marker::PhantomData;

use events_core::{ApiError, ErrorCode};
use events_runtime::{DurableObject, Host, Migration, ObjectContext, ObjectResult, Placement};
use serde::{Deserialize, Serialize};

use crate::alarm::AlarmSlot;
use crate::fanout;
use crate::lake_flush::LakeFlush;
use crate::outbox::{self, LAKE, LakeConfig, Outbox};

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

/// Requests to an [`Relay`].
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

/// Answers of an [`Relay`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RelayResponse {
    /// Done.
    Ok,
    /// Files written.
    Files(Vec<String>),
}

/// The relay object of the writer class `W`.
pub struct Relay<W: Outbox> {
    /// The writer shard's object name.
    writer: String,
    ns: String,
    consumer: &'static str,
    /// The lake flush (used by the [`LAKE`] relay only).
    lake: LakeFlush,
    alarm: AlarmSlot,
    /// Delay before the next retry after consecutive failures (0: none failed).
    retry_ms: i64,
    _writer: PhantomData<fn() -> W>,
}

impl<W: Outbox> Relay<W> {
    fn require_lake(&self) -> ObjectResult<()> {
        if self.consumer != LAKE {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "only the lake relay flushes and compacts"));
        }
        Ok(())
    }

    /// Flushes everything buffered now, up to [`MAX_FLUSHES_PER_REQUEST`] plans.
    async fn flush_all<H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<Vec<String>> {
        self.require_lake()?;
        let mut files = Vec::new();
        for _ in 0..MAX_FLUSHES_PER_REQUEST {
            match self.lake.flush_once::<W, H>(cx, true).await? {
                Some(keys) => files.extend(keys),
                None => break,
            }
        }
        Ok(files)
    }

    /// One alarm run of a fan-out relay. Answers whether work is left.
    async fn run_fanout<H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<bool> {
        for _ in 0..MAX_BATCHES_PER_RUN {
            let (after, rows) = W::read(cx.host(), &self.writer, self.consumer, fanout::FANOUT_BATCH).await?;
            // An empty read also tells the writer this relay is going idle.
            let Some(upto) = rows.last().map(|r| r.last_seq) else { return Ok(false) };
            fanout::deliver(cx, &self.ns, self.consumer, &rows, after).await?;
            W::ack(cx.host(), &self.writer, self.consumer, upto).await?;
            metrics::counter!("events_outbox_relayed_total", "consumer" => self.consumer).increment(upto - after);
        }
        Ok(true)
    }
}

impl<W: Outbox> DurableObject for Relay<W> {
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
        let consumer = outbox::RELAYED.iter().copied().find(|c| *c == consumer).ok_or_else(bad_name)?;
        let lake = LakeFlush {
            writer: writer.to_string(),
            ns: ns.to_string(),
            shard: format!("{:04}", shard.parse::<u32>().map_err(|_| bad_name())?),
            config: LakeConfig::from_host(cx.host()),
        };
        Ok(Relay {
            writer: writer.to_string(),
            ns: ns.to_string(),
            consumer,
            lake,
            alarm: AlarmSlot::load(cx.storage()).await?,
            retry_ms: 0,
            _writer: PhantomData,
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
            RelayRequest::Flush => Ok(RelayResponse::Files(self.flush_all(cx).await?)),
            RelayRequest::Compact => {
                self.require_lake()?;
                Ok(RelayResponse::Files(self.lake.compact::<W, H>(cx).await?))
            }
        }
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        self.alarm.fired();
        let outcome = if self.consumer == LAKE { self.lake.run::<W, H>(cx).await } else { self.run_fanout(cx).await };
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
                // Best effort: the error is only shown in the writer's stats.
                let _ = W::report_failure(cx.host(), &self.writer, self.consumer, e.to_string()).await;
                self.retry_ms = (self.retry_ms * 2).clamp(fanout::FANOUT_RETRY_MS, MAX_RETRY_MS);
                self.alarm.arm(cx.storage(), now + self.retry_ms).await?;
            }
        }
        Ok(())
    }
}
