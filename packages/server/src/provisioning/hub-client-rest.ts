import { Agent, request } from 'node:https';
import { isIP } from 'node:net';
import { rootCertificates } from 'node:tls';
import type { Clock } from '../core/clock.ts';
import { isPlainObject, tryParseJson, type JsonObject, type JsonValue } from '../core/json.ts';
import { buildSas, parseConnectionString } from '../core/sas.ts';
import type { Logger } from '../observability/logger.ts';
import { importBody } from './hub-client-inprocess.ts';
import type { LinkedHub } from './model.ts';
import {
  hubFail,
  hubOk,
  type HubClient,
  type HubClientFactory,
  type HubDevice,
  type HubDeviceState,
  type HubFailure,
  type HubResult,
  type HubTwinState,
  type ImportDeviceRequest,
  type InitialTwinContent,
  type ProvisionDeviceRequest,
  type ProvisionDeviceResult,
} from './hub-client.ts';

/**
 * HubClient over the IoT Hub service REST API (protocol-service.md §4.1, api-version 2021-04-12), authenticated
 * with a policy SAS built from the linked hub's connection string. Works with our hubs and with anything
 * compatible. One keep-alive agent per factory; every request has a deadline.
 */
export const HUB_API_VERSION = '2021-04-12';

export interface RestHubClientOptions {
  clock: Clock;
  /** TCP port of the hubs' service API (default 443: what Azure and our hubs listen on). */
  port?: number;
  /** Extra trusted CA certificates (PEM), for dev hubs with a private CA. */
  ca?: string | Buffer | readonly (string | Buffer)[];
  /** Address to dial for a hub host name (default: the host name itself). Dev: a loopback address. */
  resolveAddress?: (hostName: string) => string;
  /** Per-request deadline, ms (default 10 s). */
  timeoutMs?: number;
  /** Keep-alive sockets per hub (default 16). */
  maxSockets?: number;
  /** SAS token lifetime, seconds (default 3600); tokens are reused until 5 minutes before they expire. */
  tokenLifetimeSeconds?: number;
  /** Where partial imports on hubs without Homing's import route are reported (warn). */
  logger?: Logger;
}

/** What the standard IoT Hub API cannot carry in an import (see `RestImportResult`). */
export type NotCarried = 'reported' | 'desiredVersion' | 'reportedVersion';

/**
 * The REST adapter's import result. On a hub without Homing's `PUT /homing/devices/{id}/state` (it answers 404 or
 * 405: Azure IoT Hub, another compatible hub), the identity is written and the twin's tags and desired properties
 * replaced through the standard API, which cannot write reported properties nor set section versions: `notCarried`
 * then lists what the hub does not hold as requested, and the import is logged as partial (warn). Absent or empty:
 * the whole state was installed.
 */
export interface RestImportResult extends ProvisionDeviceResult {
  notCarried?: NotCarried[];
}

interface HttpAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: JsonValue | undefined;
  text: string;
}

const MAX_RESPONSE_BYTES = 1024 * 1024;

export class RestHubClient implements HubClient {
  readonly hubName: string;
  private readonly host: string;
  private readonly keyName: string | undefined;
  private readonly key: string | undefined;
  private readonly agent: Agent;
  private readonly opts: RestHubClientOptions;
  private token: { value: string; refreshAtS: number } | undefined;

  constructor(linked: LinkedHub, agent: Agent, opts: RestHubClientOptions) {
    this.hubName = linked.name;
    const cs = parseConnectionString(linked.connectionString);
    this.host = cs.HostName ?? linked.name;
    this.keyName = cs.SharedAccessKeyName;
    this.key = cs.SharedAccessKey;
    this.agent = agent;
    this.opts = opts;
  }

  private authorization(): string | undefined {
    if (!this.key || !this.keyName) return undefined;
    const nowS = Math.floor(this.opts.clock.now() / 1000);
    if (this.token && nowS < this.token.refreshAtS) return this.token.value;
    const lifetime = this.opts.tokenLifetimeSeconds ?? 3600;
    const value = buildSas({ sr: this.host, keyBase64: this.key, keyName: this.keyName, expirySeconds: nowS + lifetime });
    this.token = { value, refreshAtS: nowS + Math.max(1, lifetime - 300) };
    return value;
  }

  private send(method: string, path: string, body?: JsonValue, ifMatch?: string): Promise<HttpAnswer | HubFailure> {
    const auth = this.authorization();
    if (auth === undefined) {
      return Promise.resolve(failureOf(this.hubName, 401, undefined, 'the linked hub connection string has no shared access key'));
    }
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { authorization: auth, 'user-agent': 'homing-provisioning' };
    if (payload) {
      headers['content-type'] = 'application/json; charset=utf-8';
      headers['content-length'] = String(payload.length);
    }
    if (ifMatch !== undefined) headers['if-match'] = ifMatch === '*' ? '"*"' : `"${ifMatch}"`;
    const address = this.opts.resolveAddress ? this.opts.resolveAddress(this.host) : this.host;
    const timeoutMs = this.opts.timeoutMs ?? 10_000;
    return new Promise((resolve) => {
      let settled = false;
      const done = (v: HttpAnswer | HubFailure) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(v);
      };
      const req = request(
        {
          host: address,
          port: this.opts.port ?? 443,
          method,
          path: `${path}?api-version=${HUB_API_VERSION}`,
          headers: { ...headers, host: this.host },
          agent: this.agent,
          // SNI and the certificate check use the hub host name, whatever address we dial.
          servername: isIP(this.host) ? '' : this.host,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_RESPONSE_BYTES) {
              req.destroy();
              done({ kind: 'protocol', status: res.statusCode, message: `IoT hub ${this.hubName} sent a response larger than ${MAX_RESPONSE_BYTES} bytes.` });
              return;
            }
            chunks.push(c);
          });
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const parsed = text.length > 0 ? tryParseJson(text) : undefined;
            done({ status: res.statusCode ?? 0, headers: res.headers, body: parsed?.ok ? parsed.value : undefined, text });
          });
          res.on('error', (err: Error) => done(networkFailure(this.hubName, err)));
        },
      );
      const timer = setTimeout(() => {
        req.destroy();
        done({ kind: 'timeout', message: `IoT hub ${this.hubName} did not answer ${method} within ${timeoutMs} ms.` });
      }, timeoutMs);
      req.on('error', (err: Error) => done(networkFailure(this.hubName, err)));
      req.end(payload);
    });
  }

  private devicePath(deviceId: string): string {
    return `/devices/${encodeURIComponent(deviceId)}`;
  }

  private twinPath(deviceId: string): string {
    return `/twins/${encodeURIComponent(deviceId)}`;
  }

  async getDevice(deviceId: string): Promise<HubResult<HubDevice | undefined>> {
    const r = await this.send('GET', this.devicePath(deviceId));
    if (!isAnswer(r)) return hubFail(r);
    if (r.status === 404) return hubOk(undefined);
    if (r.status !== 200) return hubFail(answerFailure(this.hubName, r));
    const d = parseDevice(r.body);
    return d ? hubOk(d) : hubFail(this.protocol('a device'));
  }

  async provisionDevice(req: ProvisionDeviceRequest): Promise<HubResult<ProvisionDeviceResult>> {
    for (let attempt = 0; attempt < 4; attempt++) {
      const existing: HubResult<JsonObject | undefined> = attempt === 0 && req.likelyNew === true ? hubOk(undefined) : await this.getRawDevice(req.deviceId);
      if (!existing.ok) return existing;
      const prev = existing.value;
      if (prev === undefined) {
        const r = await this.send('PUT', this.devicePath(req.deviceId), deviceBody(req, 'enabled', null));
        if (!isAnswer(r)) return hubFail(r);
        if (r.status === 409 || r.status === 412) continue; // created concurrently: update it
        if (r.status !== 200 && r.status !== 201) return hubFail(answerFailure(this.hubName, r));
        const d = parseDevice(r.body);
        if (!d) return hubFail(this.protocol('a device'));
        if (req.initialTwin && hasTwinContent(req.initialTwin)) {
          const t = await this.patchTwin(req.deviceId, req.initialTwin);
          if (!t.ok) return t;
        }
        return hubOk({ created: true, device: d });
      }
      const device = parseDevice(prev);
      if (!device) return hubFail(this.protocol('a device'));
      if (sameIdentity(prev, req)) return hubOk({ created: false, device });
      const status = device.status;
      const statusReason = typeof prev.statusReason === 'string' ? prev.statusReason : null;
      const r = await this.send('PUT', this.devicePath(req.deviceId), { ...deviceBody(req, status, statusReason), etag: device.etag }, device.etag);
      if (!isAnswer(r)) return hubFail(r);
      if (r.status === 412 || r.status === 404) continue; // changed or deleted concurrently
      if (r.status !== 200) return hubFail(answerFailure(this.hubName, r));
      const d = parseDevice(r.body);
      return d ? hubOk({ created: false, device: d }) : hubFail(this.protocol('a device'));
    }
    return hubFail({ kind: 'conflict', message: `IoT hub ${this.hubName}: device ${req.deviceId} kept changing concurrently.` });
  }

  private async getRawDevice(deviceId: string): Promise<HubResult<JsonObject | undefined>> {
    const r = await this.send('GET', this.devicePath(deviceId));
    if (!isAnswer(r)) return hubFail(r);
    if (r.status === 404) return hubOk(undefined);
    if (r.status !== 200 || !isPlainObject(r.body)) return hubFail(r.status === 200 ? this.protocol('a device') : answerFailure(this.hubName, r));
    return hubOk(r.body);
  }

  async patchTwin(deviceId: string, twin: InitialTwinContent, etag?: string): Promise<HubResult<HubTwinState>> {
    const body: JsonObject = {};
    if (twin.tags !== undefined) body.tags = twin.tags;
    if (twin.desired !== undefined) body.properties = { desired: twin.desired };
    const r = await this.send('PATCH', this.twinPath(deviceId), body, etag ?? '*');
    if (!isAnswer(r)) return hubFail(r);
    if (r.status !== 200) return hubFail(answerFailure(this.hubName, r));
    const t = parseTwin(r.body);
    return t ? hubOk(t) : hubFail(this.protocol('a twin'));
  }

  async getDeviceState(deviceId: string): Promise<HubResult<HubDeviceState | undefined>> {
    const d = await this.getDevice(deviceId);
    if (!d.ok || d.value === undefined) return d.ok ? hubOk(undefined) : d;
    const r = await this.send('GET', this.twinPath(deviceId));
    if (!isAnswer(r)) return hubFail(r);
    if (r.status === 404) return hubOk(undefined);
    if (r.status !== 200) return hubFail(answerFailure(this.hubName, r));
    const t = parseTwin(r.body);
    return t ? hubOk({ device: d.value, twin: t }) : hubFail(this.protocol('a twin'));
  }

  async importDeviceState(req: ImportDeviceRequest): Promise<HubResult<RestImportResult>> {
    const r = await this.send('PUT', `/homing${this.devicePath(req.deviceId)}/state`, importBody(req));
    if (!isAnswer(r)) return hubFail(r);
    // Not a Homing hub (no such route): the standard API, carrying what it can.
    if (r.status === 404 || r.status === 405) return this.importWithStandardApi(req);
    if (r.status !== 200 && r.status !== 201) return hubFail(answerFailure(this.hubName, r));
    const d = isPlainObject(r.body) ? parseDevice(r.body.device) : undefined;
    if (!d || !isPlainObject(r.body)) return hubFail(this.protocol('an imported device state'));
    return hubOk({ created: r.body.created === true, device: d });
  }

  /** Identity (status enabled) through PUT /devices, then tags and desired through PUT /twins (replace). */
  private async importWithStandardApi(req: ImportDeviceRequest): Promise<HubResult<RestImportResult>> {
    let written: { created: boolean; device: HubDevice } | undefined;
    for (let attempt = 0; attempt < 4 && written === undefined; attempt++) {
      const existing = await this.getRawDevice(req.deviceId);
      if (!existing.ok) return existing;
      const prev = existing.value;
      const body = deviceBody(req, 'enabled', null);
      if (prev !== undefined) {
        const device = parseDevice(prev);
        if (!device) return hubFail(this.protocol('a device'));
        if (sameIdentity(prev, req) && device.status === 'enabled') {
          written = { created: false, device };
          break;
        }
        const put = await this.send('PUT', this.devicePath(req.deviceId), { ...body, etag: device.etag }, device.etag);
        if (!isAnswer(put)) return hubFail(put);
        if (put.status === 412 || put.status === 404) continue; // changed or deleted concurrently
        if (put.status !== 200) return hubFail(answerFailure(this.hubName, put));
        const d = parseDevice(put.body);
        if (!d) return hubFail(this.protocol('a device'));
        written = { created: false, device: d };
      } else {
        const put = await this.send('PUT', this.devicePath(req.deviceId), body);
        if (!isAnswer(put)) return hubFail(put);
        if (put.status === 409 || put.status === 412) continue; // created concurrently: replace it
        if (put.status !== 200 && put.status !== 201) return hubFail(answerFailure(this.hubName, put));
        const d = parseDevice(put.body);
        if (!d) return hubFail(this.protocol('a device'));
        written = { created: true, device: d };
      }
    }
    if (written === undefined) return hubFail({ kind: 'conflict', message: `IoT hub ${this.hubName}: device ${req.deviceId} kept changing concurrently.` });
    const t = await this.send('PUT', this.twinPath(req.deviceId), { deviceId: req.deviceId, tags: req.twin.tags, properties: { desired: req.twin.desired } }, '*');
    if (!isAnswer(t)) return hubFail(t);
    if (t.status !== 200) return hubFail(answerFailure(this.hubName, t));
    const twin = parseTwin(t.body);
    if (!twin) return hubFail(this.protocol('a twin'));
    const notCarried: NotCarried[] = [];
    if (!jsonEqual(twin.reported, req.twin.reported)) notCarried.push('reported');
    if (twin.desiredVersion !== req.twin.desiredVersion) notCarried.push('desiredVersion');
    if (twin.reportedVersion !== req.twin.reportedVersion) notCarried.push('reportedVersion');
    if (notCarried.length > 0) {
      this.opts.logger?.warn(
        { hub: this.hubName, deviceId: req.deviceId, notCarried },
        'partial device state import: the hub has no Homing import route; identity, tags and desired properties written, the rest not carried',
      );
    }
    return hubOk({ ...written, notCarried });
  }

  async setDeviceStatus(deviceId: string, status: 'enabled' | 'disabled'): Promise<HubResult<boolean>> {
    for (let attempt = 0; attempt < 4; attempt++) {
      const existing = await this.getRawDevice(deviceId);
      if (!existing.ok) return existing;
      const prev = existing.value;
      if (prev === undefined) return hubOk(false);
      const device = parseDevice(prev);
      if (!device) return hubFail(this.protocol('a device'));
      if (device.status === status) return hubOk(true);
      const r = await this.send('PUT', this.devicePath(deviceId), { ...prev, status }, device.etag);
      if (!isAnswer(r)) return hubFail(r);
      if (r.status === 412 || r.status === 404) continue; // changed or deleted concurrently: read again
      if (r.status !== 200) return hubFail(answerFailure(this.hubName, r));
      return hubOk(true);
    }
    return hubFail({ kind: 'conflict', message: `IoT hub ${this.hubName}: device ${deviceId} kept changing concurrently.` });
  }

  async deleteDevice(deviceId: string, etag?: string): Promise<HubResult<boolean>> {
    const r = await this.send('DELETE', this.devicePath(deviceId), undefined, etag ?? '*');
    if (!isAnswer(r)) return hubFail(r);
    if (r.status === 404) return hubOk(false);
    if (r.status !== 200 && r.status !== 204) return hubFail(answerFailure(this.hubName, r));
    return hubOk(true);
  }

  close(): void {
    // The agent belongs to the factory.
  }

  private protocol(what: string): HubFailure {
    return { kind: 'protocol', message: `IoT hub ${this.hubName} did not answer with ${what}.` };
  }
}

function isAnswer(r: HttpAnswer | HubFailure): r is HttpAnswer {
  return 'status' in r && 'text' in r;
}

function hasTwinContent(t: InitialTwinContent): boolean {
  return (t.tags !== undefined && Object.keys(t.tags).length > 0) || (t.desired !== undefined && Object.keys(t.desired).length > 0);
}

/** The hub's error code from a classic body (`ErrorCode:<Code>;text`) or a DPS-style one. */
function hubErrorCode(body: JsonValue | undefined, headers: HttpAnswer['headers']): string | undefined {
  const h = headers['iothub-errorcode'];
  if (typeof h === 'string' && h.length > 0) return h;
  if (isPlainObject(body)) {
    const m = body.Message ?? body.message;
    if (typeof m === 'string') {
      const match = /ErrorCode:([A-Za-z0-9]+)/.exec(m);
      if (match?.[1]) return match[1];
    }
    if (typeof body.errorCode === 'number' || typeof body.errorCode === 'string') return String(body.errorCode);
  }
  return undefined;
}

function answerFailure(hubName: string, r: HttpAnswer): HubFailure {
  return failureOf(hubName, r.status, hubErrorCode(r.body, r.headers));
}

function failureOf(hubName: string, status: number, code: string | undefined, detail?: string): HubFailure {
  const codePart = code ? ` ErrorCode:${code}` : '';
  if (status === 401 || status === 403) {
    return {
      kind: 'unauthorized',
      status,
      hubErrorCode: code ?? 'IotHubUnauthorizedAccess',
      message: `IoT hub ${hubName} refused the linked hub credential (HTTP ${status}${codePart}${detail ? `; ${detail}` : ''}); update the linked hub's connection string.`,
    };
  }
  const f = (kind: HubFailure['kind'], what: string): HubFailure => ({
    kind,
    status,
    ...(code ? { hubErrorCode: code } : {}),
    message: `IoT hub ${hubName} ${what} (HTTP ${status}${codePart}).`,
  });
  if (status === 409 || status === 412) return f('conflict', 'reported a conflict');
  if (status === 429 || status >= 500) return f('unavailable', 'is unavailable');
  if (status >= 400) return f('rejected', 'rejected the request');
  return f('protocol', 'answered unexpectedly');
}

function networkFailure(hubName: string, err: Error): HubFailure {
  const code = (err as NodeJS.ErrnoException).code;
  return { kind: 'unavailable', message: `IoT hub ${hubName} is unreachable (${code ?? err.message}).` };
}

/** Deep equality of JSON values, object key order ignored. */
function jsonEqual(a: JsonValue | undefined, b: JsonValue | undefined): boolean {
  if (a === b) return true;
  if (isPlainObject(a) && isPlainObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && jsonEqual(a[k], b[k]));
  }
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  return false;
}

function deviceBody(req: Pick<ProvisionDeviceRequest, 'deviceId' | 'credentials' | 'capabilities'>, status: 'enabled' | 'disabled', statusReason: string | null): JsonObject {
  const c = req.credentials;
  const authentication: JsonObject =
    c.type === 'sas'
      ? { type: 'sas', symmetricKey: { primaryKey: c.primaryKey, secondaryKey: c.secondaryKey } }
      : { type: 'selfSigned', x509Thumbprint: { primaryThumbprint: c.primaryThumbprint, secondaryThumbprint: c.secondaryThumbprint } };
  return { deviceId: req.deviceId, status, statusReason, authentication, capabilities: { iotEdge: req.capabilities.iotEdge } };
}

function sameIdentity(d: JsonObject, req: Pick<ProvisionDeviceRequest, 'credentials' | 'capabilities'>): boolean {
  const caps = isPlainObject(d.capabilities) ? d.capabilities : {};
  if ((caps.iotEdge === true) !== req.capabilities.iotEdge) return false;
  const auth = isPlainObject(d.authentication) ? d.authentication : {};
  const c = req.credentials;
  if (c.type === 'sas') {
    const sk = isPlainObject(auth.symmetricKey) ? auth.symmetricKey : {};
    return auth.type === 'sas' && sk.primaryKey === c.primaryKey && sk.secondaryKey === c.secondaryKey;
  }
  const tp = isPlainObject(auth.x509Thumbprint) ? auth.x509Thumbprint : {};
  const eq = (a: JsonValue | undefined, b: string) => typeof a === 'string' && a.toUpperCase() === b.toUpperCase();
  return auth.type === 'selfSigned' && eq(tp.primaryThumbprint, c.primaryThumbprint) && eq(tp.secondaryThumbprint, c.secondaryThumbprint);
}

const AUTH_TYPES = ['sas', 'selfSigned', 'certificateAuthority', 'none'] as const;

function parseDevice(body: JsonValue | undefined): HubDevice | undefined {
  if (!isPlainObject(body) || typeof body.deviceId !== 'string') return undefined;
  const auth = isPlainObject(body.authentication) ? body.authentication : {};
  const type = AUTH_TYPES.find((t) => t === auth.type) ?? 'sas';
  const caps = isPlainObject(body.capabilities) ? body.capabilities : {};
  return {
    deviceId: body.deviceId,
    etag: typeof body.etag === 'string' ? body.etag : '',
    status: body.status === 'disabled' ? 'disabled' : 'enabled',
    authenticationType: type,
    capabilities: { iotEdge: caps.iotEdge === true },
  };
}

function section(v: JsonValue | undefined): { props: JsonObject; version: number } {
  if (!isPlainObject(v)) return { props: {}, version: 0 };
  const { $version, $metadata: _m, ...props } = v;
  return { props, version: typeof $version === 'number' ? $version : 0 };
}

function parseTwin(body: JsonValue | undefined): HubTwinState | undefined {
  if (!isPlainObject(body) || typeof body.deviceId !== 'string') return undefined;
  const props = isPlainObject(body.properties) ? body.properties : {};
  const desired = section(props.desired);
  const reported = section(props.reported);
  return {
    etag: typeof body.etag === 'string' ? body.etag : '',
    tags: isPlainObject(body.tags) ? body.tags : {},
    desired: desired.props,
    reported: reported.props,
    desiredVersion: desired.version,
    reportedVersion: reported.version,
  };
}

/**
 * Clients for remote hubs. Clients are cached per hub and rebuilt when the linked hub's connection string changes
 * (a rotated key takes effect at once).
 */
export class RestHubClientFactory implements HubClientFactory {
  private readonly agent: Agent;
  private readonly opts: RestHubClientOptions;
  private readonly clients = new Map<string, { cs: string; client: RestHubClient }>();

  constructor(opts: RestHubClientOptions) {
    this.opts = opts;
    // Extra CAs are added to the default roots, not put in their place.
    const extra = opts.ca === undefined ? [] : Array.isArray(opts.ca) ? [...(opts.ca as readonly (string | Buffer)[])] : [opts.ca as string | Buffer];
    const ca = extra.length === 0 ? undefined : [...rootCertificates, ...extra];
    this.agent = new Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 16, ...(ca === undefined ? {} : { ca }) });
  }

  forHub(linked: LinkedHub): HubClient {
    const key = linked.name.toLowerCase();
    const cached = this.clients.get(key);
    if (cached && cached.cs === linked.connectionString) return cached.client;
    const client = new RestHubClient(linked, this.agent, this.opts);
    this.clients.set(key, { cs: linked.connectionString, client });
    return client;
  }

  close(): void {
    this.clients.clear();
    this.agent.destroy();
  }
}
