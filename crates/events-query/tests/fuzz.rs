//! Property-based fuzzing of the SQL guard, `check_read_only`.
//!
//! The oracle is DataFusion's own statement verifier: whatever the guard
//! admits, planned with DDL, DML and other statements disallowed, is never
//! refused for being one of those.
//!
//! The number of cases comes from `EVENTS_FUZZ_CASES` (default 512); see
//! `docs/fuzzing.md` for long runs.

use datafusion::prelude::{SQLOptions, SessionContext};
use events_core::ErrorCode;
use events_query::{MAX_SQL_BYTES, check_read_only};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("EVENTS_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: cases(), max_shrink_iters: 2000, ..ProptestConfig::default() }
}

/// Tokens that make up read-only queries, writes, and the tricks between them.
const TOKENS: &[&str] = &[
    "SELECT",
    "select",
    "1",
    "*",
    "a",
    "t",
    "FROM",
    "WHERE",
    "a = 1",
    ",",
    "(",
    ")",
    ";",
    ";;",
    "WITH",
    "x AS (SELECT 1)",
    "VALUES",
    "(1)",
    "UNION",
    "ALL",
    "EXCEPT",
    "EXPLAIN",
    "ANALYZE",
    "VERBOSE",
    "INSERT",
    "INTO",
    "UPDATE",
    "SET",
    "DELETE",
    "DROP",
    "TABLE",
    "CREATE",
    "EXTERNAL",
    "VIEW",
    "COPY",
    "TO",
    "'out.csv'",
    "STORED AS CSV",
    "LOCATION '/tmp'",
    "SHOW",
    "TABLES",
    "DESCRIBE",
    "PREPARE",
    "p AS",
    "EXECUTE",
    "p",
    "DEALLOCATE",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "ALTER",
    "TRUNCATE",
    "USE",
    "ATTACH",
    "'a;b'",
    "\"q;\"",
    "-- c\n",
    "/* ; DROP TABLE t */",
    "\n",
    "\t",
    "ORDER BY 1",
    "LIMIT 1",
    "GROUP BY a",
    "$$x$$",
    "?",
    "$1",
];

/// Statements that are not read-only queries: each must be refused.
const WRITES: &[&str] = &[
    "INSERT INTO t VALUES (1)",
    "INSERT INTO t SELECT * FROM u",
    "UPDATE t SET a = 1",
    "DELETE FROM t",
    "DROP TABLE t",
    "DROP VIEW v",
    "CREATE TABLE t (a INT)",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
    "COPY t TO '/tmp/x.csv'",
    "COPY (SELECT 1) TO '/tmp/x.csv' STORED AS CSV",
    "SET datafusion.execution.batch_size = 1",
    "SHOW TABLES",
    "EXPLAIN ANALYZE SELECT 1",
    "EXPLAIN INSERT INTO t VALUES (1)",
    "EXPLAIN CREATE TABLE t (a INT)",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    "DESCRIBE t",
    "TRUNCATE TABLE t",
    "ALTER TABLE t ADD COLUMN b INT",
    "BEGIN",
    "COMMIT",
];

const READS: &[&str] = &[
    "SELECT 1",
    "select * from t where a = 'x;y'",
    "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
    "VALUES (1), (2)",
    "SELECT 1 UNION ALL SELECT 2",
    "(SELECT 1)",
    "EXPLAIN SELECT * FROM t",
    "SELECT count(*) FROM events GROUP BY type ORDER BY 1 LIMIT 10",
];

fn sql_soup() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(TOKENS.to_vec()), 0..12).prop_map(|t| t.join(" ")),
        1 => any::<String>(),
        1 => (prop::sample::select(READS.to_vec()), prop::sample::select(TOKENS.to_vec()), any::<prop::sample::Index>())
            .prop_map(|(q, tok, at)| {
                // A token spliced into a read query, at a char boundary.
                let bounds: Vec<usize> = q.char_indices().map(|(i, _)| i).chain([q.len()]).collect();
                let i = bounds[at.index(bounds.len())];
                format!("{}{}{}", &q[..i], tok, &q[i..])
            }),
        1 => (0usize..400, prop::sample::select(vec!["(", "-", "NOT ", "+", "~"])).prop_map(|(n, open)| {
            // Deep nesting must be refused or admitted, never overflow the stack.
            let close = if open == "(" { ")".repeat(n) } else { String::new() };
            format!("SELECT {}1{}", open.repeat(n), close)
        }),
    ]
}

/// Random case and padding (whitespace and comments) around a statement.
fn disguise(s: &str, upper: &[bool], pad: &str) -> String {
    let cased: String = s
        .chars()
        .zip(upper.iter().cycle())
        .map(|(c, u)| if *u { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
        .collect();
    format!("{pad}{cased}{pad}")
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime =
        tokio::runtime::Builder::new_current_thread().build().unwrap();
    static CONTEXT: SessionContext = {
        let mut config = datafusion::prelude::SessionConfig::new();
        config.options_mut().sql_parser.dialect = events_query::SQL_DIALECT;
        SessionContext::new_with_config(config)
    };
}

/// Whether DataFusion, planning `sql` with DDL, DML and statements
/// disallowed, refuses it for being one of those.
fn datafusion_refuses_as_not_read_only(sql: &str) -> Option<String> {
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let result = CONTEXT.with(|ctx| RUNTIME.with(|rt| rt.block_on(ctx.sql_with_options(sql, options))));
    match result {
        Ok(_) => None,
        Err(e) => {
            let text = e.to_string();
            ["DDL not supported", "DML not supported", "Statement not supported"]
                .iter()
                .any(|m| text.contains(m))
                .then_some(text)
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// The guard never panics; whatever it admits is a single statement that
    /// DataFusion itself does not take for DDL, DML or a session statement.
    #[test]
    fn admitted_sql_is_one_read_only_statement(sql in sql_soup()) {
        match check_read_only(&sql) {
            Ok(()) => {
                prop_assert!(sql.len() <= MAX_SQL_BYTES);
                let statements = events_query::parse_statements(&sql).unwrap();
                prop_assert_eq!(statements.len(), 1);
                let refused = datafusion_refuses_as_not_read_only(&sql);
                prop_assert!(refused.is_none(), "admitted {:?}, but DataFusion says {:?}", sql, refused);
            }
            Err(e) => prop_assert!(
                [ErrorCode::InvalidQuery, ErrorCode::ReadOnlyQuery, ErrorCode::PayloadTooLarge].contains(&e.code),
                "{:?}", e.code
            ),
        }
    }

    /// Every write or session statement is refused, whatever its case and
    /// padding, alone or after a read-only query.
    #[test]
    fn writes_are_refused_however_written(
        write in prop::sample::select(WRITES.to_vec()),
        read in prop::sample::select(READS.to_vec()),
        upper in prop::collection::vec(any::<bool>(), 1..8),
        pad in prop::sample::select(vec!["", " ", "\n\t", "-- hi\n", "/* x */ ", "/* ; */"]),
        before in any::<bool>(),
    ) {
        let w = disguise(write, &upper, pad);
        prop_assert!(check_read_only(&w).is_err(), "admitted {:?}", w);
        let both = if before { format!("{read}; {w}") } else { format!("{w}; {read}") };
        prop_assert!(check_read_only(&both).is_err(), "admitted {:?}", both);
        // The read-only query alone, in the same disguise, is admitted.
        let r = disguise(read, &[true], pad);
        prop_assert_eq!(check_read_only(&r).map_err(|e| e.message), Ok(()), "{}", r);
    }
}
