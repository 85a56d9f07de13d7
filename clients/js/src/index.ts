/**
 * events.do client for Node (20+) and browsers. No runtime dependencies:
 * `fetch`, and `CompressionStream` for gzip where the runtime has it.
 *
 * ```ts
 * import { EventsClient } from "@events-do/client";
 * const client = new EventsClient({ url: "http://127.0.0.1:8787", token: process.env.EVENTS_KEY });
 * const producer = client.producer();
 * producer.send({ type: "order.created", orderId: "o-1" });
 * await producer.close(); // resolves once every event is acknowledged
 * ```
 */

export {
  AdminApi,
  CdcApi,
  EventsApi,
  EventsClient,
  type EventsClientOptions,
  SchemasApi,
  type SendOptions,
  SubscriptionsApi,
  TablesApi,
} from "./client.js";
export {
  type ClientErrorCode,
  type ErrorCode,
  EventsError,
  type EventsErrorInit,
  SERVER_ERROR_CODES,
  type ServerErrorCode,
  isRetryable,
} from "./errors.js";
export {
  MAX_BATCH_EVENTS,
  MAX_BODY_BYTES,
  Producer,
  type ProducerOptions,
  type ProducerStats,
  type SendResult,
} from "./producer.js";
export type { TailMessage, TailOptions } from "./tail.js";
export type { FetchLike, RequestSpec, RetryPolicy } from "./transport.js";
export type * from "./types.js";
