// The typed API calls against the real server: ingest, reads, SQL, the live
// tail, subscriptions, schemas, CDC, tables, admin, and the error envelope.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { EventsClient, EventsError, SERVER_ERROR_CODES } from "../dist/index.js";
import { ADMIN_TOKEN, TestServer, eventually, uniqueNs } from "./server.mjs";

let server;
before(async () => {
  server = await TestServer.start();
});
after(async () => {
  await server?.stop();
});

async function keyClient(prefix) {
  const ns = uniqueNs(prefix);
  const token = await server.createKey(ns);
  return new EventsClient({ url: server.url, token });
}

test("send, read back, SQL after a flush", async () => {
  const client = await keyClient("api");
  assert.match(client.namespace, /^api-/);
  const first = await client.send([
    { type: "order.created", orderId: "o-1", amount: 42 },
    { type: "order.paid", orderId: "o-1" },
  ]);
  assert.equal(first.ok, true);
  assert.equal(first.received, 2);
  assert.equal(first.namespace, client.namespace);
  // The same batchId again is deduplicated, not stored twice.
  const again = await client.send([{ type: "order.created", orderId: "o-1", amount: 42 }], { batchId: first.batchId });
  assert.equal(again.deduplicated, true);

  const page = await client.events.list({ type: "order.*", limit: 10 });
  assert.equal(page.events.length, 2);
  assert.deepEqual(page.events.map((e) => e.type).sort(), ["order.created", "order.paid"]);
  assert.ok(page.events.every((e) => e.ns === client.namespace && typeof e.id === "string"));
  assert.equal((await client.events.recent(1)).length, 1);

  const admin = new EventsClient({ url: server.url, token: ADMIN_TOKEN });
  await admin.admin.flush();
  const rows = await client.query("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type");
  assert.deepEqual(rows, [
    { type: "order.created", n: 1 },
    { type: "order.paid", n: 1 },
  ]);
  const csv = await (await client.queryRaw("SELECT count(*) AS n FROM events", "csv")).text();
  assert.match(csv, /^n\s*\n2\s*$/);
  const tables = await client.tables.list();
  assert.equal(tables.find((t) => t.name === "events")?.rows, 2);
  const snapshots = await client.tables.snapshots("events");
  assert.ok(Array.isArray(snapshots.snapshots) && snapshots.snapshots.length >= 1);
});

test("errors carry the envelope's status, code, message and details", async () => {
  const client = await keyClient("errors");
  await assert.rejects(client.send([{ type: "ok.one" }, { type: "not a type" }]), (e) => {
    assert.ok(e instanceof EventsError);
    assert.equal(e.status, 400);
    assert.equal(e.code, "INVALID_EVENT");
    assert.deepEqual(e.details.indices, [1]);
    assert.equal(e.details.errors[0].field, "type");
    assert.match(e.message, /invalid events at indices: 1/);
    assert.equal(e.retryable, false);
    assert.ok(e.requestId);
    return true;
  });
  await assert.rejects(client.send([{ type: "x" }], { batchId: "has space" }), (e) => e.code === "INVALID_BATCH_ID");
  await assert.rejects(client.subscriptions.get("sub_nope"), (e) => e.status === 404 && e.code === "NOT_FOUND");
  await assert.rejects(client.query("DROP TABLE events"), (e) => e.status === 400 && e.code === "READ_ONLY_QUERY");
  const stranger = new EventsClient({ url: server.url, token: "ns_nobody_0000000000000000000000000000000000000000000000000000000000000000" });
  await assert.rejects(stranger.events.list(), (e) => e.status === 401 && e.code === "INVALID_API_KEY");
  const anonymous = new EventsClient({ url: server.url });
  await assert.rejects(anonymous.events.list(), (e) => e.status === 401 && e.code === "AUTH_REQUIRED");
  // Admin routes with a namespace key.
  await assert.rejects(client.admin.flush(), (e) => e.status === 403 && e.code === "FORBIDDEN");
});

test("the live tail delivers events sent after it opened, and resumes by id", async () => {
  const client = await keyClient("tail");
  const controller = new AbortController();
  const stream = client.events.tail({ type: "tail.*", signal: controller.signal });
  const ready = await stream.next();
  assert.equal(ready.value.event, "ready");
  await client.send([{ type: "tail.one", n: 1 }, { type: "other" }, { type: "tail.two", n: 2 }]);
  const got = [];
  for await (const message of stream) {
    assert.equal(message.event, "message");
    got.push(message);
    if (got.length === 2) break;
  }
  assert.deepEqual(got.map((m) => m.data.n).sort(), [1, 2]);
  controller.abort();
  // Resuming after the first message yields the second one only.
  const [firstSeen] = got;
  const resumed = client.events.tail({ type: "tail.*", lastEventId: firstSeen.id });
  for await (const message of resumed) {
    if (message.event !== "message") continue;
    assert.notEqual(message.data.n, firstSeen.data.n);
    break;
  }
});

test("subscriptions: create, update, pause, resume, stats, dead letters, recover, delete", async () => {
  const client = await keyClient("subs");
  const created = await client.subscriptions.create({
    pattern: "nothing.matches.*",
    url: "https://example.invalid/hook",
    description: "js client test",
  });
  assert.match(created.id, /^sub_/);
  assert.match(created.secret, /^whsec_/);
  const list = await client.subscriptions.list();
  assert.deepEqual(list.subscriptions.map((s) => s.id), [created.id]);
  assert.equal((await client.subscriptions.update(created.id, { description: "changed" })).description, "changed");
  assert.equal((await client.subscriptions.pause(created.id)).status, "paused");
  assert.equal((await client.subscriptions.resume(created.id)).status, "active");
  const stats = await client.subscriptions.stats(created.id);
  assert.equal(stats.delivered, 0);
  assert.deepEqual((await client.subscriptions.attempts(created.id)).attempts, []);
  assert.deepEqual((await client.subscriptions.deliveries(created.id)).deliveries, []);
  assert.deepEqual((await client.subscriptions.deadLetters(created.id)).deadLetters, []);
  assert.equal((await client.subscriptions.replayDeadLetters(created.id)).replayed, 0);
  const job = await client.subscriptions.recover(created.id, new Date(Date.now() - 3600_000));
  assert.match(job.id, /^job_/);
  const status = await client.subscriptions.recovery(created.id, job.id);
  assert.equal(status.id, job.id);
  assert.deepEqual(await client.subscriptions.delete(created.id), { deleted: true, id: created.id });
  await assert.rejects(
    client.subscriptions.create({ pattern: "a.*", url: "http://127.0.0.1:9/hook" }),
    (e) => e.code === "TARGET_NOT_ALLOWED",
  );
});

test("schemas: register, read, validate; a strict schema refuses events through the producer", async () => {
  const client = await keyClient("schemas");
  const schema = {
    type: "object",
    required: ["amount"],
    properties: { amount: { type: "number" } },
  };
  const v1 = await client.schemas.register({ type: "order.created", schema });
  assert.equal(v1.version, 1);
  assert.equal((await client.schemas.get("order.created")).version, 1);
  assert.equal((await client.schemas.versions("order.created")).length, 1);
  assert.equal((await client.schemas.version("order.created", 1)).version, 1);
  assert.equal((await client.schemas.list()).length, 1);
  assert.deepEqual(await client.schemas.config(), { mode: "strict", compatibility: "BACKWARD" });
  const checked = await client.schemas.validate([{ type: "order.created", amount: "lots" }]);
  assert.equal(checked.valid, false);

  const producer = client.producer({ lingerMs: 50 });
  const good = producer.send({ type: "order.created", amount: 1 });
  const bad = producer.send({ type: "order.created", amount: "lots" });
  const other = producer.send({ type: "order.paid" });
  await assert.rejects(producer.close(), (e) => e.code === "SEND_FAILED" && e.details.failed === 1);
  await assert.rejects(bad, (e) => e.status === 400 && e.code === "SCHEMA_VALIDATION_ERROR");
  assert.equal((await good).batchId, (await other).batchId);
  const stored = await client.events.list({ type: "order.*" });
  assert.deepEqual(stored.events.map((e) => e.type).sort(), ["order.created", "order.paid"]);
});

test("CDC: collection events become documents with history", async () => {
  const client = await keyClient("cdc");
  await client.send([
    { type: "collection.insert", collection: "users", docId: "u1", doc: { name: "Ada" } },
    { type: "collection.update", collection: "users", docId: "u1", doc: { name: "Ada L." } },
  ]);
  const doc = await eventually(() => client.cdc.get("users", "u1").catch(() => null), 15_000, "the CDC document");
  assert.equal(JSON.stringify(doc).includes("Ada"), true);
  const collections = await client.cdc.collections();
  assert.ok(collections.collections.length >= 1);
  const docs = await client.cdc.documents("users");
  assert.equal(docs.documents.length, 1);
  const history = await eventually(async () => {
    const h = await client.cdc.history("users", "u1");
    return JSON.stringify(h).includes("Ada L.") && h;
  });
  assert.ok(history);
});

test("admin: keys, limits, namespaces through X-Namespace", async () => {
  const admin = new EventsClient({ url: server.url, token: ADMIN_TOKEN });
  const ns = uniqueNs("admin");
  const created = await admin.admin.createKey(ns, { name: "ci" });
  assert.match(created.key, new RegExp(`^ns_${ns}_`));
  const keys = await admin.admin.listKeys(ns);
  assert.deepEqual(keys.map((k) => k.id), [created.id]);
  await admin.admin.setLimits(ns, { eventsPerMinute: 5000 });
  assert.equal((await admin.admin.limits(ns)).eventsPerMinute, 5000);
  // The admin token acting on the namespace.
  const scoped = admin.forNamespace(ns);
  assert.equal(scoped.namespace, ns);
  assert.equal((await scoped.send({ type: "from.admin" })).namespace, ns);
  await admin.admin.revokeKey(ns, created.id);
  const revoked = new EventsClient({ url: server.url, token: created.key });
  await assert.rejects(revoked.events.list(), (e) => e.status === 401);
  const shards = await admin.admin.shards();
  assert.ok(shards);
  const health = await admin.health();
  assert.ok(health);
  const doc = await admin.openapi();
  assert.equal(doc.openapi.startsWith("3.1"), true);
  // The client knows every code of the server's envelope, and no other.
  assert.deepEqual([...SERVER_ERROR_CODES].sort(), [...doc.components.schemas.ErrorBody.properties.code.enum].sort());
});
