"""Times the SQL benchmark's queries with DuckDB over the same Parquet files.

Reads JSON on stdin: {"events": [paths], "users": path, "runs": n,
"queries": [{"name", "sql"}]}; prints {name: {"seconds", "rows"}} where
seconds is the best of `runs` runs after one warm-up.
"""

import json
import os
import sys
import time

import duckdb



def sql_list(paths):
    """A SQL list literal of file paths (a view's definition cannot take parameters)."""
    if isinstance(paths, str):
        paths = [paths]
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


spec = json.load(sys.stdin)
con = duckdb.connect()
con.execute(f"SET threads = {os.cpu_count() or 2}")
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet({sql_list(spec['events'])})")
con.execute(f"CREATE VIEW cdc_users AS SELECT * FROM read_parquet({sql_list(spec['users'])})")
out = {}
for q in spec["queries"]:
    best = None
    rows = 0
    for run in range(spec["runs"] + 1):
        t = time.perf_counter()
        rows = len(con.execute(q["sql"]).fetchall())
        elapsed = time.perf_counter() - t
        if run > 0:
            best = elapsed if best is None else min(best, elapsed)
    out[q["name"]] = {"seconds": best, "rows": rows}
print(json.dumps(out))
