import { createInterface } from 'node:readline';
import { buildSas, deriveDeviceKey } from '../../../../src/core/sas.ts';
import type { HubRight, SharedAccessPolicy } from '../../../../src/core/policies.ts';
import { HubService } from '../../../../src/hub/hub-service.ts';
import { silentLogger } from '../../../../src/observability/logger.ts';
import { InProcessHubClientFactory } from '../../../../src/provisioning/hub-client-inprocess.ts';
import { GuardedDeviceRuntime, OverloadGuard } from '../../../../src/provisioning/quotas/overload.ts';
import { QuotaService } from '../../../../src/provisioning/quotas/quota-service.ts';
import { RegistrationService } from '../../../../src/provisioning/registration.ts';
import { openStore } from '../../../../src/store/open.ts';
import { openQuotaBuckets } from '../../../../src/store/quota-open.ts';
import { createHttpsApp } from '../../../../src/transport/http/app.ts';
import { registerDpsDeviceApi } from '../../../../src/transport/http/dps-device-api.ts';
import { ManualClock, realIds } from '../../../helpers/ids.ts';

/**
 * One "node" of the two-process quota test: a DPS device API (RegistrationService behind the overload guard, quota
 * buckets from openQuotaBuckets) on the PostgreSQL schema the parent prepared, with the hub in process on the same
 * database. Prints `ready`, waits for `go` on stdin, fires `count` registrations (8 at a time) and prints
 * `{"accepted": n, "throttled": n, "other": [statuses]}`. The clock is frozen at `nowMs`: the shared limit, not
 * timing, decides.
 */
interface WorkerArgs {
  url: string;
  schema: string;
  idScope: string;
  hub: string;
  hubPolicy: SharedAccessPolicy<HubRight>;
  groupKey: string;
  prefix: string;
  count: number;
  nowMs: number;
}

const args = JSON.parse(process.argv[2] ?? '{}') as WorkerArgs;
const clock = new ManualClock(args.nowMs);
const store = await openStore({ dialect: 'postgres', postgresUrl: args.url, postgresSchema: args.schema, poolSize: 4 });
const hub = new HubService({ hubId: args.hub, hostNames: [args.hub], policies: [args.hubPolicy], store: store.hub, clock, ids: realIds });
const quotas = new QuotaService({ clock, buckets: openQuotaBuckets(store) });
const service = new RegistrationService({ store: store.provisioning, hubs: new InProcessHubClientFactory([hub], clock), clock, ids: realIds, logger: silentLogger(), readCacheMs: 0, quotas });
const app = createHttpsApp({ logger: silentLogger(), errorFlavor: 'dps', api: 'dps' });
registerDpsDeviceApi(app, { registration: new GuardedDeviceRuntime(service, new OverloadGuard({ clock, lag: () => 0 })), responseBudgetMs: 0 });
await app.ready();
process.stdout.write('ready\n');

const rl = createInterface({ input: process.stdin });
await new Promise<void>((resolve) => rl.once('line', () => resolve()));
rl.close();

let accepted = 0;
let throttled = 0;
const other: number[] = [];
const ids = Array.from({ length: args.count }, (_, i) => `${args.prefix}-${i}`);
for (let i = 0; i < ids.length; i += 8) {
  await Promise.all(
    ids.slice(i, i + 8).map(async (id) => {
      const sas = buildSas({ sr: `${args.idScope}/registrations/${id}`, keyBase64: deriveDeviceKey(args.groupKey, id), keyName: 'registration', expirySeconds: Math.floor(args.nowMs / 1000) + 3600 });
      const r = await app.inject({
        method: 'PUT',
        url: `/${args.idScope}/registrations/${id}/register?api-version=2021-06-01`,
        headers: { 'content-type': 'application/json', authorization: sas },
        payload: JSON.stringify({ registrationId: id }),
      });
      if (r.statusCode === 200 || r.statusCode === 202) accepted++;
      else if (r.statusCode === 429) throttled++;
      else other.push(r.statusCode);
    }),
  );
}
await service.drain();
await app.close();
hub.close();
await store.close();
process.stdout.write(`${JSON.stringify({ accepted, throttled, other })}\n`);
