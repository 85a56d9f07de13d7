//! The [`DurableObject`] implementation: request dispatch and the alarm.

use events_core::{ApiError, ErrorCode};
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
        let now = cx.now().as_millis();
        let limit_of = |l: usize| l.clamp(1, MAX_LIST_LIMIT);
        match req {
            SubsRequest::Patterns => Ok(SubsResponse::Patterns(
                self.routes.iter().filter(|r| r.enabled).map(|r| r.pattern.as_str().to_string()).collect(),
            )),
            SubsRequest::Route { events } => {
                if self.routes.iter().all(|r| !r.enabled) {
                    return Ok(SubsResponse::Routed { enqueued: 0 });
                }
                let enqueued = self.route(db, &events, now)?;
                if enqueued > 0
                    && let Some(at) = self.wake_at(db, now)?
                {
                    self.alarm.arm(cx.storage(), at.max(now)).await?;
                }
                Ok(SubsResponse::Routed { enqueued })
            }
            SubsRequest::Create(spec) => self.create(cx, spec),
            SubsRequest::List { pattern, status, after, limit } => {
                let limit = limit_of(limit);
                let rows = db.query(
                    "SELECT id, pattern, url, status, settings, created_at, updated_at, failing_since, disabled_at, disabled_reason
                     FROM subscriptions WHERE id > ?1 AND (?2 IS NULL OR pattern = ?2) AND (?3 IS NULL OR status = ?3)
                     ORDER BY id LIMIT ?4",
                    &[after.unwrap_or_default().into(), pattern.into(), status.into(), (limit + 1).into()],
                )?;
                let mut items = rows.iter().map(|r| self.row_info(r)).collect::<ObjectResult<Vec<_>>>()?;
                let next = (items.len() > limit).then(|| {
                    items.truncate(limit);
                    items.last().expect("non-empty").id.clone()
                });
                Ok(SubsResponse::List { items, next })
            }
            SubsRequest::Get { id } => {
                Ok(SubsResponse::Subscription { info: Box::new(self.info(db, &id)?), secret: None })
            }
            SubsRequest::Update { id, patch } => {
                self.update(db, &id, patch, now)?;
                self.sync_sub_shards(cx, &id).await?;
                Ok(SubsResponse::Subscription { info: Box::new(self.info(db, &id)?), secret: None })
            }
            SubsRequest::Delete { id } => {
                Self::require(db, &id)?;
                for table in ["subscriptions WHERE id", "secrets WHERE sub_id", "deliveries WHERE sub_id"] {
                    db.execute(&format!("DELETE FROM {table} = ?1"), &[id.as_str().into()])?;
                }
                for table in ["attempts", "jobs", "ops_events"] {
                    db.execute(&format!("DELETE FROM {table} WHERE sub_id = ?1"), &[id.as_str().into()])?;
                }
                self.load_routes(db)?;
                self.sync_sub_shards(cx, &id).await?;
                Ok(SubsResponse::Ok)
            }
            SubsRequest::SetActive { id, active } => {
                Self::require(db, &id)?;
                if active {
                    db.execute(
                        "UPDATE subscriptions SET status = 'active', failing_since = NULL, disabled_at = NULL,
                         disabled_reason = NULL, updated_at = ?2 WHERE id = ?1",
                        &[id.as_str().into(), now.into()],
                    )?;
                    self.load_routes(db)?;
                    if let Some(at) = self.wake_at(db, now)? {
                        self.alarm.arm(cx.storage(), at.max(now)).await?;
                    }
                } else {
                    db.execute(
                        "UPDATE subscriptions SET status = 'paused', updated_at = ?2 WHERE id = ?1 AND status != 'disabled'",
                        &[id.as_str().into(), now.into()],
                    )?;
                }
                self.sync_sub_shards(cx, &id).await?;
                Ok(SubsResponse::Subscription { info: Box::new(self.info(db, &id)?), secret: None })
            }
            SubsRequest::RotateSecret { id, secret, overlap_ms } => {
                Self::require(db, &id)?;
                let overlap = overlap_ms.unwrap_or(DEFAULT_ROTATION_OVERLAP_MS);
                if !(0..=MAX_ROTATION_OVERLAP_MS).contains(&overlap) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidConfig,
                        format!("overlapMs is 0-{MAX_ROTATION_OVERLAP_MS}"),
                    ));
                }
                let secret = match secret {
                    Some(s) => {
                        secret_key(&s)?;
                        s
                    }
                    None => Self::new_secret(cx),
                };
                db.execute(
                    "UPDATE secrets SET expires_at = ?2 WHERE sub_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                    &[id.as_str().into(), (now + overlap).into()],
                )?;
                db.execute(
                    "INSERT INTO secrets (sub_id, secret, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(sub_id, secret) DO UPDATE SET expires_at = NULL",
                    &[id.as_str().into(), secret.as_str().into(), now.into()],
                )?;
                self.sync_sub_shards(cx, &id).await?;
                Ok(SubsResponse::Subscription { info: Box::new(self.info(db, &id)?), secret: Some(secret) })
            }
            SubsRequest::Attempts { id, event_id, before, limit } => {
                Self::require(db, &id)?;
                let limit = limit_of(limit);
                let ask = SubsRequest::Attempts { id: id.clone(), event_id: event_id.clone(), before, limit };
                let rows = db.query(
                    "SELECT id, delivery_id, event_id, attempt, at, status, duration_ms, ok, response, error, error_code, batch_id
                     FROM attempts WHERE sub_id = ?1 AND (?2 IS NULL OR event_id = ?2) AND id < ?3
                     ORDER BY id DESC LIMIT ?4",
                    &[id.as_str().into(), event_id.into(), before.unwrap_or(events_runtime::MAX_EXACT_INTEGER).into(), (limit + 1).into()],
                )?;
                let mut items: Vec<AttemptInfo> = rows
                    .iter()
                    .map(|r| AttemptInfo {
                        id: r.i64(0),
                        delivery_id: r.str(1).to_string(),
                        event_id: r.str(2).to_string(),
                        attempt: r.i64(3),
                        at: iso(r.i64(4)),
                        status: r.opt_i64(5).map(|s| s as u16),
                        duration_ms: r.i64(6),
                        ok: r.i64(7) != 0,
                        response: r.opt_str(8).map(str::to_string),
                        error: r.opt_str(9).map(str::to_string),
                        error_code: r.opt_str(10).map(str::to_string),
                        batch_id: r.opt_str(11).map(str::to_string),
                    })
                    .collect();
                let next = (items.len() > limit).then(|| {
                    items.truncate(limit);
                    items.last().expect("non-empty").id
                });
                let (mut pages, mut any_more) = (vec![items], next.is_some());
                for answer in self.ask_sub_shards(cx, &ask).await? {
                    if let SubsResponse::Attempts { items, next } = answer {
                        any_more |= next.is_some();
                        pages.push(items);
                    }
                }
                let (items, next) = merge_pages(pages, limit, any_more, |a| a.id, true);
                Ok(SubsResponse::Attempts { items, next })
            }
            SubsRequest::Deliveries { id, status, after, limit } => {
                Self::require(db, &id)?;
                let limit = limit_of(limit);
                let ask =
                    SubsRequest::Deliveries { id: id.clone(), status: status.clone(), after: after.clone(), limit };
                // `forwarded` deliveries are listed by the sub-shard that owns them;
                // `forward` and `held` ones are pending here.
                let rows = db.query(
                    "SELECT * FROM (SELECT d.id, d.event_id, COALESCE(e.type, ''),
                            CASE WHEN d.status IN ('forward', 'held') THEN 'pending' ELSE d.status END AS shown,
                            d.attempts, d.next_at, d.created_at, d.delivered_at, d.dead_at, d.dead_reason, d.last_error
                     FROM deliveries d LEFT JOIN events e ON e.id = d.event_id
                     WHERE d.sub_id = ?1 AND d.status != 'forwarded' AND d.id > ?3)
                     WHERE ?2 IS NULL OR shown = ?2 ORDER BY 1 LIMIT ?4",
                    &[id.as_str().into(), status.into(), after.unwrap_or_default().into(), (limit + 1).into()],
                )?;
                let mut items: Vec<DeliveryInfo> = rows.iter().map(Self::delivery_info).collect();
                let next = (items.len() > limit).then(|| {
                    items.truncate(limit);
                    items.last().expect("non-empty").id.clone()
                });
                let (mut pages, mut any_more) = (vec![items], next.is_some());
                for answer in self.ask_sub_shards(cx, &ask).await? {
                    if let SubsResponse::Deliveries { items, next } = answer {
                        any_more |= next.is_some();
                        pages.push(items);
                    }
                }
                let (items, next) = merge_pages(pages, limit, any_more, |d| d.id.clone(), false);
                Ok(SubsResponse::Deliveries { items, next })
            }
            SubsRequest::Replay { id, dl_id } => {
                Self::require(db, &id)?;
                let reset = "UPDATE deliveries SET status = 'pending', attempts = 0, next_at = ?2, dead_at = NULL,
                             dead_reason = NULL WHERE sub_id = ?1 AND status = 'dead'";
                let local = match &dl_id {
                    Some(dl) => db.execute(
                        &format!("{reset} AND id = ?3"),
                        &[id.as_str().into(), now.into(), dl.as_str().into()],
                    )?,
                    None => db.execute(reset, &[id.as_str().into(), now.into()])?,
                };
                if local > 0 {
                    self.alarm.arm(cx.storage(), now).await?;
                }
                let mut count = local as usize;
                if !(local > 0 && dl_id.is_some()) {
                    let ask = SubsRequest::Replay { id: id.clone(), dl_id: dl_id.clone() };
                    for answer in self.ask_sub_shards(cx, &ask).await? {
                        if let SubsResponse::Replayed { count: n } = answer {
                            count += n;
                        }
                    }
                }
                if let Some(dl) = dl_id
                    && count == 0
                {
                    return Err(ApiError::not_found(format!("no dead letter {dl} in subscription {id}")));
                }
                Ok(SubsResponse::Replayed { count })
            }
            SubsRequest::Recover { id, since } => {
                Self::require(db, &id)?;
                if since.as_millis() < now - MAX_RECOVER_AGE_MS {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("since reaches back at most {} days", MAX_RECOVER_AGE_MS / 86_400_000),
                    ));
                }
                let lake_next = events_lake::layout::hour_start(since).as_millis();
                let lake_end =
                    events_lake::layout::hour_start(Timestamp(now)).as_millis() + events_lake::layout::HOUR_MS;
                let r = db
                    .query_one(
                        "SELECT COALESCE(MAX(seq), 0), (SELECT COUNT(*) FROM events WHERE ts >= ?1) FROM events",
                        &[since.as_millis().into()],
                    )?
                    .expect("aggregate row");
                let job = format!("job_{}", cx.ulid());
                db.execute(
                    "INSERT INTO jobs (id, sub_id, since, cursor, last_seq, total, processed, requeued, status, created_at,
                                       lake_next, lake_end)
                     VALUES (?1, ?2, ?3, 0, ?4, ?5, 0, 0, 'running', ?6, ?7, ?8)",
                    &[
                        job.as_str().into(),
                        id.as_str().into(),
                        since.as_millis().into(),
                        r.i64(0).into(),
                        r.i64(1).into(),
                        now.into(),
                        lake_next.into(),
                        lake_end.into(),
                    ],
                )?;
                self.alarm.arm(cx.storage(), now).await?;
                Ok(SubsResponse::Job(Self::job(db, &id, &job)?))
            }
            SubsRequest::Job { id, job_id } => Ok(SubsResponse::Job(Self::job(db, &id, &job_id)?)),
            SubsRequest::Stats { id } => {
                Self::require(db, &id)?;
                let mut parts = vec![Self::stats(db, &id)?];
                for answer in self.ask_sub_shards(cx, &SubsRequest::ShardStats { id: id.clone() }).await? {
                    if let SubsResponse::ShardStats(s, lat) = answer {
                        parts.push((s, lat));
                    }
                }
                Ok(SubsResponse::Stats(operations::combine_stats(parts)))
            }
            SubsRequest::ShardStats { id } => {
                Self::require(db, &id)?;
                let (stats, sample) = Self::stats(db, &id)?;
                Ok(SubsResponse::ShardStats(stats, sample))
            }
            SubsRequest::Accept { configs, items } => {
                if !self.is_sub_shard() {
                    return Err(ApiError::internal("forwarded deliveries reach sub-shards only"));
                }
                let enqueued = self.accept(db, &configs, &items)?;
                if let Some(at) = self.wake_at(db, now)? {
                    self.alarm.arm(cx.storage(), at.max(now)).await?;
                }
                Ok(SubsResponse::Routed { enqueued })
            }
            SubsRequest::SyncSub { id, config } => {
                if !self.is_sub_shard() {
                    return Err(ApiError::internal("subscription replicas live in sub-shards only"));
                }
                match config {
                    Some(c) => Self::store_config(db, &c)?,
                    None => {
                        for table in ["subscriptions WHERE id", "secrets WHERE sub_id", "deliveries WHERE sub_id"] {
                            db.execute(&format!("DELETE FROM {table} = ?1"), &[id.as_str().into()])?;
                        }
                        for table in ["attempts", "ops_events"] {
                            db.execute(&format!("DELETE FROM {table} WHERE sub_id = ?1"), &[id.as_str().into()])?;
                        }
                    }
                }
                self.load_routes(db)?;
                if let Some(at) = self.wake_at(db, now)? {
                    self.alarm.arm(cx.storage(), at.max(now)).await?;
                }
                Ok(SubsResponse::Ok)
            }
            SubsRequest::Layout => Ok(SubsResponse::Layout {
                shards: self.layout.shards.max(1),
                epoch: self.layout.epoch,
                max_ever: self.layout.max_ever.max(1),
            }),
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
