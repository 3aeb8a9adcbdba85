/**
 * Runs official azure-iothub SDK calls on behalf of hub-sdk.test.ts, exactly as a user would. It runs in a child
 * process because the SDK only trusts our test CA through NODE_EXTRA_CA_CERTS, which Node reads at start-up.
 *
 * Protocol (IPC): the parent sends `{ id, op, cs, args }`; the child answers `{ id, ok: true, value, ms }` or
 * `{ id, ok: false, error: { name, ctor, message, statusCode, responseBody }, ms }`. An exception thrown inside an
 * SDK callback (T11) is reported as `{ fatal }`.
 */
import iothub from 'azure-iothub';
import type { Client as ClientT, DeviceMethodParams, Registry as RegistryT, Twin } from 'azure-iothub';

// azure-iothub is CommonJS whose exports Node cannot detect statically: take them from the default export.
const { Client, Registry } = iothub;
type Registry = RegistryT;
type Client = ClientT;

interface Call {
  id: number;
  op: string;
  cs: string;
  args: unknown[];
}

const registries = new Map<string, Registry>();
const clients = new Map<string, Client>();

function registry(cs: string): Registry {
  let r = registries.get(cs);
  if (!r) {
    r = Registry.fromConnectionString(cs);
    registries.set(cs, r);
  }
  return r;
}

function client(cs: string): Client {
  let c = clients.get(cs);
  if (!c) {
    c = Client.fromConnectionString(cs);
    clients.set(cs, c);
  }
  return c;
}

function twinData(t: Twin): unknown {
  return { deviceId: t.deviceId, etag: t.etag, modelId: t.modelId, tags: t.tags, properties: t.properties };
}

/** A plain copy of what the SDK returned (Device objects, bulk results...). */
function plain(v: unknown): unknown {
  return v === undefined ? null : JSON.parse(JSON.stringify(v)) as unknown;
}

const str = (v: unknown): string => String(v);
// The SDK takes loosely typed descriptions; the parent builds them.
type Desc = Parameters<Registry['create']>[0];
type Devs = Parameters<Registry['addDevices']>[0];

async function run(c: Call): Promise<unknown> {
  const [a0, a1, a2] = c.args;
  switch (c.op) {
    case 'create':
      return plain((await registry(c.cs).create(a0 as Desc)).responseBody);
    case 'update':
      return plain((await registry(c.cs).update(a0 as Desc)).responseBody);
    case 'get':
      return plain((await registry(c.cs).get(str(a0))).responseBody);
    case 'list':
      return plain((await registry(c.cs).list()).responseBody);
    case 'delete': {
      const r = await registry(c.cs).delete(str(a0));
      return { statusCode: r.httpResponse.statusCode };
    }
    case 'getTwin':
      return twinData((await registry(c.cs).getTwin(str(a0))).responseBody);
    case 'updateTwin':
      return twinData((await registry(c.cs).updateTwin(str(a0), a1, str(a2))).responseBody);
    case 'twinUpdate': {
      // The usual flow: get the twin, then twin.update(patch) (If-Match: the twin's etag).
      const twin = (await registry(c.cs).getTwin(str(a0))).responseBody;
      return twinData((await twin.update(a1)).result);
    }
    case 'queryPage': {
      // Promise-style next() drops the stored token (T13): pass it explicitly.
      const q = registry(c.cs).createQuery(str(a0), Number(a1));
      const r = a2 === undefined ? await q.nextAsTwin() : await q.nextAsTwin(str(a2));
      return { items: r.result.map(twinData), continuationToken: q.continuationToken ?? null, hasMoreResults: q.hasMoreResults };
    }
    case 'queryAll': {
      // Callback-style next(cb) keeps the token between pages.
      const q = registry(c.cs).createQuery(str(a0), Number(a1));
      const pages: unknown[][] = [];
      while (pages.length === 0 || q.hasMoreResults) {
        if (pages.length > 50) throw new Error('too many pages');
        const page = await new Promise<unknown[]>((resolve, reject) => {
          q.next((err, result) => (err ? reject(err) : resolve(result as unknown[])));
        });
        pages.push(page);
      }
      return pages;
    }
    case 'count': {
      const r = await registry(c.cs).createQuery(str(a0)).next();
      return r.result as unknown;
    }
    case 'addDevices':
      return plain((await registry(c.cs).addDevices(a0 as Devs)).responseBody);
    case 'updateDevices':
      return plain((await registry(c.cs).updateDevices(a0 as Devs, Boolean(a1))).responseBody);
    case 'removeDevices':
      return plain((await registry(c.cs).removeDevices(a0 as Devs, Boolean(a1))).responseBody);
    case 'stats':
      return plain((await registry(c.cs).getRegistryStatistics()).responseBody);
    case 'invoke':
      return plain((await client(c.cs).invokeDeviceMethod(str(a0), a1 as DeviceMethodParams)).result);
    default:
      throw new Error(`unknown op ${c.op}`);
  }
}

function describeError(e: unknown): unknown {
  const err = e as { name?: unknown; message?: unknown; constructor?: { name?: unknown }; response?: { statusCode?: unknown }; responseBody?: unknown };
  return {
    name: String(err?.name),
    ctor: String(err?.constructor?.name),
    message: String(err?.message),
    statusCode: typeof err?.response?.statusCode === 'number' ? err.response.statusCode : null,
    responseBody: typeof err?.responseBody === 'string' ? err.responseBody : null,
  };
}

process.on('message', (msg: Call) => {
  const t0 = Date.now();
  run(msg).then(
    (value) => process.send?.({ id: msg.id, ok: true, value, ms: Date.now() - t0 }),
    (e: unknown) => process.send?.({ id: msg.id, ok: false, error: describeError(e), ms: Date.now() - t0 }),
  );
});
process.on('uncaughtException', (e) => {
  process.send?.({ fatal: describeError(e) });
});
process.on('disconnect', () => process.exit(0));
process.send?.({ ready: true });
