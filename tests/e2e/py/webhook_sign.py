"""Signs a webhook body the way a provider does; prints the headers as JSON.

    webhook_sign.py PROVIDER SECRET BODY_FILE [TIMESTAMP] [DELIVERY_ID]

Stripe is signed by the `stripe` SDK and Svix / Standard Webhooks by the
`standardwebhooks` SDK. Slack, Linear, WorkOS and the generic HMAC provider
have no signing SDK on PyPI, so they are signed here with Python's hmac,
independently of the server, following each provider's documentation.
TIMESTAMP is in seconds (default: now).
"""

import base64
import datetime
import hashlib
import hmac
import json
import sys
import time


def hex_hmac(key: bytes, msg: bytes) -> str:
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def main() -> None:
    provider, secret, body_file = sys.argv[1], sys.argv[2], sys.argv[3]
    ts = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else int(time.time())
    delivery = sys.argv[5] if len(sys.argv) > 5 else "msg_1"
    body = open(body_file, "rb").read()
    if provider == "stripe":
        import stripe

        headers = {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(body.decode(), secret, ts)}
    elif provider in ("svix", "standard-webhooks"):
        from standardwebhooks.webhooks import Webhook

        when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
        sig = Webhook(secret).sign(delivery, when, body.decode())
        prefix = "svix" if provider == "svix" else "webhook"
        headers = {f"{prefix}-id": delivery, f"{prefix}-timestamp": str(ts), f"{prefix}-signature": sig}
    elif provider == "slack":
        # https://api.slack.com/authentication/verifying-requests-from-slack
        base = b"v0:" + str(ts).encode() + b":" + body
        headers = {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": "v0=" + hex_hmac(secret.encode(), base)}
    elif provider == "linear":
        # https://developers.linear.app/docs/graphql/webhooks (signature over the raw body;
        # the timestamp is webhookTimestamp inside the body, set by the test).
        headers = {"Linear-Signature": hex_hmac(secret.encode(), body), "Linear-Delivery": delivery}
    elif provider == "workos":
        # https://workos.com/docs/events/data-syncing/webhooks (t in milliseconds, HMAC of "t.body").
        t_ms = str(ts * 1000)
        sig = hex_hmac(secret.encode(), t_ms.encode() + b"." + body)
        headers = {"WorkOS-Signature": f"t={t_ms}, v1={sig}"}
    elif provider == "generic-hex":
        headers = {"X-Signature": "sha256=" + hex_hmac(secret.encode(), body), "X-Event-Type": "thing.done",
                   "X-Delivery-Id": delivery}
    elif provider == "generic-base64":
        mac = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        headers = {"X-My-Sig": base64.b64encode(mac).decode(), "X-Delivery-Id": delivery}
    else:
        raise SystemExit(f"unknown provider {provider}")
    print(json.dumps(headers))


if __name__ == "__main__":
    main()
