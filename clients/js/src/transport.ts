/**
 * One HTTP exchange with the server: URL and headers, a timeout, the error
 * envelope, and retries with exponential backoff for idempotent requests.
 */

import { EventsError, errorFromResponse } from "./errors.js";

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export type QueryValue = string | number | boolean | null | undefined;

export interface RetryPolicy {
  /** Attempts after the first one (0: never retry). */
  maxRetries: number;
  /** Backoff before the first retry; doubles each time up to `maxBackoffMs`. */
  initialBackoffMs: number;
  /** Longest backoff (a longer `Retry-After` is still honoured). */
  maxBackoffMs: number;
}

export interface TransportOptions {
  url: string;
  token?: string | undefined;
  namespace?: string | undefined;
  fetch?: FetchLike | undefined;
  headers?: Record<string, string> | undefined;
  timeoutMs: number;
  retry: RetryPolicy;
}

export interface RequestSpec {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  path: string;
  query?: Record<string, QueryValue> | undefined;
  /** A JSON body (serialized here), or bytes as they are. */
  json?: unknown;
  body?: Uint8Array | string | undefined;
  headers?: Record<string, string> | undefined;
  /** Whether repeating the request cannot do anything twice (GET, ingest with a batchId). */
  idempotent?: boolean | undefined;
  retry?: RetryPolicy | undefined;
  timeoutMs?: number | undefined;
  signal?: AbortSignal | undefined;
  /** Called before each retry with the error that caused it. */
  onRetry?: ((error: EventsError, attempt: number, delayMs: number) => void) | undefined;
}

/** A response whose timeout is still running until `release()` (for streamed bodies). */
export interface OpenResponse {
  response: Response;
  release(): void;
}

/** Backoff before retry number `attempt` (0-based): "equal jitter", at least `retryAfterMs`. */
export function backoffDelay(
  attempt: number,
  policy: RetryPolicy,
  retryAfterMs?: number,
  random: () => number = Math.random,
): number {
  const cap = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** Math.min(attempt, 30));
  const delay = cap / 2 + (random() * cap) / 2;
  return Math.max(Math.round(delay), retryAfterMs ?? 0);
}

/** Waits `ms`, or less if `signal` fires. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

export class Transport {
  readonly baseUrl: string;
  readonly token: string | undefined;
  readonly namespace: string | undefined;
  readonly timeoutMs: number;
  readonly retry: RetryPolicy;
  readonly #fetch: FetchLike;
  readonly #headers: Record<string, string>;

  constructor(options: TransportOptions) {
    if (typeof options.url !== "string" || !/^https?:\/\//i.test(options.url)) {
      throw new TypeError(`url must be an http(s) URL, got ${JSON.stringify(options.url)}`);
    }
    this.baseUrl = options.url.replace(/\/+$/, "");
    this.token = options.token;
    this.namespace = options.namespace;
    this.timeoutMs = options.timeoutMs;
    this.retry = options.retry;
    const f = options.fetch ?? (globalThis.fetch ? globalThis.fetch.bind(globalThis) : undefined);
    if (!f) throw new TypeError("no fetch: pass `fetch` in the options (this runtime has no global fetch)");
    this.#fetch = f;
    this.#headers = { ...(options.headers ?? {}) };
    if (this.token) this.#headers["authorization"] = `Bearer ${this.token}`;
    // Only when asked for: a namespace key names its own namespace, and
    // browsers must preflight a custom header.
    if (this.namespace) this.#headers["x-namespace"] = this.namespace;
  }

  /** A transport like this one acting on another namespace (admin token). */
  withNamespace(namespace: string): Transport {
    return new Transport({
      url: this.baseUrl,
      token: this.token,
      namespace,
      fetch: this.#fetch,
      headers: this.#headersWithout(["authorization", "x-namespace"]),
      timeoutMs: this.timeoutMs,
      retry: this.retry,
    });
  }

  #headersWithout(names: string[]): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(this.#headers)) if (!names.includes(k.toLowerCase())) out[k] = v;
    return out;
  }

  url(path: string, query?: Record<string, QueryValue>): string {
    let url = this.baseUrl + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.append(k, String(v));
      const qs = params.toString();
      if (qs) url += `?${qs}`;
    }
    return url;
  }

  /** Sends the request (retrying if it is idempotent) and parses the JSON answer. */
  async json<T>(spec: RequestSpec): Promise<T> {
    return this.#withRetries(spec, async (open) => {
      try {
        const text = await open.response.text();
        try {
          return JSON.parse(text) as T;
        } catch (cause) {
          throw new EventsError({
            status: open.response.status,
            code: "INVALID_RESPONSE",
            message: `expected JSON from ${spec.method} ${spec.path}`,
            details: { body: text.slice(0, 1000) },
            cause,
          });
        }
      } finally {
        open.release();
      }
    });
  }

  /** Sends the request (retrying if idempotent); the body stays unread and timed out only until headers. */
  async response(spec: RequestSpec): Promise<Response> {
    return this.#withRetries(spec, async (open) => {
      open.release();
      return open.response;
    });
  }

  async #withRetries<T>(spec: RequestSpec, read: (open: OpenResponse) => Promise<T>): Promise<T> {
    const policy = spec.retry ?? this.retry;
    const retries = spec.idempotent ? policy.maxRetries : 0;
    for (let attempt = 0; ; attempt++) {
      let error: EventsError;
      try {
        const open = await this.open(spec);
        if (open.response.ok) return await read(open);
        try {
          error = await errorFromResponse(open.response);
        } finally {
          open.release();
        }
      } catch (e) {
        error = toEventsError(e);
      }
      if (attempt >= retries || !error.retryable || spec.signal?.aborted) throw error;
      const delay = backoffDelay(attempt, policy, error.retryAfterMs);
      spec.onRetry?.(error, attempt + 1, delay);
      await sleep(delay, spec.signal);
      if (spec.signal?.aborted) throw error;
    }
  }

  /**
   * One attempt. The timeout covers the answer's headers and, until
   * `release()`, its body. Never throws anything but an {@link EventsError}.
   */
  async open(spec: RequestSpec): Promise<OpenResponse> {
    const controller = new AbortController();
    const timeoutMs = spec.timeoutMs ?? this.timeoutMs;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onAbort = () => controller.abort();
    if (spec.signal?.aborted) controller.abort();
    spec.signal?.addEventListener("abort", onAbort, { once: true });
    const release = () => {
      clearTimeout(timer);
      spec.signal?.removeEventListener("abort", onAbort);
    };
    const headers: Record<string, string> = { ...this.#headers, ...(spec.headers ?? {}) };
    let body: BodyInit | undefined;
    if (spec.json !== undefined) {
      body = JSON.stringify(spec.json);
      headers["content-type"] ??= "application/json";
    } else if (spec.body !== undefined) {
      body = spec.body as BodyInit;
    }
    const init: RequestInit = { method: spec.method, headers, signal: controller.signal };
    if (body !== undefined) init.body = body;
    try {
      const response = await this.#fetch(this.url(spec.path, spec.query), init);
      return { response, release };
    } catch (e) {
      release();
      if (timedOut) {
        throw new EventsError({
          status: 0,
          code: "REQUEST_TIMEOUT",
          message: `no answer to ${spec.method} ${spec.path} within ${timeoutMs} ms`,
          cause: e,
        });
      }
      if (spec.signal?.aborted) {
        throw new EventsError({ status: 0, code: "ABORTED", message: "the request was aborted", cause: e });
      }
      throw toEventsError(e);
    }
  }
}

/** Wraps anything thrown by fetch or a body read as an {@link EventsError}. */
export function toEventsError(e: unknown): EventsError {
  if (e instanceof EventsError) return e;
  const detail = describe(e);
  return new EventsError({ status: 0, code: "NETWORK_ERROR", message: `network error: ${detail}`, cause: e });
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    const inner = cause instanceof Error ? `: ${cause.message}` : "";
    return `${e.message}${inner}`;
  }
  return String(e);
}
