//! A webhook receiver for the e2e tests: an axum server on 127.0.0.1 that
//! logs every request and answers as the test says (status, headers, body,
//! a delay before answering).
#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use events_e2e::DEADLINE;
use events_e2e::serde_json::{self, Value};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub at: Instant,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    /// Event ids in the body (one, or a batch's).
    pub fn event_ids(&self) -> Vec<String> {
        let v = self.json();
        match v.get("events") {
            Some(events) => events.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect(),
            None => vec![v["id"].as_str().unwrap().to_string()],
        }
    }
}

/// The answer of the receiver: status, headers, body, delay before answering.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer { status, headers: Vec::new(), body: String::new(), delay: Duration::ZERO }
    }
}

/// Decides the answer from the request and how many times this `webhook-id` was seen (1 = first).
type Behaviour = Arc<dyn Fn(&Received, usize) -> Answer + Send + Sync>;

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Receiver {
    pub async fn start(behaviour: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let r = Receiver { addr, log: Arc::default(), behaviour: Arc::new(Mutex::new(Arc::new(behaviour))) };
        let state = r.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move { state.handle(headers, body).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    async fn handle(&self, headers: HeaderMap, body: Bytes) -> Response {
        let mut rec = Received {
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
            status: 0,
        };
        let seen = self
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.headers.get("webhook-id") == rec.headers.get("webhook-id"))
            .count()
            + 1;
        let behaviour = self.behaviour.lock().unwrap().clone();
        let answer = behaviour(&rec, seen);
        rec.status = answer.status;
        self.log.lock().unwrap().push(rec);
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        let mut resp = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
        for (k, v) in answer.headers {
            resp.headers_mut().insert(k, v.parse().unwrap());
        }
        resp
    }

    pub fn set(&self, behaviour: impl Fn(&Received, usize) -> Answer + Send + Sync + 'static) {
        *self.behaviour.lock().unwrap() = Arc::new(behaviour);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Event ids answered with 2xx, in order of receipt.
    pub fn delivered(&self) -> Vec<String> {
        self.log().iter().filter(|r| (200..300).contains(&r.status)).flat_map(|r| r.event_ids()).collect()
    }

    /// Polls until `check` holds on the log, or panics after [`DEADLINE`].
    pub async fn wait(&self, what: &str, check: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        self.wait_within(what, DEADLINE, check).await
    }

    /// Polls until `check` holds on the log, or panics after `deadline`.
    pub async fn wait_within(
        &self,
        what: &str,
        deadline: Duration,
        check: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + deadline;
        loop {
            let log = self.log();
            if check(&log) {
                return log;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; {} requests received", log.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn ok() -> Answer {
    Answer::status(200)
}
