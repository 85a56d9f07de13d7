//! SQL over a namespace's tables with Apache DataFusion.
//!
//! The caller (the server) asks the namespace's catalog which data files make
//! each table at the wanted snapshot, and hands them here as [`QueryTable`]s.
//! Every query gets a fresh DataFusion context that contains exactly those
//! tables and one object store, so isolation between tenants is structural:
//!
//! - the catalog of the context lists only the caller's tables;
//! - the object-store registry knows only the lake under the private
//!   `events://lake` URL (no `file://`, no `s3://`), and URL tables
//!   (`SELECT * FROM 'path'`) are off, so no SQL text names a file;
//! - only one read-only query statement is accepted ([`check_read_only`]).
//!
//! Each query runs under a memory pool limit, a row limit and a timeout
//! ([`QueryLimits`]); results stream out as record batches.

#![warn(missing_docs)]

pub mod data_files;
pub mod output;
pub mod utc_trunc;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::cache::CacheAccessor;
use datafusion::execution::cache::DefaultFilesMetadataCache;
use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache, FileStatisticsCache};
use datafusion::execution::cache::cache_unit::DefaultFileStatisticsCache;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use events_core::{ApiError, ErrorCode};
use object_store::ObjectStore;
use url::Url;

/// The URL under which the lake is registered in every query context.
pub const LAKE_URL: &str = "events://lake";
/// Longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 64 * 1024;
/// Default per-query timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default most rows a query may return.
pub const DEFAULT_MAX_ROWS: usize = 1_000_000;
/// Default memory pool of one query (bytes).
pub const DEFAULT_MAX_MEMORY: usize = 512 * 1024 * 1024;
/// Parquet footers kept per namespace between its queries (bytes).
pub const FOOTER_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Namespaces whose caches are kept at once (all are dropped when a new one
/// would pass this; they refill on the next queries).
pub const MAX_NAMESPACE_CACHES: usize = 16;
/// Files whose statistics one table's cache keeps; past it the cache is
/// emptied (and refills from the footer cache).
pub const MAX_CACHED_FILE_STATISTICS: usize = 100_000;

/// What queries of one namespace keep between them, so a short query does
/// not read and convert every file's footer again: Parquet footers, and the
/// per-file statistics planning derives from them. An entry is used only
/// while the file's size and modification time are unchanged, and serves
/// only this namespace's queries.
#[derive(Clone)]
pub struct NamespaceCaches {
    footers: Arc<DefaultFilesMetadataCache>,
    statistics: Arc<std::sync::Mutex<std::collections::HashMap<String, TableStatistics>>>,
}

/// One table's file statistics, valid for one table schema (statistics have
/// one entry per column, so a schema change starts a new cache).
#[derive(Clone)]
struct TableStatistics {
    schema: SchemaRef,
    cache: Arc<DefaultFileStatisticsCache>,
}

impl NamespaceCaches {
    fn new() -> Self {
        NamespaceCaches {
            footers: Arc::new(DefaultFilesMetadataCache::new(FOOTER_CACHE_BYTES)),
            statistics: Default::default(),
        }
    }

    /// The statistics cache of `table` with `schema`, new if the schema changed.
    fn statistics(&self, table: &str, schema: &SchemaRef) -> Arc<DefaultFileStatisticsCache> {
        let mut tables = self.statistics.lock().unwrap_or_else(|p| p.into_inner());
        let entry = tables
            .entry(table.to_string())
            .or_insert_with(|| TableStatistics { schema: schema.clone(), cache: Default::default() });
        if entry.schema != *schema || entry.cache.len() > MAX_CACHED_FILE_STATISTICS {
            *entry = TableStatistics { schema: schema.clone(), cache: Default::default() };
        }
        entry.cache.clone()
    }
}

/// The [`NamespaceCaches`] of every namespace queried lately.
#[derive(Default)]
pub struct QueryCaches {
    by_namespace: std::sync::Mutex<std::collections::HashMap<String, NamespaceCaches>>,
}

impl QueryCaches {
    /// The caches of `namespace`, created on first use.
    pub fn for_namespace(&self, namespace: &str) -> NamespaceCaches {
        let mut map = self.by_namespace.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(namespace) && map.len() >= MAX_NAMESPACE_CACHES {
            map.clear();
        }
        let caches = map.entry(namespace.to_string()).or_insert_with(NamespaceCaches::new).clone();
        assert!(map.len() <= MAX_NAMESPACE_CACHES, "namespace caches are bounded");
        caches
    }
}

/// Limits of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Wall time from planning to the last batch.
    pub timeout: Duration,
    /// Most result rows; more is an error, not a silent truncation.
    pub max_rows: usize,
    /// Memory pool for operators that buffer (sorts, joins, aggregates).
    pub max_memory_bytes: usize,
    /// Threads (partitions) a query may use.
    pub target_partitions: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: DEFAULT_TIMEOUT,
            max_rows: DEFAULT_MAX_ROWS,
            max_memory_bytes: DEFAULT_MAX_MEMORY,
            target_partitions: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// One table of a query context: its name, Arrow schema and data files.
#[derive(Debug, Clone)]
pub struct QueryTable {
    /// The name SQL uses.
    pub name: String,
    /// The table schema (files lacking a column read it as null).
    pub schema: SchemaRef,
    /// Keys of its Parquet files in the lake.
    pub files: Vec<String>,
}

/// Converts an Iceberg schema's columns to Arrow, for scanning files written
/// by events.do: `timestamptz` is microseconds, as Iceberg defines it and as
/// files store it (older files store milliseconds and are cast on reading),
/// and strings are read as string views.
pub fn arrow_schema(schema: &events_iceberg::metadata::Schema) -> Result<SchemaRef, ApiError> {
    let fields = schema
        .fields
        .iter()
        .map(|f| {
            let ty = match f.primitive() {
                Some("string") => DataType::Utf8View,
                Some("int") => DataType::Int32,
                Some("long") => DataType::Int64,
                Some("double") => DataType::Float64,
                Some("float") => DataType::Float32,
                Some("boolean") => DataType::Boolean,
                Some("timestamptz") => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                Some("timestamp") => DataType::Timestamp(TimeUnit::Microsecond, None),
                Some("date") => DataType::Date32,
                other => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("column {} has a type SQL does not read: {other:?}", f.name),
                    ));
                }
            };
            Ok(Field::new(&f.name, ty, !f.required))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// The SQL dialect of every query: PostgreSQL's, whose JSON operators (`->`,
/// `->>`, `?`) the JSON functions plan (the generic dialect reads `a -> b` as
/// a lambda).
pub const SQL_DIALECT: datafusion::config::Dialect = datafusion::config::Dialect::PostgreSQL;

/// Parses `sql` as queries are parsed ([`SQL_DIALECT`]).
pub fn parse_statements(sql: &str) -> Result<std::collections::VecDeque<DfStatement>, DataFusionError> {
    DFParser::parse_sql_with_dialect(sql, &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {})
}

/// Refuses anything but exactly one read-only query (`SELECT`, `WITH`,
/// `VALUES`, set operations, `EXPLAIN` of those).
pub fn check_read_only(sql: &str) -> Result<(), ApiError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("SQL is limited to {MAX_SQL_BYTES} bytes")));
    }
    let statements =
        parse_statements(sql).map_err(|e| ApiError::new(ErrorCode::InvalidQuery, format!("SQL syntax: {e}")))?;
    if statements.len() != 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("send exactly one statement, not {}", statements.len()),
        ));
    }
    let refuse = |what: String| {
        Err(ApiError::new(
            ErrorCode::ReadOnlyQuery,
            format!("only read-only queries (SELECT) are allowed; {what} is refused"),
        ))
    };
    match &statements[0] {
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_) => Ok(()),
            Statement::Explain { statement, analyze: false, .. }
                if matches!(statement.as_ref(), Statement::Query(_)) =>
            {
                Ok(())
            }
            other => refuse(statement_kind(other)),
        },
        DfStatement::Explain(e) => match e.statement.as_ref() {
            DfStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)) && !e.analyze => Ok(()),
            _ => refuse("EXPLAIN of a non-query".into()),
        },
        DfStatement::CreateExternalTable(_) => refuse("CREATE EXTERNAL TABLE".into()),
        DfStatement::CopyTo(_) => refuse("COPY".into()),
        _ => refuse("this statement".into()),
    }
}

/// The first keyword(s) of a statement, for error messages.
fn statement_kind(s: &Statement) -> String {
    let text = s.to_string();
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ").to_uppercase()
}

/// An object-store registry that knows one store and nothing else.
#[derive(Debug)]
struct LakeOnly(Arc<dyn ObjectStore>);

impl ObjectStoreRegistry for LakeOnly {
    fn register_store(&self, _url: &Url, _store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        None // A query context never gains stores.
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if url.scheme() == "events" && url.host_str() == Some("lake") {
            Ok(self.0.clone())
        } else {
            Err(DataFusionError::Plan(format!("no object store for {url}: queries read only their own tables")))
        }
    }
}

/// Maps a DataFusion error to the API envelope, by its root cause (planning
/// errors arrive wrapped in diagnostics and contexts): a bad query is
/// `INVALID_QUERY` (syntax, planning, unknown names, wrong argument types, a
/// function refusing its arguments, a cast or arithmetic the values do not
/// allow), an exhausted memory pool `QUERY_LIMIT_EXCEEDED`, a data file of
/// the snapshot absent from the lake `DATA_FILE_MISSING`, the rest (storage,
/// I/O, DataFusion's own internal errors) `INTERNAL_ERROR`.
pub fn datafusion_error(e: DataFusionError) -> ApiError {
    if let Some(key) = data_files::missing_data_file(&e) {
        return ApiError::data_file_missing(&key);
    }
    let root = e.find_root();
    match root {
        DataFusionError::ResourcesExhausted(m) => {
            ApiError::new(ErrorCode::QueryLimitExceeded, format!("the query needs more memory than its limit: {m}"))
        }
        DataFusionError::SQL(e, _) => ApiError::new(ErrorCode::InvalidQuery, format!("SQL: {e}")),
        DataFusionError::Plan(m) => ApiError::new(ErrorCode::InvalidQuery, m.clone()),
        DataFusionError::SchemaError(e, _) => ApiError::new(ErrorCode::InvalidQuery, e.to_string()),
        DataFusionError::NotImplemented(m) => ApiError::new(ErrorCode::InvalidQuery, format!("not supported: {m}")),
        // Raised by functions and operators for the arguments or values they are given.
        DataFusionError::Execution(m) => ApiError::new(ErrorCode::InvalidQuery, m.clone()),
        DataFusionError::ArrowError(e, _) if arrow_user_error(e) => {
            ApiError::new(ErrorCode::InvalidQuery, e.to_string())
        }
        other => ApiError::new(ErrorCode::InternalError, format!("query failed: {other}")),
    }
}

/// Whether an Arrow error comes from the values a query computes on (a cast,
/// a division by zero, an overflow, an argument), not from storage or I/O.
fn arrow_user_error(e: &datafusion::arrow::error::ArrowError) -> bool {
    use datafusion::arrow::error::ArrowError::*;
    matches!(
        e,
        CastError(_)
            | ParseError(_)
            | ComputeError(_)
            | DivideByZero
            | ArithmeticOverflow(_)
            | InvalidArgumentError(_)
            | NotYetImplemented(_)
            | SchemaError(_)
    )
}

/// Plans `sql` over `tables` and starts it; returns the result schema and batches.
///
/// The stream ends with an error if the timeout passes or the row limit is
/// crossed (see [`output`], which enforces both while encoding). A data file
/// of `tables` absent from `store` fails the query with `DATA_FILE_MISSING`
/// (see [`data_files`]); it never reads as empty.
///
/// `caches` are the caller's namespace's ([`QueryCaches`]), or `None` to
/// read every footer afresh.
pub async fn run_query(
    store: Arc<dyn ObjectStore>,
    tables: Vec<QueryTable>,
    sql: &str,
    limits: QueryLimits,
    caches: Option<NamespaceCaches>,
) -> Result<(SchemaRef, SendableRecordBatchStream), ApiError> {
    check_read_only(sql)?;
    let store = Arc::new(data_files::DataFiles::new(store, tables.iter().flat_map(|t| t.files.iter().cloned())));
    let mut runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(LakeOnly(store)))
        .with_memory_limit(limits.max_memory_bytes, 1.0);
    if let Some(caches) = &caches {
        let cache: Arc<dyn FileMetadataCache> = caches.footers.clone();
        runtime = runtime.with_cache_manager(
            CacheManagerConfig::default()
                .with_file_metadata_cache(Some(cache))
                .with_metadata_cache_limit(FOOTER_CACHE_BYTES),
        );
    }
    let runtime = runtime.build_arc().map_err(datafusion_error)?;
    let mut config = SessionConfig::new()
        .with_target_partitions(limits.target_partitions.max(1))
        .with_information_schema(false)
        .with_default_catalog_and_schema("events", "public");
    config.options_mut().execution.parquet.pushdown_filters = false;
    config.options_mut().sql_parser.dialect = SQL_DIALECT;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_udf(datafusion::logical_expr::ScalarUDF::new_from_impl(utc_trunc::UtcDateTrunc::default()));
    // JSON over `data` (and CDC documents): `json_get*`, `json_contains`,
    // `json_length`, `json_object_keys`, and the operators `->`, `->>`, `?`.
    let mut ctx = ctx;
    datafusion_functions_json::register_all(&mut ctx).map_err(datafusion_error)?;
    for table in tables {
        let format = ParquetFormat::default();
        let options = ListingOptions::new(Arc::new(format))
            .with_file_extension(".parquet")
            .with_session_config_options(ctx.state().config());
        let urls = table
            .files
            .iter()
            .map(|k| ListingTableUrl::parse(format!("{LAKE_URL}/{k}")))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(datafusion_error)?;
        let provider = if urls.is_empty() {
            // No files yet: an empty table of the right shape.
            Arc::new(
                datafusion::datasource::MemTable::try_new(table.schema.clone(), vec![vec![]])
                    .map_err(datafusion_error)?,
            ) as Arc<dyn datafusion::datasource::TableProvider>
        } else {
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(table.schema.clone());
            let statistics =
                caches.as_ref().map(|c| c.statistics(&table.name, &table.schema) as Arc<dyn FileStatisticsCache>);
            Arc::new(ListingTable::try_new(config).map_err(datafusion_error)?.with_cache(statistics))
        };
        ctx.register_table(table.name.as_str(), provider).map_err(datafusion_error)?;
    }
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let planned = tokio::time::timeout(limits.timeout, async {
        let df = ctx.sql_with_options(sql, options).await.map_err(datafusion_error)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await.map_err(datafusion_error)?;
        Ok::<_, ApiError>((schema, stream))
    })
    .await
    .map_err(|_| {
        ApiError::new(ErrorCode::Timeout, format!("the query was not planned within {:?}", limits.timeout))
    })??;
    Ok(planned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_are_per_namespace_and_bounded() {
        let caches = QueryCaches::default();
        let a = caches.for_namespace("acme");
        assert!(Arc::ptr_eq(&a.footers, &caches.for_namespace("acme").footers), "one namespace keeps its cache");
        assert!(!Arc::ptr_eq(&a.footers, &caches.for_namespace("globex").footers), "another namespace never shares it");
        for i in 0..MAX_NAMESPACE_CACHES * 2 {
            caches.for_namespace(&format!("ns{i}"));
        }
        let held = caches.by_namespace.lock().unwrap().len();
        assert!((1..=MAX_NAMESPACE_CACHES).contains(&held), "{held} caches held");
    }

    #[test]
    fn file_statistics_are_kept_per_table_and_schema() {
        let caches = QueryCaches::default().for_namespace("acme");
        let v1: SchemaRef = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let events = caches.statistics("events", &v1);
        assert!(Arc::ptr_eq(&events, &caches.statistics("events", &v1)), "same table and schema: same cache");
        assert!(!Arc::ptr_eq(&events, &caches.statistics("cdc_users", &v1)), "tables never share one");
        let v2: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("plan", DataType::Utf8, true),
        ]));
        assert!(!Arc::ptr_eq(&events, &caches.statistics("events", &v2)), "an evolved schema starts afresh");
    }
}
