import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { ProvisioningClient } from '../src/index.ts';
import { parseProbeTarget, probeLatencies, withLatencies } from '../src/dps/latency-probe.ts';
import { FakeRuntime, within } from './helpers/fake-runtime.ts';
import { FakeDps, assignedBody } from './helpers/fake-dps.ts';
import { serverTls } from './helpers/pki.ts';

/** The latency probe: TCP connect times to candidate hubs, sent as payload.homing.latencyMs (docs/api/allocation.md). */

let tcp: Server;
let openPort: number;
let closedPort: number;

before(async () => {
  tcp = createServer((s) => s.destroy());
  tcp.listen(0, '127.0.0.1');
  await once(tcp, 'listening');
  openPort = (tcp.address() as AddressInfo).port;
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  closedPort = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
});

after(async () => {
  await new Promise((r) => tcp.close(r));
});

describe('latency probe', () => {
  test('targets: host, host:port, [v6], [v6]:port', () => {
    assert.deepEqual(parseProbeTarget('hub-a.example', 8883), { host: 'hub-a.example', port: 8883 });
    assert.deepEqual(parseProbeTarget('hub-a.example:443', 8883), { host: 'hub-a.example', port: 443 });
    assert.deepEqual(parseProbeTarget('[::1]', 8883), { host: '::1', port: 8883 });
    assert.deepEqual(parseProbeTarget('[::1]:9000', 8883), { host: '::1', port: 9000 });
  });

  test('real TCP: a listening hub is measured (key = host name), a refused one is left out', async () => {
    const r = await probeLatencies({ hosts: [`127.0.0.1:${openPort}`, `localhost:${closedPort}`], timeoutMs: 5000 });
    assert.deepEqual(Object.keys(r), ['127.0.0.1']);
    assert.ok(typeof r['127.0.0.1'] === 'number' && r['127.0.0.1'] >= 0 && r['127.0.0.1'] < 5000);
  });

  test('a hub that does not connect within timeoutMs is left out and its attempt aborted', async () => {
    const rt = new FakeRuntime();
    let aborted = false;
    const done = probeLatencies(
      { hosts: ['slow.example', 'fast.example'], timeoutMs: 300 },
      {
        timers: rt.timers,
        now: () => rt.ms,
        connect: (host, _port, signal) =>
          host === 'fast.example'
            ? Promise.resolve()
            : new Promise<void>((_, reject) => signal.addEventListener('abort', () => ((aborted = true), reject(new Error('aborted'))))),
      },
    );
    await rt.waitForTimer((t) => t.ms === 300);
    rt.advance(300);
    const r = await within(done, 5000, 'probe');
    assert.deepEqual(r, { 'fast.example': 0 });
    assert.ok(aborted);
    assert.equal(rt.pending().length, 0, 'no timer outlives the probe');
  });

  test('withLatencies keeps the payload and other homing fields', () => {
    assert.deepEqual(withLatencies(undefined, { h: 1 }), { homing: { latencyMs: { h: 1 } } });
    assert.deepEqual(withLatencies({ model: 'x', homing: { other: true, latencyMs: { old: 9 } } }, { h: 2 }), { model: 'x', homing: { other: true, latencyMs: { h: 2 } } });
  });

  test('ProvisioningClient: latencyProbe adds payload.homing.latencyMs to the register body', async () => {
    const tls = await serverTls();
    const rt = new FakeRuntime();
    const dps = await FakeDps.start(tls, () => rt.ms);
    try {
      const c = new ProvisioningClient({
        host: '127.0.0.1',
        port: dps.port,
        idScope: '0ne0000TEST',
        registrationId: 'dev-1',
        credential: { type: 'symmetricKey', key: Buffer.alloc(32, 7).toString('base64') },
        tls: { ca: tls.ca },
        runtime: rt,
        payload: { model: 'toaster' },
        latencyProbe: { hosts: [`127.0.0.1:${openPort}`, `127.0.0.1:${closedPort}`], timeoutMs: 5000 },
      });
      dps.script({ status: 200, body: assignedBody('dev-1', 'hub-a.test') });
      const done = c.register();
      const put = await dps.nextRequest();
      const body = put.body as { payload: { model: string; homing: { latencyMs: Record<string, number> } } };
      assert.equal(body.payload.model, 'toaster');
      assert.deepEqual(Object.keys(body.payload.homing.latencyMs), ['127.0.0.1']);
      assert.equal((await within(done, 5000, 'register')).assignedHub, 'hub-a.test');
      await c.close();
    } finally {
      await dps.close();
    }
  });
});
