/**
 * The batching producer: `send(event)` queues an event; batches leave by size
 * or after `lingerMs`, gzipped, with a `batchId` the server deduplicates, and
 * are retried with that same id (and the same bytes) until acknowledged.
 */

import { EventsError, errorFromResponse } from "./errors.js";
import { type RetryPolicy, type Transport, backoffDelay, sleep, toEventsError } from "./transport.js";
import type { EventInput, IngestResponse } from "./types.js";
import { BatchIds, type Deferred, canGzip, deferred, gzip, inBrowserPage, utf8, utf8Length } from "./util.js";

/** The server's limits on one `POST /e` (`docs/api.md`). */
export const MAX_BATCH_EVENTS = 1000;
export const MAX_BODY_BYTES = 1024 * 1024;

/** Bytes of a batch body besides its events: `{"events":[`, `],"batchId":"`, the id, `"}`. */
const ENVELOPE_BYTES = 26 + 128;

/** Envelope codes that name the events at fault in `details.indices` / `details.errors[].index`. */
const PER_EVENT_CODES = new Set(["INVALID_EVENT", "EVENT_TOO_LARGE", "SCHEMA_VALIDATION_ERROR", "INVALID_CDC_EVENT"]);

export interface ProducerOptions {
  /** Most events per request (1-1000). Default 500. */
  maxBatchEvents?: number;
  /** Largest request body before compression, in bytes (at most 1 MiB). Default 512 KiB. */
  maxBatchBytes?: number;
  /** How long the first event of a batch may wait for more, in ms. Default 100. */
  lingerMs?: number;
  /** Most events held (queued or being sent) before `send` refuses with `BUFFER_FULL`. Default 10,000. */
  maxBufferedEvents?: number;
  /** Most bytes of serialized events held before `send` refuses with `BUFFER_FULL`. Default 16 MiB. */
  maxBufferedBytes?: number;
  /** Most requests at once. Default 2 (1 keeps batches in order). */
  maxInFlight?: number;
  /** Retries of a batch after a retryable failure (`Infinity` allowed). Default 10. */
  maxRetries?: number;
  /** First backoff, doubled each retry, with jitter. Default 100 ms. */
  initialBackoffMs?: number;
  /** Longest backoff (a longer `Retry-After` is still honoured). Default 10 s. */
  maxBackoffMs?: number;
  /** Timeout of one request; a timed-out batch is retried with the same `batchId`. Default: the client's. */
  requestTimeoutMs?: number;
  /**
   * Gzip request bodies (`Content-Encoding: gzip`). Default: on where
   * `CompressionStream` exists, except in browser pages (the server's CORS
   * policy does not yet allow `Content-Encoding` from other origins).
   */
  gzip?: boolean;
  /** Called once for every failure of events (refused by `send`, rejected by the server, retries exhausted). */
  onError?: (error: EventsError, events: EventInput[]) => void;
}

/** What an acknowledged event's promise resolves to. */
export interface SendResult {
  /** The batch the event was stored with. */
  batchId: string;
  /** True when the server had already stored this batch (a retry after a lost answer). */
  deduplicated: boolean;
}

export interface ProducerStats {
  /** Events waiting for a batch. */
  queued: number;
  /** Events in batches being sent (including backoff between retries). */
  inFlight: number;
  /** Bytes of queued and in-flight events. */
  bufferedBytes: number;
  /** Batches sent (each counted once, however many attempts it took). */
  batches: number;
  /** Events acknowledged by the server. */
  acknowledged: number;
  /** Batches the server answered `deduplicated: true`. */
  deduplicatedBatches: number;
  /** Retries of batches. */
  retries: number;
  /** Events that failed after being queued. */
  failed: number;
  /** Events `send` refused without queueing them (buffer full, closed, invalid). */
  refused: number;
}

interface Entry {
  json: string;
  bytes: number;
  seq: number;
  at: number;
  settled: boolean;
  deferred: Deferred<SendResult>;
}

type Resolved = Required<Omit<ProducerOptions, "onError">> & Pick<ProducerOptions, "onError">;

function resolveOptions(options: ProducerOptions, requestTimeoutMs: number): Resolved {
  const o: Resolved = {
    maxBatchEvents: options.maxBatchEvents ?? 500,
    maxBatchBytes: options.maxBatchBytes ?? 512 * 1024,
    lingerMs: options.lingerMs ?? 100,
    maxBufferedEvents: options.maxBufferedEvents ?? 10_000,
    maxBufferedBytes: options.maxBufferedBytes ?? 16 * 1024 * 1024,
    maxInFlight: options.maxInFlight ?? 2,
    maxRetries: options.maxRetries ?? 10,
    initialBackoffMs: options.initialBackoffMs ?? 100,
    maxBackoffMs: options.maxBackoffMs ?? 10_000,
    requestTimeoutMs: options.requestTimeoutMs ?? requestTimeoutMs,
    gzip: options.gzip ?? (canGzip() && !inBrowserPage()),
    onError: options.onError,
  };
  const check = (name: keyof Resolved, ok: boolean, rule: string) => {
    if (!ok) throw new RangeError(`producer option ${name} must be ${rule}, got ${String(o[name])}`);
  };
  const int = (v: number) => Number.isInteger(v);
  check("maxBatchEvents", int(o.maxBatchEvents) && o.maxBatchEvents >= 1 && o.maxBatchEvents <= MAX_BATCH_EVENTS, "an integer in 1-1000");
  check("maxBatchBytes", int(o.maxBatchBytes) && o.maxBatchBytes >= 1024 && o.maxBatchBytes <= MAX_BODY_BYTES, "an integer in 1024-1048576");
  check("lingerMs", o.lingerMs >= 0 && Number.isFinite(o.lingerMs), "a finite number >= 0");
  check("maxBufferedEvents", int(o.maxBufferedEvents) && o.maxBufferedEvents >= 1, "an integer >= 1");
  check("maxBufferedBytes", o.maxBufferedBytes >= o.maxBatchBytes, "at least maxBatchBytes");
  check("maxInFlight", int(o.maxInFlight) && o.maxInFlight >= 1, "an integer >= 1");
  check("maxRetries", o.maxRetries === Infinity || (int(o.maxRetries) && o.maxRetries >= 0), "an integer >= 0 or Infinity");
  check("initialBackoffMs", o.initialBackoffMs >= 0, ">= 0");
  check("maxBackoffMs", o.maxBackoffMs >= o.initialBackoffMs, ">= initialBackoffMs");
  check("requestTimeoutMs", o.requestTimeoutMs > 0, "> 0");
  if (o.gzip && !canGzip()) o.gzip = false;
  return o;
}

export class Producer {
  readonly #transport: Transport;
  readonly #o: Resolved;
  readonly #policy: RetryPolicy;
  readonly #ids = new BatchIds();
  readonly #abort = new AbortController();
  #queue: Entry[] = [];
  #queuedBytes = 0;
  readonly #inflight = new Set<Entry>();
  #batchesInFlight = 0;
  #bufferedBytes = 0;
  #seq = 0;
  #forceUpTo = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = 0;
  #closed = false;
  #closing: Promise<void> | undefined;
  /** Failures not yet reported by a flush() or close(): how many, and the first few. */
  #unreported = 0;
  #unreportedErrors: EventsError[] = [];
  readonly #stats = { batches: 0, acknowledged: 0, deduplicatedBatches: 0, retries: 0, failed: 0, refused: 0 };

  /** Use `client.producer(options)`. */
  constructor(transport: Transport, options: ProducerOptions = {}) {
    this.#transport = transport;
    this.#o = resolveOptions(options, transport.timeoutMs);
    this.#policy = {
      maxRetries: this.#o.maxRetries,
      initialBackoffMs: this.#o.initialBackoffMs,
      maxBackoffMs: this.#o.maxBackoffMs,
    };
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues one event. Returns at once; the promise resolves when the server
   * has acknowledged the event (it is on disk), and rejects with an
   * {@link EventsError} if it never will be: refused here (`BUFFER_FULL`,
   * `PRODUCER_CLOSED`, `INVALID_EVENT`, `EVENT_TOO_LARGE`), refused by the
   * server (the event's own error; the rest of its batch is sent), or
   * retries exhausted. Not awaiting it is fine: a rejection is never
   * reported as unhandled, and `flush()` / `close()` / `onError` report it.
   */
  send(event: EventInput): Promise<SendResult> {
    const d = deferred<SendResult>();
    d.promise.catch(() => {});
    const refuse = (code: string, message: string, details: Record<string, unknown> = {}, cause?: unknown) => {
      const error = new EventsError({ status: 0, code, message, details, cause });
      this.#stats.refused++;
      d.reject(error);
      this.#remember(error, 1);
      this.#report(error, [event]);
      return d.promise;
    };
    if (this.#closed) return refuse("PRODUCER_CLOSED", "the producer is closed");
    if (event === null || typeof event !== "object" || Array.isArray(event)) {
      return refuse("INVALID_EVENT", "an event must be a JSON object");
    }
    if (typeof event.type !== "string") return refuse("INVALID_EVENT", "type: is required and must be a string");
    let json: string;
    try {
      json = JSON.stringify(event);
    } catch (cause) {
      return refuse("INVALID_EVENT", `the event cannot be serialized as JSON: ${String(cause)}`, {}, cause);
    }
    const bytes = utf8Length(json);
    if (bytes + ENVELOPE_BYTES > this.#o.maxBatchBytes) {
      return refuse("EVENT_TOO_LARGE", `the event is ${bytes} bytes, more than a batch may hold`, {
        size: bytes,
        maxBatchBytes: this.#o.maxBatchBytes,
      });
    }
    const buffered = this.#queue.length + this.#inflight.size;
    if (buffered >= this.#o.maxBufferedEvents || this.#bufferedBytes + bytes > this.#o.maxBufferedBytes) {
      return refuse("BUFFER_FULL", `the producer holds ${buffered} events (${this.#bufferedBytes} bytes) already`, {
        buffered,
        bufferedBytes: this.#bufferedBytes,
        maxBufferedEvents: this.#o.maxBufferedEvents,
        maxBufferedBytes: this.#o.maxBufferedBytes,
      });
    }
    const entry: Entry = { json, bytes, seq: ++this.#seq, at: Date.now(), settled: false, deferred: d };
    this.#queue.push(entry);
    this.#queuedBytes += bytes;
    this.#bufferedBytes += bytes;
    if (this.#queue.length === 1 || this.#isFull()) this.#pump();
    return d.promise;
  }

  /**
   * Sends every event queued so far without waiting for `lingerMs`, and
   * resolves once each of them is settled. Rejects with `SEND_FAILED`
   * (`details.failed`, `details.errors`, `cause`: the first error) if any
   * event given to `send()` since the previous `flush()` / `close()` was not
   * stored (refused by `send` itself included), so that callers who never
   * look at `send`'s promises still learn of every loss.
   */
  async flush(): Promise<void> {
    const pending = this.#pending();
    this.#forceUpTo = this.#seq;
    this.#pump();
    await this.#settled(pending);
  }

  /**
   * Refuses new events, sends everything queued, and resolves once every
   * event is acknowledged (rejects with `SEND_FAILED` if some failed, like
   * `flush()`). With `timeoutMs`, gives up after that long: events not yet
   * acknowledged fail with `CLOSE_TIMEOUT` (those already sent may or may not
   * be stored). Calling it again returns the same promise.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.#closing ??= this.#close(options.timeoutMs);
    return this.#closing;
  }

  async #close(timeoutMs: number | undefined): Promise<void> {
    this.#closed = true;
    const pending = this.#pending();
    this.#pump();
    if (timeoutMs !== undefined && Number.isFinite(timeoutMs)) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const expired = await Promise.race([
        Promise.allSettled(pending.map((e) => e.deferred.promise)).then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
      ]);
      clearTimeout(timer);
      if (expired) {
        // Stop retries and requests, and settle everything now, whether
        // or not a request in flight honours the abort.
        this.#abort.abort();
        const queued = this.#queue;
        this.#queue = [];
        this.#queuedBytes = 0;
        this.#fail(queued, new EventsError({ status: 0, code: "CLOSE_TIMEOUT", message: "closed before the event was sent" }));
        this.#fail([...this.#inflight], closeTimeout(undefined));
        this.#arm();
      }
    }
    await this.#settled(pending);
  }

  /** Waits for `entries` to settle, then reports (and forgets) the failures not yet reported. */
  async #settled(entries: Entry[]): Promise<void> {
    await Promise.allSettled(entries.map((e) => e.deferred.promise));
    const failed = this.#unreported;
    if (failed === 0) return;
    const errors = this.#unreportedErrors;
    this.#unreported = 0;
    this.#unreportedErrors = [];
    const first = errors[0]!;
    throw new EventsError({
      status: 0,
      code: "SEND_FAILED",
      message: `${failed} event(s) were not stored; first error: ${first.code}: ${first.message}`,
      details: {
        failed,
        errors: errors.map((e) => ({ status: e.status, code: e.code, message: e.message })),
      },
      cause: first,
    });
  }

  #remember(error: EventsError, count: number): void {
    this.#unreported += count;
    if (this.#unreportedErrors.length < 10) this.#unreportedErrors.push(error);
  }

  /** Counters and current sizes. */
  stats(): ProducerStats {
    return {
      queued: this.#queue.length,
      inFlight: this.#inflight.size,
      bufferedBytes: this.#bufferedBytes,
      ...this.#stats,
    };
  }

  #pending(): Entry[] {
    return [...this.#inflight, ...this.#queue];
  }

  #isFull(): boolean {
    const n = this.#queue.length;
    return n >= this.#o.maxBatchEvents || ENVELOPE_BYTES + this.#queuedBytes + n - 1 >= this.#o.maxBatchBytes;
  }

  /** Starts every batch that is due and has a free slot, then arms the linger timer. */
  #pump(): void {
    while (this.#batchesInFlight < this.#o.maxInFlight && this.#queue.length > 0) {
      const head = this.#queue[0]!;
      const due =
        this.#closed ||
        head.seq <= this.#forceUpTo ||
        this.#isFull() ||
        // Timers may fire a millisecond before Date.now() says they should.
        Date.now() - head.at >= this.#o.lingerMs - 1;
      if (!due) break;
      this.#dispatch(this.#take());
    }
    this.#arm();
  }

  #arm(): void {
    if (this.#queue.length === 0 || this.#batchesInFlight >= this.#o.maxInFlight) {
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      this.#timer = undefined;
      return;
    }
    const at = this.#queue[0]!.at + this.#o.lingerMs;
    if (this.#timer !== undefined && this.#timerAt === at) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#pump();
    }, Math.max(0, at - Date.now()));
  }

  /** The next batch from the head of the queue: by count, then by bytes (at least one event). */
  #take(): Entry[] {
    let n = 0;
    let bytes = ENVELOPE_BYTES;
    while (n < this.#queue.length && n < this.#o.maxBatchEvents) {
      const add = this.#queue[n]!.bytes + (n > 0 ? 1 : 0);
      if (n > 0 && bytes + add > this.#o.maxBatchBytes) break;
      bytes += add;
      n++;
    }
    const batch = this.#queue.splice(0, n);
    for (const e of batch) {
      this.#queuedBytes -= e.bytes;
      this.#inflight.add(e);
    }
    return batch;
  }

  #dispatch(batch: Entry[]): void {
    this.#batchesInFlight++;
    this.#deliver(batch, this.#ids.next())
      .catch((e) => this.#fail(batch, toEventsError(e)))
      .finally(() => {
        this.#batchesInFlight--;
        this.#pump();
      });
  }

  /**
   * Sends one batch until it is acknowledged or fails for good. Every
   * attempt sends the same bytes with the same `batchId`, so an attempt whose
   * answer was lost (timeout, reset, server killed after the fsync) is
   * answered `deduplicated` instead of being stored twice.
   */
  async #deliver(batch: Entry[], batchId: string): Promise<void> {
    const text = `{"events":[${batch.map((e) => e.json).join(",")}],"batchId":${JSON.stringify(batchId)}}`;
    let body = utf8(text);
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (this.#o.gzip) {
      try {
        const zipped = await gzip(body);
        if (zipped.length < body.length) {
          body = zipped;
          headers["content-encoding"] = "gzip";
        }
      } catch {
        // Send it uncompressed.
      }
    }
    this.#stats.batches++;
    const signal = this.#abort.signal;
    for (let attempt = 0; ; attempt++) {
      let error: EventsError;
      try {
        const open = await this.#transport.open({
          method: "POST",
          path: "/e",
          body,
          headers,
          timeoutMs: this.#o.requestTimeoutMs,
          signal,
        });
        try {
          if (open.response.ok) {
            const answer = (await open.response.json()) as IngestResponse;
            const deduplicated = answer?.deduplicated === true;
            if (deduplicated) this.#stats.deduplicatedBatches++;
            this.#succeed(batch, { batchId, deduplicated });
            return;
          }
          error = await errorFromResponse(open.response);
        } finally {
          open.release();
        }
      } catch (e) {
        error = toEventsError(e);
      }
      if (signal.aborted) {
        this.#fail(batch, closeTimeout(error));
        return;
      }
      const faulty = faultIndices(error, batch.length);
      if (faulty) {
        // The batch was refused whole and nothing was stored: fail the
        // events at fault and send the others as a new batch.
        batch.forEach((e, i) => {
          if (faulty.has(i)) this.#fail([e], eventError(error, i));
        });
        const rest = batch.filter((_, i) => !faulty.has(i));
        if (rest.length > 0) await this.#deliver(rest, `${batchId}.r`);
        return;
      }
      if (error.status === 413 && batch.length > 1) {
        // The server's body limit is lower than maxBatchBytes: halve.
        const mid = batch.length >> 1;
        await Promise.all([
          this.#deliver(batch.slice(0, mid), `${batchId}.a`),
          this.#deliver(batch.slice(mid), `${batchId}.b`),
        ]);
        return;
      }
      if (error.retryable && attempt < this.#o.maxRetries) {
        this.#stats.retries++;
        await sleep(backoffDelay(attempt, this.#policy, error.retryAfterMs), signal);
        if (signal.aborted) {
          this.#fail(batch, closeTimeout(error));
          return;
        }
        continue;
      }
      this.#fail(batch, error);
      return;
    }
  }

  #settle(e: Entry): boolean {
    if (e.settled) return false;
    e.settled = true;
    this.#inflight.delete(e);
    this.#bufferedBytes -= e.bytes;
    return true;
  }

  #succeed(batch: Entry[], result: SendResult): void {
    for (const e of batch) {
      if (!this.#settle(e)) continue;
      this.#stats.acknowledged++;
      e.deferred.resolve(result);
    }
  }

  #fail(batch: Entry[], error: EventsError): void {
    const failed = batch.filter((e) => this.#settle(e));
    for (const e of failed) e.deferred.reject(error);
    this.#stats.failed += failed.length;
    if (failed.length > 0) this.#remember(error, failed.length);
    if (failed.length > 0) this.#report(error, failed.map((e) => JSON.parse(e.json) as EventInput));
  }

  #report(error: EventsError, events: EventInput[]): void {
    if (!this.#o.onError) return;
    try {
      this.#o.onError(error, events);
    } catch {
      // A throwing callback must not break the producer.
    }
  }
}

function closeTimeout(cause: EventsError | undefined): EventsError {
  return new EventsError({
    status: 0,
    code: "CLOSE_TIMEOUT",
    message: "closed before the server acknowledged the batch; it may or may not be stored",
    details: cause ? { lastError: { code: cause.code, message: cause.message } } : {},
    cause,
  });
}

/** The indices a per-event refusal names, if it names any within the batch. */
function faultIndices(error: EventsError, n: number): Set<number> | undefined {
  if (error.status !== 400 || !PER_EVENT_CODES.has(error.code)) return undefined;
  const d = error.details;
  const raw: unknown[] = Array.isArray(d.indices)
    ? d.indices
    : Array.isArray(d.errors)
      ? d.errors.map((e) => (e as { index?: unknown } | null)?.index)
      : [];
  const indices = new Set(raw.filter((i): i is number => Number.isInteger(i) && (i as number) >= 0 && (i as number) < n));
  return indices.size > 0 ? indices : undefined;
}

/** The error of one event of a refused batch: its own entries of `details.errors`. */
function eventError(error: EventsError, index: number): EventsError {
  const all = Array.isArray(error.details.errors) ? (error.details.errors as Record<string, unknown>[]) : [];
  const own = all.filter((e) => e?.index === index).map(({ index: _, ...rest }) => rest);
  const first = own[0];
  const where = first && typeof (first.field ?? first.path) === "string" ? String(first.field ?? first.path) : "";
  const message =
    first && typeof first.message === "string" ? (where ? `${where}: ${first.message}` : first.message) : error.message;
  const details: Record<string, unknown> = { errors: own };
  if (error.details.maxSize !== undefined) details.maxSize = error.details.maxSize;
  return new EventsError({ status: error.status, code: error.code, message, details, requestId: error.requestId, cause: error });
}
