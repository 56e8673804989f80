import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';

/** An OTLP attribute value (the spec's JSON mapping of `AnyValue`). */
interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
  doubleValue?: number;
}

/** One span as a test reads it: ids in hex, attributes flattened, the service that sent it. */
export interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  startNs: bigint;
  endNs: bigint;
  status: number;
  attributes: Record<string, string | number | boolean>;
  links: { traceId: string; spanId: string; attributes: Record<string, string | number | boolean> }[];
}

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  status?: { code?: number };
  attributes?: { key: string; value: AnyValue }[];
  links?: { traceId: string; spanId: string; attributes?: { key: string; value: AnyValue }[] }[];
}

export interface ExportTraceServiceRequest {
  resourceSpans?: {
    resource?: { attributes?: { key: string; value: AnyValue }[] };
    scopeSpans?: { spans?: OtlpSpan[] }[];
  }[];
}

function plainValue(v: AnyValue): string | number | boolean {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.boolValue !== undefined) return v.boolValue;
  return '';
}

function attributes(list: { key: string; value: AnyValue }[] | undefined): Record<string, string | number | boolean> {
  return Object.fromEntries((list ?? []).map((a) => [a.key, plainValue(a.value)]));
}

/**
 * An OTLP/HTTP receiver for tests (`POST /v1/traces`) that keeps every span. `start()` listens
 * here for `http/json` and decodes the protocol's JSON mapping (trace and span ids as hex, as the
 * spec says for OTLP/JSON); `startProtobuf(python)` runs otlp_receiver.py for `http/protobuf`,
 * which decodes with the protocol's generated classes (PyPI's opentelemetry-proto) and hands the
 * requests over in the same JSON mapping. The OpenTelemetry Collector is packaged for neither npm
 * nor Debian.
 */
export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly contentTypes = new Set<string>();
  private server: Server | undefined;
  private python: ChildProcess | undefined;
  private port = 0;

  private listen(): void {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.method !== 'POST' || req.url !== '/v1/traces') {
          res.writeHead(404).end();
          return;
        }
        this.contentTypes.add(String(req.headers['content-type']));
        let body = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
        this.ingest(JSON.parse(body.toString('utf8')) as ExportTraceServiceRequest);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
  }

  /** Keeps the spans of one export request (the protocol's JSON mapping, ids in hex). */
  private ingest(request: ExportTraceServiceRequest): void {
    for (const rs of request.resourceSpans ?? []) {
      const service = String(attributes(rs.resource?.attributes)['service.name'] ?? '');
      for (const ss of rs.scopeSpans ?? []) {
        for (const s of ss.spans ?? []) {
          this.spans.push({
            service,
            traceId: s.traceId,
            spanId: s.spanId,
            parentSpanId: s.parentSpanId ?? '',
            name: s.name,
            kind: s.kind ?? 0,
            startNs: BigInt(s.startTimeUnixNano),
            endNs: BigInt(s.endTimeUnixNano),
            status: s.status?.code ?? 0,
            attributes: attributes(s.attributes),
            links: (s.links ?? []).map((l) => ({
              traceId: l.traceId,
              spanId: l.spanId,
              attributes: attributes(l.attributes),
            })),
          });
        }
      }
    }
  }

  /** A receiver of `http/json`, in this process. */
  static async start(): Promise<OtlpReceiver> {
    const receiver = new OtlpReceiver();
    receiver.listen();
    const server = receiver.server as Server;
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    receiver.port = (server.address() as AddressInfo).port;
    return receiver;
  }

  /** A receiver of `http/protobuf`: otlp_receiver.py run by `python` (which has opentelemetry-proto). */
  static async startProtobuf(python: string): Promise<OtlpReceiver> {
    const receiver = new OtlpReceiver();
    const child = spawn(python, [fileURLToPath(new URL('./otlp_receiver.py', import.meta.url))], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    receiver.python = child;
    await new Promise<void>((resolve, reject) => {
      let partial = '';
      child.once('exit', (code) => reject(new Error(`otlp_receiver.py exited (${code}) before listening`)));
      child.stdout?.on('data', (chunk: Buffer) => {
        partial += chunk.toString('utf8');
        let nl = partial.indexOf('\n');
        while (nl >= 0) {
          const line = JSON.parse(partial.slice(0, nl)) as {
            port?: number;
            contentType?: string;
            request?: ExportTraceServiceRequest;
          };
          partial = partial.slice(nl + 1);
          if (line.port) {
            receiver.port = line.port;
            resolve();
          }
          if (line.contentType) receiver.contentTypes.add(line.contentType);
          if (line.request) receiver.ingest(line.request);
          nl = partial.indexOf('\n');
        }
      });
    });
    return receiver;
  }

  url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Resolves with the spans matching `match` once `count` of them have arrived. */
  async waitFor(match: (s: ReceivedSpan) => boolean, count = 1, timeoutMs = 15_000): Promise<ReceivedSpan[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.spans.filter(match);
      if (found.length >= count) return found;
      if (Date.now() > deadline) {
        const seen = this.spans.map((s) => `${s.service} ${s.name} ${s.traceId}/${s.spanId}<-${s.parentSpanId}`);
        throw new Error(`${count} matching spans not received in ${timeoutMs} ms; seen:\n${seen.join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  close(): Promise<void> {
    this.python?.kill('SIGTERM');
    const server = this.server;
    return server ? new Promise((resolve) => server.close(() => resolve())) : Promise.resolve();
  }
}
