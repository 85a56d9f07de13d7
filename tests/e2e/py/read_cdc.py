#!/usr/bin/env python3
"""Reads change-capture Parquet files with pyarrow and prints JSON.

Usage: read_cdc.py FILE...

Prints one JSON object: {"files": [{"path", "columns": [{"name", "type"}],
"rows": [...]}]}, each row with its columns as JSON values and "ts" as
milliseconds since the epoch.
"""

import json
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def main():
    out = {"files": []}
    for path in sys.argv[1:]:
        table = pq.read_table(path)
        assert pq.ParquetFile(path).metadata.num_rows == table.num_rows, path
        columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
        # Milliseconds since the epoch, whatever the file's unit (us now, ms before).
        unit = table.schema.field("ts").type.unit
        scale = {"s": 1000, "ms": 1, "us": 1 / 1000, "ns": 1 / 1_000_000}[unit]
        ts = [None if t is None else int(t * scale) for t in pc.cast(table.column("ts"), pa.int64()).to_pylist()]
        rows = []
        for row, t in zip(table.drop_columns(["ts"]).to_pylist(), ts):
            row["ts"] = t
            rows.append(row)
        out["files"].append({"path": path, "columns": columns, "rows": rows})
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
