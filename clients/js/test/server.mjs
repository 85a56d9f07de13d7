// The server under test: the real `events` binary on a free loopback port
// with a fresh data directory, started, killed (SIGKILL) and restarted on the
// same directory and address, as tests/e2e/src/server.rs does for the Rust suite.
//
// The binary is $EVENTS_BIN, else $CARGO_TARGET_DIR/debug/events, else
// <repo>/target/debug/events. Build it with `cargo build -p events-cli --bin events`.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";

export const ADMIN_TOKEN = "js-client-admin-token-0123456789abcdef";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..", "..");

/** The `EVENTS_*` variables the server reads: never inherited from the caller's shell. */
const SERVER_ENV_PREFIX = "EVENTS_";

export function eventsBin() {
  const candidates = [
    process.env.EVENTS_BIN,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, "debug", "events"),
    join(repo, "target", "debug", "events"),
  ].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(
      `the events binary is missing (looked at ${candidates.join(", ")}): build it with ` +
        "`cargo build -p events-cli --bin events`, or point EVENTS_BIN at it",
    );
  }
  return found;
}

export class TestServer {
  #dir;
  #bin;
  #child = null;
  #exited = null;
  /** `127.0.0.1:PORT` of the first start; restarts listen there again. */
  addr = "";

  constructor(dir, bin) {
    this.#dir = dir;
    this.#bin = bin;
  }

  /** Starts a server; `toml` is appended to its configuration file. */
  static async start({ toml = "" } = {}) {
    const dir = mkdtempSync(join(tmpdir(), "events-js-"));
    const config = [
      `data_dir = ${JSON.stringify(join(dir, "data"))}`,
      `listen = "127.0.0.1:0"`,
      `admin_token = ${JSON.stringify(ADMIN_TOKEN)}`,
      toml,
    ].join("\n");
    writeFileSync(join(dir, "events.toml"), `${config}\n`);
    const server = new TestServer(dir, eventsBin());
    await server.#spawn(null);
    return server;
  }

  get url() {
    return `http://${this.addr}`;
  }

  get running() {
    return this.#child !== null;
  }

  get pid() {
    return this.#child?.pid;
  }

  stderr() {
    try {
      return readFileSync(join(this.#dir, "stderr.log"), "utf8");
    } catch {
      return "";
    }
  }

  async #spawn(listen) {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith(SERVER_ENV_PREFIX)) env[k] = v;
    env.RUST_LOG ??= "info";
    const args = ["serve", "--config", join(this.#dir, "events.toml")];
    if (listen) args.push("--listen", listen);
    const stderr = openSync(join(this.#dir, "stderr.log"), "a");
    const child = spawn(this.#bin, args, { env, stdio: ["ignore", "pipe", stderr] });
    closeSync(stderr);
    const exited = new Promise((res) => child.once("exit", (code, signal) => res({ code, signal })));
    const lines = createInterface({ input: child.stdout });
    const timeout = new AbortController();
    const first = await Promise.race([
      new Promise((res) => lines.once("line", res)),
      exited.then(() => null),
      sleep(60_000, "timeout", { signal: timeout.signal }).catch(() => null),
    ]);
    timeout.abort();
    // Keep draining stdout so the server never blocks on a full pipe.
    lines.on("line", () => {});
    const m = typeof first === "string" ? /^events\.do listening on http:\/\/(\S+)$/.exec(first) : null;
    if (!m) {
      child.kill("SIGKILL");
      await exited;
      throw new Error(`the server did not start (first line ${JSON.stringify(first)})\n${this.stderr()}`);
    }
    this.#child = child;
    this.#exited = exited;
    this.addr ||= m[1];
  }

  /** SIGKILL: no shutdown, no flush; waits until the process is gone. */
  async kill() {
    if (!this.#child) return;
    this.#child.kill("SIGKILL");
    await this.#exited;
    this.#child = null;
  }

  /** Starts again on the same data directory and address (retrying while the port is busy). */
  async restart() {
    await this.kill();
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        await this.#spawn(this.addr);
        return;
      } catch (e) {
        if (Date.now() > deadline || !/cannot listen|address.*in use/i.test(String(e.message))) throw e;
        await sleep(200);
      }
    }
  }

  /** Kills the server and removes its directory. */
  async stop() {
    await this.kill();
    rmSync(this.#dir, { recursive: true, force: true });
  }

  /** A namespace key for `ns` (created with the admin token). */
  async createKey(ns, name = "js-tests") {
    const res = await fetch(`${this.url}/admin/namespaces/${ns}/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ name }),
    });
    if (res.status !== 201) throw new Error(`creating a key: ${res.status} ${await res.text()}`);
    return (await res.json()).key;
  }
}

/** A namespace no other test uses. */
export function uniqueNs(prefix) {
  return `${prefix}-${Math.random().toString(16).slice(2, 10)}`;
}

/** Polls `check` until it returns a truthy value (or fails after `ms`). */
export async function eventually(check, ms = 15_000, what = "condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Every stored event of `type`, read back through GET /events page by page. */
export async function storedEvents(client, type) {
  const out = [];
  for await (const e of client.events.iterate({ type, limit: 1000 })) out.push(e);
  return out;
}

/** Asserts every `i` in [0, n) appears exactly once among `events` (the field `i`). */
export function countsById(events) {
  const counts = new Map();
  for (const e of events) counts.set(e.i, (counts.get(e.i) ?? 0) + 1);
  return counts;
}

export { sleep };
