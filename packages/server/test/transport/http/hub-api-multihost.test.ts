import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { systemClock } from '../../../src/core/clock.ts';
import type { HubRight, SharedAccessPolicy } from '../../../src/core/policies.ts';
import { buildSas } from '../../../src/core/sas.ts';
import { HubService } from '../../../src/hub/hub-service.ts';
import { silentLogger } from '../../../src/observability/logger.ts';
import { openStore } from '../../../src/store/open.ts';
import type { Store } from '../../../src/store/ports.ts';
import { createHttpsApp } from '../../../src/transport/http/app.ts';
import { registerHubApi } from '../../../src/transport/http/hub-api.ts';
import { realIds } from '../../helpers/ids.ts';

/** Two hubs on one listener, told apart by the Host header (routeByHost), on one shared store. */
let store: Store;
let app: FastifyInstance;
const hubs: HubService[] = [];
const owner: SharedAccessPolicy<HubRight> = {
  keyName: 'iothubowner',
  primaryKey: realIds.bytes(32).toString('base64'),
  secondaryKey: realIds.bytes(32).toString('base64'),
  rights: ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect'],
};

before(async () => {
  store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
  const logger = silentLogger();
  app = createHttpsApp({ logger, errorFlavor: 'hub', api: 'hub' });
  for (const host of ['hub-one.example.net', 'Hub-Two.example.net']) {
    const hub = new HubService({ hubId: host, hostNames: [host], policies: [owner], store: store.hub, clock: systemClock, ids: realIds });
    registerHubApi(app, hub, { logger, clock: systemClock, routeByHost: true });
    hubs.push(hub);
  }
  await app.ready();
});

after(async () => {
  await app.close();
  for (const h of hubs) h.close();
  await store.close();
});

function req(method: 'GET' | 'PUT', host: string, url: string, payload?: object) {
  const sas = buildSas({ sr: host.replace(/:\d+$/, ''), keyBase64: owner.primaryKey, expirySeconds: Math.ceil(Date.now() / 1000) + 600, keyName: 'iothubowner' });
  return app.inject({ method, url, headers: { host, authorization: sas }, ...(payload ? { payload } : {}) });
}

describe('hub API: several hubs on one listener', () => {
  it('routes by Host (any case, with or without a port) and keeps registries apart', async () => {
    assert.equal((await req('PUT', 'hub-one.example.net', '/devices/d1', { deviceId: 'd1' })).statusCode, 200);
    assert.equal((await req('GET', 'HUB-ONE.example.net:443', '/devices/d1')).statusCode, 200);
    const other = await req('GET', 'hub-two.example.net', '/devices/d1');
    assert.equal(other.statusCode, 404);
    assert.match(other.body, /ErrorCode:DeviceNotFound;/);
    const unknown = await req('GET', 'hub-three.example.net', '/devices/d1');
    assert.equal(unknown.statusCode, 404);
    assert.match(unknown.body, /ErrorCode:NotFound;/);
  });

  it('refuses a token signed for the other hub', async () => {
    const sas = buildSas({ sr: 'hub-one.example.net', keyBase64: owner.primaryKey, expirySeconds: Math.ceil(Date.now() / 1000) + 600, keyName: 'iothubowner' });
    const r = await app.inject({ method: 'GET', url: '/devices/d1', headers: { host: 'hub-two.example.net', authorization: sas } });
    assert.equal(r.statusCode, 401);
  });
});
