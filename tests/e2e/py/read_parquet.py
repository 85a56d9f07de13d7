#!/usr/bin/env python3
"""Reads every Parquet file under a directory with pyarrow and prints JSON.

Usage: read_parquet.py DIR [--no-rows]

Prints one JSON object:
  files         the .parquet files found under DIR (recursively), relative to DIR
  row_count     rows over all files
  columns       [{"name", "type", "nullable"}] of the first file (type as pyarrow prints it)
  schemas_agree whether every file has the same Arrow schema
  ids           the "id" column of every file, file by file
  rows          (unless --no-rows) every row: the columns as JSON values, "ts" replaced
                by "ts_ms" (milliseconds since the epoch) and "_file" (relative path)

Each file is read on its own (never as a hive-partitioned dataset), so the
ns=/date=/hour= folders do not add or shadow columns.
"""

import argparse
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq


def find_parquet(root):
    found = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith(".parquet"):
                found.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(found)


def json_value(v):
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--no-rows", action="store_true")
    args = parser.parse_args()

    files = find_parquet(args.root) if os.path.isdir(args.root) else []
    out = {"files": files, "row_count": 0, "columns": [], "schemas_agree": True, "ids": []}
    rows = []
    first_schema = None
    for rel in files:
        path = os.path.join(args.root, rel)
        # A plain file dataset: no partition discovery from the path.
        table = ds.dataset(path, format="parquet", partitioning=None).to_table()
        # The footer must agree with what was read.
        assert pq.ParquetFile(path).metadata.num_rows == table.num_rows, path
        if first_schema is None:
            first_schema = table.schema
            out["columns"] = [
                {"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in table.schema
            ]
        elif not table.schema.equals(first_schema, check_metadata=False):
            out["schemas_agree"] = False
        out["row_count"] += table.num_rows
        if "id" in table.column_names:
            out["ids"].extend(table.column("id").to_pylist())
        if not args.no_rows:
            if "ts" in table.column_names and pa.types.is_timestamp(table.schema.field("ts").type):
                ts_ms = pc.cast(table.column("ts"), pa.int64()).to_pylist()
                unit = table.schema.field("ts").type.unit
                scale = {"s": 1000, "ms": 1, "us": 1 / 1000, "ns": 1 / 1_000_000}[unit]
                ts_ms = [None if t is None else int(t * scale) for t in ts_ms]
                table = table.drop_columns(["ts"])
            else:
                ts_ms = [None] * table.num_rows
            for row, ts in zip(table.to_pylist(), ts_ms):
                row = {k: json_value(v) for k, v in row.items()}
                row["ts_ms"] = ts
                row["_file"] = rel
                rows.append(row)
    if not args.no_rows:
        out["rows"] = rows
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
