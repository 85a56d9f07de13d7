#!/usr/bin/env python3
"""S3 helper of the events-e2e tests, for an S3-compatible endpoint (moto).

Usage:
  s3.py --endpoint URL create-bucket BUCKET
  s3.py --endpoint URL list BUCKET PREFIX
  s3.py --endpoint URL download BUCKET PREFIX DEST

Prints JSON: {"bucket": ...} for create-bucket, {"keys": [...]} for list and
download (download writes each object to DEST/<key>). Credentials come from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, default "testing".
"""

import argparse
import json
import os
import sys

import boto3


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )


def list_keys(s3, bucket, prefix):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return sorted(keys)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("create-bucket")
    p.add_argument("bucket")
    p = sub.add_parser("list")
    p.add_argument("bucket")
    p.add_argument("prefix")
    p = sub.add_parser("download")
    p.add_argument("bucket")
    p.add_argument("prefix")
    p.add_argument("dest")
    args = parser.parse_args()

    s3 = client(args.endpoint)
    if args.command == "create-bucket":
        s3.create_bucket(Bucket=args.bucket)
        out = {"bucket": args.bucket}
    elif args.command == "list":
        out = {"keys": list_keys(s3, args.bucket, args.prefix)}
    else:
        keys = list_keys(s3, args.bucket, args.prefix)
        for key in keys:
            target = os.path.join(args.dest, *key.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            s3.download_file(args.bucket, key, target)
        out = {"keys": keys}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
