import { buildSas, deriveDeviceKey, strictEncode } from '../../packages/server/src/core/sas.ts';

/** Bench devices: ids `dev-<n>`, keys derived from one seed so the load process needs no key list. */
export const BENCH_HUB = 'bench-hub.local';
export const KEY_SEED = Buffer.alloc(32, 42).toString('base64');

export function deviceId(i: number): string {
  return `dev-${i}`;
}

export function deviceKey(id: string): string {
  return deriveDeviceKey(KEY_SEED, id);
}

export function deviceUsername(id: string): string {
  return `${BENCH_HUB}/${id}/?api-version=2021-04-12&DeviceClientType=homing-bench`;
}

export function devicePassword(id: string): string {
  return buildSas({ sr: strictEncode(`${BENCH_HUB}/devices/${id}`), keyBase64: deviceKey(id), expirySeconds: Math.floor(Date.now() / 1000) + 3600 });
}
