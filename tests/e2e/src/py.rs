//! The Python helpers: scripts of `tests/e2e/py/`, Parquet reads with
//! pyarrow, and a moto S3 server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::Value;

use crate::{DEADLINE, free_port};

/// The Python interpreter: `$EVENTS_PYTHON`, default `python3`.
pub fn python() -> String {
    std::env::var("EVENTS_PYTHON").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| "python3".to_string())
}

/// A script of `tests/e2e/py/`.
pub fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py").join(name)
}

/// Panics, saying how to install them, unless `python()` can import `modules`.
pub fn require_python_modules(modules: &[&str]) {
    let py = python();
    let code = format!("import {}", modules.join(", "));
    let out = Command::new(&py).args(["-c", &code]).output();
    let problem = match out {
        Ok(o) if o.status.success() => return,
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("cannot run {py}: {e}"),
    };
    panic!(
        "the Python modules {modules:?} are missing for `{py}` ($EVENTS_PYTHON): {problem}\n\
         Run the suite with `bash scripts/test.sh` (it creates a venv with the pinned packages and sets \
         EVENTS_PYTHON), or install them: `{py} -m pip install -r {}`",
        py_script("requirements.txt").display()
    );
}

/// Runs a Python script of `tests/e2e/py/` and parses its stdout as JSON;
/// panics with its stderr if it fails.
pub fn run_py_json(script: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(py_script(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {script}: {e}", python()));
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// What `py/read_parquet.py` found under a directory.
#[derive(Debug, Clone)]
pub struct LakeRead {
    /// The `.parquet` files, relative to the directory.
    pub files: Vec<String>,
    /// Rows over all files.
    pub row_count: usize,
    /// Column name → Arrow type (as pyarrow prints it), of the first file.
    pub columns: Vec<(String, String)>,
    /// Whether every file has the same schema.
    pub schemas_agree: bool,
    /// The `id` of every row, file by file.
    pub ids: Vec<String>,
    /// Every row (when asked for): the columns, `ts` as ms since the epoch in
    /// `ts_ms`, and `_file` (relative path).
    pub rows: Vec<Value>,
}

impl LakeRead {
    /// How many times each id occurs.
    pub fn id_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for id in &self.ids {
            *counts.entry(id.clone()).or_insert(0) += 1;
        }
        counts
    }
}

/// Reads every Parquet file under `dir` with pyarrow (`py/read_parquet.py`).
pub fn read_parquet(dir: &Path, with_rows: bool) -> LakeRead {
    let dir = dir.display().to_string();
    let mut args = vec![dir.as_str()];
    if !with_rows {
        args.push("--no-rows");
    }
    let v = run_py_json("read_parquet.py", &args);
    let strings = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key}: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    LakeRead {
        files: strings("files"),
        row_count: v["row_count"].as_u64().expect("row_count") as usize,
        columns: v["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c["type"].as_str().unwrap().to_string()))
            .collect(),
        schemas_agree: v["schemas_agree"].as_bool().expect("schemas_agree"),
        ids: strings("ids"),
        rows: v["rows"].as_array().cloned().unwrap_or_default(),
    }
}

/// Lists the `.parquet` files under `dir` (recursively), relative to it.
pub fn parquet_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A running moto S3 server (`python -m moto.server`), killed on drop.
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    log: tempfile::NamedTempFile,
}

impl MotoServer {
    /// Starts moto on a free port and waits until it answers.
    pub async fn start() -> MotoServer {
        require_python_modules(&["moto", "boto3"]);
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("temp file");
        let child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("reopen log"))
            .stderr(log.reopen().expect("reopen log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} -m moto.server: {e}", python()));
        let mut moto = MotoServer { child, endpoint: format!("http://127.0.0.1:{port}"), log };
        let client = Client::new();
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = client.get(&moto.endpoint).send().await
                && r.status().is_success()
            {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited with {status}:\n{}", moto.log_text());
            }
            assert!(Instant::now() < deadline, "moto did not answer within {DEADLINE:?}:\n{}", moto.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// moto's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Creates a bucket (`py/s3.py create-bucket`).
    pub fn create_bucket(&self, bucket: &str) {
        run_py_json("s3.py", &["--endpoint", &self.endpoint, "create-bucket", bucket]);
    }

    /// Lists the keys of `bucket` under `prefix`.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let v = run_py_json("s3.py", &["--endpoint", &self.endpoint, "list", bucket, prefix]);
        v["keys"].as_array().expect("keys").iter().map(|k| k.as_str().unwrap().to_string()).collect()
    }

    /// Downloads every object of `bucket` under `prefix` into `dest` (keys as
    /// relative paths) and returns the keys.
    pub fn download(&self, bucket: &str, prefix: &str, dest: &Path) -> Vec<String> {
        let dest = dest.display().to_string();
        let v = run_py_json("s3.py", &["--endpoint", &self.endpoint, "download", bucket, prefix, &dest]);
        v["keys"].as_array().expect("keys").iter().map(|k| k.as_str().unwrap().to_string()).collect()
    }

    /// The AWS_* variables that point a client at this server.
    pub fn aws_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- moto output -----\n{}\n----- end of moto output -----", self.log_text());
        }
    }
}
