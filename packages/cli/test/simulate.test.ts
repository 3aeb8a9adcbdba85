import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueCertificate } from '../../server/src/transport/tls/pki.ts';
import { setTimeout as delay } from 'node:timers/promises';
import { ServiceClient } from '../src/lib/http.ts';
import { resolveHubTargets } from '../src/lib/connection.ts';
import { startSimulation, type Simulation } from '../src/simulator/fleet.ts';
import { runCli, startTestServer, type TestServer } from './helpers/cli.ts';

/** Polls `check` (against the real server; there is no event to await) until it holds, bounded. */
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(50);
  }
}

describe('homing simulate', () => {
  let server: TestServer;
  const groupKey = randomBytes(32).toString('base64');
  before(async () => {
    server = await startTestServer();
    const r = await runCli(['enrollment-group', 'create', '--enrollment-id', 'sim-group', '--primary-key', groupKey, '--initial-twin-tags', '{"fleet":"sim"}', '--data-dir', server.dataDir]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    await server?.stop();
  });

  it('20 group devices provision over two hubs, connect, report twin properties, send telemetry and answer the reprovision method', async () => {
    const conn = JSON.parse(readFileSync(`${server.dataDir}/connection.json`, 'utf8')) as { caCertPath: string; dps: { idScope: string; deviceHost: string }; hubs: { hostName: string; mqttPort: number; httpsPort: number }[] };
    const sim: Simulation = startSimulation({
      count: 20,
      idPrefix: 'simdev-',
      concurrency: 8,
      credential: { type: 'groupKey', groupKey },
      provisioning: { host: conn.dps.deviceHost, port: conn.hubs[0]?.httpsPort ?? 443, idScope: conn.dps.idScope },
      ca: readFileSync(conn.caCertPath, 'utf8'),
      hubPorts: Object.fromEntries(conn.hubs.map((h) => [h.hostName, h.mqttPort])),
      telemetryIntervalMs: 200,
    });
    try {
      await sim.allConnected();
      const st = sim.stats();
      assert.equal(st.provisioned, 20);
      assert.equal(st.everConnected, 20);
      assert.equal(st.errors, 0, st.lastError);
      assert.equal(Object.keys(st.hubs).length, 2, `hashed allocation over both hubs: ${JSON.stringify(st.hubs)}`);

      // Every twin has the reported properties and the group's initial tags (hub service API).
      const clients = resolveHubTargets({ dataDir: server.dataDir }, {}, true).map((t) => new ServiceClient(t, 'hub'));
      try {
        await until('reported properties on all twins', async () => {
          let ok = 0;
          for (const id of sim.registrationIds) {
            for (const c of clients) {
              const r = await c.call<{ tags?: { fleet?: string }; properties?: { reported?: { simulator?: { registrationId?: string }; firmware?: string } } }>('GET', `/twins/${id}`, { accept: (s) => s === 200 || s === 404 });
              if (r.status !== 200) continue;
              assert.equal(r.body.tags?.fleet, 'sim');
              if (r.body.properties?.reported?.simulator?.registrationId === id && r.body.properties.reported.firmware === '1.0.0') ok++;
            }
          }
          return ok === 20;
        });
        await until('telemetry from the fleet', () => sim.stats().telemetrySent >= 20);

        // The built-in reprovision method: answered 202, then the device re-registers.
        const id = sim.registrationIds[3] ?? '';
        const device = sim.device(3);
        const hub = device?.assignment?.assignedHub;
        const client = clients.find((c) => c.target.hostName === hub);
        assert.ok(client, 'the device is on a known hub');
        const before = sim.stats().registrations;
        const res = await client.call<{ status: number; payload: unknown }>('POST', `/twins/${id}/methods`, { body: { methodName: 'homing.reprovision', payload: {}, responseTimeoutInSeconds: 30 } });
        assert.equal(res.body.status, 202);
        await until('the re-registration', () => sim.stats().registrations > before && sim.stats().connected === 20);
      } finally {
        for (const c of clients) c.close();
      }
    } finally {
      await sim.stop();
    }
    assert.equal(sim.stats().connected, 0, 'stop() disconnects every device');
  });

  it('X.509 devices get certificates from a verified CA and provision through a group that references it', async () => {
    const ca = await issueCertificate({ commonName: 'Simulator Root', isCA: true });
    const dir = mkdtempSync(join(tmpdir(), 'homing-sim-x509-'));
    try {
      writeFileSync(join(dir, 'ca.pem'), ca.certPem);
      writeFileSync(join(dir, 'ca.key'), ca.keyPem, { mode: 0o600 });
      const d = ['--data-dir', server.dataDir];
      assert.equal((await runCli(['ca', 'upload', '--name', 'sim-root', '--certificate-path', join(dir, 'ca.pem'), ...d])).code, 0);
      const v = await runCli(['ca', 'verify', '--name', 'sim-root', '--ca-key-path', join(dir, 'ca.key'), ...d]);
      assert.equal(v.code, 0, v.stderr);
      const g = await runCli(['enrollment-group', 'create', '--enrollment-id', 'sim-x509', '--ca-name', 'sim-root', '--initial-twin-tags', '{"fleet":"x509"}', ...d]);
      assert.equal(g.code, 0, g.stderr);
      const conn = JSON.parse(readFileSync(`${server.dataDir}/connection.json`, 'utf8')) as { caCertPath: string; dps: { idScope: string; deviceHost: string }; hubs: { hostName: string; mqttPort: number; httpsPort: number }[] };
      const sim = startSimulation({
        count: 3,
        idPrefix: 'x509dev-',
        credential: { type: 'x509', caCertPem: ca.certPem, caKeyPem: ca.keyPem },
        provisioning: { host: conn.dps.deviceHost, port: conn.hubs[0]?.httpsPort ?? 443, idScope: conn.dps.idScope },
        ca: readFileSync(conn.caCertPath, 'utf8'),
        hubPorts: Object.fromEntries(conn.hubs.map((h) => [h.hostName, h.mqttPort])),
        telemetryIntervalMs: 0,
      });
      try {
        await sim.allConnected();
        assert.equal(sim.stats().errors, 0, sim.stats().lastError);
        const list = await runCli(['registration', 'list', '--group-id', 'sim-x509', '--json', ...d]);
        assert.deepEqual((JSON.parse(list.stdout) as { registrationId: string }[]).map((r) => r.registrationId).sort(), ['x509dev-0', 'x509dev-1', 'x509dev-2']);
        const twin = await runCli(['device', 'twin', '--device-id', 'x509dev-1', '--json', ...d]);
        assert.equal((JSON.parse(twin.stdout) as { tags: { fleet: string } }).tags.fleet, 'x509');
      } finally {
        await sim.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the command runs a bounded fleet and prints a JSON summary', async () => {
    const r = await runCli(['simulate', '--count', '4', '--id-prefix', 'cmd-', '--group-key', groupKey, '--duration', '25', '--telemetry-interval', '1', '--progress-interval', '0', '--json', '--data-dir', server.dataDir]);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as { total: number; everConnected: number; provisioned: number; errors: number; telemetrySent: number };
    assert.equal(summary.total, 4);
    assert.equal(summary.provisioned, 4);
    assert.equal(summary.everConnected, 4);
    assert.equal(summary.errors, 0);
    assert.ok(summary.telemetrySent > 0);
  });

  it('refuses bad arguments with one line', async () => {
    const none = await runCli(['simulate', '--count', '2', '--data-dir', server.dataDir]);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /^homing: ArgumentInvalid: give one of --group-key/);
    assert.equal(none.stderr.trim().split('\n').length, 1);
    const badCount = await runCli(['simulate', '--count', 'many', '--group-key', groupKey, '--data-dir', server.dataDir]);
    assert.notEqual(badCount.code, 0);
    assert.match(badCount.stderr, /^homing: ArgumentInvalid: --count: expected an integer/);
  });
});
