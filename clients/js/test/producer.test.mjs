// The producer against the real server: batching by count, bytes and
// linger time, gzip, the buffer bound, and close() waiting for every
// acknowledgment. A recording `fetch` (the global one underneath) shows what
// went over the wire.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { EventsClient } from "../dist/index.js";
import { TestServer, countsById, sleep, storedEvents, uniqueNs } from "./server.mjs";

let server;
before(async () => {
  server = await TestServer.start();
});
after(async () => {
  await server?.stop();
});

/** A client whose fetch records every `POST /e` (time, headers, body size, events) and may delay answers. */
async function recordingClient(prefix, { delayAnswersMs = 0 } = {}) {
  const ns = uniqueNs(prefix);
  const token = await server.createKey(ns);
  const requests = [];
  const fetch = async (url, init) => {
    const record = { at: Date.now(), headers: init.headers, bytes: init.body?.length ?? 0, answeredAt: 0 };
    if (url.endsWith("/e")) requests.push(record);
    const res = await globalThis.fetch(url, init);
    if (delayAnswersMs) await sleep(delayAnswersMs);
    record.answeredAt = Date.now();
    return res;
  };
  return { client: new EventsClient({ url: server.url, token, fetch }), requests };
}

async function eventsPerRequest(requests, client, type) {
  const stored = await storedEvents(client, type);
  return { stored, sizes: requests.map((r) => r.bytes) };
}

test("batches by count: full batches leave at once, the rest after flush()", async () => {
  const { client, requests } = await recordingClient("count");
  const producer = client.producer({ maxBatchEvents: 10, lingerMs: 60_000, gzip: false });
  const sent = [];
  for (let i = 0; i < 35; i++) sent.push(producer.send({ type: "count.t", i }));
  await Promise.all(sent.slice(0, 30));
  await sleep(100);
  assert.equal(requests.length, 3, "three full batches, the last five wait for the linger time");
  assert.equal(producer.stats().queued, 5);
  await producer.flush();
  assert.equal(requests.length, 4);
  await producer.close();
  const stored = await storedEvents(client, "count.t");
  assert.equal(stored.length, 35);
  assert.equal(producer.stats().batches, 4);
});

test("batches by bytes: no body is larger than maxBatchBytes", async () => {
  const { client, requests } = await recordingClient("bytes");
  const maxBatchBytes = 4096;
  const producer = client.producer({ maxBatchBytes, lingerMs: 20, gzip: false });
  for (let i = 0; i < 40; i++) producer.send({ type: "bytes.t", i, pad: "x".repeat(900) });
  await producer.close();
  assert.ok(requests.length >= 10, `${requests.length} requests`);
  for (const r of requests) assert.ok(r.bytes <= maxBatchBytes, `a body of ${r.bytes} bytes`);
  const { stored } = await eventsPerRequest(requests, client, "bytes.t");
  assert.equal(stored.length, 40);
});

test("linger: a small batch waits lingerMs, then leaves without flush()", async () => {
  const { client, requests } = await recordingClient("linger");
  const producer = client.producer({ lingerMs: 300, gzip: false });
  const started = Date.now();
  const sent = [0, 1, 2].map((i) => producer.send({ type: "linger.t", i }));
  await sleep(100);
  assert.equal(requests.length, 0, "nothing sent before lingerMs");
  await Promise.all(sent);
  assert.equal(requests.length, 1, "one batch for the three events");
  assert.ok(requests[0].at - started >= 290, `sent after ${requests[0].at - started} ms`);
  assert.ok(requests[0].at - started < 2000);
  await producer.close();
});

test("gzip bodies are accepted and stored intact", async () => {
  const { client, requests } = await recordingClient("gzip");
  const producer = client.producer({ gzip: true, lingerMs: 20 });
  const text = "naïve café ✓ 😀 — the same words again and again";
  for (let i = 0; i < 200; i++) producer.send({ type: "gzip.t", i, text });
  await producer.close();
  assert.ok(requests.length >= 1);
  assert.ok(requests.every((r) => r.headers["content-encoding"] === "gzip"));
  const stored = await storedEvents(client, "gzip.t");
  assert.equal(stored.length, 200);
  assert.ok(stored.every((e) => e.text === text));
});

test("close() resolves only once every event is acknowledged", async () => {
  const { client, requests } = await recordingClient("close", { delayAnswersMs: 300 });
  const producer = client.producer({ maxBatchEvents: 50, lingerMs: 20, maxInFlight: 1, gzip: false });
  const acknowledged = new Set();
  for (let i = 0; i < 200; i++) producer.send({ type: "close.t", i }).then(() => acknowledged.add(i));
  const started = Date.now();
  await producer.close();
  const closedAt = Date.now();
  assert.equal(acknowledged.size, 200, "every send() promise resolved before close() did");
  assert.equal(requests.length, 4);
  const lastAnswer = Math.max(...requests.map((r) => r.answeredAt));
  assert.ok(lastAnswer > 0 && lastAnswer <= closedAt, "close() returned after the last answer arrived");
  assert.ok(closedAt - started >= 4 * 300 - 50, `closed after ${closedAt - started} ms; four answers take 1200 ms`);
  // Everything is on the server when close() returns.
  const counts = countsById(await storedEvents(client, "close.t"));
  assert.equal(counts.size, 200);
  assert.ok([...counts.values()].every((n) => n === 1));
  const stats = producer.stats();
  assert.equal(stats.acknowledged, 200);
  assert.equal(stats.queued + stats.inFlight, 0);
});

test("the buffer is bounded: send refuses beyond maxBufferedEvents and nothing else is lost", async () => {
  const { client } = await recordingClient("bound");
  const producer = client.producer({ maxBufferedEvents: 100, maxBatchEvents: 25, lingerMs: 50, gzip: false });
  const outcomes = await Promise.allSettled(
    Array.from({ length: 150 }, (_, i) => producer.send({ type: "bound.t", i })),
  );
  const refused = outcomes.filter((o) => o.status === "rejected");
  assert.equal(refused.length, 50);
  assert.ok(refused.every((o) => o.reason.code === "BUFFER_FULL"));
  await assert.rejects(producer.close(), (e) => e.code === "SEND_FAILED" && e.details.failed === 50);
  const stored = await storedEvents(client, "bound.t");
  assert.deepEqual(
    stored.map((e) => e.i).sort((a, b) => a - b),
    Array.from({ length: 100 }, (_, i) => i),
  );
});
