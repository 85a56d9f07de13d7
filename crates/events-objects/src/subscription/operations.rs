//! The operations API: create, update, read subscriptions, deliveries, attempts, jobs and statistics.

use std::collections::BTreeMap;

use events_core::pattern::Pattern;
use events_core::{ApiError, ErrorCode};
use events_runtime::{Host, ObjectContext, ObjectResult, Row, SqlStorage};

use super::*;

impl Subscriptions {
    pub(super) fn info<S: SqlStorage>(&self, db: &S, id: &str) -> ObjectResult<SubscriptionInfo> {
        let row = db
            .query_one(
                "SELECT id, pattern, url, status, settings, created_at, updated_at, failing_since, disabled_at, disabled_reason
                 FROM subscriptions WHERE id = ?1",
                &[id.into()],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no subscription {id}")))?;
        self.row_info(&row)
    }

    pub(super) fn row_info(&self, r: &Row) -> ObjectResult<SubscriptionInfo> {
        let s: Settings = serde_json::from_slice(r.bytes(4)).map_err(corrupt)?;
        Ok(SubscriptionInfo {
            id: r.str(0).to_string(),
            namespace: self.ns.clone(),
            pattern: r.str(1).to_string(),
            url: r.str(2).to_string(),
            status: r.str(3).to_string(),
            retry_schedule: s.retry_schedule,
            timeout_ms: s.timeout_ms,
            batch: s.batch,
            ordering_key: s.ordering_key,
            disable_after_ms: s.disable_after_ms,
            description: s.description,
            worker_id: s.worker_id,
            rpc_method: s.rpc_method,
            created_at: iso(r.i64(5)),
            updated_at: iso(r.i64(6)),
            failing_since: r.opt_i64(7).map(iso),
            disabled_at: r.opt_i64(8).map(iso),
            disabled_reason: r.opt_str(9).map(str::to_string),
        })
    }

    pub(super) fn settings<S: SqlStorage>(db: &S, id: &str) -> ObjectResult<Settings> {
        let row = db
            .query_one("SELECT settings FROM subscriptions WHERE id = ?1", &[id.into()])?
            .ok_or_else(|| ApiError::not_found(format!("no subscription {id}")))?;
        serde_json::from_slice(row.bytes(0)).map_err(corrupt)
    }

    pub(super) fn create<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        spec: SubscriptionSpec,
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        let pattern = Pattern::parse(&spec.pattern)?;
        check_url(&spec.url)?;
        let settings = Settings {
            retry_schedule: spec.retry_schedule.unwrap_or_else(|| DEFAULT_RETRY_SCHEDULE_MS.to_vec()),
            timeout_ms: spec.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            batch: spec.batch,
            ordering_key: spec.ordering_key,
            disable_after_ms: spec.disable_after_ms.unwrap_or(DEFAULT_DISABLE_AFTER_MS),
            description: spec.description,
            worker_id: spec.worker_id,
            rpc_method: spec.rpc_method,
        };
        check_settings(&settings)?;
        if let (Some(worker), Some(method)) = (&settings.worker_id, &settings.rpc_method) {
            Self::refuse_worker_duplicate(db, "", worker, pattern.as_str(), method)?;
        }
        let secret = match spec.secret {
            Some(s) => {
                secret_key(&s)?;
                s
            }
            None => Self::new_secret(cx),
        };
        let count = db.query_one("SELECT COUNT(*) FROM subscriptions", &[])?.map_or(0, |r| r.i64(0));
        if count as usize >= MAX_SUBSCRIPTIONS_PER_NAMESPACE {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("a namespace holds at most {MAX_SUBSCRIPTIONS_PER_NAMESPACE} subscriptions"),
            ));
        }
        let id = format!("sub_{}", cx.ulid());
        db.execute(
            "INSERT INTO subscriptions (id, pattern, url, status, settings, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'active', ?4, ?5, ?5)",
            &[
                id.as_str().into(),
                pattern.as_str().into(),
                spec.url.as_str().into(),
                serde_json::to_string(&settings).map_err(corrupt)?.into(),
                now.into(),
            ],
        )?;
        db.execute(
            "INSERT INTO secrets (sub_id, secret, created_at) VALUES (?1, ?2, ?3)",
            &[id.as_str().into(), secret.as_str().into(), now.into()],
        )?;
        self.load_routes(db)?;
        Ok(SubsResponse::Subscription { info: Box::new(self.info(db, &id)?), secret: Some(secret) })
    }

    pub(super) fn update<S: SqlStorage>(
        &mut self,
        db: &S,
        id: &str,
        patch: SubscriptionPatch,
        now: i64,
    ) -> ObjectResult<()> {
        let mut s = Self::settings(db, id)?;
        if let Some(p) = &patch.pattern {
            Pattern::parse(p)?;
            db.execute("UPDATE subscriptions SET pattern = ?2 WHERE id = ?1", &[id.into(), p.as_str().into()])?;
        }
        if let Some(u) = &patch.url {
            check_url(u)?;
            db.execute("UPDATE subscriptions SET url = ?2 WHERE id = ?1", &[id.into(), u.as_str().into()])?;
        }
        if let Some(v) = patch.retry_schedule {
            s.retry_schedule = v;
        }
        if let Some(v) = patch.timeout_ms {
            s.timeout_ms = v;
        }
        if let Some(v) = patch.batch {
            s.batch = Some(v);
        }
        if let Some(v) = patch.ordering_key {
            s.ordering_key = Some(v);
        }
        if let Some(v) = patch.disable_after_ms {
            s.disable_after_ms = v;
        }
        if let Some(v) = patch.description {
            s.description = Some(v);
        }
        if let Some(v) = patch.rpc_method {
            s.rpc_method = Some(v);
        }
        check_settings(&s)?;
        if let (Some(worker), Some(method)) = (&s.worker_id, &s.rpc_method) {
            let pattern = db
                .query_one("SELECT pattern FROM subscriptions WHERE id = ?1", &[id.into()])?
                .map(|r| r.str(0).to_string())
                .unwrap_or_default();
            Self::refuse_worker_duplicate(db, id, worker, &pattern, method)?;
        }
        db.execute(
            "UPDATE subscriptions SET settings = ?2, updated_at = ?3 WHERE id = ?1",
            &[id.into(), serde_json::to_string(&s).map_err(corrupt)?.into(), now.into()],
        )?;
        self.load_routes(db)
    }

    /// Refuses a second worker subscription (`/subscriptions/subscribe`) with
    /// the same worker, pattern and RPC method as another one than `except`:
    /// `CONFLICT`, the existing subscription's id in `details.subscriptionId`.
    fn refuse_worker_duplicate<S: SqlStorage>(
        db: &S,
        except: &str,
        worker: &str,
        pattern: &str,
        method: &str,
    ) -> ObjectResult<()> {
        let rows = db.query(
            "SELECT id, settings FROM subscriptions WHERE pattern = ?1 AND id != ?2",
            &[pattern.into(), except.into()],
        )?;
        for r in rows.iter() {
            let other: Settings = serde_json::from_slice(r.bytes(1)).map_err(corrupt)?;
            if other.worker_id.as_deref() == Some(worker) && other.rpc_method.as_deref() == Some(method) {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("subscription already exists for worker {worker}, pattern {pattern}, method {method}"),
                )
                .with_details(serde_json::json!({
                    "subscriptionId": r.str(0), "workerId": worker, "pattern": pattern, "rpcMethod": method,
                })));
            }
        }
        Ok(())
    }

    /// A page of subscriptions ([`SubsRequest::List`]).
    pub(super) fn list<S: SqlStorage>(
        &self,
        db: &S,
        pattern: Option<String>,
        status: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> ObjectResult<SubsResponse> {
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

    /// One subscription ([`SubsRequest::Get`]).
    pub(super) fn get<S: SqlStorage>(&self, db: &S, id: &str) -> ObjectResult<SubsResponse> {
        Ok(SubsResponse::Subscription { info: Box::new(self.info(db, id)?), secret: None })
    }

    /// Changes a subscription ([`SubsRequest::Update`]) and its replicas in the sub-shards.
    pub(super) async fn apply_patch<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        id: &str,
        patch: SubscriptionPatch,
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        self.update(db, id, patch, now)?;
        self.sync_sub_shards(cx, id).await?;
        Ok(SubsResponse::Subscription { info: Box::new(self.info(db, id)?), secret: None })
    }

    /// Deletes a subscription with everything recorded of it ([`SubsRequest::Delete`]).
    pub(super) async fn delete<H: Host>(&mut self, cx: &ObjectContext<H>, id: &str) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        Self::require(db, id)?;
        for table in ["subscriptions WHERE id", "secrets WHERE sub_id", "deliveries WHERE sub_id"] {
            db.execute(&format!("DELETE FROM {table} = ?1"), &[id.into()])?;
        }
        for table in ["attempts", "jobs", "ops_events"] {
            db.execute(&format!("DELETE FROM {table} WHERE sub_id = ?1"), &[id.into()])?;
        }
        self.load_routes(db)?;
        self.sync_sub_shards(cx, id).await?;
        Ok(SubsResponse::Ok)
    }

    /// Resumes or pauses a subscription ([`SubsRequest::SetActive`]).
    pub(super) async fn set_active<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        id: &str,
        active: bool,
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        Self::require(db, id)?;
        if active {
            db.execute(
                "UPDATE subscriptions SET status = 'active', failing_since = NULL, disabled_at = NULL,
                 disabled_reason = NULL, updated_at = ?2 WHERE id = ?1",
                &[id.into(), now.into()],
            )?;
            self.load_routes(db)?;
            if let Some(at) = self.wake_at(db, now)? {
                self.alarm.arm(cx.storage(), at.max(now)).await?;
            }
        } else {
            db.execute(
                "UPDATE subscriptions SET status = 'paused', updated_at = ?2 WHERE id = ?1 AND status != 'disabled'",
                &[id.into(), now.into()],
            )?;
        }
        self.sync_sub_shards(cx, id).await?;
        Ok(SubsResponse::Subscription { info: Box::new(self.info(db, id)?), secret: None })
    }

    /// Starts signing with a new secret; the old ones stay valid for the
    /// overlap ([`SubsRequest::RotateSecret`]).
    pub(super) async fn rotate_secret<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        id: &str,
        secret: Option<String>,
        overlap_ms: Option<i64>,
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        Self::require(db, id)?;
        let overlap = overlap_ms.unwrap_or(DEFAULT_ROTATION_OVERLAP_MS);
        if !(0..=MAX_ROTATION_OVERLAP_MS).contains(&overlap) {
            return Err(ApiError::new(ErrorCode::InvalidConfig, format!("overlapMs is 0-{MAX_ROTATION_OVERLAP_MS}")));
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
            &[id.into(), (now + overlap).into()],
        )?;
        db.execute(
            "INSERT INTO secrets (sub_id, secret, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(sub_id, secret) DO UPDATE SET expires_at = NULL",
            &[id.into(), secret.as_str().into(), now.into()],
        )?;
        self.sync_sub_shards(cx, id).await?;
        Ok(SubsResponse::Subscription { info: Box::new(self.info(db, id)?), secret: Some(secret) })
    }

    /// Statistics over the main object and its sub-shards ([`SubsRequest::Stats`]).
    pub(super) async fn all_stats<H: Host>(&self, cx: &ObjectContext<H>, id: &str) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        Self::require(db, id)?;
        let mut parts = vec![Self::stats(db, id)?];
        for answer in self.ask_sub_shards(cx, &SubsRequest::ShardStats { id: id.to_string() }).await? {
            if let SubsResponse::ShardStats(s, lat) = answer {
                parts.push((s, lat));
            }
        }
        Ok(SubsResponse::Stats(combine_stats(parts)))
    }

    /// This object's part of the statistics ([`SubsRequest::ShardStats`]).
    pub(super) fn shard_stats<S: SqlStorage>(db: &S, id: &str) -> ObjectResult<SubsResponse> {
        Self::require(db, id)?;
        let (stats, sample) = Self::stats(db, id)?;
        Ok(SubsResponse::ShardStats(stats, sample))
    }

    pub(super) fn require<S: SqlStorage>(db: &S, id: &str) -> ObjectResult<()> {
        if db.query_one("SELECT 1 FROM subscriptions WHERE id = ?1", &[id.into()])?.is_none() {
            return Err(ApiError::not_found(format!("no subscription {id}")));
        }
        Ok(())
    }

    pub(super) fn job<S: SqlStorage>(db: &S, sub: &str, job: &str) -> ObjectResult<JobInfo> {
        let r = db
            .query_one(
                "SELECT id, sub_id, since, status, total, processed, requeued, created_at, finished_at,
                        lake_next IS NOT NULL, imported, error
                 FROM jobs WHERE id = ?1 AND sub_id = ?2",
                &[job.into(), sub.into()],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no recovery job {job}")))?;
        Ok(JobInfo {
            id: r.str(0).to_string(),
            subscription_id: r.str(1).to_string(),
            since: iso(r.i64(2)),
            status: r.str(3).to_string(),
            error: r.opt_str(11).map(str::to_string),
            phase: match (r.str(3), r.i64(9) != 0) {
                ("done" | "failed", _) => "done",
                (_, true) => "lake",
                _ => "log",
            }
            .to_string(),
            imported: r.i64(10),
            total: r.i64(4),
            processed: r.i64(5),
            requeued: r.i64(6),
            created_at: iso(r.i64(7)),
            finished_at: r.opt_i64(8).map(iso),
        })
    }

    /// Statistics of this object alone, with the latency sample behind its percentiles.
    pub(super) fn stats<S: SqlStorage>(db: &S, id: &str) -> ObjectResult<(SubscriptionStats, Vec<i64>)> {
        // `forward` and `held` deliveries wait here for their sub-shard; `forwarded` ones are counted there.
        let count = |status: &str| -> ObjectResult<i64> {
            Ok(db
                .query_one(
                    "SELECT COUNT(*) FROM deliveries WHERE sub_id = ?1
                     AND (status = ?2 OR (?2 = 'pending' AND status IN ('forward', 'held')))",
                    &[id.into(), status.into()],
                )?
                .map_or(0, |r| r.i64(0)))
        };
        let a = db
            .query_one("SELECT COUNT(*), COALESCE(SUM(ok), 0) FROM attempts WHERE sub_id = ?1", &[id.into()])?
            .expect("aggregate row");
        let (attempts, ok) = (a.i64(0), a.i64(1));
        let mut lat: Vec<i64> = db
            .query(
                "SELECT latency_ms FROM deliveries WHERE sub_id = ?1 AND status = 'delivered' AND latency_ms IS NOT NULL
                 ORDER BY delivered_at DESC LIMIT ?2",
                &[id.into(), LATENCY_SAMPLE.into()],
            )?
            .iter()
            .map(|r| r.i64(0))
            .collect();
        lat.sort_unstable();
        let latency_ms = percentiles(&lat);
        let ops_events = db
            .query("SELECT kind, at, message FROM ops_events WHERE sub_id = ?1 ORDER BY id", &[id.into()])?
            .iter()
            .map(|r| OpsEvent { kind: r.str(0).to_string(), at: iso(r.i64(1)), message: r.str(2).to_string() })
            .collect();
        let stats = SubscriptionStats {
            delivered: count("delivered")?,
            failed_attempts: attempts - ok,
            attempts,
            pending: count("pending")?,
            dead: count("dead")?,
            success_rate: if attempts == 0 { 1.0 } else { ok as f64 / attempts as f64 },
            latency_ms,
            ops_events,
        };
        Ok((stats, lat))
    }

    pub(super) fn delivery_info(r: &Row) -> DeliveryInfo {
        let status = r.str(3).to_string();
        DeliveryInfo {
            id: r.str(0).to_string(),
            event_id: r.str(1).to_string(),
            event_type: r.str(2).to_string(),
            next_attempt_at: (status == "pending").then(|| iso(r.i64(5))),
            status,
            attempts: r.i64(4),
            created_at: iso(r.i64(6)),
            delivered_at: r.opt_i64(7).map(iso),
            dead_at: r.opt_i64(8).map(iso),
            dead_reason: r.opt_str(9).map(str::to_string),
            last_error: r.opt_str(10).map(str::to_string),
        }
    }
}

/// p50, p90, p99 and max of a sorted sample.
fn percentiles(sorted: &[i64]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    if !sorted.is_empty() {
        for (name, q) in [("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)] {
            let idx = ((sorted.len() * q).div_ceil(100)).clamp(1, sorted.len()) - 1;
            out.insert(name.to_string(), sorted[idx]);
        }
    }
    out
}

/// The statistics of a subscription over the main object and its sub-shards.
pub(super) fn combine_stats(parts: Vec<(SubscriptionStats, Vec<i64>)>) -> SubscriptionStats {
    let mut total = SubscriptionStats {
        delivered: 0,
        failed_attempts: 0,
        attempts: 0,
        pending: 0,
        dead: 0,
        success_rate: 1.0,
        latency_ms: BTreeMap::new(),
        ops_events: Vec::new(),
    };
    let mut sample = Vec::new();
    for (s, lat) in parts {
        total.delivered += s.delivered;
        total.failed_attempts += s.failed_attempts;
        total.attempts += s.attempts;
        total.pending += s.pending;
        total.dead += s.dead;
        total.ops_events.extend(s.ops_events);
        sample.extend(lat);
    }
    if total.attempts > 0 {
        total.success_rate = (total.attempts - total.failed_attempts) as f64 / total.attempts as f64;
    }
    sample.sort_unstable();
    total.latency_ms = percentiles(&sample);
    total
}
