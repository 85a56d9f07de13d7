"""The "Reading with other engines" recipes of docs/lakehouse.md, run as written.

Usage:
  recipes.py BASE_URL TOKEN NAMESPACE CDC_TABLE
      Reads the events table with PyIceberg, DuckDB (through PyIceberg's scan)
      and polars, and the CDC table with polars, and prints JSON:
      {"pyiceberg_ids", "duckdb_count", "duckdb_types", "polars_ids", "cdc_ids"}.
"""

import json
import sys

import polars as pl
from pyiceberg.catalog import load_catalog


def main(base, token, ns, cdc_table):
    # docs/lakehouse.md, "Reading with other engines": PyIceberg.
    catalog = load_catalog("events", type="rest", uri=f"{base}/iceberg", token=token)
    events = catalog.load_table((ns, "events"))
    ids = sorted(events.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())

    # DuckDB, over the files of the current snapshot.
    con = events.scan().to_duckdb(table_name="events")
    count = con.execute("SELECT count(*) FROM events").fetchone()[0]
    types = con.execute("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type").fetchall()

    # polars, lazily.
    polars_ids = pl.scan_iceberg(events).select("id").sort("id").collect()["id"].to_list()
    cdc = catalog.load_table((ns, cdc_table))
    cdc_ids = pl.scan_iceberg(cdc).filter(~pl.col("deleted")).select("id").sort("id").collect()["id"].to_list()

    print(json.dumps({
        "pyiceberg_ids": ids,
        "duckdb_count": count,
        "duckdb_types": [[t, n] for t, n in types],
        "polars_ids": polars_ids,
        "cdc_ids": cdc_ids,
    }))


if __name__ == "__main__":
    main(*sys.argv[1:5])
