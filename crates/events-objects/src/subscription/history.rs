//! What happened to deliveries: pages of attempts and deliveries, merged
//! over the sub-shards, and the replay of dead letters.

use events_runtime::{Host, ObjectContext, ObjectResult, SqlStorage};

use super::*;

impl Subscriptions {
    /// A page of a subscription's delivery attempts, newest first ([`SubsRequest::Attempts`]).
    pub(super) async fn attempts<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        id: String,
        event_id: Option<String>,
        before: Option<i64>,
        limit: usize,
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
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

    /// A page of a subscription's deliveries ([`SubsRequest::Deliveries`]).
    pub(super) async fn deliveries<H: Host>(
        &self,
        cx: &ObjectContext<H>,
        id: String,
        status: Option<String>,
        after: Option<String>,
        limit: usize,
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        Self::require(db, &id)?;
        let limit = limit_of(limit);
        let ask = SubsRequest::Deliveries { id: id.clone(), status: status.clone(), after: after.clone(), limit };
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

    /// Sends dead letters again with a fresh schedule: one, or all of the
    /// subscription's, here and in the sub-shards ([`SubsRequest::Replay`]).
    pub(super) async fn replay<H: Host>(
        &mut self,
        cx: &ObjectContext<H>,
        id: String,
        dl_id: Option<String>,
    ) -> ObjectResult<SubsResponse> {
        let db = cx.storage();
        let now = cx.now().as_millis();
        Self::require(db, &id)?;
        let reset = "UPDATE deliveries SET status = 'pending', attempts = 0, next_at = ?2, dead_at = NULL,
                     dead_reason = NULL WHERE sub_id = ?1 AND status = 'dead'";
        let local = match &dl_id {
            Some(dl) => {
                db.execute(&format!("{reset} AND id = ?3"), &[id.as_str().into(), now.into(), dl.as_str().into()])?
            }
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
}
