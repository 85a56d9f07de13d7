#!/usr/bin/env python3
"""Copies the objects of a local R2 bucket (wrangler dev --local, miniflare) into a directory.

Usage: miniflare_r2_export.py PERSIST_DIR DEST

miniflare keeps each R2 bucket as a SQLite index (table `_mf_objects`: key ->
blob_id) under PERSIST_DIR/v3/r2/miniflare-R2BucketObject/ and the object
bodies as files PERSIST_DIR/v3/r2/<bucket>/blobs/<blob_id>. This writes every
object to DEST/<key>, so other tools (pyarrow) see the bucket as the native
lake folder. Prints {"keys": [...]} as JSON.
"""

import glob
import json
import os
import shutil
import sqlite3
import sys


def main():
    persist, dest = sys.argv[1], sys.argv[2]
    r2 = os.path.join(persist, "v3", "r2")
    blobs = {}
    for path in glob.glob(os.path.join(r2, "*", "blobs", "*")):
        blobs[os.path.basename(path)] = path
    keys = []
    for db_path in glob.glob(os.path.join(r2, "miniflare-R2BucketObject", "*.sqlite")):
        db = sqlite3.connect(db_path)
        try:
            rows = db.execute("SELECT key, blob_id FROM _mf_objects WHERE blob_id IS NOT NULL").fetchall()
        except sqlite3.OperationalError:
            rows = []  # a bucket object that never stored anything
        finally:
            db.close()
        for key, blob_id in rows:
            src = blobs.get(blob_id)
            if src is None:
                continue  # written after the blob listing above; the next export sees it
            target = os.path.join(dest, *key.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(src, target)
            keys.append(key)
    json.dump({"keys": sorted(keys)}, sys.stdout)


if __name__ == "__main__":
    main()
