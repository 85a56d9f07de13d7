/**
 * The live tail (`GET /events/stream`) read with `fetch`, because a
 * browser's `EventSource` cannot send an `Authorization` header.
 */

import { EventsError } from "./errors.js";
import { type Transport, toEventsError } from "./transport.js";

export interface TailOptions {
  /** Event-type pattern. */
  type?: string;
  /** Resume after this message id (what the last message's `id` was). */
  lastEventId?: string;
  /** Ends the stream. */
  signal?: AbortSignal;
}

/**
 * One Server-Sent Events message: `event` is `message` for an event
 * (`data` is the event), or `ready`, `gap`, `lagged`, `error` (see docs/api.md).
 */
export interface TailMessage {
  event: string;
  /** The message id (`<event id>@<positions>`): pass it as `lastEventId` to resume. */
  id: string | undefined;
  data: unknown;
}

export async function* tailStream(transport: Transport, options: TailOptions = {}): AsyncGenerator<TailMessage> {
  const headers: Record<string, string> = { accept: "text/event-stream" };
  if (options.lastEventId) headers["last-event-id"] = options.lastEventId;
  const response = await transport.response({
    method: "GET",
    path: "/events/stream",
    query: { type: options.type },
    headers,
    signal: options.signal,
  });
  if (!response.body) {
    throw new EventsError({ status: response.status, code: "INVALID_RESPONSE", message: "the stream has no body" });
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let lastId: string | undefined;
  let event = "";
  let data: string[] = [];
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        if (options.signal?.aborted) return;
        throw toEventsError(e);
      }
      if (chunk.done) return;
      buffer += decoder.decode(chunk.value, { stream: true });
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (data.length > 0) {
            const text = data.join("\n");
            let parsed: unknown = text;
            try {
              parsed = JSON.parse(text);
            } catch {
              // Keep the text.
            }
            yield { event: event || "message", id: lastId, data: parsed };
          }
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") event = value;
        else if (field === "id") lastId = value;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
