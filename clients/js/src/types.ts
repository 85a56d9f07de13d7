/**
 * Request and response shapes of the HTTP API (`docs/api.md`, `GET /openapi.json`).
 * Fields the server may add later are allowed by the index signatures.
 */

/** An event to send: `type` is required; `ts` (ISO-8601), `id` and `source` are optional; every other field is kept. */
export interface EventInput {
  type: string;
  ts?: string;
  id?: string;
  source?: string;
  [field: string]: unknown;
}

/** A stored event as the read routes show it: as sent, plus `id`, `ns` and `ts`. */
export interface StoredEvent {
  id: string;
  ns: string;
  ts: string;
  type: string;
  [field: string]: unknown;
}

export interface IngestResponse {
  ok: true;
  received: number;
  namespace: string;
  /** True when the batch was a replay of an accepted `batchId` (nothing stored again). */
  deduplicated?: boolean;
  /** Failures of `warn`-mode schemas (the events were stored). */
  warnings?: Record<string, unknown>[];
}

export interface EventsPage {
  events: StoredEvent[];
  nextCursor: string | null;
}

export interface ListEventsParams {
  /** Type pattern: `*` one segment, `**` any number. */
  type?: string;
  /** Earliest `ts`, inclusive (ISO-8601 or a Date). */
  from?: string | Date;
  /** Latest `ts`, inclusive. */
  to?: string | Date;
  /** Page size, 1-1000 (server default 100). */
  limit?: number;
  cursor?: string;
}

export interface QueryOptions {
  /** Time travel: table name -> snapshot id (number) or time (ISO-8601 string or ms). */
  at?: Record<string, number | string>;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export type QueryFormat = "json" | "ndjson" | "csv" | "arrow";

export interface Subscription {
  id: string;
  namespace: string;
  pattern: string;
  url: string | null;
  status: "active" | "paused" | "disabled" | (string & {});
  description: string | null;
  retrySchedule: number[];
  timeoutMs: number;
  batch: { maxSize: number; windowMs: number } | null;
  orderingKey: string | null;
  disableAfterMs: number;
  disabledAt: string | null;
  disabledReason: string | null;
  failingSince: string | null;
  workerId: string | null;
  rpcMethod: string | null;
  createdAt: string;
  updatedAt: string;
  /** Only in the answer that created the subscription or rotated its secret. */
  secret?: string;
  [field: string]: unknown;
}

export interface CreateSubscription {
  pattern: string;
  url: string;
  /** `whsec_...`; generated (and returned once) when absent. */
  secret?: string;
  /** Milliseconds before each attempt. */
  retrySchedule?: number[];
  timeoutMs?: number;
  batch?: { maxSize: number; windowMs: number };
  orderingKey?: string;
  disableAfterMs?: number;
  description?: string;
}

export type UpdateSubscription = Partial<CreateSubscription>;

export interface SubscribeRpc {
  workerId: string;
  pattern: string;
  rpcMethod: string;
  secret?: string;
}

export interface ListSubscriptionsParams {
  pattern?: string;
  status?: string;
  limit?: number;
  cursor?: string;
}

export interface PageParams {
  limit?: number;
  cursor?: string | number;
}

export interface StatusPageParams extends PageParams {
  status?: string;
}

export interface SubscriptionStats {
  delivered: number;
  attempts: number;
  failedAttempts: number;
  pending: number;
  dead: number;
  successRate: number;
  latencyMs: Record<string, number>;
  opsEvents: Record<string, unknown>[];
  [field: string]: unknown;
}

export interface RecoveryJob {
  id: string;
  subscriptionId: string;
  since: string;
  status: "running" | "done" | "failed" | (string & {});
  phase: "lake" | "log" | "done" | (string & {});
  imported: number;
  total: number;
  processed: number;
  requeued: number;
  error: string | null;
  createdAt: string;
  finishedAt: string | null;
  [field: string]: unknown;
}

export type JsonObject = Record<string, unknown>;

export interface SchemaVersion {
  type?: string | null;
  pattern?: string | null;
  version: number;
  schema: JsonObject;
  compatibility: string;
  mode?: "off" | "warn" | "strict" | null;
  description?: string | null;
  createdAt: string;
  deleted: boolean;
}

export interface RegisterSchema {
  /** An event type (give this or `pattern`). */
  type?: string;
  /** A type pattern such as `order.*`. */
  pattern?: string;
  /** JSON Schema, draft 2020-12 (default) or draft-07. */
  schema: JsonObject;
  compatibility?: string;
  mode?: "off" | "warn" | "strict";
  description?: string;
}

export interface SchemaConfig {
  mode: "off" | "warn" | "strict";
  compatibility: string;
}

export interface ValidateResult {
  valid: boolean;
  errors: JsonObject[];
}

export interface CdcDocumentsParams {
  /** The time to read the collection at (ISO-8601; default now). */
  at?: string | Date;
  cursor?: string;
  limit?: number;
  includeDeleted?: boolean;
  source?: string;
}

export interface TableInfo {
  name: string;
  managed: boolean;
  currentSnapshotId?: number | null;
  files: number;
  rows: number;
}

export interface TableChangesParams {
  fromSnapshot?: number;
  toSnapshot?: number;
}

export interface MaintainOptions {
  table?: string;
  compact?: boolean;
  expire?: boolean;
  removeOrphans?: boolean;
  keepLast?: number;
  maxSnapshotAgeMs?: number;
  orphanMinAgeMs?: number;
}

export interface ApiKey {
  id: string;
  namespace: string;
  name?: string | null;
  prefix: string;
  createdAt: string;
  revokedAt?: string | null;
}

export interface CreatedKey extends ApiKey {
  /** The full key; shown only in this answer. */
  key: string;
}

export interface NamespaceLimits {
  requestsPerMinute?: number | null;
  eventsPerMinute?: number | null;
  eventsPerDay?: number | null;
}

export interface HealthResponse {
  [field: string]: unknown;
}
