import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { systemClock } from '../../src/core/clock.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { createHttpsApp, observeAnswers } from '../../src/transport/http/app.ts';
import { registerDpsDeviceApi } from '../../src/transport/http/dps-device-api.ts';
import { createHubRealm, startMqttListener, type MqttListener } from '../../src/transport/mqtt/listener.ts';
import { uniqueLoopback } from '../helpers/ids.ts';
import { createTestPki, type TestPki } from '../helpers/pki.ts';
import { rawHttps, runDeviceScript, type DeviceStepResult as StepResult, type RawAnswer, type SymmetricKeyStep as Step } from '../helpers/sdk-steps.ts';
import { createRuntimeFixture, newKey, TEST_RESPONSE_BUDGET_MS, type RuntimeFixture } from '../provisioning/runtime/fixture.ts';

/**
 * The official DPS device SDK over HTTPS (azure-iot-provisioning-device + -http + azure-iot-security-symmetric-key),
 * used exactly as a device application would, in a child process that trusts the test CA via NODE_EXTRA_CA_CERTS
 * (the SDK dials port 443 only, protocol-device.md 0.2/0.3). The provisioned device then connects to its assigned
 * hub with azure-iot-device-mqtt.
 *
 * Two listeners share one registration service: A answers within 100 ms (200 with the final status), B never waits
 * (202 assigning, then the SDK polls).
 */
const DEVICE_SCRIPT = fileURLToPath(new URL('../provisioning/runtime/support/dps-sdk-device.cjs', import.meta.url));

function distinctLoopbacks(n: number): string[] {
  const out = new Set<string>();
  while (out.size < n) out.add(uniqueLoopback());
  return [...out];
}

function runDevice(steps: Step[], caFile: string, timeoutMs = 150_000): Promise<Map<string, StepResult>> {
  return runDeviceScript<StepResult>(DEVICE_SCRIPT, steps, caFile, { timeoutMs });
}

describe('DPS device SDK over HTTPS (official packages)', () => {
  const [dpsA, dpsB, hubAddr] = distinctLoopbacks(3) as [string, string, string];
  let pki: TestPki;
  let dir: string;
  let caFile: string;
  let f: RuntimeFixture;
  let appB: FastifyInstance;
  let mqtt: MqttListener;
  const seenA: { method: string; url: string; status: number }[] = [];
  const seenB: { method: string; url: string; status: number }[] = [];

  before(async () => {
    pki = await createTestPki([dpsA, dpsB, hubAddr]);
    dir = mkdtempSync(join(tmpdir(), 'homing-dps-sdk-'));
    caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, pki.ca.certPem);
    const tls = { cert: pki.server.certPem, key: pki.server.keyPem };
    f = await createRuntimeFixture({
      hubNames: [hubAddr],
      clock: systemClock,
      tls,
      // A: answers asserted final (200) at once, so a budget no loaded machine exhausts; B forces 202 (budget 0).
      responseBudgetMs: TEST_RESPONSE_BUDGET_MS,
      configureApp: (app) => observeAnswers(app, (a) => void seenA.push(a)),
    });
    await f.app.listen({ host: dpsA, port: 443 });
    appB = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'dps-device', tls });
    registerDpsDeviceApi(appB, { registration: f.service, responseBudgetMs: 0 });
    observeAnswers(appB, (a) => void seenB.push(a));
    await appB.listen({ host: dpsB, port: 443 });
    const hub = f.hubs.get(hubAddr)!;
    mqtt = await startMqttListener({ host: hubAddr, port: 8883, tls, realms: [createHubRealm(hub)], logger: silentLogger() });
  });

  after(async () => {
    await appB?.close();
    await mqtt?.close();
    await f?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('registers, connects to the assigned hub and reads the twin; every enrollment flavour; 200 and 202 flows', async () => {
    const g = await f.addGroup('G1', { initialTwin: { tags: { site: 'A' }, properties: { desired: { mode: 'eco' } } } });
    const ind1 = await f.addIndividual('ind-1', { deviceId: 'custom-7' });
    const ind2 = await f.addIndividual('ind-2');
    const off = await f.addIndividual('ind-off', { status: 'disabled' });
    await f.addIndividual('blk-7', { status: 'disabled' });
    const step = (name: string, registrationId: string, key: string, o: Partial<Step> = {}): Step => ({ name, host: dpsA, idScope: f.idScope, registrationId, key, ...o });
    const steps: Step[] = [
      step('group', 'grp-dev-1', f.derivedKey(g, 'grp-dev-1'), { connect: true }),
      step('individual', 'ind-1', ind1.attestation.symmetricKey!.primaryKey, { connect: true }),
      step('secondary', 'ind-2', ind2.attestation.symmetricKey!.secondaryKey),
      step('disabled', 'ind-off', off.attestation.symmetricKey!.primaryKey),
      step('blocklisted', 'blk-7', f.derivedKey(g, 'blk-7')),
      step('sibling', 'blk-8', f.derivedKey(g, 'blk-8')),
      step('polled', 'poll-1', f.derivedKey(g, 'poll-1'), { host: dpsB }),
      step('wrong-key', 'grp-dev-2', newKey()),
      step('unknown-scope', 'grp-dev-3', f.derivedKey(g, 'grp-dev-3'), { idScope: '0neFFFFFFFF' }),
      step('mixed-case', 'Case-Dev', f.derivedKey(g, 'Case-Dev')),
      step('mixed-case-again', 'case-dev', f.derivedKey(g, 'case-dev')),
    ];
    const r = await runDevice(steps, caFile);
    const ok = (name: string) => {
      const s = r.get(name)!;
      assert.ok(s.ok, `${name}: ${JSON.stringify(s.error)}`);
      return s;
    };

    // Group enrollment, derived key: assigned, device connects to assignedHub and sees the initial desired state.
    const grp = ok('group');
    assert.equal(grp.result!.assignedHub, hubAddr);
    assert.equal(grp.result!.deviceId, 'grp-dev-1');
    assert.equal(grp.result!.status, 'assigned');
    assert.equal(grp.result!.substatus, 'initialAssignment');
    assert.deepEqual(grp.result!.symmetricKey, { enrollmentGroupId: 'G1' });
    assert.equal(grp.twin!.desired.mode, 'eco');
    const hubTwin = await f.hubs.get(hubAddr)!.getTwinState('grp-dev-1');
    assert.deepEqual(hubTwin.twin.tags, { site: 'A' });

    // Individual enrollment with a device id; the device connects under that id.
    const ind = ok('individual');
    assert.equal(ind.result!.deviceId, 'custom-7');
    assert.ok(ind.twin);
    assert.equal(ok('secondary').result!.deviceId, 'ind-2');

    // Disabled: the SDK rejects (it only knows assigned/assigning/failed), the body says disabled.
    for (const name of ['disabled', 'blocklisted']) {
      const s = r.get(name)!;
      assert.equal(s.ok, false, name);
      assert.match(s.error!.message!, /status is disabled/);
    }
    assert.equal(await f.hubs.get(hubAddr)!.findDevice('ind-off'), undefined);
    assert.equal(await f.hubs.get(hubAddr)!.findDevice('blk-7'), undefined);
    const rawDisabled = await rawHttps(dpsA, pki.ca.certPem, 'PUT', `/${f.idScope}/registrations/ind-off/register?api-version=2019-03-31`, {
      auth: f.deviceSas('ind-off', off.attestation.symmetricKey!.primaryKey),
      body: JSON.stringify({ registrationId: 'ind-off' }),
    });
    assert.equal(rawDisabled.status, 200);
    assert.equal(rawDisabled.headers['content-type'], 'application/json; charset=utf-8');
    const disabledBody = JSON.parse(rawDisabled.body) as { status: string; registrationState: { status: string; assignedHub?: string } };
    assert.equal(disabledBody.status, 'disabled');
    assert.equal(disabledBody.registrationState.status, 'disabled');
    assert.equal(disabledBody.registrationState.assignedHub, undefined);
    assert.equal(ok('sibling').result!.deviceId, 'blk-8');

    // 202 then poll on B; 200 at once on A.
    assert.equal(ok('polled').result!.status, 'assigned');
    const putB = seenB.filter((s) => s.method === 'PUT' && s.url.includes('/poll-1/'));
    const getB = seenB.filter((s) => s.method === 'GET' && s.url.includes('/poll-1/operations/'));
    assert.deepEqual(putB.map((s) => s.status), [202]);
    assert.ok(getB.length >= 1 && getB.at(-1)!.status === 200, JSON.stringify(getB));
    const putA = seenA.filter((s) => s.method === 'PUT' && s.url.includes('/grp-dev-1/'));
    assert.deepEqual(putA.map((s) => s.status), [200]);
    assert.equal(seenA.filter((s) => s.method === 'GET' && s.url.includes('/grp-dev-1/')).length, 0, 'no poll needed');

    // Refused credentials.
    assert.equal(r.get('wrong-key')!.error?.ctor, 'UnauthorizedError');
    assert.equal(r.get('unknown-scope')!.error?.ctor, 'UnauthorizedError');

    // Case-insensitive registration ids: one registration, one hub device.
    assert.equal(ok('mixed-case').result!.deviceId, 'Case-Dev');
    assert.equal(ok('mixed-case-again').result!.deviceId, 'Case-Dev');
    assert.equal((await f.store.provisioning.getRegistration(f.instanceName, 'CASE-DEV'))?.deviceId, 'Case-Dev');
  });

  test('registration status lookup over raw HTTPS: 200 with the record, no new operation, hub untouched; 404 before registering', async () => {
    const g = await f.addGroup('G-lookup');
    const key = f.derivedKey(g, 'look-1');
    const post = (id: string, k: string) =>
      rawHttps(dpsA, pki.ca.certPem, 'POST', `/${f.idScope}/registrations/${id}?api-version=2021-06-01`, { auth: f.deviceSas(id, k), body: JSON.stringify({ registrationId: id }) });
    const before404 = await post('look-1', key);
    assert.equal(before404.status, 404);
    assert.equal(JSON.parse(before404.body).errorCode, 404202);
    const reg = await rawHttps(dpsA, pki.ca.certPem, 'PUT', `/${f.idScope}/registrations/look-1/register?api-version=2021-06-01`, { auth: f.deviceSas('look-1', key), body: JSON.stringify({ registrationId: 'look-1' }) });
    assert.equal(reg.status, 200, reg.body);
    const counts = await f.counts();
    const dev = await f.hubs.get(hubAddr)!.getTwinState('look-1');
    const r = await post('look-1', key);
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers['content-type'], 'application/json; charset=utf-8');
    const rec = JSON.parse(r.body) as Record<string, unknown>;
    assert.equal(rec.assignedHub, hubAddr);
    assert.equal(rec.deviceId, 'look-1');
    assert.equal(rec.status, 'assigned');
    assert.equal(rec.substatus, 'initialAssignment');
    assert.deepEqual(await f.counts(), counts, 'no new operation or record');
    const devAfter = await f.hubs.get(hubAddr)!.getTwinState('look-1');
    assert.equal(devAfter.device.etag, dev.device.etag);
    assert.deepEqual(devAfter.twin, dev.twin);
  });

  test('bad input over the TLS listener is refused with DPS error bodies and changes nothing', async () => {
    const g = await f.addGroup('G-bad');
    const key = (id: string) => f.derivedKey(g, id);
    const path = (id: string, q = 'api-version=2019-03-31') => `/${f.idScope}/registrations/${id}/register?${q}`;
    const put = (id: string, o: { auth?: string; body?: string | Buffer; q?: string; scope?: string } = {}) =>
      rawHttps(dpsA, pki.ca.certPem, 'PUT', o.scope ? `/${o.scope}/registrations/${id}/register` : path(id, o.q), {
        auth: o.auth ?? f.deviceSas(id, key(id)),
        body: o.body ?? JSON.stringify({ registrationId: id }),
      });
    const nowS = Math.floor(Date.now() / 1000);
    const goodSas = f.deviceSas('bad-1', key('bad-1'));
    const before = await f.counts();
    const cases: [string, Promise<RawAnswer>, number, number][] = [
      ['malformed JSON', put('bad-1', { body: '{"registrationId": "bad-1"' }), 400, 400006],
      ['body over 96 KB', put('bad-1', { body: JSON.stringify({ registrationId: 'bad-1', payload: { x: 'y'.repeat(100 * 1024) } }) }), 413, 413001],
      ['body id differs from the path', put('bad-1', { body: JSON.stringify({ registrationId: 'bad-2' }) }), 400, 400009],
      ['expired SAS', put('bad-1', { auth: f.deviceSas('bad-1', key('bad-1'), { expirySeconds: nowS - 600 }) }), 401, 401000],
      ['SAS for another registration id', put('bad-1', { auth: f.deviceSas('bad-2', key('bad-1')) }), 401, 401000],
      ['bad base64 in the signature', put('bad-1', { auth: goodSas.replace(/sig=[^&]+/, 'sig=%25%25not-base64%25') }), 401, 401000],
      ['no Authorization', rawHttps(dpsA, pki.ca.certPem, 'PUT', path('bad-1'), { body: JSON.stringify({ registrationId: 'bad-1' }) }), 401, 401000],
      ['id with a bad last character', put('bad-1.', { body: JSON.stringify({ registrationId: 'bad-1.' }) }), 400, 400008],
      ['id outside the charset', put('bad%201', { body: JSON.stringify({ registrationId: 'bad 1' }) }), 400, 400008],
      ['id over 128 characters', put('b'.repeat(129), { body: JSON.stringify({ registrationId: 'b'.repeat(129) }) }), 400, 400008],
      ['unknown scope', put('bad-1', { scope: '0neFFFFFFFF' }), 401, 401000],
    ];
    for (const [what, p, status, code] of cases) {
      const a = await p;
      assert.equal(a.status, status, `${what}: ${a.body}`);
      assert.equal(a.headers['content-type'], 'application/json; charset=utf-8', what);
      const b = JSON.parse(a.body) as { errorCode: number; trackingId: string; timestampUtc: string };
      assert.equal(b.errorCode, code, what);
      assert.ok(b.trackingId && b.timestampUtc, what);
    }
    assert.deepEqual(await f.counts(), before, 'nothing stored changed');

    // An unknown api-version is accepted; ids are case-insensitive between path and body.
    const okVersion = await put('bad-ok', { q: 'api-version=2030-12-31-preview' });
    assert.equal(okVersion.status, 200, okVersion.body);
    const mixed = await put('Bad-Ok', { body: JSON.stringify({ registrationId: 'bAD-oK' }), auth: f.deviceSas('Bad-Ok', key('Bad-Ok')) });
    assert.equal(mixed.status, 200, mixed.body);
    assert.equal((JSON.parse(mixed.body) as { registrationState: { deviceId: string } }).registrationState.deviceId, 'bad-ok');
  });
});
