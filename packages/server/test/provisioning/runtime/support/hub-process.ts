/**
 * A Homing hub in its own process, for the REST HubClient tests: an in-memory store, a HubService and the hub
 * service API on a TLS listener at 127.0.0.1:0. Prints one JSON line (port, CA, connection strings) and runs until
 * killed. Test-only: it prints keys.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { systemClock } from '../../../../src/core/clock.ts';
import type { HubRight, SharedAccessPolicy } from '../../../../src/core/policies.ts';
import { HubService } from '../../../../src/hub/hub-service.ts';
import { silentLogger } from '../../../../src/observability/logger.ts';
import { openStore } from '../../../../src/store/open.ts';
import { createHttpsApp } from '../../../../src/transport/http/app.ts';
import { registerHubApi } from '../../../../src/transport/http/hub-api.ts';
import { createTestPki } from '../../../helpers/pki.ts';

const hostName = process.argv[2] ?? 'hub-rest.test';
const key = () => randomBytes(32).toString('base64');
const owner: SharedAccessPolicy<HubRight> = { keyName: 'iothubowner', primaryKey: key(), secondaryKey: key(), rights: ['RegistryRead', 'RegistryWrite', 'ServiceConnect', 'DeviceConnect'] };
const reader: SharedAccessPolicy<HubRight> = { keyName: 'registryRead', primaryKey: key(), secondaryKey: key(), rights: ['RegistryRead'] };

const pki = await createTestPki([hostName]);
const store = await openStore({ dialect: 'sqlite', sqlitePath: ':memory:' });
const hub = new HubService({ hubId: hostName, hostNames: [hostName], policies: [owner, reader], store: store.hub, clock: systemClock, ids: { uuid: () => randomUUID(), bytes: (n) => randomBytes(n) } });
const logger = silentLogger();
const app = createHttpsApp({ logger, errorFlavor: 'hub', api: 'hub', tls: { cert: pki.server.certPem, key: pki.server.keyPem } });
registerHubApi(app, hub, { logger, clock: systemClock });
await app.listen({ host: '127.0.0.1', port: 0 });
const address = app.server.address();
const port = typeof address === 'object' && address !== null ? address.port : 0;
const cs = (p: SharedAccessPolicy<HubRight>) => `HostName=${hostName};SharedAccessKeyName=${p.keyName};SharedAccessKey=${p.primaryKey}`;
process.stdout.write(`${JSON.stringify({ port, hostName, caPem: pki.ca.certPem, connectionString: cs(owner), readOnlyConnectionString: cs(reader) })}\n`);

const stop = () => {
  void app.close().then(() => store.close()).then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
