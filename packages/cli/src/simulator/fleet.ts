import { HomingDevice, MemoryAssignmentStore, type DeviceCredential, type HomingDeviceOptions, type JsonObject, type RetryPolicyOverrides } from '@homing/device';
import type { Issuer } from '../lib/x509.ts';

/**
 * A fleet of simulated devices in one process, on @homing/device's HomingDevice (the full lifecycle: provisioning
 * with Retry-After and back-off, cached assignment in memory, the built-in reprovision method, following a move).
 *
 * Memory per device is kept small: no per-device timers (one shared telemetry ticker walks the fleet in slots), a
 * MemoryAssignmentStore, listeners that only bump shared counters, and the CA PEM shared by reference.
 */

export type SimulatedCredential =
  /** Enrollment-group symmetric key: each device derives its own key from its registration id. */
  | { type: 'groupKey'; groupKey: string }
  /** X.509: each device gets a certificate with CN = its registration id, issued by this CA (a verified one, or a group's signing certificate). */
  | { type: 'x509'; caCertPem: string; caKeyPem: string; chainPem?: string };

export interface SimulationOptions {
  count: number;
  /** Registration ids are `${idPrefix}${index}` (index from `startIndex`, zero-padded to `padTo` digits). */
  idPrefix?: string;
  startIndex?: number;
  padTo?: number;
  /** Devices starting (provisioning and connecting) at once. Default 20. */
  concurrency?: number;
  credential: SimulatedCredential;
  provisioning: {
    host: string;
    port?: number;
    idScope: string;
    protocol?: 'https' | 'mqtt';
    /** HTTPS port for the status lookup when protocol is mqtt. */
    lookupPort?: number;
  };
  /** PEM of the CA to trust (DPS and hubs). */
  ca?: string;
  /** Maps an assigned hub host name to the address to dial; default: the name itself, port `hubPorts[name]` or 8883. */
  resolveHub?: (assignedHub: string) => { host: string; port?: number; servername?: string };
  hubPorts?: Record<string, number>;
  /** Telemetry period per device (ms); 0 sends none. Default 10 000. */
  telemetryIntervalMs?: number;
  /** Reported properties sent on every (re)connection; default `{simulator: {...}}`. */
  reported?: (registrationId: string, index: number) => JsonObject;
  /** Name of the reprovision direct method (default the library's, `homing.reprovision`). */
  reprovisionMethod?: string | false;
  retry?: RetryPolicyOverrides;
  /** Custom payload sent with each registration. */
  payload?: JsonObject;
}

export interface SimulationStats {
  total: number;
  /** Devices that began starting (provisioning or connecting). */
  started: number;
  /** Devices that completed at least one registration. */
  provisioned: number;
  /** Devices connected to a hub right now. */
  connected: number;
  /** Devices that have connected at least once. */
  everConnected: number;
  registrations: number;
  reprovisioned: number;
  /** Re-registrations that moved a device to another hub. */
  moved: number;
  disconnects: number;
  retries: number;
  throttled: number;
  telemetrySent: number;
  telemetryFailed: number;
  reportedSent: number;
  reportedFailed: number;
  /** Device errors (DPS refusals that need an operator, failed starts). */
  errors: number;
  lastError?: string;
  /** The most recent failure that is being retried (operation, kind, message). */
  lastRetry?: string;
  /** Connected devices per hub. */
  hubs: Record<string, number>;
  elapsedMs: number;
}

export interface Simulation {
  stats(): SimulationStats;
  /** Resolves when every device has connected once, or rejects when the simulation is stopped first. */
  allConnected(): Promise<void>;
  /** Registration ids, in order. */
  readonly registrationIds: readonly string[];
  /** The device objects (undefined until a device has been started). */
  device(index: number): HomingDevice | undefined;
  stop(): Promise<void>;
}

const TICK_MS = 100;

export function registrationIdFor(o: Pick<SimulationOptions, 'idPrefix' | 'startIndex' | 'padTo'>, i: number): string {
  const n = String((o.startIndex ?? 0) + i);
  return `${o.idPrefix ?? 'sim-'}${o.padTo ? n.padStart(o.padTo, '0') : n}`;
}

/** Starts the fleet and returns at once; devices start in the background with bounded concurrency. */
export function startSimulation(o: SimulationOptions): Simulation {
  if (!Number.isInteger(o.count) || o.count < 0) throw new TypeError('count must be a non-negative integer');
  const concurrency = Math.max(1, Math.floor(o.concurrency ?? 20));
  const t0 = Date.now();
  const ids = Array.from({ length: o.count }, (_v, i) => registrationIdFor(o, i));
  const devices: (HomingDevice | undefined)[] = new Array<HomingDevice | undefined>(o.count).fill(undefined);
  const hubOf: (string | undefined)[] = new Array<string | undefined>(o.count).fill(undefined);
  const everConnected = new Uint8Array(o.count);
  const provisioned = new Uint8Array(o.count);
  const hubs = new Map<string, number>();
  const s = {
    started: 0,
    provisioned: 0,
    connected: 0,
    everConnected: 0,
    registrations: 0,
    reprovisioned: 0,
    moved: 0,
    disconnects: 0,
    retries: 0,
    throttled: 0,
    telemetrySent: 0,
    telemetryFailed: 0,
    reportedSent: 0,
    reportedFailed: 0,
    errors: 0,
    lastError: undefined as string | undefined,
    lastRetry: undefined as string | undefined,
  };
  let stopped = false;
  let resolveAll!: () => void;
  let rejectAll!: (e: Error) => void;
  const allConnectedPromise = new Promise<void>((res, rej) => {
    resolveAll = res;
    rejectAll = rej;
  });
  allConnectedPromise.catch(() => undefined);
  if (o.count === 0) resolveAll();

  let issuerPromise: Promise<Issuer> | undefined;
  const credentialFor = async (id: string): Promise<DeviceCredential> => {
    const c = o.credential;
    if (c.type === 'groupKey') return { type: 'groupKey', groupKey: c.groupKey };
    const x = await import('../lib/x509.ts');
    issuerPromise ??= x.loadIssuer(c.caCertPem, c.caKeyPem);
    const issued = await x.issueLeaf(await issuerPromise, id, { clientAuth: true });
    return { type: 'x509', cert: `${issued.certPem}${c.chainPem ? `\n${c.chainPem}` : ''}`, key: issued.keyPem };
  };

  const resolveHub =
    o.resolveHub ??
    ((name: string) => {
      const port = o.hubPorts?.[name] ?? o.hubPorts?.[name.toLowerCase()];
      return port === undefined ? { host: name } : { host: name, port };
    });
  const tls = o.ca === undefined ? undefined : { ca: o.ca };
  const reported = o.reported ?? ((id: string, i: number) => ({ simulator: { registrationId: id, index: i, startedAt: new Date(t0).toISOString() }, firmware: '1.0.0' }));

  const setHub = (i: number, hub: string | undefined): void => {
    const prev = hubOf[i];
    if (prev === hub) return;
    if (prev !== undefined) hubs.set(prev, (hubs.get(prev) ?? 1) - 1);
    if (hub !== undefined) hubs.set(hub, (hubs.get(hub) ?? 0) + 1);
    hubOf[i] = hub;
  };

  const startOne = async (i: number): Promise<void> => {
    const id = ids[i] ?? '';
    const credential = await credentialFor(id);
    if (stopped) return;
    const options: HomingDeviceOptions = {
      registrationId: id,
      credential,
      provisioning: {
        host: o.provisioning.host,
        ...(o.provisioning.port !== undefined ? { port: o.provisioning.port } : {}),
        idScope: o.provisioning.idScope,
        ...(o.provisioning.protocol !== undefined ? { protocol: o.provisioning.protocol } : {}),
        ...(o.provisioning.lookupPort !== undefined ? { lookupPort: o.provisioning.lookupPort } : {}),
        ...(tls ? { tls } : {}),
        ...(o.payload ? { payload: o.payload } : {}),
      },
      hub: { resolve: resolveHub, ...(tls ? { tls } : {}), receiveMessages: false },
      store: new MemoryAssignmentStore(),
      ...(o.retry ? { retry: o.retry } : {}),
      ...(o.reprovisionMethod !== undefined ? { reprovisionMethod: o.reprovisionMethod } : {}),
    };
    const d = new HomingDevice(options);
    devices[i] = d;
    d.on('provisioned', () => {
      s.registrations++;
      if (!provisioned[i]) {
        provisioned[i] = 1;
        s.provisioned++;
      }
    });
    d.on('reprovisioned', (e) => {
      s.reprovisioned++;
      if (e.hubChanged) s.moved++;
    });
    d.on('connected', (e) => {
      s.connected++;
      setHub(i, e.assignment.assignedHub);
      if (!everConnected[i]) {
        everConnected[i] = 1;
        s.everConnected++;
        if (s.everConnected === o.count) resolveAll();
      }
      d.updateReported(reported(id, i)).then(
        () => s.reportedSent++,
        () => s.reportedFailed++,
      );
    });
    d.on('disconnected', (e) => {
      s.connected = Math.max(0, s.connected - 1);
      setHub(i, undefined);
      if (e.reason === 'lost') s.disconnects++;
    });
    d.on('retry', (e) => {
      s.retries++;
      if (e.kind === 'throttled') s.throttled++;
      s.lastRetry = `${id}: ${e.operation} ${e.kind}: ${e.error.message}`;
    });
    d.on('error', (e) => {
      s.errors++;
      s.lastError = `${id}: ${e.message}`;
    });
    s.started++;
    await d.start();
  };

  // Bounded start: `concurrency` workers take the next device; each waits for its device's first connection (the
  // library retries 429 after Retry-After and 5xx with back-off inside start()).
  let next = 0;
  const worker = async (): Promise<void> => {
    while (!stopped && next < o.count) {
      const i = next++;
      try {
        await startOne(i);
      } catch (e) {
        if (stopped) return;
        s.errors++;
        s.lastError = `${ids[i] ?? i}: ${(e as Error).message}`;
      }
    }
  };
  const workers = Array.from({ length: Math.min(concurrency, Math.max(1, o.count)) }, () => worker());
  void Promise.all(workers);

  // Telemetry: one ticker for the fleet; device i sends in slot i % slots, so sends spread over the period.
  const interval = o.telemetryIntervalMs ?? 10_000;
  let ticker: NodeJS.Timeout | undefined;
  if (interval > 0) {
    const slots = Math.max(1, Math.round(interval / TICK_MS));
    let slot = 0;
    let seq = 0;
    ticker = setInterval(() => {
      const current = slot;
      slot = (slot + 1) % slots;
      for (let i = current; i < o.count; i += slots) {
        const d = devices[i];
        if (!d?.connected) continue;
        seq++;
        d.sendJson({ seq, temperature: 20 + ((i * 7 + seq) % 100) / 10, humidity: 40 + (seq % 20) }, { properties: { simulated: 'true' } }).then(
          () => s.telemetrySent++,
          () => s.telemetryFailed++,
        );
      }
    }, interval < slots * TICK_MS ? interval : TICK_MS);
  }

  return {
    registrationIds: ids,
    device: (i) => devices[i],
    allConnected: () => allConnectedPromise,
    stats: () => {
      const { lastError, lastRetry, ...counters } = s;
      return {
        total: o.count,
        ...counters,
        ...(lastError === undefined ? {} : { lastError }),
        ...(lastRetry === undefined ? {} : { lastRetry }),
        hubs: Object.fromEntries([...hubs].filter(([, n]) => n > 0)),
        elapsedMs: Date.now() - t0,
      };
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      if (ticker) clearInterval(ticker);
      if (s.everConnected < o.count) rejectAll(new Error(`stopped with ${s.everConnected} of ${o.count} devices connected`));
      // Stop in bounded batches so thousands of closes do not all queue at once.
      const list = devices.filter((d): d is HomingDevice => d !== undefined);
      for (let k = 0; k < list.length; k += 200) await Promise.allSettled(list.slice(k, k + 200).map((d) => d.stop()));
      await Promise.allSettled(workers);
    },
  };
}
