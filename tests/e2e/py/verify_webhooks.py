"""Verifies webhook deliveries with the reference Standard Webhooks library.

    python verify_webhooks.py FILE

FILE holds {"secret": "whsec_...", "messages": [{"headers": {...}, "body": "..."}]}.
Prints {"verified": N, "failures": [...]} — one failure entry per message the
library rejects.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    hook = Webhook(spec["secret"])
    verified, failures = 0, []
    for m in spec["messages"]:
        try:
            hook.verify(m["body"], m["headers"])
            verified += 1
        except WebhookVerificationError as e:
            failures.append({"id": m["headers"].get("webhook-id"), "error": str(e)})
    print(json.dumps({"verified": verified, "failures": failures}))


if __name__ == "__main__":
    main()
