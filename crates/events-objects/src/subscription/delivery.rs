//! Delivery: picking due deliveries, signing and sending them, recording the outcome and the retry schedule.

use std::collections::{BTreeMap, HashMap};

use events_core::ErrorCode;
use events_runtime::{Host, HttpRequest, HttpResponse, ObjectContext, ObjectResult, Row, SqlStorage};
use serde_json::Value;

use super::*;

/// A request prepared by the alarm.
pub(super) struct Outgoing {
    pub(super) sub_id: String,
    pub(super) batch_id: Option<String>,
    /// (delivery id, event id, attempts so far)
    pub(super) items: Vec<(String, String, i64)>,
    pub(super) request: HttpRequest,
}

/// Its result.
pub(super) struct Sent {
    pub(super) out: Outgoing,
    pub(super) result: ObjectResult<HttpResponse>,
    pub(super) duration_ms: i64,
}

impl Subscriptions {
    /// The earliest time a delivery is due (respecting ordering), if any.
    pub(super) fn next_due<S: SqlStorage>(db: &S) -> ObjectResult<Option<i64>> {
        Ok(db
            .query_one(
                "SELECT MIN(d.next_at) FROM deliveries d JOIN subscriptions s ON s.id = d.sub_id
                 WHERE d.status = 'pending' AND s.status = 'active'
                   AND (d.order_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM deliveries p WHERE p.sub_id = d.sub_id AND p.order_key = d.order_key
                        AND p.status = 'pending' AND p.seq < d.seq))",
                &[],
            )?
            .and_then(|r| r.opt_i64(0)))
    }

    /// Builds the requests of one alarm run.
    pub(super) fn prepare<H: Host>(&self, cx: &ObjectContext<H>, now: i64) -> ObjectResult<(Vec<Outgoing>, bool)> {
        let db = cx.storage();
        let rows = db.query(
            "SELECT d.id, d.sub_id, d.event_id, d.attempts, e.body FROM deliveries d
             JOIN subscriptions s ON s.id = d.sub_id JOIN events e ON e.id = d.event_id
             WHERE d.status = 'pending' AND d.next_at <= ?1 AND s.status = 'active'
               AND (d.order_key IS NULL OR NOT EXISTS (
                    SELECT 1 FROM deliveries p WHERE p.sub_id = d.sub_id AND p.order_key = d.order_key
                    AND p.status = 'pending' AND p.seq < d.seq))
             ORDER BY d.next_at, d.seq LIMIT ?2",
            &[now.into(), MAX_DELIVERIES_PER_RUN.into()],
        )?;
        let full = rows.len() == MAX_DELIVERIES_PER_RUN;
        // Per subscription: its url, settings, signing keys.
        let mut subs: HashMap<String, (String, Settings, Vec<Vec<u8>>)> = HashMap::new();
        let mut grouped: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
        for r in &rows {
            let sub = r.str(1).to_string();
            if !subs.contains_key(&sub) {
                let s = db
                    .query_one("SELECT url, settings FROM subscriptions WHERE id = ?1", &[sub.as_str().into()])?
                    .expect("joined subscription exists");
                let settings: Settings = serde_json::from_slice(s.bytes(1)).map_err(corrupt)?;
                let keys = db
                    .query(
                        "SELECT secret FROM secrets WHERE sub_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)
                         ORDER BY created_at DESC",
                        &[sub.as_str().into(), now.into()],
                    )?
                    .iter()
                    .map(|k| secret_key(k.str(0)))
                    .collect::<ObjectResult<Vec<_>>>()?;
                assert!(!keys.is_empty(), "a subscription always has a live secret");
                subs.insert(sub.clone(), (s.str(0).to_string(), settings, keys));
            }
            grouped.entry(sub).or_default().push(r);
        }
        let ts_s = now.div_euclid(1000);
        let mut out = Vec::new();
        for (sub, rows) in grouped {
            let (url, settings, keys) = &subs[&sub];
            let request = |msg_id: &str, body: Vec<u8>| {
                let signature = keys.iter().map(|k| sign(k, msg_id, ts_s, &body)).collect::<Vec<_>>().join(" ");
                HttpRequest {
                    method: "POST".into(),
                    url: url.clone(),
                    headers: vec![
                        ("content-type".into(), "application/json".into()),
                        ("webhook-id".into(), msg_id.to_string()),
                        ("webhook-timestamp".into(), ts_s.to_string()),
                        ("webhook-signature".into(), signature),
                    ],
                    body,
                    timeout_ms: settings.timeout_ms,
                }
            };
            let item = |r: &Row| (r.str(0).to_string(), r.str(2).to_string(), r.i64(3));
            match settings.batch {
                Some(b) => {
                    for chunk in rows.chunks(b.max_size) {
                        let msg_id = format!("batch_{}", cx.ulid());
                        let mut body = b"{\"events\":[".to_vec();
                        for (i, r) in chunk.iter().enumerate() {
                            if i > 0 {
                                body.push(b',');
                            }
                            body.extend_from_slice(r.bytes(4));
                        }
                        body.extend_from_slice(b"]}");
                        out.push(Outgoing {
                            sub_id: sub.clone(),
                            batch_id: Some(msg_id.clone()),
                            items: chunk.iter().map(|r| item(r)).collect(),
                            request: request(&msg_id, body),
                        });
                    }
                }
                None => {
                    for r in rows {
                        let msg_id = r.str(0).to_string();
                        out.push(Outgoing {
                            sub_id: sub.clone(),
                            batch_id: None,
                            items: vec![item(r)],
                            request: request(&msg_id, r.bytes(4).to_vec()),
                        });
                    }
                }
            }
        }
        Ok((out, full))
    }

    /// Records the results of one run.
    pub(super) fn record<H: Host>(&mut self, cx: &ObjectContext<H>, sent: Vec<Sent>, now: i64) -> ObjectResult<()> {
        let db = cx.storage();
        let mut sub_ok: HashMap<String, bool> = HashMap::new();
        for Sent { out, result, duration_ms } in sent {
            let settings = Self::settings(db, &out.sub_id)?;
            // Per item: None = success, Some(reason) = failure.
            let (status, excerpt, transport, retry_after, stop) = match &result {
                Ok(resp) => {
                    let excerpt =
                        String::from_utf8_lossy(&resp.body[..resp.body.len().min(RESPONSE_EXCERPT_BYTES)]).into_owned();
                    let retry_after = if matches!(resp.status, 429 | 503) {
                        resp.header("retry-after").and_then(|v| v.trim().parse::<i64>().ok()).map(|s| s * 1000)
                    } else {
                        None
                    };
                    let stop = resp.header(STOP_RETRIES_HEADER).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
                    (Some(resp.status), Some(excerpt), None, retry_after, stop)
                }
                Err(e) => (None, None, Some(e.clone()), None, false),
            };
            let success = status.is_some_and(|s| (200..300).contains(&s));
            // Per-item results of a batch answer.
            let mut item_failed: HashMap<String, ()> = HashMap::new();
            if success
                && out.batch_id.is_some()
                && let Ok(resp) = &result
                && let Ok(v) = serde_json::from_slice::<Value>(&resp.body)
                && let Some(results) = v.get("results").and_then(Value::as_array)
            {
                for r in results {
                    if r.get("ok") == Some(&Value::Bool(false))
                        && let Some(id) = r.get("id").and_then(Value::as_str)
                    {
                        item_failed.insert(id.to_string(), ());
                    }
                }
            }
            for (delivery_id, event_id, attempts) in &out.items {
                let attempt = attempts + 1;
                let ok = success && !item_failed.contains_key(event_id);
                let error = match (&transport, ok) {
                    (Some(e), _) => Some(e.message.clone()),
                    (None, true) => None,
                    (None, false) if success => Some("the receiver reported this item as failed".to_string()),
                    (None, false) => Some(format!("HTTP {}", status.unwrap_or(0))),
                };
                let error_code = transport.as_ref().map(|e| match e.code {
                    ErrorCode::Forbidden => ErrorCode::TargetNotAllowed.as_str(),
                    c => c.as_str(),
                });
                db.execute(
                    "INSERT INTO attempts (delivery_id, sub_id, event_id, attempt, at, status, duration_ms, ok, response, error, error_code, batch_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    &[
                        delivery_id.as_str().into(),
                        out.sub_id.as_str().into(),
                        event_id.as_str().into(),
                        attempt.into(),
                        (now - duration_ms).into(),
                        status.map(|s| s as i64).into(),
                        duration_ms.into(),
                        ok.into(),
                        excerpt.clone().into(),
                        error.clone().into(),
                        error_code.into(),
                        out.batch_id.clone().into(),
                    ],
                )?;
                let entry = sub_ok.entry(out.sub_id.clone()).or_insert(false);
                *entry |= ok;
                if ok {
                    db.execute(
                        "UPDATE deliveries SET status = 'delivered', attempts = ?2, delivered_at = ?3,
                         latency_ms = ?3 - created_at, last_error = NULL WHERE id = ?1",
                        &[delivery_id.as_str().into(), attempt.into(), now.into()],
                    )?;
                    self.delivered_since_report += 1;
                    continue;
                }
                let dead_reason = if stop {
                    Some(format!("the receiver answered {STOP_RETRIES_HEADER}: true"))
                } else if attempt as usize >= settings.retry_schedule.len() {
                    Some(format!("no success after {attempt} attempts"))
                } else {
                    None
                };
                if let Some(reason) = dead_reason {
                    db.execute(
                        "UPDATE deliveries SET status = 'dead', attempts = ?2, dead_at = ?3, dead_reason = ?4, last_error = ?5 WHERE id = ?1",
                        &[delivery_id.as_str().into(), attempt.into(), now.into(), reason.into(), error.into()],
                    )?;
                } else {
                    let base = settings.retry_schedule[attempt as usize];
                    let jitter_span = base * RETRY_JITTER_PERCENT / 100;
                    let jitter = if jitter_span > 0 {
                        (cx.host().random() % (2 * jitter_span as u128 + 1)) as i64 - jitter_span
                    } else {
                        0
                    };
                    let mut delay = base + jitter;
                    if let Some(ra) = retry_after {
                        delay = delay.max(ra.min(MAX_RETRY_AFTER_MS));
                    }
                    db.execute(
                        "UPDATE deliveries SET attempts = ?2, next_at = ?3, last_error = ?4 WHERE id = ?1",
                        &[delivery_id.as_str().into(), attempt.into(), (now + delay.max(0)).into(), error.into()],
                    )?;
                }
            }
        }
        // Failure streaks and disabling.
        let mut changed = false;
        for (sub, any_ok) in sub_ok {
            if any_ok {
                db.execute("UPDATE subscriptions SET failing_since = NULL WHERE id = ?1", &[sub.as_str().into()])?;
                continue;
            }
            db.execute(
                "UPDATE subscriptions SET failing_since = COALESCE(failing_since, ?2) WHERE id = ?1",
                &[sub.as_str().into(), now.into()],
            )?;
            let settings = Self::settings(db, &sub)?;
            let since = db
                .query_one("SELECT failing_since FROM subscriptions WHERE id = ?1", &[sub.as_str().into()])?
                .and_then(|r| r.opt_i64(0))
                .expect("just set");
            if now - since >= settings.disable_after_ms {
                let reason = format!("every delivery failed since {}", iso(since));
                db.execute(
                    "UPDATE subscriptions SET status = 'disabled', disabled_at = ?2, disabled_reason = ?3, updated_at = ?2 WHERE id = ?1",
                    &[sub.as_str().into(), now.into(), reason.as_str().into()],
                )?;
                db.execute(
                    "INSERT INTO ops_events (sub_id, kind, at, message) VALUES (?1, 'events.subscription.disabled', ?2, ?3)",
                    &[sub.as_str().into(), now.into(), format!("subscription {sub} disabled: {reason}").into()],
                )?;
                changed = true;
            }
        }
        if changed {
            self.load_routes(db)?;
        }
        Ok(())
    }
}
