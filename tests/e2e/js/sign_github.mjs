// Signs a body as GitHub does, with GitHub's own @octokit/webhooks-methods.
//   node sign_github.mjs SECRET BODY_FILE   → prints {"X-Hub-Signature-256": "sha256=..."}
import { readFileSync } from "node:fs";
import { sign } from "@octokit/webhooks-methods";

const [secret, bodyFile] = process.argv.slice(2);
const body = readFileSync(bodyFile, "utf8");
const signature = await sign(secret, body);
console.log(JSON.stringify({ "X-Hub-Signature-256": signature }));
