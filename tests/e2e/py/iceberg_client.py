"""PyIceberg against the events.do Iceberg REST catalog.

Usage:
  iceberg_client.py read BASE_URL TOKEN NAMESPACE
      Lists namespaces and tables, loads the events table, scans it at the
      current snapshot and at every older snapshot, and prints JSON:
      {"namespaces", "tables", "columns", "current_snapshot", "snapshots":
       [{"snapshot_id", "operation", "ids"}], "current_ids", "rows_by_id"}.
  iceberg_client.py external BASE_URL TOKEN NAMESPACE
      Creates an external table, appends to it twice through two table
      handles loaded at the same snapshot (the second append must conflict,
      then succeed after a refresh), and prints JSON with what was read back.
  iceberg_client.py cdc BASE_URL TOKEN NAMESPACE TABLE
      Loads a CDC table (a collection's current state) and prints JSON:
      {"tables", "columns", "current": {id: data}, "snapshots": [{"operation",
       "docs": {id: data}}]} (each snapshot scanned by time travel).
  iceberg_client.py ids BASE_URL TOKEN NAMESPACE
      Scans the events table at its current snapshot only and prints JSON:
      {"current_snapshot", "ids"} (ids sorted, repeats kept).
  iceberg_client.py denied BASE_URL TOKEN NAMESPACE
      Tries to load NAMESPACE's events table and prints the error class.
  iceberg_client.py errors BASE_URL TOKEN NAMESPACE
      Makes requests the catalog refuses and prints, for each, the exception
      PyIceberg raised: {name: {"error": class name, "message": text}} for
      missing_table (404), missing_namespace (404), drop_managed (403),
      stale_commit (409) and bad_token (401).
"""

import json
import sys

import pyarrow as pa
from pyiceberg.catalog import load_catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table.update import AssertRefSnapshotId, SetPropertiesUpdate


def catalog(base, token):
    return load_catalog("events", **{"type": "rest", "uri": base.rstrip("/") + "/iceberg", "token": token})


def plain(v):
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def read(base, token, ns):
    cat = catalog(base, token)
    out = {
        "namespaces": [list(n) for n in cat.list_namespaces()],
        "tables": sorted(".".join(t) for t in cat.list_tables(ns)),
    }
    table = cat.load_table((ns, "events"))
    out["columns"] = [[f.field_id, f.name, str(f.field_type), f.required] for f in table.schema().fields]
    out["name_mapping"] = table.properties.get("schema.name-mapping.default") is not None
    current = table.current_snapshot()
    out["current_snapshot"] = current.snapshot_id if current else None
    data = table.scan().to_arrow()
    rows = data.to_pylist()
    out["current_ids"] = sorted(r["id"] for r in rows)
    out["rows_by_id"] = {r["id"]: {k: plain(v) for k, v in r.items()} for r in rows}
    snaps = []
    for s in table.snapshots():
        scanned = table.scan(snapshot_id=s.snapshot_id).to_arrow()
        snaps.append({
            "snapshot_id": s.snapshot_id,
            "sequence_number": s.sequence_number,
            "operation": s.summary.operation.value if s.summary else None,
            "ids": sorted(scanned.column("id").to_pylist()),
        })
    out["snapshots"] = snaps
    print(json.dumps(out))


def external(base, token, ns):
    cat = catalog(base, token)
    schema = pa.schema([pa.field("note", pa.string()), pa.field("n", pa.int64())])
    table = cat.create_table((ns, "py_notes"), schema=schema)
    first = cat.load_table((ns, "py_notes"))
    second = cat.load_table((ns, "py_notes"))
    first.append(pa.table({"note": ["a", "b"], "n": [1, 2]}, schema=schema))
    conflicted = False
    try:
        second.append(pa.table({"note": ["c"], "n": [3]}, schema=schema))
    except CommitFailedException:
        conflicted = True
    second = cat.load_table((ns, "py_notes"))
    second.append(pa.table({"note": ["c"], "n": [3]}, schema=schema))
    final = cat.load_table((ns, "py_notes"))
    rows = final.scan().to_arrow().to_pylist()
    print(json.dumps({
        "created": table.name(),
        "conflicted": conflicted,
        "snapshots": len(final.snapshots()),
        "notes": sorted(r["note"] for r in rows),
        "tables": sorted(".".join(t) for t in cat.list_tables(ns)),
    }))


def cdc(base, token, ns, table_name):
    cat = catalog(base, token)
    table = cat.load_table((ns, table_name))

    def docs(scan):
        return {r["id"]: json.loads(r["data"]) for r in scan.to_arrow().to_pylist() if not r["deleted"]}

    print(json.dumps({
        "tables": sorted(".".join(t) for t in cat.list_tables(ns)),
        "columns": [[f.name, str(f.field_type)] for f in table.schema().fields],
        "current": docs(table.scan()),
        "snapshots": [
            {
                "operation": s.summary.operation.value if s.summary else None,
                "docs": docs(table.scan(snapshot_id=s.snapshot_id)),
            }
            for s in table.snapshots()
        ],
    }))


def ids(base, token, ns):
    table = catalog(base, token).load_table((ns, "events"))
    current = table.current_snapshot()
    found = table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist()
    print(json.dumps({"current_snapshot": current.snapshot_id if current else None, "ids": sorted(found)}))


def denied(base, token, ns):
    cat = catalog(base, token)
    try:
        cat.load_table((ns, "events"))
        print(json.dumps({"error": None}))
    except Exception as e:  # noqa: BLE001 - the class name is the answer
        print(json.dumps({"error": type(e).__name__}))


def errors(base, token, ns):
    out = {}

    def attempt(name, fn):
        try:
            fn()
            out[name] = {"error": None}
        except Exception as e:  # noqa: BLE001 - the class and message are the answer
            out[name] = {"error": type(e).__name__, "message": str(e)}

    cat = catalog(base, token)
    attempt("missing_table", lambda: cat.load_table((ns, "no_such_table")))
    attempt("missing_namespace", lambda: cat.load_namespace_properties(ns + "-nope"))
    attempt("drop_managed", lambda: cat.drop_table((ns, "events")))
    schema = pa.schema([pa.field("n", pa.int64())])
    cat.create_table((ns, "py_errors"), schema=schema)
    stale = cat.load_table((ns, "py_errors"))
    cat.load_table((ns, "py_errors")).append(pa.table({"n": [1]}, schema=schema))
    # A commit built on the table before that append (PyIceberg's own appends
    # retry on conflict, so the raw commit shows the 409).
    requirement = AssertRefSnapshotId(ref="main", snapshot_id=None)
    update = SetPropertiesUpdate(updates={"owner": "py"})
    attempt("stale_commit", lambda: cat.commit_table(stale, (requirement,), (update,)))
    attempt("bad_token", lambda: catalog(base, "ns_" + ns + "_" + "0" * 64).load_table((ns, "events")))
    print(json.dumps(out))


if __name__ == "__main__":
    mode, base, token, ns = sys.argv[1:5]
    if mode == "cdc":
        cdc(base, token, ns, sys.argv[5])
    else:
        {"read": read, "external": external, "ids": ids, "denied": denied, "errors": errors}[mode](base, token, ns)
