// Exactly once across failures: the server killed (SIGKILL) while batches
// are in flight and restarted on the same data directory and port; answers
// lost after the server stored the batch; close() while the server is down.
// Every event sent must be stored exactly once, which the batchId retries
// guarantee.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { EventsClient } from "../dist/index.js";
import { ADMIN_TOKEN, TestServer, countsById, sleep, storedEvents, uniqueNs } from "./server.mjs";

let server;
before(async () => {
  server = await TestServer.start();
});
after(async () => {
  await server?.stop();
});

/** Asserts that the events of `type` hold every `i` in [0, n) exactly once. */
async function assertExactlyOnce(client, type, n) {
  const counts = countsById(await storedEvents(client, type));
  const missing = [];
  const repeated = [];
  for (let i = 0; i < n; i++) {
    const c = counts.get(i) ?? 0;
    if (c === 0) missing.push(i);
    if (c > 1) repeated.push([i, c]);
  }
  assert.deepEqual({ missing: missing.slice(0, 20), repeated: repeated.slice(0, 20) }, { missing: [], repeated: [] });
  assert.equal(counts.size, n);
}

/** Waits (briefly) until the producer has a request out. */
async function untilInFlight(producer) {
  const deadline = Date.now() + 5000;
  while (producer.stats().inFlight === 0) {
    if (Date.now() > deadline) throw new Error("no batch went out");
    await new Promise((r) => setImmediate(r));
  }
}

test("the server killed mid-send and restarted: every event is stored exactly once", async (t) => {
  const ns = uniqueNs("crash");
  const client = new EventsClient({ url: server.url, token: await server.createKey(ns) });
  const producer = client.producer({
    maxBatchEvents: 50,
    lingerMs: 2,
    maxInFlight: 2,
    maxRetries: 100,
    initialBackoffMs: 20,
    maxBackoffMs: 250,
    requestTimeoutMs: 5000,
  });
  const n = 4000;
  const kills = new Map([
    [1000, 150], // kill at the 1,000th event, restart 150 events later
    [2600, 0], // kill and restart at once
  ]);
  let restartAt = -1;
  const inFlightAtKill = [];
  for (let i = 0; i < n; i++) {
    producer.send({ type: "crash.t", i });
    if (i % 50 === 49) await sleep(1);
    if (kills.has(i)) {
      await untilInFlight(producer);
      inFlightAtKill.push(producer.stats().inFlight);
      await server.kill();
      restartAt = i + kills.get(i);
    }
    if (i === restartAt) {
      await server.restart();
      restartAt = -1;
    }
  }
  await producer.close();
  const stats = producer.stats();
  t.diagnostic(`in flight at the kills: ${inFlightAtKill.join(", ")}; ${JSON.stringify(stats)}`);
  assert.ok(inFlightAtKill.every((k) => k > 0), "each kill hit requests in flight");
  assert.ok(stats.retries > 0, "the kills made the producer retry");
  assert.equal(stats.acknowledged, n);
  assert.equal(stats.failed, 0);

  await assertExactlyOnce(client, "crash.t", n);
  // And in the lake, through SQL, once the buffers are flushed.
  await new EventsClient({ url: server.url, token: ADMIN_TOKEN }).admin.flush();
  const [row] = await client.query(
    "SELECT count(*) AS n, count(DISTINCT json_get_int(data, 'i')) AS distinct_i FROM events WHERE type = 'crash.t'",
  );
  assert.deepEqual(row, { n, distinct_i: n });
});

test("answers lost after the server stored the batch: the retries are deduplicated", async () => {
  const ns = uniqueNs("lost");
  const token = await server.createKey(ns);
  // A proxy that forwards each request, and for the first few `POST /e`
  // drops the connection once the server has answered (stored and fsynced).
  let drop = 3;
  const dropped = new Set();
  const proxy = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (!["host", "connection", "content-length", "keep-alive"].includes(k)) headers[k] = v;
    }
    const upstream = await fetch(server.url + req.url, {
      method: req.method,
      headers,
      body: req.method === "GET" ? undefined : Buffer.concat(chunks),
    });
    const body = Buffer.from(await upstream.arrayBuffer());
    const key = Buffer.concat(chunks).toString("base64");
    if (req.method === "POST" && req.url === "/e" && upstream.ok && drop > 0 && !dropped.has(key)) {
      // Each batch loses one answer at most: its retry carries the same bytes.
      dropped.add(key);
      drop--;
      req.socket.destroy();
      return;
    }
    res.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "application/json" });
    res.end(body);
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  try {
    const client = new EventsClient({ url: `http://127.0.0.1:${proxy.address().port}`, token });
    const producer = client.producer({ maxBatchEvents: 100, lingerMs: 5, initialBackoffMs: 10, maxBackoffMs: 50 });
    const sent = [];
    for (let i = 0; i < 1000; i++) sent.push(producer.send({ type: "lost.t", i }));
    await producer.close();
    const results = await Promise.all(sent);
    const stats = producer.stats();
    assert.equal(drop, 0, "three answers were dropped");
    assert.equal(stats.retries, 3);
    assert.equal(stats.deduplicatedBatches, 3, "each retry found its batch stored");
    assert.equal(results.filter((r) => r.deduplicated).length, 300);
    await assertExactlyOnce(client, "lost.t", 1000);
  } finally {
    proxy.closeAllConnections();
    await new Promise((r) => proxy.close(r));
  }
});

test("close() while the server is down returns only after it is back and has acknowledged everything", async () => {
  const ns = uniqueNs("down");
  const client = new EventsClient({ url: server.url, token: await server.createKey(ns) });
  const producer = client.producer({ lingerMs: 10, maxRetries: 100, initialBackoffMs: 20, maxBackoffMs: 200 });
  for (let i = 0; i < 100; i++) producer.send({ type: "down.t", i });
  await producer.flush();
  await sleep(300); // see the first test: the namespace's objects exist before the kill
  await server.kill();
  for (let i = 100; i < 300; i++) producer.send({ type: "down.t", i });
  let closed = false;
  const closing = producer.close().then(() => {
    closed = true;
  });
  await sleep(1000);
  assert.equal(closed, false, "close() must wait while nothing can be acknowledged");
  const restartedAt = Date.now();
  await server.restart();
  await closing;
  assert.ok(Date.now() >= restartedAt);
  assert.equal(producer.stats().acknowledged, 300);
  await assertExactlyOnce(client, "down.t", 300);
});
