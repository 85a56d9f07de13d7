//! The [`DurableObject`] implementation: request dispatch and the alarm.

use events_runtime::context::ObjectStorage;
use events_runtime::{DurableObject, Host, HttpClient, Migration, ObjectContext, ObjectResult, SqlStorage};
use futures::StreamExt;

use super::*;

impl DurableObject for Subscriptions {
    const CLASS: &'static str = "Subscriptions";
    type Request = SubsRequest;
    type Response = SubsResponse;

    fn migrations() -> &'static [Migration] {
        MIGRATIONS
    }

    async fn load<H: Host>(cx: &ObjectContext<H>) -> ObjectResult<Self> {
        let (ns, shard) = parse_name(cx.name());
        let layout = if shard == 0 { cx.kv().get("layout")?.unwrap_or_default() } else { LayoutCache::default() };
        let mut me = Subscriptions {
            ns,
            shard,
            routes: Vec::new(),
            alarm: crate::alarm::AlarmSlot::load(cx.storage()).await?,
            layout,
            reported_at: 0,
            delivered_since_report: 0,
            last_backlog: 0,
            report_ms: crate::var_or(cx.host(), "subscriptions.report_interval_ms", DEFAULT_LOAD_REPORT_MS),
        };
        me.load_routes(cx.storage())?;
        Ok(me)
    }

    async fn handle<H: Host>(&mut self, cx: &ObjectContext<H>, req: SubsRequest) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        match req {
            SubsRequest::Patterns => Ok(self.patterns()),
            SubsRequest::Route { events } => self.route_events(cx, &events).await,
            SubsRequest::Create(spec) => self.create(cx, spec),
            SubsRequest::List { pattern, status, after, limit } => self.list(db, pattern, status, after, limit),
            SubsRequest::Get { id } => self.get(db, &id),
            SubsRequest::Update { id, patch } => self.apply_patch(cx, &id, patch).await,
            SubsRequest::Delete { id } => self.delete(cx, &id).await,
            SubsRequest::SetActive { id, active } => self.set_active(cx, &id, active).await,
            SubsRequest::RotateSecret { id, secret, overlap_ms } => {
                self.rotate_secret(cx, &id, secret, overlap_ms).await
            }
            SubsRequest::Attempts { id, event_id, before, limit } => {
                self.attempts(cx, id, event_id, before, limit).await
            }
            SubsRequest::Deliveries { id, status, after, limit } => self.deliveries(cx, id, status, after, limit).await,
            SubsRequest::Replay { id, dl_id } => self.replay(cx, id, dl_id).await,
            SubsRequest::Recover { id, since } => self.start_recovery(cx, &id, since).await,
            SubsRequest::Job { id, job_id } => Ok(SubsResponse::Job(Self::job(db, &id, &job_id)?)),
            SubsRequest::Stats { id } => self.all_stats(cx, &id).await,
            SubsRequest::ShardStats { id } => Self::shard_stats(db, &id),
            SubsRequest::Accept { configs, items } => self.accept_forwarded(cx, &configs, &items).await,
            SubsRequest::SyncSub { id, config } => self.sync_sub(cx, &id, config).await,
            SubsRequest::Layout => Ok(self.layout_info()),
            SubsRequest::PendingKeys { keys } => Ok(SubsResponse::Keys(Self::pending_keys(db, keys)?)),
        }
    }

    async fn alarm<H: Host>(&mut self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let db = cx.storage();
        let start = cx.now().as_millis();
        self.alarm.fired();
        // Load reports are advisory: a failed one is tried again at the next interval.
        if self.report_load(cx, start).await.is_err() {
            self.reported_at = start;
        }
        if !self.is_sub_shard() && self.layout.max_ever > 1 {
            self.release_held(cx).await?;
            self.forward(cx, start).await?;
        }
        let importing = self.import_from_lake(cx).await?;
        let jobs_running = self.advance_jobs(db, start)? || importing;
        let (outgoing, full) = self.prepare(cx, start)?;
        let sent: Vec<Sent> = futures::stream::iter(outgoing.into_iter().map(|out| async move {
            let began = cx.now().as_millis();
            let result = cx.host().http().send(out.request.clone()).await;
            Sent { out, result, duration_ms: cx.now().as_millis() - began }
        }))
        .buffer_unordered(MAX_CONCURRENT_DELIVERIES)
        .collect()
        .await;
        let now = cx.now().as_millis();
        self.record(cx, sent, now)?;
        Self::prune(db, now)?;
        let mut next = self.wake_at(db, now)?;
        if jobs_running || full {
            next = Some(now);
        }
        if let Some(r) = db.query_one("SELECT MIN(received_at) FROM events", &[])?
            && let Some(oldest) = r.opt_i64(0)
        {
            let prune_at = oldest + EVENT_LOG_RETENTION_MS;
            next = Some(next.map_or(prune_at, |n| n.min(prune_at)));
        }
        match next {
            Some(at) => self.alarm.arm(cx.storage(), at.max(now)).await?,
            None => cx.storage().delete_alarm().await?,
        }
        Ok(())
    }
}
