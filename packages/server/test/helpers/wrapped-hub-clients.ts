import type { HubClient, HubClientFactory } from '../../src/provisioning/hub-client.ts';

/** The HubClient calls a test can hook (all but `hubName` and `close`). */
export type HubClientCall = Exclude<keyof HubClient, 'hubName' | 'close'>;

/**
 * Optional hooks, one per HubClient call: a hook gets the real client of the hub and the call's arguments and answers
 * instead of it (it may wait, count, fail, or pass the call on to the client).
 */
export type HubClientHooks = {
  [K in HubClientCall]?: (client: HubClient, ...args: Parameters<HubClient[K]>) => ReturnType<HubClient[K]>;
};

/** A hub client factory that passes every call on to `inner`'s clients, except those `hooks` answer. */
export function wrapHubClients(inner: HubClientFactory, hooks: HubClientHooks): HubClientFactory {
  return {
    forHub(hub) {
      const c = inner.forHub(hub);
      const wrapped: HubClient = {
        hubName: c.hubName,
        getDevice: (id) => (hooks.getDevice ? hooks.getDevice(c, id) : c.getDevice(id)),
        provisionDevice: (req) => (hooks.provisionDevice ? hooks.provisionDevice(c, req) : c.provisionDevice(req)),
        patchTwin: (id, twin, etag) => (hooks.patchTwin ? hooks.patchTwin(c, id, twin, etag) : c.patchTwin(id, twin, etag)),
        getDeviceState: (id) => (hooks.getDeviceState ? hooks.getDeviceState(c, id) : c.getDeviceState(id)),
        importDeviceState: (req) => (hooks.importDeviceState ? hooks.importDeviceState(c, req) : c.importDeviceState(req)),
        setDeviceStatus: (id, st) => (hooks.setDeviceStatus ? hooks.setDeviceStatus(c, id, st) : c.setDeviceStatus(id, st)),
        deleteDevice: (id, etag) => (hooks.deleteDevice ? hooks.deleteDevice(c, id, etag) : c.deleteDevice(id, etag)),
        close: () => c.close(),
      };
      return wrapped;
    },
    close: () => inner.close(),
  };
}

/** A gate: a promise and the function that opens it. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open: () => void = () => undefined;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** Hub clients whose device writes (provisionDevice) wait for `open()`; `writes()` counts the writes started. */
export function gatedHubClients(inner: HubClientFactory): { factory: HubClientFactory; open: () => void; writes: () => number } {
  const g = gate();
  let writes = 0;
  return {
    open: g.open,
    writes: () => writes,
    factory: wrapHubClients(inner, {
      provisionDevice: async (c, req) => {
        writes++;
        await g.promise;
        return c.provisionDevice(req);
      },
    }),
  };
}
