//! SQL benchmark: five analytic queries over generated events, through
//! events.do's `POST /query` (DataFusion over the Iceberg table's files)
//! against DuckDB on the same Parquet files, in the same run.
//!
//! The events are generated straight into Parquet with `events-lake` (the
//! writer's own encoder and layout: one file per hour) and committed to the
//! namespace's Iceberg table through its catalog, plus a `cdc_users` table
//! of user documents for the join. HTTP ingest is not part of this figure.
//! DuckDB runs from Python (`$EVENTS_PYTHON`, else `python3`, with the
//! `duckdb` package); each query's figure is the best of `runs` runs, after
//! one warm-up, for both engines.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use events_core::{Event, Timestamp};
use events_lake::cdc::DocState;
use events_objects::Catalog;
use events_objects::catalog::{CatalogRequest, CatalogResponse, EVENTS_TABLE, NewFile, cdc_table_name, iceberg_schema};
use serde_json::{Value, json};

use crate::Figure;

/// The namespace of the benchmark's tables.
pub const NAMESPACE: &str = "bench";
/// Distinct event types (skewed: type k has weight 1/(k+1)).
pub const EVENT_TYPES: usize = 20;
/// Distinct users.
pub const USERS: usize = 100_000;
/// Days the events span.
pub const DAYS: i64 = 10;
/// The first event's time: 2026-01-01T00:00:00Z.
pub const START_MS: i64 = 1_767_225_600_000;

/// Settings.
#[derive(Debug, Clone)]
pub struct QueryBench {
    /// Events generated.
    pub events: usize,
    /// Timed runs per query and engine (best kept).
    pub runs: usize,
}

impl Default for QueryBench {
    fn default() -> Self {
        QueryBench { events: 10_000_000, runs: 3 }
    }
}

/// One benchmark query: its name, events.do SQL and DuckDB SQL.
pub struct BenchQuery {
    /// Name.
    pub name: &'static str,
    /// DataFusion dialect.
    pub events_sql: &'static str,
    /// DuckDB dialect (same meaning).
    pub duckdb_sql: &'static str,
}

/// The five queries.
pub const QUERIES: &[BenchQuery] = &[
    BenchQuery {
        name: "count by type per hour",
        events_sql: "SELECT type, date_trunc('hour', ts) AS hour, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY 2, 1",
        duckdb_sql: "SELECT type, date_trunc('hour', ts) AS hour, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY 2, 1",
    },
    BenchQuery {
        name: "p95 duration by type",
        events_sql: "SELECT type, approx_percentile_cont(duration_ms, 0.95) AS p95 FROM events GROUP BY type ORDER BY type",
        duckdb_sql: "SELECT type, approx_quantile(duration_ms, 0.95) AS p95 FROM events GROUP BY type ORDER BY type",
    },
    BenchQuery {
        name: "distinct users per day",
        events_sql: "SELECT date_trunc('day', ts) AS day, count(DISTINCT user_id) AS users FROM events GROUP BY 1 ORDER BY 1",
        duckdb_sql: "SELECT date_trunc('day', ts) AS day, count(DISTINCT user_id) AS users FROM events GROUP BY 1 ORDER BY 1",
    },
    BenchQuery {
        name: "top-10 types",
        events_sql: "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY n DESC LIMIT 10",
        duckdb_sql: "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY n DESC LIMIT 10",
    },
    BenchQuery {
        name: "events x cdc_users join",
        events_sql: "SELECT e.type, count(*) AS n FROM events e JOIN cdc_users u ON e.user_id = u.id WHERE u.version > 1 GROUP BY e.type ORDER BY n DESC",
        duckdb_sql: "SELECT e.type, count(*) AS n FROM events e JOIN cdc_users u ON e.user_id = u.id WHERE u.version > 1 GROUP BY e.type ORDER BY n DESC",
    },
];

/// A cheap deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn event_type(rng: &mut Rng, cumulative: &[f64]) -> usize {
    let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * cumulative[cumulative.len() - 1];
    cumulative.iter().position(|c| x < *c).unwrap_or(cumulative.len() - 1)
}

/// Writes `events` generated events as hourly Parquet files under
/// `lake/events/ns=bench/...`; returns the files to commit.
fn generate_events(lake: &Path, events: usize, columns: &[events_lake::DataColumn]) -> anyhow::Result<Vec<NewFile>> {
    let hours = (DAYS * 24) as usize;
    let per_hour = events.div_ceil(hours);
    let weights: Vec<f64> = (0..EVENT_TYPES).map(|k| 1.0 / (k as f64 + 1.0)).collect();
    let cumulative: Vec<f64> = weights.iter().scan(0.0, |acc, w| Some(*acc + *w)).collect();
    let mut rng = Rng(42);
    let mut files = Vec::new();
    let mut made = 0usize;
    for hour in 0..hours {
        let n = per_hour.min(events - made);
        if n == 0 {
            break;
        }
        let hour_start = START_MS + hour as i64 * 3_600_000;
        let batch: Vec<Event> = (0..n)
            .map(|i| {
                let ts = hour_start + (i as i64 * 3_600_000) / n as i64;
                let ty = event_type(&mut rng, &cumulative);
                let data = json!({
                    "userId": format!("u{}", rng.below(USERS)),
                    "durationMs": (rng.below(100_000) as f64) / 100.0,
                    "amount": rng.below(1000),
                });
                Event {
                    id: format!("{:020}", made + i),
                    ns: NAMESPACE.into(),
                    ts: Timestamp(ts),
                    event_type: format!("type.{ty:02}"),
                    source: None,
                    data: data.as_object().expect("object").clone(),
                }
            })
            .collect();
        made += n;
        let refs: Vec<&Event> = batch.iter().collect();
        let bytes = events_lake::encode_events_with(&refs, columns)?;
        let key =
            events_lake::event_file_key(events_lake::EVENTS_TABLE_PREFIX, NAMESPACE, Timestamp(hour_start), "bench");
        let path = lake.join(&key);
        std::fs::create_dir_all(path.parent().expect("a folder"))?;
        std::fs::write(&path, &bytes)?;
        files.push(NewFile { key, rows: n as i64, bytes: bytes.len() as i64 });
    }
    Ok(files)
}

/// Writes the current-state file of a `users` collection exactly as a CDC
/// compaction does (`events_lake::cdc::encode_state_file`): four users in
/// five exist, with versions 1 to 3.
fn generate_users(lake: &Path) -> anyhow::Result<NewFile> {
    let plans = ["free", "pro", "team", "enterprise"];
    let mut ids: Vec<String> = (0..USERS).filter(|i| i % 5 != 4).map(|i| format!("u{i}")).collect();
    ids.sort(); // state files are in id order
    let docs = ids.into_iter().enumerate().map(|(i, id)| DocState {
        data: Some(json!({ "name": format!("user {id}"), "plan": plans[i % plans.len()] }).to_string()),
        id,
        version: 1 + (i % 3) as i64,
        ts: START_MS,
        seq: i as i64 + 1,
        bookmark: None,
        deleted: false,
    });
    let rows = USERS as i64 / 5 * 4;
    let bytes = events_lake::cdc::encode_state_file(docs, rows)?;
    let key = events_lake::cdc::current_keys(NAMESPACE, "users", rows).0;
    let path = lake.join(&key);
    std::fs::create_dir_all(path.parent().expect("a folder"))?;
    std::fs::write(&path, &bytes)?;
    Ok(NewFile { key, rows, bytes: bytes.len() as i64 })
}

async fn catalog(host: &events_host_native::NativeHost, req: CatalogRequest) -> anyhow::Result<CatalogResponse> {
    host.call_object::<Catalog>(NAMESPACE, req).await.map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs the benchmark.
pub async fn run(opts: &QueryBench) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let mut config = crate::server_config(dir.path());
    config.query.max_memory_bytes = 4 << 30;
    config.request_timeout_ms = 600_000;
    config.query.timeout_ms = 300_000;
    let lake = config.data_dir.join("lake");
    let server = events_server::Server::bind(config).await?;
    let url = format!("http://{}", server.local_addr());
    let host = server.state().host.clone();

    let started = Instant::now();
    let sample = json!({"userId": "u", "durationMs": 0.5, "amount": 1});
    let observed = events_lake::observe_columns(&[Event {
        id: "x".into(),
        ns: NAMESPACE.into(),
        ts: Timestamp(START_MS),
        event_type: "t".into(),
        source: None,
        data: sample.as_object().expect("object").clone(),
    }]);
    let CatalogResponse::Columns(columns) =
        catalog(&host, CatalogRequest::PrepareColumns { table: EVENTS_TABLE.into(), observed }).await?
    else {
        bail!("catalog answered out of protocol");
    };
    let lake_for_gen = lake.clone();
    let events = opts.events;
    let files = tokio::task::spawn_blocking(move || generate_events(&lake_for_gen, events, &columns)).await??;
    let users = generate_users(&lake)?;
    let data_files: Vec<String> = files.iter().map(|f| lake.join(&f.key).display().to_string()).collect();
    let users_file = lake.join(&users.key).display().to_string();
    catalog(&host, CatalogRequest::CommitFiles { table: EVENTS_TABLE.into(), added: files, removed: Vec::new() })
        .await?;
    let users_table = CatalogRequest::EnsureManagedTable {
        table: cdc_table_name("users"),
        schema: iceberg_schema(&events_lake::cdc::state_schema()),
        properties: BTreeMap::new(),
    };
    catalog(&host, users_table).await?;
    catalog(&host, CatalogRequest::CommitFiles { table: "cdc_users".into(), added: vec![users], removed: Vec::new() })
        .await?;
    let generated_s = started.elapsed().as_secs_f64();

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move { drop(stop_rx.await) }));
    let client = reqwest::Client::new();

    let mut events_do: BTreeMap<&str, f64> = BTreeMap::new();
    let mut answers: BTreeMap<&str, Value> = BTreeMap::new();
    for q in QUERIES {
        let mut best = f64::MAX;
        for run in 0..=opts.runs {
            let (elapsed, body) = timed_query(&client, &url, q.events_sql).await.with_context(|| q.name)?;
            if run > 0 {
                best = best.min(elapsed);
            }
            answers.insert(q.name, serde_json::from_str(&body).context("query result is JSON")?);
        }
        events_do.insert(q.name, best);
    }
    let fixed = fixed_costs(&client, &url).await?;
    let _ = stop_tx.send(());
    serving.await??;

    let duck = run_duckdb(&data_files, &users_file, opts.runs)?;
    let mut figures =
        vec![Figure::new(&format!("generate {} events as Parquet + commit (s)", opts.events), generated_s, "s")];
    for q in QUERIES {
        let d = duck.get(q.name).with_context(|| format!("duckdb did not time {}", q.name))?;
        if d.rows != answers[q.name].as_array().map_or(0, Vec::len) {
            bail!("{}: duckdb returned {} rows, events.do {}", q.name, d.rows, answers[q.name]);
        }
        figures.push(
            Figure::new(&format!("{} (best of {})", q.name, opts.runs), events_do[q.name], "s")
                .against("DuckDB", d.seconds),
        );
    }
    for (sql, ms) in &fixed.table_ms {
        figures.push(
            Figure::new(&format!("fixed cost: `{sql}`, median of {FIXED_COST_RUNS}"), *ms, "ms")
                .against("`SELECT 1` (HTTP, parse, context; no table)", fixed.bare_ms),
        );
    }
    Ok(figures)
}

/// Queries whose time is the fixed cost of reading the events table: the
/// catalog's scan, the query context and planning; the first also reads one
/// row, the second lists and checks every data file and answers from their
/// footers without reading a row.
pub const FIXED_COST_SQL: &[&str] = &["SELECT 1 FROM events LIMIT 1", "SELECT count(*) FROM events"];
/// Timed runs of each fixed-cost query (the median is kept: a dashboard
/// pays the typical cost, not the best one).
pub const FIXED_COST_RUNS: usize = 30;

/// Medians (ms) of the [`FIXED_COST_SQL`] queries, and of one that touches no table.
struct FixedCosts {
    table_ms: Vec<(&'static str, f64)>,
    bare_ms: f64,
}

async fn fixed_costs(client: &reqwest::Client, url: &str) -> anyhow::Result<FixedCosts> {
    let median_ms = |sql: &'static str| async move {
        let mut times = Vec::with_capacity(FIXED_COST_RUNS);
        for run in 0..=FIXED_COST_RUNS {
            let (seconds, _) = timed_query(client, url, sql).await?;
            if run > 0 {
                times.push(seconds * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        Ok::<f64, anyhow::Error>(times[times.len() / 2])
    };
    let mut table_ms = Vec::new();
    for sql in FIXED_COST_SQL {
        table_ms.push((*sql, median_ms(sql).await?));
    }
    Ok(FixedCosts { table_ms, bare_ms: median_ms("SELECT 1").await? })
}

/// Runs `sql` through `POST /query` as the admin of the bench namespace;
/// answers the seconds to the last byte and the body.
async fn timed_query(client: &reqwest::Client, url: &str, sql: &str) -> anyhow::Result<(f64, String)> {
    let t = Instant::now();
    let res = client
        .post(format!("{url}/query"))
        .bearer_auth(crate::ADMIN_TOKEN)
        .header("X-Namespace", NAMESPACE)
        .json(&json!({ "sql": sql }))
        .send()
        .await?;
    let status = res.status();
    let body = res.text().await?;
    if !status.is_success() {
        bail!("{sql}: {status}: {body}");
    }
    Ok((t.elapsed().as_secs_f64(), body))
}

struct DuckTiming {
    seconds: f64,
    rows: usize,
}

fn run_duckdb(events: &[String], users: &str, runs: usize) -> anyhow::Result<BTreeMap<&'static str, DuckTiming>> {
    let python = std::env::var("EVENTS_PYTHON").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join("duckdb_queries.py");
    let queries: Vec<Value> = QUERIES.iter().map(|q| json!({"name": q.name, "sql": q.duckdb_sql})).collect();
    let input = json!({ "events": events, "users": users, "runs": runs, "queries": queries });
    let mut child = std::process::Command::new(&python)
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {python} (set EVENTS_PYTHON to a Python with duckdb)"))?;
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("duckdb script failed ({})", out.status);
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let mut timings = BTreeMap::new();
    for q in QUERIES {
        let t = &v[q.name];
        timings.insert(
            q.name,
            DuckTiming {
                seconds: t["seconds"].as_f64().context("seconds")?,
                rows: t["rows"].as_u64().context("rows")? as usize,
            },
        );
    }
    Ok(timings)
}
