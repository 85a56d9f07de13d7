//! The Python tools the lake, crash and S3 tests need are installed.
//!
//! Fails (never skips) when they are missing, saying how to install them:
//! `bash scripts/test.sh` creates a venv with `tests/e2e/py/requirements.txt`
//! and exports `EVENTS_PYTHON`.

use events_e2e::{python, require_python_modules, run_py_json};

#[test]
fn pyarrow_moto_and_boto3_are_importable() {
    require_python_modules(&["pyarrow", "pyarrow.dataset", "pyarrow.parquet", "boto3", "moto", "moto.server"]);
}

#[test]
fn read_parquet_script_handles_a_directory_without_files() {
    require_python_modules(&["pyarrow"]);
    let dir = tempfile::tempdir().unwrap();
    let v = run_py_json("read_parquet.py", &[dir.path().to_str().unwrap()]);
    assert_eq!(v["row_count"], 0, "{v} (python: {})", python());
    assert_eq!(v["files"], serde_json::json!([]));
}
