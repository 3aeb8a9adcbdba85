import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../packages/server/src/store/open.ts';
import type { Store } from '../../packages/server/src/store/ports.ts';
import { HubService } from '../../packages/server/src/hub/hub-service.ts';
import { systemClock, systemIds } from '../../packages/server/src/core/clock.ts';
import { silentLogger } from '../../packages/server/src/observability/logger.ts';
import { createHubRealm, startMqttListener, type MqttListener } from '../../packages/server/src/transport/mqtt/listener.ts';
import { startBareListener } from './mqtt-bare-listener.ts';
import { BENCH_HUB, deviceId, deviceKey } from './mqtt-devices.ts';
import { cpuSnapshot } from './mqtt-stats.ts';
import { serveParent } from './mqtt-proc.ts';

/**
 * The server side of the MQTT benches, run in its own (pinned) process. Modes:
 * - `hub`: the real hub realm on the real listener, SQLite store in a temp directory, `devices` SAS devices;
 * - `bare`: the ceiling listener (bare-listener.ts).
 * Reports process.cpuUsage() and memory on request (`stats`, optionally after a forced GC with --expose-gc).
 */
interface StartMsg {
  mode: 'hub' | 'bare';
  devices: number;
  cert: string;
  key: string;
  requestCert: boolean;
}

let closeAll: (() => Promise<void>) | undefined;
let count: () => number = () => 0;

async function start(m: StartMsg): Promise<{ port: number; setupMs: number }> {
  const t0 = performance.now();
  if (m.mode === 'bare') {
    const bare = await startBareListener({ cert: m.cert, key: m.key, requestCert: m.requestCert });
    closeAll = bare.close;
    count = bare.count;
    return { port: bare.port, setupMs: performance.now() - t0 };
  }
  const dir = mkdtempSync(join(tmpdir(), 'homing-bench-'));
  const store: Store = await openStore({ dialect: 'sqlite', sqlitePath: join(dir, 'hub.db') });
  const hub = new HubService({ hubId: BENCH_HUB, hostNames: [BENCH_HUB], policies: [], store: store.hub, clock: systemClock, ids: systemIds() });
  for (let i = 0; i < m.devices; i++) {
    const id = deviceId(i);
    await hub.createDevice({ deviceId: id, authentication: { type: 'sas', symmetricKey: { primaryKey: deviceKey(id), secondaryKey: deviceKey(id) } } }, id);
  }
  // Read every device once so the SQLite page cache is warm before memory baselines are taken.
  let after: string | undefined;
  do {
    const page = await hub.listDevices(1000, after);
    after = page.next;
  } while (after !== undefined);
  const listener: MqttListener = await startMqttListener({
    host: '127.0.0.1',
    port: 0,
    tls: { cert: m.cert, key: m.key, requestCert: m.requestCert },
    realms: [createHubRealm(hub)],
    logger: silentLogger(),
  });
  count = () => listener.connectionCount();
  closeAll = async () => {
    await listener.close();
    hub.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { port: listener.address().port, setupMs: performance.now() - t0 };
}

function stats(gc: boolean): Record<string, number> {
  const g = (globalThis as { gc?: () => void }).gc;
  if (gc && g) {
    g();
    g();
  }
  const mem = process.memoryUsage();
  const cpu = cpuSnapshot();
  return { user: cpu.user, system: cpu.system, at: cpu.at, rss: mem.rss, heapUsed: mem.heapUsed, external: mem.external, arrayBuffers: mem.arrayBuffers, connections: count(), gcAvailable: g ? 1 : 0 };
}

serveParent(async (m) => {
  switch (m.cmd) {
    case 'start':
      return start(m as unknown as StartMsg);
    case 'stats':
      return stats(m.gc === true);
    case 'stop':
      await closeAll?.();
      return {};
    default:
      throw new Error(`unknown command ${String(m.cmd)}`);
  }
});
