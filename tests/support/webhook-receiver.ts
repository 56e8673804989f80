import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface ReceivedRequest {
  at: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** How the receiver answers one request; `null` leaves it unanswered (a tarpit) until `close()`. */
export type ReceiverAnswer = { status: number; headers?: Record<string, string> } | null;

/**
 * A webhook receiver on loopback for tests: records every request and answers with the status
 * (and headers) `respond` gives for the n-th request; `connections` counts sockets, so a trap
 * listener can prove that nothing reached it.
 */
export class WebhookReceiver {
  readonly requests: ReceivedRequest[] = [];
  connections = 0;
  private readonly server: Server;
  private readonly waiters: { count: number; resolve: () => void }[] = [];

  private constructor(respond: (index: number, req: ReceivedRequest) => ReceiverAnswer) {
    this.server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (chunk: string) => {
        body += chunk;
      });
      req.on('end', () => {
        const received = { at: performance.now(), headers: req.headers, body };
        this.requests.push(received);
        const answer = respond(this.requests.length - 1, received);
        if (answer) {
          res.writeHead(answer.status, answer.headers ?? {});
          res.end();
        }
        for (const w of [...this.waiters]) {
          if (this.requests.length >= w.count) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve();
          }
        }
      });
    });
    this.server.on('connection', (socket: Socket) => {
      this.connections++;
      socket.on('error', () => undefined);
    });
  }

  static async start(
    respond: (index: number, req: ReceivedRequest) => ReceiverAnswer = () => ({ status: 200 }),
  ): Promise<WebhookReceiver> {
    const receiver = new WebhookReceiver(respond);
    await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
    return receiver;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  url(path = '/hook'): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** Resolves when `count` requests have arrived, or rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs = 15_000): Promise<void> {
    if (this.requests.length >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`expected ${count} webhook requests, got ${this.requests.length} in ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push({
        count,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
