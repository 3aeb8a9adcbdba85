import { resolveCredential, splitHostPort, type DeviceCredential, type HubCredential, type TlsOptions } from '../credentials.ts';
import { resolveRuntime, type Runtime } from '../runtime.ts';
import { dpsSas } from '../sas.ts';

export const DEFAULT_DPS_API_VERSION = '2021-10-01';

/** Where and as whom a device talks to a DPS (or any DPS-compatible service). */
export interface DpsConnectionOptions {
  /** Host name or address, optionally with `:port` (e.g. `global.azure-devices-provisioning.net`, `127.0.0.1:8443`). */
  host: string;
  /** Port; default 443 over HTTPS, 8883 over MQTT. Any port works (unlike the official SDK's HTTPS transport). */
  port?: number;
  idScope: string;
  registrationId: string;
  credential: DeviceCredential;
  tls?: TlsOptions;
  /** Default `2021-10-01`. */
  apiVersion?: string;
  /** Bound on each single request (ms). Default 30 000. */
  requestTimeoutMs?: number;
  /** Lifetime of the SAS tokens sent to DPS (s). Default 3600. */
  tokenTtlSeconds?: number;
  runtime?: Partial<Runtime>;
}

/** The options with defaults applied and the device key derived (for group members). */
export interface ResolvedDpsConnection {
  host: string;
  port: number;
  idScope: string;
  registrationId: string;
  credential: HubCredential;
  tls: TlsOptions | undefined;
  apiVersion: string;
  requestTimeoutMs: number;
  tokenTtlSeconds: number;
  runtime: Runtime;
  /** The Authorization value for the next request, or undefined with X.509 (the certificate authenticates). */
  authorization(): string | undefined;
}

export function resolveDpsConnection(o: DpsConnectionOptions, defaultPort: number): ResolvedDpsConnection {
  if (!o.idScope) throw new TypeError('idScope is required');
  if (!o.registrationId) throw new TypeError('registrationId is required');
  const hp = splitHostPort(o.host);
  const runtime = resolveRuntime(o.runtime);
  const credential = resolveCredential(o.credential, o.registrationId);
  const tokenTtlSeconds = o.tokenTtlSeconds ?? 3600;
  return {
    host: hp.host,
    port: o.port ?? hp.port ?? defaultPort,
    idScope: o.idScope,
    registrationId: o.registrationId,
    credential,
    tls: o.tls,
    apiVersion: o.apiVersion ?? DEFAULT_DPS_API_VERSION,
    requestTimeoutMs: o.requestTimeoutMs ?? 30_000,
    tokenTtlSeconds,
    runtime,
    authorization: () =>
      credential.type === 'symmetricKey'
        ? dpsSas(o.idScope, o.registrationId, credential.key, Math.ceil(runtime.clock.now() / 1000) + tokenTtlSeconds)
        : undefined,
  };
}
