//! The HTTP helpers of [`TestServer`]: requests, ingest, keys and reads.

use std::time::{Duration, Instant};

use reqwest::RequestBuilder;
use serde_json::{Value, json};

use crate::{ApiKey, Auth, DEADLINE, Reply, TestServer, url_encode};

impl TestServer {
    /// Sends `rb` with `auth` and reads the reply.
    pub async fn send(&self, rb: RequestBuilder, auth: &Auth) -> Reply {
        Reply::read(auth.apply(rb).send().await.expect("sending the request")).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, auth: &Auth) -> Reply {
        self.send(self.client().get(self.url(path)), auth).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, auth: &Auth, body: &Value) -> Reply {
        self.send(self.client().post(self.url(path)).json(body), auth).await
    }

    /// `POST path` with raw bytes and headers.
    pub async fn post_raw(&self, path: &str, auth: &Auth, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut rb = self.client().post(self.url(path)).body(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        self.send(rb, auth).await
    }

    /// `POST /e` with `{"events": events}`.
    pub async fn ingest(&self, auth: &Auth, events: &[Value]) -> Reply {
        self.post_json("/e", auth, &json!({ "events": events })).await
    }

    /// `POST /e`, asserting `200 {"ok": true, "received": events.len()}`.
    pub async fn ingest_ok(&self, auth: &Auth, events: &[Value]) -> Reply {
        let r = self.ingest(auth, events).await;
        assert_eq!(r.status, 200, "ingest of {} events failed: {}", events.len(), r.text);
        assert_eq!(r.body["ok"], true, "{}", r.text);
        assert_eq!(r.body["received"], events.len(), "{}", r.text);
        r
    }

    /// Creates a key for `ns` with the admin token; panics unless 201.
    pub async fn create_key(&self, ns: &str) -> ApiKey {
        let r = self.post_json(&format!("/admin/namespaces/{ns}/keys"), &self.admin(), &json!({ "name": "e2e" })).await;
        let body = r.expect(201).clone();
        let field = |name: &str| {
            body[name].as_str().unwrap_or_else(|| panic!("key reply has no string {name:?}: {}", r.text)).to_string()
        };
        ApiKey { id: field("id"), key: field("key"), namespace: field("namespace"), body: body.clone() }
    }

    /// `GET /events?query`, one page; panics unless 200.
    pub async fn read_page(&self, auth: &Auth, query: &str) -> Value {
        let r = self.get(&format!("/events?{query}"), auth).await;
        let body = r.expect(200).clone();
        assert!(body["events"].is_array(), "no events array: {}", r.text);
        assert!(body["nextCursor"].is_null() || body["nextCursor"].is_string(), "bad nextCursor: {}", r.text);
        body
    }

    /// Every event of `GET /events?query`, following `nextCursor` (pages of
    /// 1000); panics on a page that is not 200 or a cursor that loops.
    pub async fn read_all(&self, auth: &Auth, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        let mut seen_cursors = std::collections::HashSet::new();
        loop {
            let mut q = format!("limit=1000&{query}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={}", url_encode(c)));
            }
            let page = self.read_page(auth, q.trim_end_matches('&')).await;
            out.extend(page["events"].as_array().unwrap().iter().cloned());
            match page["nextCursor"].as_str() {
                Some(c) => {
                    assert!(seen_cursors.insert(c.to_string()), "cursor {c:?} returned twice");
                    cursor = Some(c.to_string());
                }
                None => return out,
            }
        }
    }

    /// Polls `GET /events?query` until it returns at least `count` events (or
    /// [`DEADLINE`] passes), and returns the last read.
    pub async fn wait_for_events(&self, auth: &Auth, query: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let events = self.read_all(auth, query).await;
            if events.len() >= count || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the first collection of `ns` has applied `changes`
    /// changes (they reach its processor through the outbox), then compacts
    /// `collection`, which commits its state as the collection's CDC table.
    pub async fn compact_collection(&self, auth: &Auth, ns: &str, collection: &str, changes: i64) {
        let deadline = std::time::Instant::now() + crate::DEADLINE;
        loop {
            let list = self.get(&format!("/cdc/{ns}"), auth).await;
            let stats = list.expect(200)["collections"].as_array().and_then(|c| c.first().cloned());
            if stats.as_ref().is_some_and(|s| s["changes"] == changes) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "changes not applied: {}", list.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.post_json(&format!("/cdc/{ns}/{collection}/_compact"), auth, &json!({})).await.expect(200);
    }

    /// `POST /admin/flush`; returns the written file keys.
    pub async fn admin_flush(&self) -> Vec<String> {
        let r = self.post_json("/admin/flush", &self.admin(), &json!({})).await;
        let body = r.expect(200);
        body["files"]
            .as_array()
            .unwrap_or_else(|| panic!("flush reply has no files array: {}", r.text))
            .iter()
            .map(|f| f.as_str().unwrap_or_else(|| panic!("non-string file key: {}", r.text)).to_string())
            .collect()
    }
}
