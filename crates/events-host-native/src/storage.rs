//! [`SqliteStorage`]: an object's SQLite database, as the runtime traits see it.

use std::cell::{Cell, RefCell, RefMut};
use std::path::Path;
use std::rc::Rc;

use events_core::{ApiError, ErrorCode, Timestamp};
use events_runtime::context::ObjectStorage;
use events_runtime::{ObjectResult, Row, SqlStorage, SqlValue};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use crate::config::SQLITE_CACHE_KIB;

/// Table holding the object's one alarm (native host only).
pub(crate) const ALARM_TABLE: &str = "CREATE TABLE IF NOT EXISTS _alarm (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fire_at INTEGER NOT NULL,
    retries INTEGER NOT NULL DEFAULT 0
)";

/// Opens (creating if needed) an object's database with the host's settings.
pub(crate) fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Lookaside memory is 120 KiB per connection by default; with thousands
    // of live objects that dominates memory, so turn it off.
    // SAFETY: the handle is valid and no statement has been prepared yet.
    unsafe {
        rusqlite::ffi::sqlite3_db_config(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBCONFIG_LOOKASIDE,
            std::ptr::null_mut::<std::ffi::c_void>(),
            0i32,
            0i32,
        );
    }
    // Exclusive locking (the host owns the data directory anyway) keeps the
    // WAL index in memory: two file descriptors per object instead of three.
    // Opening runs at `synchronous = OFF` (schema set-up need not be durable
    // on its own: the first durable commit fsyncs the WAL, which holds it);
    // `set_durability` switches to FULL before the object handles anything.
    // Temporary storage goes to (unlinked) files: every request runs in a
    // savepoint, whose journal keeps the original of each page it changes;
    // in memory, a request changing many pages (a fold of random updates)
    // would hold them all on the heap. Small journals stay in memory anyway.
    conn.execute_batch(&format!(
        "PRAGMA locking_mode = EXCLUSIVE;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = OFF;
         PRAGMA cache_size = -{SQLITE_CACHE_KIB};
         PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = FILE;"
    ))?;
    conn.set_prepared_statement_cache_capacity(32);
    conn.execute_batch(ALARM_TABLE)?;
    Ok(conn)
}

/// Sets how the connection's commits reach the disk. Every class commits
/// at `NORMAL`: a commit writes its WAL frames without waiting for the disk,
/// and checkpoints sync the WAL before and the database after copying, so
/// the file stays consistent whatever fails. For classes with
/// [`Durability::Fsync`](events_runtime::Durability::Fsync) the instance
/// then syncs the WAL itself ([`sync_wal`]) and releases answers only after
/// that, which lets the next batch run while the disk works (pipelined
/// group commit, `instance.rs`).
pub(crate) fn set_durability(conn: &Connection, _durability: events_runtime::Durability) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA synchronous = NORMAL")
}

/// The write-ahead log of the database at `db`.
pub(crate) fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// Makes every commit written to the WAL at `wal` so far durable
/// (`fdatasync`). A missing WAL holds nothing to sync: a database in WAL mode
/// has one whenever a commit has written frames that no checkpoint moved
/// (checkpoints sync the database themselves).
pub(crate) fn sync_wal(wal: &Path) -> std::io::Result<()> {
    match std::fs::File::open(wal) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn storage_error(e: rusqlite::Error) -> ApiError {
    ApiError::new(ErrorCode::StorageError, format!("sqlite: {e}"))
}

struct Inner {
    conn: RefCell<Option<Connection>>,
    /// Whether the alarm row changed in the current transaction.
    alarm_changed: Cell<bool>,
    /// Depth of nested `transaction` savepoints.
    depth: Cell<u32>,
    /// `total_changes` when the current transaction began.
    changes_at_begin: Cell<u64>,
    /// The alarm time the host index holds for this object, when known.
    indexed_alarm: Cell<Option<Timestamp>>,
    /// Whether the index entry is known to be stale (to delete at commit).
    index_stale: Cell<bool>,
}

/// An object's database. Cheap to clone (shared handle); lives on one thread.
#[derive(Clone)]
pub struct SqliteStorage(Rc<Inner>);

impl SqliteStorage {
    pub(crate) fn new(conn: Connection) -> Self {
        SqliteStorage(Rc::new(Inner {
            conn: RefCell::new(Some(conn)),
            alarm_changed: Cell::new(false),
            depth: Cell::new(0),
            changes_at_begin: Cell::new(0),
            indexed_alarm: Cell::new(None),
            index_stale: Cell::new(false),
        }))
    }

    fn conn(&self) -> ObjectResult<RefMut<'_, Connection>> {
        let guard = self.0.conn.borrow_mut();
        RefMut::filter_map(guard, Option::as_mut)
            .map_err(|_| ApiError::new(ErrorCode::StorageError, "storage used while its commit is in flight"))
    }

    /// Takes the connection out (for a commit on the blocking pool).
    pub(crate) fn take(&self) -> Connection {
        self.0.conn.borrow_mut().take().expect("connection present between requests")
    }

    /// Puts the connection back after [`Self::take`].
    pub(crate) fn restore(&self, conn: Connection) {
        let previous = self.0.conn.borrow_mut().replace(conn);
        assert!(previous.is_none(), "connection restored twice");
    }

    /// Runs raw SQL outside the object's view (transaction control).
    pub(crate) fn raw(&self, sql: &str) -> ObjectResult<()> {
        self.conn()?.execute_batch(sql).map_err(storage_error)
    }

    /// Returns the page cache and other reclaimable SQLite memory to the
    /// allocator (called when the object goes idle).
    pub(crate) fn release_memory(&self) {
        if let Ok(conn) = self.conn() {
            // SAFETY: the handle is valid while the connection is borrowed.
            unsafe {
                rusqlite::ffi::sqlite3_db_release_memory(conn.handle());
            }
        }
    }

    /// The alarm time the host index is known to hold.
    pub(crate) fn indexed_alarm(&self) -> Option<Timestamp> {
        self.0.indexed_alarm.get()
    }

    /// Records what the host index now holds.
    pub(crate) fn set_indexed_alarm(&self, at: Option<Timestamp>) {
        self.0.indexed_alarm.set(at);
    }

    /// Marks the index entry as stale: the next commit without an alarm deletes it.
    pub(crate) fn mark_index_stale(&self) {
        self.0.index_stale.set(true);
    }

    /// Returns and clears the stale mark.
    pub(crate) fn take_index_stale(&self) -> bool {
        self.0.index_stale.replace(false)
    }

    /// Opens the transaction of a batch.
    pub(crate) fn begin(&self) -> ObjectResult<()> {
        self.raw("BEGIN")?;
        self.0.changes_at_begin.set(self.total_changes());
        Ok(())
    }

    /// Whether rows changed since [`Self::begin`].
    pub(crate) fn wrote_since_begin(&self) -> bool {
        self.total_changes() != self.0.changes_at_begin.get()
    }

    fn total_changes(&self) -> u64 {
        self.conn().map_or(0, |c| c.total_changes())
    }

    /// Returns and clears the "alarm changed" flag.
    pub(crate) fn take_alarm_changed(&self) -> bool {
        self.0.alarm_changed.replace(false)
    }

    /// The stored alarm: (fire time, retries so far).
    pub(crate) fn alarm_row(&self) -> ObjectResult<Option<(Timestamp, u32)>> {
        Ok(self
            .query_one("SELECT fire_at, retries FROM _alarm WHERE id = 1", &[])?
            .map(|r| (Timestamp(r.i64(0)), r.i64(1) as u32)))
    }

    /// Deletes the alarm row and marks the alarm as changed, so the commit
    /// brings the host's alarm index in line.
    pub(crate) fn clear_alarm(&self) -> ObjectResult<()> {
        self.execute("DELETE FROM _alarm WHERE id = 1", &[])?;
        self.0.alarm_changed.set(true);
        Ok(())
    }

    /// Records a failed alarm run: the next attempt time and the retry count.
    pub(crate) fn set_alarm_retry(&self, at: Timestamp, retries: u32) -> ObjectResult<()> {
        self.execute(
            "INSERT INTO _alarm (id, fire_at, retries) VALUES (1, ?1, ?2)
             ON CONFLICT(id) DO UPDATE SET fire_at = excluded.fire_at, retries = excluded.retries",
            &[at.as_millis().into(), retries.into()],
        )?;
        self.0.alarm_changed.set(true);
        Ok(())
    }
}

struct Param<'a>(&'a SqlValue);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(v) => {
                // Portability: Durable Object SQL (the Cloudflare host) refuses integers
                // beyond ±2^53-1, so object code must never bind one on any host.
                debug_assert!(
                    (events_runtime::MIN_EXACT_INTEGER..=events_runtime::MAX_EXACT_INTEGER).contains(v),
                    "integer {v} is outside the range every host stores exactly (±2^53-1)"
                );
                ValueRef::Integer(*v)
            }
            SqlValue::Real(v) => ValueRef::Real(*v),
            SqlValue::Text(s) => ValueRef::Text(s.as_bytes()),
            SqlValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn bind(params: &[SqlValue]) -> Vec<Param<'_>> {
    params.iter().map(Param).collect()
}

fn to_row(row: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<Row> {
    let mut values = Vec::with_capacity(columns);
    for i in 0..columns {
        values.push(match row.get_ref(i)? {
            ValueRef::Null => SqlValue::Null,
            ValueRef::Integer(v) => SqlValue::Integer(v),
            ValueRef::Real(v) => SqlValue::Real(v),
            ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
        });
    }
    Ok(Row(values))
}

fn refuse_transaction_control(sql: &str) -> ObjectResult<()> {
    let head = sql.trim_start().get(..9).unwrap_or("").to_ascii_uppercase();
    if head.starts_with("BEGIN")
        || head.starts_with("COMMIT")
        || head.starts_with("SAVEPOINT")
        || head.starts_with("ROLLBACK")
        || head.starts_with("RELEASE")
    {
        return Err(ApiError::internal("objects may not control transactions; use SqlStorage::transaction"));
    }
    Ok(())
}

impl SqlStorage for SqliteStorage {
    fn execute(&self, sql: &str, params: &[SqlValue]) -> ObjectResult<u64> {
        refuse_transaction_control(sql)?;
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(sql).map_err(storage_error)?;
        let params = bind(params);
        let refs: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
        stmt.execute(refs.as_slice()).map(|n| n as u64).map_err(storage_error)
    }

    fn query(&self, sql: &str, params: &[SqlValue]) -> ObjectResult<Vec<Row>> {
        let mut rows = Vec::new();
        self.query_each(sql, params, &mut |r| {
            rows.push(r.clone());
            true
        })?;
        Ok(rows)
    }

    fn query_each(&self, sql: &str, params: &[SqlValue], f: &mut dyn FnMut(&Row) -> bool) -> ObjectResult<()> {
        refuse_transaction_control(sql)?;
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(sql).map_err(storage_error)?;
        let columns = stmt.column_count();
        let params = bind(params);
        let refs: Vec<&dyn ToSql> = params.iter().map(|p| p as &dyn ToSql).collect();
        let mut rows = stmt.query(refs.as_slice()).map_err(storage_error)?;
        while let Some(row) = rows.next().map_err(storage_error)? {
            if !f(&to_row(row, columns).map_err(storage_error)?) {
                break;
            }
        }
        Ok(())
    }

    fn execute_script(&self, sql: &str) -> ObjectResult<()> {
        self.conn()?.execute_batch(sql).map_err(storage_error)
    }

    fn transaction<T>(&self, f: impl FnOnce() -> ObjectResult<T>) -> ObjectResult<T> {
        let depth = self.0.depth.get();
        let name = format!("tx{depth}");
        self.raw(&format!("SAVEPOINT {name}"))?;
        self.0.depth.set(depth + 1);
        let result = f();
        self.0.depth.set(depth);
        match &result {
            Ok(_) => self.raw(&format!("RELEASE {name}"))?,
            Err(_) => self.raw(&format!("ROLLBACK TO {name}; RELEASE {name}"))?,
        }
        result
    }
}

impl ObjectStorage for SqliteStorage {
    async fn get_alarm(&self) -> ObjectResult<Option<Timestamp>> {
        Ok(self.alarm_row()?.map(|(at, _)| at))
    }

    async fn set_alarm(&self, at: Timestamp) -> ObjectResult<()> {
        self.set_alarm_retry(at, 0)
    }

    async fn delete_alarm(&self) -> ObjectResult<()> {
        if self.execute("DELETE FROM _alarm WHERE id = 1", &[])? > 0 {
            self.0.alarm_changed.set(true);
        }
        Ok(())
    }
}
