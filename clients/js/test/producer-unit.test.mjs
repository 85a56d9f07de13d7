// The producer's retry, split, bound and close rules, against a scripted
// `fetch` (no server): the exact answers a server gives only by accident.

import { test } from "node:test";
import assert from "node:assert/strict";
import { EventsClient, EventsError } from "../dist/index.js";
import { sleep } from "./server.mjs";

const decoder = new TextDecoder();

async function bodyText(body) {
  if (typeof body === "string") return body;
  return decoder.decode(body);
}

/** A fetch that answers from `script` (one function per call, the last repeated) and records every call. */
function scripted(script) {
  const calls = [];
  const fetch = async (url, init) => {
    const call = { url, init, at: Date.now(), headers: init.headers, body: init.body };
    calls.push(call);
    const step = script[Math.min(calls.length - 1, script.length - 1)];
    return step(call);
  };
  return { fetch, calls };
}

function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

const ok = (n = 1, extra = {}) => () => json(200, { ok: true, received: n, namespace: "t", ...extra });
const envelope = (status, code, details = {}, headers = {}) => () =>
  json(status, { error: `${code} happened`, code, details }, headers);

function client(fetch) {
  return new EventsClient({ url: "http://events.test", token: "ns_t_x", fetch });
}

async function batchOf(call) {
  return JSON.parse(await bodyText(call.body));
}

test("a lost answer is retried with the same bytes and batchId; Retry-After is honoured", async () => {
  const { fetch, calls } = scripted([
    () => {
      throw new TypeError("fetch failed", { cause: new Error("ECONNRESET") });
    },
    envelope(503, "SERVICE_UNAVAILABLE", {}, { "retry-after": "1" }),
    ok(2, { deduplicated: true }),
  ]);
  const p = client(fetch).producer({ gzip: false, lingerMs: 50, initialBackoffMs: 10, maxBackoffMs: 20 });
  const results = [p.send({ type: "a", n: 1 }), p.send({ type: "a", n: 2 })];
  await p.close();
  assert.equal(calls.length, 3);
  const bodies = await Promise.all(calls.map((c) => bodyText(c.body)));
  assert.equal(bodies[1], bodies[0], "the retry sends the very same bytes");
  assert.equal(bodies[2], bodies[0]);
  const batch = JSON.parse(bodies[0]);
  assert.match(batch.batchId, /^[!-~]{1,256}$/);
  assert.ok(!/[/\\]/.test(batch.batchId));
  assert.deepEqual(batch.events, [{ type: "a", n: 1 }, { type: "a", n: 2 }]);
  assert.ok(calls[2].at - calls[1].at >= 990, `waited ${calls[2].at - calls[1].at} ms, Retry-After said 1 s`);
  for (const r of results) assert.deepEqual(await r, { batchId: batch.batchId, deduplicated: true });
  const stats = p.stats();
  assert.equal(stats.retries, 2);
  assert.equal(stats.acknowledged, 2);
  assert.equal(stats.deduplicatedBatches, 1);
});

test("only retryable failures are retried", async () => {
  const cases = [
    ["INVALID_BATCH", 400, 1],
    ["INTERNAL_ERROR", 500, 1],
    ["QUOTA_EXCEEDED", 429, 1],
    ["FORBIDDEN", 403, 1],
    ["STORAGE_ERROR", 500, 3],
    ["RATE_LIMITED", 429, 3],
    ["OVERLOADED", 503, 3],
    ["TIMEOUT", 504, 3],
  ];
  for (const [code, status, attempts] of cases) {
    const { fetch, calls } = scripted([envelope(status, code)]);
    const p = client(fetch).producer({ gzip: false, lingerMs: 0, maxRetries: 2, initialBackoffMs: 1, maxBackoffMs: 2 });
    const sent = p.send({ type: "a" });
    await assert.rejects(sent, (e) => e instanceof EventsError && e.code === code && e.status === status);
    await assert.rejects(p.close(), (e) => e.code === "SEND_FAILED" && e.cause.code === code);
    assert.equal(calls.length, attempts, `${code}: attempts`);
  }
});

test("an answer without the envelope keeps its status; a 502 page is retried", async () => {
  const { fetch, calls } = scripted([() => new Response("<html>bad gateway</html>", { status: 502 }), ok()]);
  const c = client(fetch);
  const answer = await c.send({ type: "a" }, { gzip: false });
  assert.equal(answer.ok, true);
  assert.equal(calls.length, 2);
  const again = scripted([() => new Response("nope", { status: 418 })]);
  await assert.rejects(client(again.fetch).events.list(), (e) => e.status === 418 && e.code === "HTTP_418" && e.details.body === "nope");
});

test("a full buffer refuses send at once, and frees up as batches are acknowledged", async () => {
  let release;
  const gate = new Promise((r) => (release = r));
  const { fetch, calls } = scripted([async () => (await gate, ok(2)())]);
  const errors = [];
  const p = client(fetch).producer({
    gzip: false,
    lingerMs: 0,
    maxBatchEvents: 2,
    maxInFlight: 1,
    maxBufferedEvents: 5,
    onError: (e, events) => errors.push([e.code, events]),
  });
  const sent = [];
  for (let i = 0; i < 5; i++) sent.push(p.send({ type: "a", i }));
  const refused = p.send({ type: "a", i: 5 });
  await assert.rejects(refused, (e) => e.code === "BUFFER_FULL" && e.status === 0 && e.details.maxBufferedEvents === 5);
  assert.deepEqual(errors, [["BUFFER_FULL", [{ type: "a", i: 5 }]]]);
  assert.equal(p.stats().queued + p.stats().inFlight, 5);
  release();
  await Promise.all(sent);
  assert.ok(calls.length >= 3);
  await p.send({ type: "a", i: 6 });
  // close() reports the refused event too: nothing is lost silently.
  await assert.rejects(p.close(), (e) => e.code === "SEND_FAILED" && e.details.failed === 1 && e.cause.code === "BUFFER_FULL");
  assert.equal(p.stats().refused, 1);
});

test("maxBufferedBytes bounds the bytes held", async () => {
  const { fetch } = scripted([() => new Promise(() => {})]);
  const p = client(fetch).producer({ gzip: false, maxBatchBytes: 4096, maxBufferedBytes: 4096, lingerMs: 60_000, requestTimeoutMs: 100 });
  const big = { type: "a", pad: "x".repeat(1500) };
  p.send(big);
  p.send(big);
  await assert.rejects(p.send(big), (e) => e.code === "BUFFER_FULL");
  // The fetch never answers and ignores the abort: close still returns.
  await assert.rejects(p.close({ timeoutMs: 10 }), (e) => e.code === "SEND_FAILED" && e.details.failed === 3);
});

test("events the server refuses fail alone; the rest of the batch is sent again", async () => {
  const { fetch, calls } = scripted([
    envelope(400, "INVALID_EVENT", {
      indices: [1],
      errors: [{ index: 1, field: "type", message: "must be 1-128 characters of [A-Za-z0-9._-]" }],
    }),
    ok(2),
  ]);
  const p = client(fetch).producer({ gzip: false, lingerMs: 50, maxInFlight: 1 });
  const r0 = p.send({ type: "a", i: 0 });
  const r1 = p.send({ type: "bad type", i: 1 });
  const r2 = p.send({ type: "a", i: 2 });
  await assert.rejects(p.flush(), (e) => e.code === "SEND_FAILED" && e.details.failed === 1);
  await assert.rejects(r1, (e) => e.code === "INVALID_EVENT" && e.status === 400 && e.message.startsWith("type: must be"));
  const first = await batchOf(calls[0]);
  const second = await batchOf(calls[1]);
  assert.deepEqual(second.events.map((e) => e.i), [0, 2]);
  assert.equal(second.batchId, `${first.batchId}.r`, "a new id for the new body");
  assert.equal((await r0).batchId, second.batchId);
  assert.equal((await r2).batchId, second.batchId);
  await p.close();
});

test("413 halves the batch", async () => {
  const { fetch, calls } = scripted([envelope(413, "PAYLOAD_TOO_LARGE"), ok(2), ok(2)]);
  const p = client(fetch).producer({ gzip: false, lingerMs: 50, maxInFlight: 1 });
  const sent = [0, 1, 2, 3].map((i) => p.send({ type: "a", i }));
  await p.close();
  await Promise.all(sent);
  const ids = await Promise.all(calls.map(async (c) => (await batchOf(c)).batchId));
  assert.equal(calls.length, 3);
  assert.deepEqual(ids.slice(1).sort(), [`${ids[0]}.a`, `${ids[0]}.b`]);
});

test("close({ timeoutMs }) gives up: unacknowledged events fail with CLOSE_TIMEOUT", async () => {
  const { fetch, calls } = scripted([
    (call) =>
      new Promise((_, reject) => call.init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")))),
  ]);
  const p = client(fetch).producer({ gzip: false, lingerMs: 0, maxBatchEvents: 1, maxInFlight: 1 });
  const a = p.send({ type: "a" });
  const b = p.send({ type: "a" });
  const started = Date.now();
  await assert.rejects(p.close({ timeoutMs: 200 }), (e) => e.code === "SEND_FAILED" && e.details.failed === 2);
  assert.ok(Date.now() - started < 2000);
  await assert.rejects(a, (e) => e.code === "CLOSE_TIMEOUT" && /may or may not/.test(e.message));
  await assert.rejects(b, (e) => e.code === "CLOSE_TIMEOUT");
  assert.equal(calls.length, 1);
  assert.ok(calls[0].init.signal.aborted, "the request in flight is aborted");
});

test("send refuses closed producers and events it cannot send, without unhandled rejections", async () => {
  const unhandled = [];
  const onUnhandled = (e) => unhandled.push(e);
  process.on("unhandledRejection", onUnhandled);
  try {
    const { fetch, calls } = scripted([ok()]);
    const p = client(fetch).producer({ gzip: false, maxBatchBytes: 2048 });
    p.send(null);
    p.send({ type: "a", n: 10n });
    p.send({ type: "a", pad: "x".repeat(4096) });
    await assert.rejects(p.send({ noType: true }), (e) => e.code === "INVALID_EVENT" && e.status === 0);
    await assert.rejects(p.send({ type: "a", pad: "x".repeat(4096) }), (e) => e.code === "EVENT_TOO_LARGE");
    await assert.rejects(p.close(), (e) => e.code === "SEND_FAILED" && e.details.failed === 5);
    await assert.rejects(p.send({ type: "a" }), (e) => e.code === "PRODUCER_CLOSED");
    p.send({ type: "a" }); // not awaited
    await sleep(50);
    assert.equal(calls.length, 0);
    assert.equal(p.stats().refused, 7);
    assert.deepEqual(unhandled, []);
  } finally {
    process.off("unhandledRejection", onUnhandled);
  }
});

test("gzip: the body decompresses to the batch", async () => {
  const { fetch, calls } = scripted([ok(50)]);
  const p = client(fetch).producer({ gzip: true, lingerMs: 1000, maxBatchEvents: 50 });
  for (let i = 0; i < 50; i++) p.send({ type: "zip.me", i, text: "the same words again and again" });
  await p.close();
  assert.equal(calls.length, 1);
  assert.equal(calls[0].headers["content-encoding"], "gzip");
  const plain = await new Response(new Blob([calls[0].body]).stream().pipeThrough(new DecompressionStream("gzip"))).text();
  const batch = JSON.parse(plain);
  assert.equal(batch.events.length, 50);
  assert.ok(calls[0].body.length < plain.length / 3);
});

test("options out of range are refused", () => {
  const c = client(async () => ok()());
  assert.throws(() => c.producer({ maxBatchEvents: 1001 }), RangeError);
  assert.throws(() => c.producer({ maxBatchBytes: 2 * 1024 * 1024 }), RangeError);
  assert.throws(() => c.producer({ maxInFlight: 0 }), RangeError);
  assert.throws(() => new EventsClient({ url: "events.test" }), TypeError);
});
