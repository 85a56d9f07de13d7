/**
 * `EventsClient`: typed calls for every area of the HTTP API, and
 * `producer()` for batched, retried ingest.
 */

import { EventsError } from "./errors.js";
import { Producer, type ProducerOptions } from "./producer.js";
import { type TailMessage, type TailOptions, tailStream } from "./tail.js";
import { type FetchLike, type QueryValue, type RequestSpec, Transport } from "./transport.js";
import type {
  ApiKey,
  CdcDocumentsParams,
  CreateSubscription,
  CreatedKey,
  EventInput,
  EventsPage,
  HealthResponse,
  IngestResponse,
  JsonObject,
  ListEventsParams,
  ListSubscriptionsParams,
  MaintainOptions,
  NamespaceLimits,
  PageParams,
  QueryFormat,
  QueryOptions,
  RecoveryJob,
  RegisterSchema,
  SchemaConfig,
  SchemaVersion,
  StatusPageParams,
  StoredEvent,
  SubscribeRpc,
  Subscription,
  SubscriptionStats,
  TableChangesParams,
  TableInfo,
  UpdateSubscription,
  ValidateResult,
} from "./types.js";
import { BatchIds, canGzip, gzip, inBrowserPage, isoTime, utf8 } from "./util.js";

export interface EventsClientOptions {
  /** The server, e.g. `https://events.example.com` or `http://127.0.0.1:8787`. */
  url: string;
  /** A namespace key (`ns_<namespace>_<secret>`), a publishable key, or the admin token. */
  token?: string;
  /**
   * The namespace to act on with the admin token (sent as `X-Namespace`).
   * A namespace key always acts on its own namespace; leave this out then.
   */
  namespace?: string;
  /** A `fetch` to use instead of the global one. */
  fetch?: FetchLike;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
  /** Timeout of one request, in ms. Default 30,000. */
  timeoutMs?: number;
  /**
   * Retries of idempotent calls (reads, and `send` with its batch id) after a
   * retryable failure (see `isRetryable`). Default 3.
   */
  maxRetries?: number;
  /** First backoff, doubled each retry (with jitter). Default 100 ms. */
  initialBackoffMs?: number;
  /** Longest backoff; a longer `Retry-After` is still honoured. Default 10,000 ms. */
  maxBackoffMs?: number;
}

export interface SendOptions {
  /** Idempotency key (1-256 printable ASCII, no `/`, `\` or spaces). Default: a fresh one, so retries are safe. */
  batchId?: string;
  /** Gzip the body. Default: as the producer's default. */
  gzip?: boolean;
  signal?: AbortSignal;
}

const seg = encodeURIComponent;

function namespaceOf(token: string | undefined): string | undefined {
  const m = token ? /^(?:ns|pk)_([a-z0-9][a-z0-9-]*)_/.exec(token) : null;
  return m ? m[1] : undefined;
}

function cleanQuery(params: object | undefined): Record<string, QueryValue> {
  const out: Record<string, QueryValue> = {};
  for (const [k, v] of Object.entries(params ?? {})) out[k] = v instanceof Date ? v.toISOString() : (v as QueryValue);
  return out;
}

export class EventsClient {
  readonly #t: Transport;
  readonly #ids = new BatchIds();
  /** The namespace the path-addressed routes (schemas, CDC) use. */
  readonly namespace: string;

  readonly events: EventsApi;
  readonly subscriptions: SubscriptionsApi;
  readonly schemas: SchemasApi;
  readonly cdc: CdcApi;
  readonly tables: TablesApi;
  readonly admin: AdminApi;

  constructor(options: EventsClientOptions | Transport) {
    if (options instanceof Transport) {
      this.#t = options;
    } else {
      this.#t = new Transport({
        url: options.url,
        token: options.token,
        namespace: options.namespace,
        fetch: options.fetch,
        headers: options.headers,
        timeoutMs: options.timeoutMs ?? 30_000,
        retry: {
          maxRetries: options.maxRetries ?? 3,
          initialBackoffMs: options.initialBackoffMs ?? 100,
          maxBackoffMs: options.maxBackoffMs ?? 10_000,
        },
      });
    }
    this.namespace = this.#t.namespace ?? namespaceOf(this.#t.token) ?? "default";
    this.events = new EventsApi(this.#t);
    this.subscriptions = new SubscriptionsApi(this.#t);
    this.schemas = new SchemasApi(this.#t, this.namespace);
    this.cdc = new CdcApi(this.#t, this.namespace);
    this.tables = new TablesApi(this.#t);
    this.admin = new AdminApi(this.#t);
  }

  /** The server's base URL. */
  get url(): string {
    return this.#t.baseUrl;
  }

  /** A client with the same token acting on `namespace` (admin token: sent as `X-Namespace`). */
  forNamespace(namespace: string): EventsClient {
    return new EventsClient(this.#t.withNamespace(namespace));
  }

  /** A batching producer (see `ProducerOptions`); `close()` it when done. */
  producer(options: ProducerOptions = {}): Producer {
    return new Producer(this.#t, options);
  }

  /**
   * Sends one batch (up to 1,000 events, 1 MiB) in one request and resolves
   * once the server has it on disk. The batch always carries a `batchId` (a
   * fresh one unless given), so the retries of a lost answer never store it
   * twice; `deduplicated: true` says the server already had it.
   */
  async send(events: EventInput | EventInput[], options: SendOptions = {}): Promise<IngestResponse & { batchId: string }> {
    const batchId = options.batchId ?? this.#ids.next();
    const list = Array.isArray(events) ? events : [events];
    let body = utf8(JSON.stringify({ events: list, batchId }));
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (options.gzip ?? (canGzip() && !inBrowserPage())) {
      const zipped = await gzip(body);
      if (zipped.length < body.length) {
        body = zipped;
        headers["content-encoding"] = "gzip";
      }
    }
    const answer = await this.#t.json<IngestResponse>({
      method: "POST",
      path: "/e",
      body,
      headers,
      idempotent: true,
      signal: options.signal,
    });
    return { ...answer, batchId };
  }

  /**
   * One read-only SQL statement over the namespace's tables (`events`,
   * `cdc_<collection>`); the rows as objects. Only lake data: see `admin.flush()`.
   */
  async query<Row = JsonObject>(sql: string, options: QueryOptions = {}): Promise<Row[]> {
    return this.#t.json<Row[]>({
      method: "POST",
      path: "/query",
      json: { sql, format: "json", at: options.at, timeoutMs: options.timeoutMs },
      idempotent: true,
      signal: options.signal,
    });
  }

  /** A query in another format (`ndjson`, `csv`, `arrow`): the raw `Response`, its body unread. */
  async queryRaw(sql: string, format: QueryFormat, options: QueryOptions = {}): Promise<Response> {
    return this.#t.response({
      method: "POST",
      path: "/query",
      json: { sql, format, at: options.at, timeoutMs: options.timeoutMs },
      idempotent: true,
      signal: options.signal,
    });
  }

  /** `GET /health`. */
  health(): Promise<HealthResponse> {
    return this.#t.json({ method: "GET", path: "/health", idempotent: true });
  }

  /** The server's OpenAPI 3.1 document. */
  openapi(): Promise<JsonObject> {
    return this.#t.json({ method: "GET", path: "/openapi.json", idempotent: true });
  }

  /** Any route: for what the typed methods do not cover yet. */
  request<T = unknown>(spec: RequestSpec): Promise<T> {
    return this.#t.json<T>(spec);
  }
}

export class EventsApi {
  constructor(readonly transport: Transport) {}

  /** One page of events, newest first (buffers and lake together). */
  list(params: ListEventsParams = {}): Promise<EventsPage> {
    return this.transport.json({ method: "GET", path: "/events", query: cleanQuery(params), idempotent: true });
  }

  /** Every event matching `params`, newest first, page after page. */
  async *iterate(params: Omit<ListEventsParams, "cursor"> = {}): AsyncGenerator<StoredEvent> {
    let cursor: string | undefined;
    do {
      const page = await this.list({ ...params, ...(cursor ? { cursor } : {}) });
      yield* page.events;
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
  }

  /** The latest events (1-1000, default 100). */
  async recent(limit?: number): Promise<StoredEvent[]> {
    const answer = await this.transport.json<{ events: StoredEvent[] }>({
      method: "GET",
      path: "/recent",
      query: { limit },
      idempotent: true,
    });
    return answer.events;
  }

  /**
   * The live tail as an async iterator of Server-Sent Events messages. One
   * connection: when it ends (server stop, `lagged`), call again with the
   * last message's `id` as `lastEventId` to resume without a gap.
   */
  tail(options: TailOptions = {}): AsyncGenerator<TailMessage> {
    return tailStream(this.transport, options);
  }
}

export class SubscriptionsApi {
  constructor(readonly transport: Transport) {}

  #call<T>(method: RequestSpec["method"], path: string, json?: unknown, query?: object): Promise<T> {
    return this.transport.json<T>({
      method,
      path: `/subscriptions${path}`,
      json,
      query: cleanQuery(query),
      idempotent: method === "GET",
    });
  }

  list(params: ListSubscriptionsParams = {}): Promise<{ subscriptions: Subscription[]; nextCursor: string | null }> {
    return this.#call("GET", "", undefined, params);
  }
  /** Creates a subscription; the answer is the only one with the generated `secret`. */
  create(body: CreateSubscription): Promise<Subscription> {
    return this.#call("POST", "", body);
  }
  /** Subscribes a worker's RPC method. */
  subscribeRpc(body: SubscribeRpc): Promise<Subscription> {
    return this.#call("POST", "/subscribe", body);
  }
  get(id: string): Promise<Subscription> {
    return this.#call("GET", `/${seg(id)}`);
  }
  update(id: string, patch: UpdateSubscription): Promise<Subscription> {
    return this.#call("PATCH", `/${seg(id)}`, patch);
  }
  delete(id: string): Promise<{ deleted: boolean; id: string }> {
    return this.#call("DELETE", `/${seg(id)}`);
  }
  pause(id: string): Promise<Subscription> {
    return this.#call("POST", `/${seg(id)}/pause`);
  }
  resume(id: string): Promise<Subscription> {
    return this.#call("POST", `/${seg(id)}/resume`);
  }
  /** Rotates the signing secret; both sign during `overlapMs`. */
  rotateSecret(id: string, body: { secret?: string; overlapMs?: number } = {}): Promise<Subscription> {
    return this.#call("POST", `/${seg(id)}/rotate-secret`, body);
  }
  stats(id: string): Promise<SubscriptionStats> {
    return this.#call("GET", `/${seg(id)}/stats`);
  }
  attempts(id: string, params: PageParams = {}): Promise<{ attempts: JsonObject[]; nextCursor: string | number | null }> {
    return this.#call("GET", `/${seg(id)}/attempts`, undefined, params);
  }
  eventAttempts(id: string, eventId: string, params: PageParams = {}): Promise<{ attempts: JsonObject[]; nextCursor: string | number | null }> {
    return this.#call("GET", `/${seg(id)}/events/${seg(eventId)}/attempts`, undefined, params);
  }
  deliveries(id: string, params: StatusPageParams = {}): Promise<{ deliveries: JsonObject[]; nextCursor: string | null }> {
    return this.#call("GET", `/${seg(id)}/deliveries`, undefined, params);
  }
  deadLetters(id: string, params: StatusPageParams = {}): Promise<{ deadLetters: JsonObject[]; nextCursor: string | null }> {
    return this.#call("GET", `/${seg(id)}/dead-letters`, undefined, params);
  }
  replayDeadLetter(id: string, deadLetterId: string): Promise<JsonObject> {
    return this.#call("POST", `/${seg(id)}/dead-letters/${seg(deadLetterId)}/replay`);
  }
  replayDeadLetters(id: string): Promise<{ replayed: number }> {
    return this.#call("POST", `/${seg(id)}/dead-letters/replay`);
  }
  /** Starts re-sending every matching event since `since` (delivered ones included). */
  recover(id: string, since: string | Date): Promise<RecoveryJob> {
    return this.#call("POST", `/${seg(id)}/recover`, { since: isoTime(since) });
  }
  recovery(id: string, jobId: string): Promise<RecoveryJob> {
    return this.#call("GET", `/${seg(id)}/recover/${seg(jobId)}`);
  }
}

export class SchemasApi {
  constructor(
    readonly transport: Transport,
    readonly namespace: string,
  ) {}

  #call<T>(method: RequestSpec["method"], path: string, json?: unknown): Promise<T> {
    return this.transport.json<T>({
      method,
      path: `/schemas/${seg(this.namespace)}${path}`,
      json,
      idempotent: method === "GET",
    });
  }

  /** The latest live version of every subject. */
  async list(): Promise<SchemaVersion[]> {
    return (await this.#call<{ schemas: SchemaVersion[] }>("GET", "")).schemas;
  }
  /** Registers a new version (409 `SCHEMA_INCOMPATIBLE` if the compatibility rule refuses it). */
  register(body: RegisterSchema): Promise<SchemaVersion> {
    return this.#call("POST", "", body);
  }
  get(subject: string): Promise<SchemaVersion> {
    return this.#call("GET", `/${seg(subject)}`);
  }
  async versions(subject: string): Promise<SchemaVersion[]> {
    return (await this.#call<{ schemas: SchemaVersion[] }>("GET", `/${seg(subject)}/versions`)).schemas;
  }
  version(subject: string, version: number): Promise<SchemaVersion> {
    return this.#call("GET", `/${seg(subject)}/versions/${version}`);
  }
  delete(subject: string): Promise<JsonObject> {
    return this.#call("DELETE", `/${seg(subject)}`);
  }
  config(): Promise<SchemaConfig> {
    return this.#call("GET", "/config");
  }
  setConfig(config: SchemaConfig): Promise<SchemaConfig> {
    return this.#call("PUT", "/config", config);
  }
  /** Validates events against the namespace's schemas without storing them. */
  validate(events: EventInput[]): Promise<ValidateResult> {
    return this.#call("POST", "/validate", { events });
  }
}

export class CdcApi {
  constructor(
    readonly transport: Transport,
    readonly namespace: string,
  ) {}

  #path(rest = ""): string {
    return `/cdc/${seg(this.namespace)}${rest}`;
  }

  /** The namespace's collections with their statistics. */
  collections(): Promise<{ namespace: string; collections: JsonObject[] }> {
    return this.transport.json({ method: "GET", path: this.#path(), idempotent: true });
  }
  /** A page of a collection's documents as they were at `at` (default now). */
  documents(collection: string, params: CdcDocumentsParams = {}): Promise<{ documents: JsonObject[]; nextCursor: string | null; at: string | null }> {
    return this.transport.json({ method: "GET", path: this.#path(`/${seg(collection)}`), query: cleanQuery(params), idempotent: true });
  }
  /** One document as it was at `at`; a deleted one has `deleted: true`. */
  get(collection: string, id: string, params: { at?: string | Date } = {}): Promise<JsonObject> {
    return this.transport.json({
      method: "GET",
      path: this.#path(`/${seg(collection)}/${seg(id)}`),
      query: cleanQuery(params),
      idempotent: true,
    });
  }
  /** A document's changes in event-time order. */
  history(collection: string, id: string, params: PageParams = {}): Promise<JsonObject> {
    return this.transport.json({
      method: "GET",
      path: this.#path(`/${seg(collection)}/${seg(id)}/history`),
      query: cleanQuery(params),
      idempotent: true,
    });
  }
  manifest(collection: string): Promise<JsonObject> {
    return this.transport.json({ method: "GET", path: this.#path(`/${seg(collection)}/_manifest`), idempotent: true });
  }
  /** Writes pending changes to delta files now. */
  flush(collection: string): Promise<JsonObject> {
    return this.transport.json({ method: "POST", path: this.#path(`/${seg(collection)}/_flush`) });
  }
  compact(collection: string): Promise<JsonObject> {
    return this.transport.json({ method: "POST", path: this.#path(`/${seg(collection)}/_compact`) });
  }
  snapshot(collection: string, params: { kind?: string } = {}): Promise<JsonObject> {
    return this.transport.json({ method: "POST", path: this.#path(`/${seg(collection)}/_snapshot`), query: cleanQuery(params) });
  }
  /** Brings the collection back to its state at `at` (by writing new changes). */
  restore(collection: string, at: string | Date): Promise<JsonObject> {
    return this.transport.json({ method: "POST", path: this.#path(`/${seg(collection)}/_restore`), json: { at: isoTime(at) } });
  }
}

export class TablesApi {
  constructor(readonly transport: Transport) {}

  async list(): Promise<TableInfo[]> {
    return (await this.transport.json<{ tables: TableInfo[] }>({ method: "GET", path: "/tables", idempotent: true })).tables;
  }
  /** Snapshots and schema history. */
  snapshots(table: string): Promise<JsonObject> {
    return this.transport.json({ method: "GET", path: `/tables/${seg(table)}/snapshots`, idempotent: true });
  }
  /** The rows a table gained between two snapshots. */
  changes(table: string, params: TableChangesParams = {}): Promise<JsonObject> {
    return this.transport.json({
      method: "GET",
      path: `/tables/${seg(table)}/changes`,
      query: { from_snapshot: params.fromSnapshot, to_snapshot: params.toSnapshot },
      idempotent: true,
    });
  }
  /** Compaction, snapshot expiry, orphan cleanup now. */
  maintain(options: MaintainOptions = {}): Promise<JsonObject> {
    return this.transport.json({ method: "POST", path: "/tables/maintain", json: options });
  }
}

/** Routes of the admin token. */
export class AdminApi {
  constructor(readonly transport: Transport) {}

  /** Writes every writer buffer to the lake now (SQL sees the events after this). */
  flush(): Promise<{ files: string[] }> {
    return this.transport.json({ method: "POST", path: "/admin/flush" });
  }
  shards(): Promise<JsonObject> {
    return this.transport.json({ method: "GET", path: "/admin/shards", idempotent: true });
  }
  /** Creates a namespace key; the answer is the only time its secret is shown. */
  createKey(namespace: string, options: { name?: string } = {}): Promise<CreatedKey> {
    return this.transport.json({ method: "POST", path: `/admin/namespaces/${seg(namespace)}/keys`, json: options });
  }
  async listKeys(namespace: string): Promise<ApiKey[]> {
    const answer = await this.transport.json<{ keys: ApiKey[] }>({
      method: "GET",
      path: `/admin/namespaces/${seg(namespace)}/keys`,
      idempotent: true,
    });
    return answer.keys;
  }
  revokeKey(namespace: string, id: string): Promise<JsonObject> {
    return this.transport.json({ method: "DELETE", path: `/admin/namespaces/${seg(namespace)}/keys/${seg(id)}` });
  }
  limits(namespace: string): Promise<NamespaceLimits> {
    return this.transport.json({ method: "GET", path: `/admin/namespaces/${seg(namespace)}/limits`, idempotent: true });
  }
  setLimits(namespace: string, limits: NamespaceLimits): Promise<NamespaceLimits> {
    return this.transport.json({ method: "PUT", path: `/admin/namespaces/${seg(namespace)}/limits`, json: limits });
  }
  webhookConfig(namespace: string, provider: string): Promise<JsonObject> {
    return this.transport.json({
      method: "GET",
      path: `/admin/namespaces/${seg(namespace)}/webhooks/${seg(provider)}`,
      idempotent: true,
    });
  }
  setWebhookConfig(namespace: string, provider: string, config: JsonObject): Promise<JsonObject> {
    return this.transport.json({
      method: "PUT",
      path: `/admin/namespaces/${seg(namespace)}/webhooks/${seg(provider)}`,
      json: config,
    });
  }
}

export { EventsError };
