export interface SseMessage {
  event: string | undefined;
  data: string;
  /** A comment line (`: keep-alive`) rather than an event. */
  comment?: string;
}

/**
 * Reads a `text/event-stream` body message by message; `next()` resolves with the next event or
 * comment, or undefined at the end of the stream, and rejects after `timeoutMs` without one.
 */
export function sseReader(res: Response) {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const queue: SseMessage[] = [];
  let ended = false;

  const parse = () => {
    let sep = buffer.indexOf('\n\n');
    while (sep >= 0) {
      const block = buffer.slice(0, sep);
      buffer = buffer.slice(sep + 2);
      const message: SseMessage = { event: undefined, data: '' };
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) message.comment = line.slice(1).trim();
        else if (line.startsWith('event:')) message.event = line.slice(6).trim();
        else if (line.startsWith('data:')) message.data += line.slice(5).trim();
      }
      queue.push(message);
      sep = buffer.indexOf('\n\n');
    }
  };

  return {
    async next(timeoutMs = 10_000): Promise<SseMessage | undefined> {
      const deadline = Date.now() + timeoutMs;
      while (queue.length === 0 && !ended) {
        const remaining = deadline - Date.now();
        if (remaining <= 0) throw new Error('no server-sent event in time');
        let timer: NodeJS.Timeout | undefined;
        const chunk = await Promise.race([
          reader.read(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('no server-sent event in time')), remaining);
          }),
        ]).finally(() => clearTimeout(timer));
        if (chunk.done) ended = true;
        else {
          buffer += decoder.decode(chunk.value, { stream: true });
          parse();
        }
      }
      return queue.shift();
    },
    async cancel(): Promise<void> {
      await reader.cancel().catch(() => undefined);
    },
  };
}
