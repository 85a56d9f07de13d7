/** Small helpers shared by the client and the producer: ids, gzip, UTF-8 sizes. */

const encoder = new TextEncoder();

export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** UTF-8 length of a string without encoding it (JSON.stringify never leaves lone surrogates). */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < text.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** Whether `CompressionStream("gzip")` exists here (Node 18+, current browsers). */
export function canGzip(): boolean {
  return typeof CompressionStream === "function";
}

/** Whether this looks like a page in a web browser (as opposed to Node, Deno, Bun or a worker). */
export function inBrowserPage(): boolean {
  return typeof (globalThis as { document?: unknown }).document !== "undefined";
}

/** Gzips bytes with `CompressionStream`. */
export async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** `n` random bytes as lowercase hex (Web Crypto when present). */
export function randomHex(n: number): string {
  const bytes = new Uint8Array(n);
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (crypto?.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < n; i++) bytes[i] = Math.floor(Math.random() * 256);
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

/**
 * Batch ids: `js-<random>-<time>-<counter>`, at most ~50 characters of
 * `[a-z0-9-]`, well within the server's rule (1-256 printable ASCII, no `/`,
 * `\`, spaces). Unique per process run (64 random bits per generator).
 */
export class BatchIds {
  readonly #prefix = `js-${randomHex(8)}`;
  #counter = 0;

  next(): string {
    return `${this.#prefix}-${Date.now().toString(36)}-${(this.#counter++).toString(36)}`;
  }
}

export function isoTime(value: string | Date | undefined): string | undefined {
  return value instanceof Date ? value.toISOString() : value;
}

export interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
