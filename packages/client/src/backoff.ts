/**
 * `Retry-After` (RFC 9110 §10.2.3) in seconds: delay-seconds, or an HTTP-date turned into the
 * seconds until then (0 when it has passed). Undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now) / 1000));
}

export interface BackoffOptions {
  /** The first delay between polls (default 100 ms). */
  initialDelayMs?: number;
  /** The delays never grow past this (default 2 000 ms). */
  maxDelayMs?: number;
  /** Each delay is the last one times this (default 1.5). */
  factor?: number;
  /** Each delay is moved by up to this share either way, so many pollers spread out (default 0.2). */
  jitter?: number;
}

/**
 * Exponential backoff with jitter for polling. A `Retry-After` from the server replaces the
 * computed delay (never shortened, not capped: the server knows best when it can answer).
 */
export class Backoff {
  private next: number;
  private readonly max: number;
  private readonly factor: number;
  private readonly jitter: number;

  constructor(
    options: BackoffOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.next = options.initialDelayMs ?? 100;
    this.max = options.maxDelayMs ?? 2_000;
    this.factor = options.factor ?? 1.5;
    this.jitter = options.jitter ?? 0.2;
  }

  /** The delay before the next attempt, in ms; `retryAfterSeconds` is the server's word when it gave one. */
  delay(retryAfterSeconds?: number): number {
    const base = this.next;
    this.next = Math.min(this.max, this.next * this.factor);
    const jittered = base * (1 + this.jitter * (2 * this.random() - 1));
    if (retryAfterSeconds !== undefined) return Math.max(retryAfterSeconds * 1000, jittered);
    return jittered;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
