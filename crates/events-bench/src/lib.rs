//! Benchmarks of events.do.
//!
//! Each benchmark reports its figure next to a ceiling measured in the same
//! run on the same machine (raw fsync rate, raw SQLite, a bare HTTP
//! endpoint), so the numbers mean something on a noisy machine. Run them with
//! `events-bench <name>` (the binary of this crate); `BENCHMARKS.md` keeps the
//! latest figures.

pub mod cdc;
#[cfg(feature = "server")]
pub mod hosts;
#[cfg(feature = "server")]
pub mod ingest;
pub mod memory;
#[cfg(feature = "server")]
pub mod nats;
#[cfg(feature = "server")]
pub mod query;
pub mod runtime;
#[cfg(feature = "server")]
pub mod schemas;
#[cfg(feature = "server")]
pub mod stages;
#[cfg(feature = "server")]
pub mod subscriptions;

/// Admin token of the servers the benchmarks start.
#[cfg(feature = "server")]
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// Configuration of a benchmark server: a fresh data directory under `dir`,
/// a free port, the benchmark admin token, and rate limits out of the way.
#[cfg(feature = "server")]
pub fn server_config(dir: &std::path::Path) -> events_server::config::ServerConfig {
    let mut config = events_server::config::ServerConfig {
        data_dir: dir.join("data"),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    config.ingest.requests_per_minute = u64::MAX / 4;
    config.ingest.events_per_minute = u64::MAX / 4;
    config
}

/// One measured figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// The ceiling or comparison, if any, in the same unit.
    pub reference: Option<(String, f64)>,
}

impl Figure {
    /// A figure without a reference.
    pub fn new(name: &str, value: f64, unit: &str) -> Self {
        Figure { name: name.into(), value, unit: unit.into(), reference: None }
    }

    /// Adds the reference it is compared against.
    pub fn against(mut self, name: &str, value: f64) -> Self {
        self.reference = Some((name.into(), value));
        self
    }
}

/// Renders figures as a Markdown table.
pub fn markdown(figures: &[Figure]) -> String {
    let mut out = String::from("| figure | value | reference | ratio |\n|---|---:|---|---:|\n");
    for f in figures {
        let (reference, ratio) = match &f.reference {
            Some((name, v)) => (format!("{name}: {} {}", fmt(*v), f.unit), format!("{:.2}x", f.value / v)),
            None => (String::new(), String::new()),
        };
        out.push_str(&format!("| {} | {} {} | {} | {} |\n", f.name, fmt(f.value), f.unit, reference, ratio));
    }
    out
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}
