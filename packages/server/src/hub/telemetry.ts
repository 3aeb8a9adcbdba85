/** A telemetry message as accepted from a device. Homing does not persist telemetry; it counts and streams it. */
export interface TelemetryMessage {
  hubId: string;
  deviceId: string;
  receivedAt: string;
  systemProperties: Record<string, string>;
  properties: Record<string, string>;
  body: Buffer;
}

export interface TelemetryEvent {
  seq: number;
  hubId: string;
  deviceId: string;
  receivedAt: string;
  systemProperties: Record<string, string>;
  properties: Record<string, string>;
  /** utf8 when the body is valid UTF-8, base64 otherwise. */
  bodyEncoding: 'utf8' | 'base64';
  body: string;
  size: number;
}

export type TelemetryListener = (e: TelemetryEvent) => void;

/** Counts telemetry per device, keeps a ring of recent messages and feeds live listeners (the SSE stream). */
export class TelemetryFeed {
  private readonly ring: TelemetryEvent[] = [];
  private readonly counts = new Map<string, number>();
  private readonly listeners = new Set<TelemetryListener>();
  private seq = 0;
  total = 0;

  constructor(private readonly capacity = 1000) {}

  record(m: TelemetryMessage): TelemetryEvent {
    this.total++;
    this.counts.set(m.deviceId, (this.counts.get(m.deviceId) ?? 0) + 1);
    const text = m.body.toString('utf8');
    const isUtf8 = Buffer.byteLength(text) === m.body.length && !text.includes('\uFFFD');
    const e: TelemetryEvent = {
      seq: ++this.seq,
      hubId: m.hubId,
      deviceId: m.deviceId,
      receivedAt: m.receivedAt,
      systemProperties: m.systemProperties,
      properties: m.properties,
      bodyEncoding: isUtf8 ? 'utf8' : 'base64',
      body: isUtf8 ? text : m.body.toString('base64'),
      size: m.body.length,
    };
    // Keep the ring small in memory: very large bodies are truncated in the stream, never in the count.
    if (e.body.length > 4096) e.body = e.body.slice(0, 4096);
    this.ring.push(e);
    if (this.ring.length > this.capacity) this.ring.shift();
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        this.listeners.delete(l);
      }
    }
    return e;
  }

  countFor(deviceId: string): number {
    return this.counts.get(deviceId) ?? 0;
  }

  forget(deviceId: string): void {
    this.counts.delete(deviceId);
  }

  /** Recent events, oldest first, optionally only those after `afterSeq` and for one device. */
  recent(opts: { afterSeq?: number; deviceId?: string; limit?: number } = {}): TelemetryEvent[] {
    const out = this.ring.filter((e) => (opts.afterSeq === undefined || e.seq > opts.afterSeq) && (!opts.deviceId || e.deviceId === opts.deviceId));
    return opts.limit ? out.slice(-opts.limit) : out;
  }

  subscribe(l: TelemetryListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
}
