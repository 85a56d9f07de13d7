//! Sub-shards: the delivery work of a hot namespace split across several
//! objects, and merged back when the load falls.
//!
//! The main object `<ns>` (sub-shard 0) stays the router and the single
//! place where a (subscription, event) pair becomes a delivery (its
//! `UNIQUE (sub_id, event_id)` is what makes redelivery from upstream
//! harmless). Sub-shard `k > 0` is an object of the same class named
//! `<ns>/<k>` that only delivers: it holds a replica of the subscriptions it
//! was handed, its own delivery queue, attempts and dead letters.
//!
//! # Placement
//! The main object follows the sub-shard count `N` of the namespace's
//! [`crate::ShardCoordinator`] (fetched with every load report, every
//! [`DEFAULT_LOAD_REPORT_MS`]). A new delivery's owner is
//! `fnv1a(ordering key or event id) % N`, decided once and stored with the
//! delivery (`deliveries.shard`), so a retry, a crash or a later layout
//! change never sends the same delivery to a second owner. Deliveries owned
//! by the main object are `pending` there; the others are `forward` until
//! their owner has accepted them (at least once: the owner keys on
//! `(sub_id, event_id)` too), then `forwarded`.
//!
//! # Per-key order through a split or a merge (the fence)
//! The owner of an ordering key is the owner of its latest delivery. When
//! the layout maps a key elsewhere, its new deliveries are `held` in the main
//! object. A held key is released to its new owner only when the old owner
//! has nothing of that key left to send: no `forward` row here, and no
//! `pending` delivery there (asked with `SubsRequest::PendingKeys`; the
//! calls go main → sub-shard only, so they cannot form a cycle). Keys whose
//! owner does not change, and deliveries without a key, flow at once.
//! Dead letters do not hold a key back, as within one object.
//!
//! A sub-shard removed by a merge gets nothing new but keeps delivering what
//! it holds; the operations API of the main object (deliveries, attempts,
//! dead letters, replay, statistics) reads and acts on every sub-shard that
//! was ever used (`max_ever`).

use std::collections::{BTreeMap, HashSet};

use events_core::{ApiError, ErrorCode};
use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage};
use serde::{Deserialize, Serialize};

use crate::shard_coordinator::{ShardLayout, ShardRequest};

use super::*;

/// Default time between two load reports of a sub-shard (ms).
pub const DEFAULT_LOAD_REPORT_MS: i64 = 1_000;
/// Most deliveries handed to one sub-shard per call.
pub const FORWARD_BATCH: usize = 2_000;
/// Most held keys examined per alarm run.
pub const HELD_KEYS_PER_RUN: usize = 1_000;
/// How soon a held key is examined again (ms).
pub const FENCE_POLL_MS: i64 = 50;
/// Attempt ids of sub-shard `k` start at `k << ATTEMPT_ID_SHIFT`, so the
/// ids of all sub-shards are distinct and one cursor pages through them.
pub const ATTEMPT_ID_SHIFT: u32 = 40;

/// The main object's view of the layout (kept in its key/value store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LayoutCache {
    /// Sub-shards new deliveries are spread over.
    pub(super) shards: u32,
    /// The coordinator's epoch of that count.
    pub(super) epoch: u64,
    /// Most sub-shards ever used (the operations API reads all of them).
    pub(super) max_ever: u32,
}

/// The name of sub-shard `k` of namespace `ns` (0 is the main object).
pub fn shard_name(ns: &str, k: u32) -> String {
    if k == 0 { ns.to_string() } else { format!("{ns}/{k}") }
}

/// The namespace and sub-shard number of an object name.
pub(super) fn parse_name(name: &str) -> (String, u32) {
    match name.split_once('/') {
        Some((ns, k)) => (ns.to_string(), k.parse().expect("sub-shard names end in a number")),
        None => (name.to_string(), 0),
    }
}

/// The sub-shard of `key` among `shards`.
pub fn shard_of(key: &str, shards: u32) -> u32 {
    assert!(shards > 0, "at least one sub-shard");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as u32
}

impl Subscriptions {
    /// Whether this object is a sub-shard (not the main object).
    pub(super) fn is_sub_shard(&self) -> bool {
        self.shard != 0
    }

    /// Owner and initial status of a new delivery of `sub` for an event.
    pub(super) fn place<S: SqlStorage>(
        &self,
        db: &S,
        sub: &str,
        key: Option<&str>,
        event_id: &str,
    ) -> ObjectResult<(u32, &'static str)> {
        if self.layout.max_ever <= 1 {
            return Ok((0, "pending"));
        }
        let n = self.layout.shards.max(1);
        let local = |s: u32| if s == 0 { "pending" } else { "forward" };
        let Some(key) = key else {
            let s = shard_of(event_id, n);
            return Ok((s, local(s)));
        };
        let target = shard_of(key, n);
        let last = db.query_one(
            "SELECT status, shard FROM deliveries WHERE sub_id = ?1 AND order_key = ?2 ORDER BY seq DESC LIMIT 1",
            &[sub.into(), key.into()],
        )?;
        Ok(match last {
            Some(r) if r.str(0) == "held" || r.i64(1) != target as i64 => (target, "held"),
            _ => (target, local(target)),
        })
    }

    /// Reports this sub-shard's load to the coordinator (at most every
    /// report interval) and, in the main object, adopts the layout it answers.
    pub(super) async fn report_load<H: Host>(&mut self, cx: &ObjectContext<H>, now: i64) -> ObjectResult<()> {
        if now - self.reported_at < self.report_ms {
            return Ok(());
        }
        let db = cx.storage();
        // Paused and disabled subscriptions wait for an operator, not for capacity.
        let backlog = db
            .query_one(
                "SELECT COUNT(*) FROM deliveries d JOIN subscriptions s ON s.id = d.sub_id
                 WHERE d.status IN ('pending', 'forward', 'held') AND s.status = 'active'",
                &[],
            )?
            .map_or(0, |r| r.i64(0)) as u64;
        let span = (now - self.reported_at).max(1) as u64;
        let rate = if self.reported_at == 0 { 0 } else { self.delivered_since_report * 1_000 / span };
        let layout: ShardLayout = cx
            .stub::<crate::ShardCoordinator>(self.ns.clone())
            .call(ShardRequest::SubsLoad { shard: self.shard, backlog, rate })
            .await?;
        self.reported_at = now;
        self.delivered_since_report = 0;
        self.last_backlog = backlog;
        if !self.is_sub_shard() && layout.subscription_epoch != self.layout.epoch {
            let shards = layout.subscription_shards.max(1);
            self.layout =
                LayoutCache { shards, epoch: layout.subscription_epoch, max_ever: self.layout.max_ever.max(shards) };
            cx.kv().put("layout", &self.layout)?;
        }
        Ok(())
    }

    /// When the sharding work of the main object is next due, if any.
    pub(super) fn sharding_due<S: SqlStorage>(&self, db: &S, now: i64) -> ObjectResult<Option<i64>> {
        let mut due = None;
        if !self.is_sub_shard() && self.layout.max_ever > 1 {
            if db.query_one("SELECT 1 FROM deliveries WHERE status = 'forward' LIMIT 1", &[])?.is_some() {
                due = Some(now);
            } else if db.query_one("SELECT 1 FROM deliveries WHERE status = 'held' LIMIT 1", &[])?.is_some() {
                due = Some(now + FENCE_POLL_MS);
            }
        }
        // Keep reporting while split (so that a quiet namespace merges back),
        // and once more after a backlog drained.
        if self.layout.shards > 1 || self.last_backlog > 0 {
            let report = self.reported_at + self.report_ms;
            due = Some(due.map_or(report, |d: i64| d.min(report)));
        }
        Ok(due)
    }

    /// When this object next has work: deliveries due, sharding work, a load report.
    pub(super) fn wake_at<S: SqlStorage>(&self, db: &S, now: i64) -> ObjectResult<Option<i64>> {
        let a = Self::next_due(db)?;
        let b = self.sharding_due(db, now)?;
        Ok(match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        })
    }

    /// Releases held keys whose previous owner has drained them.
    pub(super) async fn release_held<H: Host>(&self, cx: &ObjectContext<H>) -> ObjectResult<()> {
        let db = cx.storage();
        let n = self.layout.shards.max(1);
        let keys = db.query(
            "SELECT DISTINCT sub_id, order_key FROM deliveries WHERE status = 'held' LIMIT ?1",
            &[HELD_KEYS_PER_RUN.into()],
        )?;
        let mut release: Vec<(String, String, u32)> = Vec::new();
        let mut ask: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
        for k in &keys {
            let (sub, key) = (k.str(0).to_string(), k.str(1).to_string());
            let target = shard_of(&key, n);
            let owner = db
                .query_one(
                    "SELECT shard FROM deliveries WHERE sub_id = ?1 AND order_key = ?2 AND status != 'held'
                     ORDER BY seq DESC LIMIT 1",
                    &[sub.as_str().into(), key.as_str().into()],
                )?
                .map(|r| r.i64(0) as u32);
            let busy_here = db
                .query_one(
                    "SELECT 1 FROM deliveries WHERE sub_id = ?1 AND order_key = ?2
                     AND (status = 'forward' OR (status = 'pending' AND shard = 0)) LIMIT 1",
                    &[sub.as_str().into(), key.as_str().into()],
                )?
                .is_some();
            match owner {
                None => release.push((sub, key, target)),
                Some(o) if o == target => release.push((sub, key, target)),
                Some(_) if busy_here => {}
                Some(0) => release.push((sub, key, target)),
                Some(o) => ask.entry(o).or_default().push((sub, key)),
            }
        }
        let answers = futures::future::join_all(ask.into_iter().map(|(owner, keys)| async move {
            let name = shard_name(&self.ns, owner);
            let pending = cx.stub::<Subscriptions>(name).call(SubsRequest::PendingKeys { keys: keys.clone() }).await;
            (keys, pending)
        }))
        .await;
        for (keys, pending) in answers {
            let pending: HashSet<(String, String)> = match pending? {
                SubsResponse::Keys(k) => k.into_iter().collect(),
                other => return Err(ApiError::internal(format!("unexpected answer to PendingKeys: {other:?}"))),
            };
            for (sub, key) in keys {
                if !pending.contains(&(sub.clone(), key.clone())) {
                    let target = shard_of(&key, n);
                    release.push((sub, key, target));
                }
            }
        }
        for (sub, key, target) in release {
            db.execute(
                "UPDATE deliveries SET shard = ?3, status = CASE WHEN ?3 = 0 THEN 'pending' ELSE 'forward' END
                 WHERE sub_id = ?1 AND order_key = ?2 AND status = 'held'",
                &[sub.into(), key.into(), (target as i64).into()],
            )?;
        }
        Ok(())
    }

    /// Hands `forward` deliveries to their sub-shards; marks the accepted ones `forwarded`.
    pub(super) async fn forward<H: Host>(&self, cx: &ObjectContext<H>, now: i64) -> ObjectResult<()> {
        let db = cx.storage();
        let shards: Vec<u32> = db
            .query("SELECT DISTINCT shard FROM deliveries WHERE status = 'forward'", &[])?
            .iter()
            .map(|r| r.i64(0) as u32)
            .collect();
        let mut calls = Vec::new();
        for k in shards {
            assert!(k != 0, "the main object never forwards to itself");
            let rows = db.query(
                "SELECT d.id, d.sub_id, d.event_id, d.order_key, d.next_at, d.created_at, d.gen, e.type, e.ts, e.body
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 WHERE d.status = 'forward' AND d.shard = ?1 ORDER BY d.seq, d.sub_id LIMIT ?2",
                &[(k as i64).into(), FORWARD_BATCH.into()],
            )?;
            let mut configs = Vec::new();
            let mut seen = HashSet::new();
            let mut items = Vec::with_capacity(rows.len());
            for r in &rows {
                let sub = r.str(1);
                if seen.insert(sub.to_string()) {
                    configs.push(self.sub_config(db, sub, now)?);
                }
                items.push(Forwarded {
                    id: r.str(0).to_string(),
                    sub_id: sub.to_string(),
                    event_id: r.str(2).to_string(),
                    order_key: r.opt_str(3).map(str::to_string),
                    next_at: r.i64(4),
                    created_at: r.i64(5),
                    generation: r.i64(6),
                    event_type: r.str(7).to_string(),
                    ts: r.i64(8),
                    body: r.str(9).to_string(),
                });
            }
            let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
            calls.push(async move {
                let res = cx
                    .stub::<Subscriptions>(shard_name(&self.ns, k))
                    .call(SubsRequest::Accept { configs, items })
                    .await;
                (ids, res)
            });
        }
        for (ids, res) in futures::future::join_all(calls).await {
            res?;
            db.execute(
                "UPDATE deliveries SET status = 'forwarded' WHERE status = 'forward' AND id IN (SELECT value FROM json_each(?1))",
                &[serde_json::to_string(&ids).map_err(corrupt)?.into()],
            )?;
        }
        Ok(())
    }

    /// A subscription's settings and live secrets, as handed to sub-shards.
    pub(super) fn sub_config<S: SqlStorage>(&self, db: &S, id: &str, now: i64) -> ObjectResult<SubConfig> {
        let r = db
            .query_one(
                "SELECT id, pattern, url, status, settings, created_at, updated_at FROM subscriptions WHERE id = ?1",
                &[id.into()],
            )?
            .ok_or_else(|| ApiError::not_found(format!("no subscription {id}")))?;
        let secrets = db
            .query(
                "SELECT secret, created_at, expires_at FROM secrets WHERE sub_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                &[id.into(), now.into()],
            )?
            .iter()
            .map(|s| (s.str(0).to_string(), s.i64(1), s.opt_i64(2)))
            .collect();
        Ok(SubConfig {
            id: r.str(0).to_string(),
            pattern: r.str(1).to_string(),
            url: r.str(2).to_string(),
            status: r.str(3).to_string(),
            settings: r.str(4).to_string(),
            created_at: r.i64(5),
            updated_at: r.i64(6),
            secrets,
        })
    }

    /// Sub-shard: stores (or replaces) the replica of a subscription.
    pub(super) fn store_config<S: SqlStorage>(db: &S, c: &SubConfig) -> ObjectResult<()> {
        db.execute(
            "INSERT INTO subscriptions (id, pattern, url, status, settings, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET pattern = ?2, url = ?3, status = ?4, settings = ?5, updated_at = ?7,
                failing_since = CASE WHEN ?4 = 'active' AND status != 'active' THEN NULL ELSE failing_since END",
            &[
                c.id.as_str().into(),
                c.pattern.as_str().into(),
                c.url.as_str().into(),
                c.status.as_str().into(),
                c.settings.as_str().into(),
                c.created_at.into(),
                c.updated_at.into(),
            ],
        )?;
        db.execute("DELETE FROM secrets WHERE sub_id = ?1", &[c.id.as_str().into()])?;
        for (secret, created_at, expires_at) in &c.secrets {
            db.execute(
                "INSERT INTO secrets (sub_id, secret, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
                &[c.id.as_str().into(), secret.as_str().into(), (*created_at).into(), (*expires_at).into()],
            )?;
        }
        Ok(())
    }

    /// Sub-shard: takes deliveries from the main object. A delivery already
    /// held is kept as it is, unless the main object re-sent it with a newer
    /// generation (a recovery).
    pub(super) fn accept<S: SqlStorage>(
        &mut self,
        db: &S,
        configs: &[SubConfig],
        items: &[Forwarded],
    ) -> ObjectResult<usize> {
        assert!(self.is_sub_shard(), "only sub-shards accept forwarded deliveries");
        // Attempt ids of this sub-shard live in their own range (see ATTEMPT_ID_SHIFT).
        db.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'attempts', ?1
             WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'attempts')",
            &[((self.shard as i64) << ATTEMPT_ID_SHIFT).into()],
        )?;
        for c in configs {
            Self::store_config(db, c)?;
        }
        if !configs.is_empty() {
            self.load_routes(db)?;
        }
        let mut accepted = 0;
        for it in items {
            db.execute(
                "INSERT INTO events (id, ts, type, body, received_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO NOTHING",
                &[
                    it.event_id.as_str().into(),
                    it.ts.into(),
                    it.event_type.as_str().into(),
                    it.body.as_str().into(),
                    it.created_at.into(),
                ],
            )?;
            accepted += db.execute(
                "INSERT INTO deliveries (id, sub_id, event_id, seq, order_key, status, next_at, created_at, shard, gen)
                 VALUES (?1, ?2, ?3, (SELECT seq FROM events WHERE id = ?3), ?4, 'pending', ?5, ?6, ?7, ?8)
                 ON CONFLICT(sub_id, event_id) DO UPDATE SET status = 'pending', attempts = 0, next_at = excluded.next_at,
                    dead_at = NULL, dead_reason = NULL, delivered_at = NULL, latency_ms = NULL, gen = excluded.gen
                 WHERE excluded.gen > deliveries.gen",
                &[
                    it.id.as_str().into(),
                    it.sub_id.as_str().into(),
                    it.event_id.as_str().into(),
                    it.order_key.clone().into(),
                    it.next_at.into(),
                    it.created_at.into(),
                    (self.shard as i64).into(),
                    it.generation.into(),
                ],
            )?;
        }
        Ok(accepted as usize)
    }

    /// Sub-shard: which of `keys` still have a pending delivery here.
    pub(super) fn pending_keys<S: SqlStorage>(
        db: &S,
        keys: Vec<(String, String)>,
    ) -> ObjectResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (sub, key) in keys {
            if db
                .query_one(
                    "SELECT 1 FROM deliveries WHERE sub_id = ?1 AND order_key = ?2 AND status = 'pending' LIMIT 1",
                    &[sub.as_str().into(), key.as_str().into()],
                )?
                .is_some()
            {
                out.push((sub, key));
            }
        }
        Ok(out)
    }

    /// Takes over deliveries the main object forwarded ([`SubsRequest::Accept`]; sub-shards only).
    pub(super) async fn accept_forwarded<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        configs: &[SubConfig],
        items: &[Forwarded],
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        if !self.is_sub_shard() {
            return Err(ApiError::internal("forwarded deliveries reach sub-shards only"));
        }
        let enqueued = self.accept(db, configs, items)?;
        if let Some(at) = self.wake_at(db, now)? {
            self.alarm.arm(cx.storage(), at.max(now)).await?;
        }
        Ok(SubsResponse::Routed { enqueued })
    }

    /// Stores a subscription's replica, or removes it with everything
    /// recorded of it here ([`SubsRequest::SyncSub`]; sub-shards only).
    pub(super) async fn sync_sub<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        id: &str,
        config: Option<SubConfig>,
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        if !self.is_sub_shard() {
            return Err(ApiError::internal("subscription replicas live in sub-shards only"));
        }
        match config {
            Some(c) => Self::store_config(db, &c)?,
            None => {
                for table in ["subscriptions WHERE id", "secrets WHERE sub_id", "deliveries WHERE sub_id"] {
                    db.execute(&format!("DELETE FROM {table} = ?1"), &[id.into()])?;
                }
                for table in ["attempts", "ops_events"] {
                    db.execute(&format!("DELETE FROM {table} WHERE sub_id = ?1"), &[id.into()])?;
                }
            }
        }
        self.load_routes(db)?;
        if let Some(at) = self.wake_at(db, now)? {
            self.alarm.arm(cx.storage(), at.max(now)).await?;
        }
        Ok(SubsResponse::Ok)
    }

    /// The sub-shard layout new deliveries follow ([`SubsRequest::Layout`]).
    pub(super) fn layout_info(&self) -> SubsResponse {
        SubsResponse::Layout {
            shards: self.layout.shards.max(1),
            epoch: self.layout.epoch,
            max_ever: self.layout.max_ever.max(1),
        }
    }

    /// Main object: sends `req` to every sub-shard ever used (1..max_ever)
    /// and returns their answers; a sub-shard that never saw the
    /// subscription answers "not found", which counts as nothing.
    pub(super) async fn ask_sub_shards<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        req: &SubsRequest,
    ) -> ObjectResult<Vec<SubsResponse>> {
        if self.is_sub_shard() || self.layout.max_ever <= 1 {
            return Ok(Vec::new());
        }
        let answers = futures::future::join_all((1..self.layout.max_ever).map(|k| {
            let req = req.clone();
            async move { cx.stub::<Subscriptions>(shard_name(&self.ns, k)).call(req).await }
        }))
        .await;
        let mut out = Vec::new();
        for a in answers {
            match a {
                Ok(r) => out.push(r),
                Err(e) if e.code == ErrorCode::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Main object: pushes a subscription's new settings (or its deletion) to every sub-shard.
    pub(super) async fn sync_sub_shards<H: Host>(&self, cx: &ObjectContext<H>, id: &str) -> ObjectResult<()> {
        if self.is_sub_shard() || self.layout.max_ever <= 1 {
            return Ok(());
        }
        let now = cx.now().as_millis();
        let config = match self.sub_config(cx.storage(), id, now) {
            Ok(c) => Some(c),
            Err(e) if e.code == ErrorCode::NotFound => None,
            Err(e) => return Err(e),
        };
        self.ask_sub_shards(cx, &SubsRequest::SyncSub { id: id.to_string(), config }).await?;
        Ok(())
    }
}

/// Merges the pages of several sub-shards, each the first `limit` items
/// after the same cursor: ordered by `key`, duplicates (same key) dropped, at
/// most `limit`. The cursor is the last key when more remain (`any_more`:
/// some sub-shard said it had more).
pub(super) fn merge_pages<T, K: Ord + Clone>(
    pages: Vec<Vec<T>>,
    limit: usize,
    any_more: bool,
    key: impl Fn(&T) -> K,
    descending: bool,
) -> (Vec<T>, Option<K>) {
    let mut all: Vec<T> = pages.into_iter().flatten().collect();
    all.sort_by_key(|t| key(t));
    if descending {
        all.reverse();
    }
    let mut out: Vec<T> = Vec::with_capacity(limit.min(all.len()));
    let mut last: Option<K> = None;
    let mut more = false;
    for t in all {
        let k = key(&t);
        if last.as_ref() == Some(&k) {
            continue;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        last = Some(k);
        out.push(t);
    }
    let next = if more || (any_more && out.len() == limit) { out.last().map(&key) } else { None };
    (out, next)
}
