//! The seam the relays reach the writer through: [`Outbox`] for the
//! [`EventWriter`], each call one writer message, and [`flush_writer`].

use events_core::ApiError;
use events_runtime::{Host, ObjectResult};

use super::{EventWriter, WriterRequest, WriterResponse};
use crate::OutboxRelay;
use crate::outbox::{FlushPlan, FlushReport, LAKE, Outbox, OutboxRow};
use crate::outbox_relay::{RelayRequest, RelayResponse, relay_name};

fn out_of_protocol(what: &str, answer: impl std::fmt::Debug) -> ApiError {
    ApiError::internal(format!("{what} answered {answer:?}"))
}

/// Sends `req` to the writer shard `shard`.
async fn call<H: Host>(host: &H, shard: &str, req: WriterRequest) -> ObjectResult<WriterResponse> {
    host.call::<EventWriter>(shard, req).await
}

/// Sends `req`, which is answered `Ok`.
async fn call_ok<H: Host>(host: &H, shard: &str, req: WriterRequest) -> ObjectResult<()> {
    call(host, shard, req).await.map(drop)
}

impl Outbox for EventWriter {
    async fn read<H: Host>(host: &H, shard: &str, consumer: &str, limit: usize) -> ObjectResult<(u64, Vec<OutboxRow>)> {
        match call(host, shard, WriterRequest::ReadOutbox { consumer: consumer.to_string(), limit }).await? {
            WriterResponse::Rows { after, rows } => Ok((after, rows)),
            other => Err(out_of_protocol("writer (ReadOutbox)", other)),
        }
    }

    async fn read_log<H: Host>(host: &H, shard: &str, after: u64, limit: usize) -> ObjectResult<(u64, Vec<OutboxRow>)> {
        match call(host, shard, WriterRequest::ReadLog { after, limit }).await? {
            WriterResponse::Log { last_seq, rows } => Ok((last_seq, rows)),
            other => Err(out_of_protocol("writer (ReadLog)", other)),
        }
    }

    async fn ack<H: Host>(host: &H, shard: &str, consumer: &str, upto: u64) -> ObjectResult<()> {
        call_ok(host, shard, WriterRequest::AckOutbox { consumer: consumer.to_string(), upto }).await
    }

    async fn report_failure<H: Host>(host: &H, shard: &str, consumer: &str, error: String) -> ObjectResult<()> {
        call_ok(host, shard, WriterRequest::ConsumerFailed { consumer: consumer.to_string(), error }).await
    }

    async fn take_flush<H: Host>(host: &H, shard: &str, force: bool) -> ObjectResult<Option<FlushPlan>> {
        match call(host, shard, WriterRequest::TakeFlush { force }).await? {
            WriterResponse::Plan(plan) => Ok(plan),
            other => Err(out_of_protocol("writer", other)),
        }
    }

    async fn read_flush<H: Host>(
        host: &H,
        shard: &str,
        plan: FlushPlan,
        after: u64,
        limit: usize,
    ) -> ObjectResult<Vec<OutboxRow>> {
        match call(host, shard, WriterRequest::ReadFlush { plan, after, limit }).await? {
            WriterResponse::Rows { rows, .. } => Ok(rows),
            other => Err(out_of_protocol("writer (ReadFlush)", other)),
        }
    }

    async fn flush_committed<H: Host>(host: &H, shard: &str, report: FlushReport) -> ObjectResult<()> {
        let FlushReport { plan, files, events, hours } = report;
        call_ok(host, shard, WriterRequest::FlushCommitted { plan, files, events, hours }).await
    }

    async fn due_compactions<H: Host>(host: &H, shard: &str, closed: i64) -> ObjectResult<Vec<String>> {
        match call(host, shard, WriterRequest::DueCompactions { closed }).await? {
            WriterResponse::Prefixes(prefixes) => Ok(prefixes),
            other => Err(out_of_protocol("writer (DueCompactions)", other)),
        }
    }

    async fn compacted<H: Host>(host: &H, shard: &str, prefix: String) -> ObjectResult<()> {
        call_ok(host, shard, WriterRequest::Compacted { prefix }).await
    }
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
