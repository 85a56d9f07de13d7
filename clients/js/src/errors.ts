/**
 * Errors: every failure of this client is an {@link EventsError}.
 *
 * A failure the server answered carries the HTTP status and the envelope's
 * stable `code`, message (`error`) and `details`. A failure that never got an
 * answer from the server has `status: 0` and one of the client codes below.
 */

/** Codes made by the client itself (`status` 0). */
export type ClientErrorCode =
  /** The request could not be sent or its answer not read (refused connection, reset, DNS, ...). */
  | "NETWORK_ERROR"
  /** No answer within the request timeout. */
  | "REQUEST_TIMEOUT"
  /** The caller's `AbortSignal` fired. */
  | "ABORTED"
  /** The server answered something that is not the expected JSON. */
  | "INVALID_RESPONSE"
  /** The producer holds `maxBufferedEvents` / `maxBufferedBytes` already. */
  | "BUFFER_FULL"
  /** `send()` after `close()`. */
  | "PRODUCER_CLOSED"
  /** `close({ timeoutMs })` gave up before the server acknowledged: the events may or may not be stored. */
  | "CLOSE_TIMEOUT"
  /** `flush()` / `close()`: some events they waited for were not stored (see `details` and `cause`). */
  | "SEND_FAILED"
  /** Checked before sending: not a JSON object, no string `type`, cannot be serialized. */
  | "INVALID_EVENT"
  /** Checked before sending: the event alone is larger than the producer's `maxBatchBytes`. */
  | "EVENT_TOO_LARGE";

/** Codes of the server's error envelope (`docs/api.md`); a test holds this list to the server's OpenAPI document. */
export const SERVER_ERROR_CODES = [
  "INVALID_REQUEST",
  "INVALID_JSON",
  "INVALID_BATCH",
  "INVALID_EVENT",
  "EVENT_TOO_LARGE",
  "INVALID_BATCH_ID",
  "INVALID_NAMESPACE",
  "INVALID_QUERY",
  "INVALID_PATTERN",
  "INVALID_CONFIG",
  "SCHEMA_VALIDATION_ERROR",
  "UNSUPPORTED_ENCODING",
  "TARGET_NOT_ALLOWED",
  "INVALID_CDC_EVENT",
  "READ_ONLY_QUERY",
  "QUERY_LIMIT_EXCEEDED",
  "AUTH_REQUIRED",
  "INVALID_AUTH_FORMAT",
  "INVALID_API_KEY",
  "INVALID_SIGNATURE",
  "FORBIDDEN",
  "ORIGIN_NOT_ALLOWED",
  "NOT_FOUND",
  "METHOD_NOT_ALLOWED",
  "CONFLICT",
  "SCHEMA_INCOMPATIBLE",
  "COMMIT_CONFLICT",
  "PAYLOAD_TOO_LARGE",
  "UNSUPPORTED_MEDIA_TYPE",
  "RATE_LIMITED",
  "QUOTA_EXCEEDED",
  "INTERNAL_ERROR",
  "STORAGE_ERROR",
  "DATA_FILE_MISSING",
  "SERVICE_UNAVAILABLE",
  "OVERLOADED",
  "TIMEOUT",
] as const;

export type ServerErrorCode = (typeof SERVER_ERROR_CODES)[number];

/**
 * Any code: a server or client code, `HTTP_<status>` for an error answer
 * without the envelope (a proxy's 502 page, say), or a code a newer server
 * added.
 */
export type ErrorCode = ServerErrorCode | ClientErrorCode | (string & {});

export interface EventsErrorInit {
  message: string;
  status: number;
  code: ErrorCode;
  details?: Record<string, unknown>;
  retryAfterMs?: number | undefined;
  requestId?: string | undefined;
  cause?: unknown;
}

export class EventsError extends Error {
  override readonly name = "EventsError";
  /** HTTP status; 0 when the server did not answer (or the client refused before sending). */
  readonly status: number;
  /** The envelope's stable code, or a client code (see {@link ClientErrorCode}). */
  readonly code: ErrorCode;
  /** The envelope's `details` (`{}` when none). */
  readonly details: Record<string, unknown>;
  /** The server's `Retry-After`, in milliseconds, when it sent one. */
  readonly retryAfterMs: number | undefined;
  /** The server's `X-Request-Id` of the failed request, when known. */
  readonly requestId: string | undefined;

  constructor(init: EventsErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.status = init.status;
    this.code = init.code;
    this.details = init.details ?? {};
    this.retryAfterMs = init.retryAfterMs;
    this.requestId = init.requestId;
  }

  /** Whether sending the same request again may succeed (see {@link isRetryable}). */
  get retryable(): boolean {
    return isRetryable(this);
  }
}

/**
 * The failures worth repeating a request for: no answer (network error,
 * timeout), `429 RATE_LIMITED`, `502`, `503` (`SERVICE_UNAVAILABLE`,
 * `OVERLOADED`), `504 TIMEOUT` and `500 STORAGE_ERROR`. `QUOTA_EXCEEDED` is a
 * 429 too but is not retried: a daily quota comes back the next day, not
 * within a retry schedule. Everything else (validation, auth, not found,
 * `INTERNAL_ERROR`, `DATA_FILE_MISSING`) fails at once.
 */
export function isRetryable(error: EventsError): boolean {
  if (error.status === 0) return error.code === "NETWORK_ERROR" || error.code === "REQUEST_TIMEOUT";
  if (error.code === "QUOTA_EXCEEDED") return false;
  if (error.status === 429 || error.status === 502 || error.status === 503 || error.status === 504) return true;
  return error.status === 500 && error.code === "STORAGE_ERROR";
}

/** `Retry-After` (delay-seconds or an HTTP date) in ms, or undefined. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Builds the error of a non-2xx answer, reading (and consuming) its body. */
export async function errorFromResponse(res: Response): Promise<EventsError> {
  let text = "";
  try {
    text = await res.text();
  } catch {
    // The body could not be read; the status still says what happened.
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const retryAfterMs = parseRetryAfter(res.headers.get("retry-after"));
  const requestId = res.headers.get("x-request-id") ?? undefined;
  const status = res.status;
  if (isObject(body) && typeof body.code === "string" && typeof body.error === "string") {
    const details = isObject(body.details) ? body.details : {};
    return new EventsError({ status, code: body.code, message: body.error, details, retryAfterMs, requestId });
  }
  // The Iceberg REST catalog answers in the Iceberg spec's ErrorModel.
  if (isObject(body) && isObject(body.error) && typeof body.error.message === "string") {
    const code = typeof body.error.type === "string" ? body.error.type : `HTTP_${status}`;
    return new EventsError({ status, code, message: body.error.message, details: body.error, retryAfterMs, requestId });
  }
  const details: Record<string, unknown> = text ? { body: text.slice(0, 1000) } : {};
  const message = `HTTP ${status}${res.statusText ? ` ${res.statusText}` : ""}`;
  return new EventsError({ status, code: `HTTP_${status}`, message, details, retryAfterMs, requestId });
}
