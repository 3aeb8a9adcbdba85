import { createHash, type X509Certificate } from 'node:crypto';
import { HomingError } from '../core/errors.ts';
import { isoTime, NEVER, type Clock, type IdSource } from '../core/clock.ts';
import { isPlainObject, mergePatch, type JsonObject, type JsonValue } from '../core/json.ts';
import { parseSas, sasSignatureMatches } from '../core/sas.ts';
import { authorizePolicySas, SAS_SKEW_SECONDS, stripPort, type HubRight, type SharedAccessPolicy } from '../core/policies.ts';
import { applyTwinPatch, newTwin, twinEtag, TWIN_SECTION_MAX_BYTES, validateTwinPatch, type TwinPatch } from '../core/twin.ts';
import type { HubStore, TwinRow, ConnectionUpdate } from '../store/ports.ts';
import type { DeviceIdentity, MetadataNode, PropertySection, TwinState } from './model.ts';
import { parseDeviceInput, validateDeviceId, type DeviceInput } from './device-input.ts';
import type { DeviceConnection } from './sessions.ts';
import { SessionRegistry } from './sessions.ts';
import { TelemetryFeed, type TelemetryMessage } from './telemetry.ts';

export interface HubServiceOptions {
  /** The hub's id: its host name, as devices and DPS name it. */
  hubId: string;
  /** Every name the hub answers to (host name, host:port, address). Used to check the sr of tokens. */
  hostNames: readonly string[];
  policies: readonly SharedAccessPolicy<HubRight>[];
  store: HubStore;
  clock: Clock;
  ids: IdSource;
  /** Upper bound on a direct method response timeout, seconds (IoT Hub: 300). */
  maxMethodTimeoutSeconds?: number;
}

/** What `importDevice` did. */
export interface ImportedDevice {
  /** The device did not exist before. */
  created: boolean;
  /** Something was written (false: the hub already held exactly this state, nothing changed). */
  changed: boolean;
  device: DeviceIdentity;
  twin: TwinState;
}

export interface MethodInvocation {
  methodName: string;
  payload: JsonValue;
  responseTimeoutInSeconds: number;
  connectTimeoutInSeconds: number;
}

export interface MethodResult {
  status: number;
  payload: JsonValue;
}

interface PendingMethod {
  deviceId: string;
  resolve: (r: MethodResult) => void;
  reject: (e: HomingError) => void;
  timer: NodeJS.Timeout;
}

const MAX_TWIN_RETRIES = 8;

/** Use cases of one hub: registry, twins, device authentication, direct methods and telemetry. */
export class HubService {
  readonly hubId: string;
  readonly sessions = new SessionRegistry();
  readonly telemetry = new TelemetryFeed();
  private readonly opts: HubServiceOptions;
  private readonly pendingMethods = new Map<string, PendingMethod>();
  private methodSeq = 0;
  private readonly activity = new Map<string, ConnectionUpdate>();

  constructor(opts: HubServiceOptions) {
    this.opts = opts;
    this.hubId = opts.hubId;
  }

  get hostNames(): readonly string[] {
    return this.opts.hostNames;
  }

  private nowIso(): string {
    return isoTime(this.opts.clock.now());
  }

  private newEtag(): string {
    return this.opts.ids.bytes(9).toString('base64');
  }

  private newKey(): string {
    return this.opts.ids.bytes(32).toString('base64');
  }

  private newGenerationId(): string {
    const n = this.opts.ids.bytes(8).readBigUInt64BE() % 10n ** 18n;
    return n.toString().padStart(18, '6');
  }

  // ---------------------------------------------------------------- service-side authorization

  /** Checks a service SAS (Authorization header value) for `right`. Throws 401. */
  authorizeService(authorization: string | undefined, right: HubRight): SharedAccessPolicy<HubRight> {
    const nowS = Math.floor(this.opts.clock.now() / 1000);
    return authorizePolicySas(parseSas(authorization), this.opts.policies, this.opts.hostNames, nowS, right);
  }

  // ---------------------------------------------------------------- registry

  private buildDevice(input: DeviceInput, prev: DeviceIdentity | undefined): DeviceIdentity {
    const now = this.nowIso();
    const auth = structuredClone(input.authentication);
    if (auth.type === 'sas') {
      auth.symmetricKey.primaryKey ??= this.newKey();
      auth.symmetricKey.secondaryKey ??= this.newKey();
    }
    return {
      deviceId: input.deviceId,
      generationId: prev?.generationId ?? this.newGenerationId(),
      etag: this.newEtag(),
      status: input.status,
      statusReason: input.statusReason,
      statusUpdatedTime: prev && prev.status === input.status ? prev.statusUpdatedTime : now,
      authentication: auth,
      capabilities: input.capabilities,
      connectionState: prev?.connectionState ?? 'Disconnected',
      connectionStateUpdatedTime: prev?.connectionStateUpdatedTime ?? NEVER,
      lastActivityTime: prev?.lastActivityTime ?? NEVER,
      cloudToDeviceMessageCount: prev?.cloudToDeviceMessageCount ?? 0,
    };
  }

  /** Creates a device (PUT without If-Match). Empty SAS keys are generated. 409 when it exists. */
  async createDevice(body: JsonValue, pathDeviceId: string, initialTwin?: { tags?: JsonObject; desired?: JsonObject }): Promise<DeviceIdentity> {
    const input = parseDeviceInput(body, pathDeviceId);
    const device = this.buildDevice(input, undefined);
    const twin = newTwin(device.deviceId, this.nowIso(), initialTwin);
    const created = await this.opts.store.createDevice(this.hubId, device, twin);
    if (!created) throw new HomingError('DeviceAlreadyExists', `A device with id ${device.deviceId} already exists.`);
    return device;
  }

  /** Replaces a device (PUT with If-Match). 404 when missing, 412 on a stale etag. */
  async updateDevice(body: JsonValue, pathDeviceId: string, ifMatch: string): Promise<DeviceIdentity> {
    const input = parseDeviceInput(body, pathDeviceId);
    const expected = normalizeEtag(ifMatch);
    for (let i = 0; i < MAX_TWIN_RETRIES; i++) {
      const prev = await this.opts.store.getDevice(this.hubId, input.deviceId);
      if (!prev) throw deviceNotFound(input.deviceId);
      if (expected !== '*' && expected !== prev.etag) throw new HomingError('PreconditionFailed', 'The etag does not match the device.');
      // Keys left empty on update keep their current values, as the hub does.
      if (input.authentication.type === 'sas' && prev.authentication.type === 'sas') {
        input.authentication.symmetricKey.primaryKey ??= prev.authentication.symmetricKey.primaryKey;
        input.authentication.symmetricKey.secondaryKey ??= prev.authentication.symmetricKey.secondaryKey;
      }
      const next = this.buildDevice(input, prev);
      const r = await this.opts.store.replaceDevice(this.hubId, next, prev.etag);
      if (r === 'ok') {
        if (next.status === 'disabled') this.disconnect(next.deviceId, 'device disabled');
        else if (credentialsChanged(prev, next)) this.disconnect(next.deviceId, 'device credentials changed');
        return next;
      }
      if (r === 'not-found') throw deviceNotFound(input.deviceId);
    }
    throw new HomingError('PreconditionFailed', 'The device changed concurrently; retry.');
  }

  /**
   * Installs a whole device state (Homing's `PUT /homing/devices/{id}/state`, the HubClient's importDeviceState):
   * creates the device or replaces an existing one with exactly this identity and twin. `body` is a Device JSON plus
   * `tags` and `properties.desired` / `properties.reported`, each section with its `$version` (default 1), which is
   * kept as given; `$metadata` is regenerated (every node updated now; desired leaves at the desired version).
   * Tags, desired and reported replace what the hub holds. SAS keys left empty keep the current ones (generated on
   * create), as on a device update.
   *
   * Idempotent: when the hub already holds exactly this state nothing is written (same etags). A write to an existing
   * device closes its live connection: its credentials or its twin changed under it.
   */
  async importDevice(body: JsonValue, pathDeviceId: string, opts: { likelyNew?: boolean } = {}): Promise<ImportedDevice> {
    const input = parseDeviceInput(body, pathDeviceId);
    const content = parseImportedTwin(body);
    const minTwinVersion = Math.max(1, content.desiredVersion + content.reportedVersion - 1);
    if (opts.likelyNew) {
      // The device is probably not here (a migration's target): try the insert first and skip the reads.
      const device = this.buildDevice(input, undefined);
      const twin = importedTwin(input.deviceId, content, minTwinVersion, this.nowIso());
      if ((await this.opts.store.writeDeviceState(this.hubId, device, twin)) === 'ok') return { created: true, changed: true, device, twin };
    }
    for (let i = 0; i < MAX_TWIN_RETRIES; i++) {
      const [prev, prevTwin] = await Promise.all([this.opts.store.getDevice(this.hubId, input.deviceId), this.opts.store.getTwin(this.hubId, input.deviceId)]);
      if (!prev || !prevTwin) {
        const device = this.buildDevice(input, undefined);
        const twin = importedTwin(input.deviceId, content, minTwinVersion, this.nowIso());
        const r = await this.opts.store.writeDeviceState(this.hubId, device, twin);
        if (r === 'ok') return { created: true, changed: true, device, twin };
        continue; // created concurrently: replace it
      }
      if (input.authentication.type === 'sas' && prev.authentication.type === 'sas') {
        input.authentication.symmetricKey.primaryKey ??= prev.authentication.symmetricKey.primaryKey;
        input.authentication.symmetricKey.secondaryKey ??= prev.authentication.symmetricKey.secondaryKey;
      }
      const next = this.buildDevice(input, prev);
      if (sameIdentityFields(prev, next) && sameTwinContent(prevTwin, content)) {
        return { created: false, changed: false, device: this.withLiveState(prev), twin: prevTwin };
      }
      const twin = importedTwin(input.deviceId, content, Math.max(prevTwin.version + 1, minTwinVersion), this.nowIso());
      const r = await this.opts.store.writeDeviceState(this.hubId, next, twin, { deviceEtag: prev.etag, twinVersion: prevTwin.version });
      if (r === 'ok') {
        this.disconnect(next.deviceId, next.status === 'disabled' ? 'device disabled' : 'device state replaced');
        return { created: false, changed: true, device: this.withLiveState(next), twin };
      }
      // 'precondition-failed' or 'not-found': changed or deleted concurrently; read again.
    }
    throw new HomingError('PreconditionFailed', 'The device changed concurrently; retry.');
  }

  /**
   * Enables or disables a device, keeping everything else; disabling closes its live connection. `undefined` when
   * the device does not exist. Setting the status it already has writes nothing.
   */
  async setDeviceStatus(deviceId: string, status: 'enabled' | 'disabled'): Promise<DeviceIdentity | undefined> {
    validateDeviceId(deviceId);
    for (let i = 0; i < MAX_TWIN_RETRIES; i++) {
      const prev = await this.opts.store.getDevice(this.hubId, deviceId);
      if (!prev) return undefined;
      if (prev.status === status) {
        if (status === 'disabled') this.disconnect(deviceId, 'device disabled');
        return this.withLiveState(prev);
      }
      const next: DeviceIdentity = { ...prev, etag: this.newEtag(), status, statusUpdatedTime: this.nowIso() };
      const r = await this.opts.store.replaceDevice(this.hubId, next, prev.etag);
      if (r === 'not-found') return undefined;
      if (r === 'ok') {
        if (status === 'disabled') this.disconnect(deviceId, 'device disabled');
        return this.withLiveState(next);
      }
    }
    throw new HomingError('PreconditionFailed', 'The device changed concurrently; retry.');
  }

  async getDevice(deviceId: string): Promise<DeviceIdentity> {
    validateDeviceId(deviceId);
    const d = await this.opts.store.getDevice(this.hubId, deviceId);
    if (!d) throw deviceNotFound(deviceId);
    return this.withLiveState(d);
  }

  async findDevice(deviceId: string): Promise<DeviceIdentity | undefined> {
    return this.opts.store.getDevice(this.hubId, deviceId);
  }

  /** Deletes a device and its twin, and closes its live connection. */
  async deleteDevice(deviceId: string, ifMatch: string | undefined): Promise<void> {
    validateDeviceId(deviceId);
    const r = await this.opts.store.deleteDevice(this.hubId, deviceId, ifMatch === undefined ? undefined : normalizeEtag(ifMatch));
    if (r === 'not-found') throw deviceNotFound(deviceId);
    if (r === 'precondition-failed') throw new HomingError('PreconditionFailed', 'The etag does not match the device.');
    this.telemetry.forget(deviceId);
    this.activity.delete(deviceId);
    this.disconnect(deviceId, 'device deleted');
  }

  async listDevices(limit: number, after?: string): Promise<{ devices: DeviceIdentity[]; next: string | undefined }> {
    const page = await this.opts.store.listDevices(this.hubId, { limit, ...(after === undefined ? {} : { after }) });
    return { devices: page.devices.map((d) => this.withLiveState(d)), next: page.next };
  }

  async statistics(): Promise<{ totalDeviceCount: number; enabledDeviceCount: number; disabledDeviceCount: number }> {
    const c = await this.opts.store.countDevices(this.hubId);
    return { totalDeviceCount: c.total, enabledDeviceCount: c.enabled, disabledDeviceCount: c.disabled };
  }

  private withLiveState(d: DeviceIdentity): DeviceIdentity {
    const live = this.sessions.get(d.deviceId);
    const act = this.activity.get(d.deviceId);
    return {
      ...d,
      connectionState: live ? 'Connected' : 'Disconnected',
      connectionStateUpdatedTime: act?.connectionStateUpdatedTime ?? d.connectionStateUpdatedTime,
      lastActivityTime: act?.lastActivityTime ?? d.lastActivityTime,
    };
  }

  private disconnect(deviceId: string, reason: string): void {
    const conn = this.sessions.get(deviceId);
    if (conn) {
      // Record the state now; the transport's own disconnected() call for this connection is then a no-op.
      this.disconnected(conn);
      conn.close(reason);
    }
  }

  // ---------------------------------------------------------------- twins

  async getTwinState(deviceId: string): Promise<{ device: DeviceIdentity; twin: TwinState }> {
    validateDeviceId(deviceId);
    const [device, twin] = await Promise.all([this.opts.store.getDevice(this.hubId, deviceId), this.opts.store.getTwin(this.hubId, deviceId)]);
    if (!device || !twin) throw deviceNotFound(deviceId);
    return { device: this.withLiveState(device), twin };
  }

  /**
   * Service-side twin update (PATCH /twins/{id}): merge patch on tags and desired properties. Delivers the desired
   * patch to the connected device. 412 on a stale If-Match.
   */
  async updateTwin(deviceId: string, body: JsonValue, ifMatch: string | undefined): Promise<{ device: DeviceIdentity; twin: TwinState }> {
    validateDeviceId(deviceId);
    if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The twin patch must be a JSON object.');
    const patch: TwinPatch = {};
    if (body.tags !== undefined && body.tags !== null) {
      if (!isPlainObject(body.tags)) throw new HomingError('ArgumentInvalid', 'tags must be an object.');
      patch.tags = body.tags;
    }
    if (body.properties !== undefined && body.properties !== null) {
      if (!isPlainObject(body.properties)) throw new HomingError('ArgumentInvalid', 'properties must be an object.');
      if (body.properties.reported !== undefined) throw new HomingError('ArgumentInvalid', 'Reported properties cannot be changed from the service side.');
      const desired = body.properties.desired;
      if (desired !== undefined && desired !== null) {
        if (!isPlainObject(desired)) throw new HomingError('ArgumentInvalid', 'properties.desired must be an object.');
        const { $metadata: _m, $version: _v, ...rest } = desired;
        patch.desired = rest;
      }
    }
    const expected = ifMatch === undefined ? '*' : normalizeEtag(ifMatch);
    const result = await this.changeTwin(deviceId, patch, expected);
    if (patch.desired !== undefined && Object.keys(patch.desired).length > 0) {
      const conn = this.sessions.get(deviceId);
      conn?.deliverDesiredPatch({ ...patch.desired, $version: result.twin.desired.version }, result.twin.desired.version);
    }
    const device = await this.opts.store.getDevice(this.hubId, deviceId);
    if (!device) throw deviceNotFound(deviceId);
    return { device: this.withLiveState(device), twin: result.twin };
  }

  /** Device-side reported patch. Returns the new reported version. */
  async patchReported(deviceId: string, patch: JsonValue): Promise<number> {
    if (!isPlainObject(patch)) throw new HomingError('InvalidJson', 'The reported properties patch must be a JSON object.');
    const r = await this.changeTwin(deviceId, { reported: patch }, '*');
    this.touch(deviceId);
    return r.twin.reported.version;
  }

  private async changeTwin(deviceId: string, patch: TwinPatch, expectedEtag: string): Promise<{ twin: TwinState }> {
    for (let i = 0; i < MAX_TWIN_RETRIES; i++) {
      const twin = await this.opts.store.getTwin(this.hubId, deviceId);
      if (!twin) throw deviceNotFound(deviceId);
      if (expectedEtag !== '*' && expectedEtag !== twin.etag) throw new HomingError('PreconditionFailed', 'The etag does not match the twin.');
      const next = applyTwinPatch(twin, patch, this.nowIso());
      const r = await this.opts.store.replaceTwin(this.hubId, next, twin.version);
      if (r === 'ok') return { twin: next };
      if (r === 'not-found') throw deviceNotFound(deviceId);
    }
    throw new HomingError('PreconditionFailed', 'The twin changed concurrently; retry.');
  }

  /**
   * Pages over twins for queries: scans in device-id order, applies `filter`, and stops when `pageSize` rows
   * matched or the scan budget ran out. `continuation` is opaque to callers.
   */
  async queryTwins(filter: (row: TwinRow) => boolean, pageSize: number, continuation?: string): Promise<{ rows: TwinRow[]; continuation: string | undefined }> {
    let after = continuation === undefined ? undefined : decodeContinuation(continuation);
    const rows: TwinRow[] = [];
    let scanned = 0;
    while (rows.length < pageSize && scanned < 10_000) {
      const batch = await this.opts.store.listTwins(this.hubId, { limit: 200, ...(after === undefined ? {} : { after }) });
      for (const row of batch.rows) {
        scanned++;
        after = row.device.deviceId;
        const live = { ...row, device: this.withLiveState(row.device) };
        if (filter(live)) rows.push(live);
        if (rows.length >= pageSize) break;
      }
      if (rows.length >= pageSize) {
        // More may follow unless this batch was the last one and we consumed all of it.
        const consumedAll = batch.next === undefined && after === batch.rows[batch.rows.length - 1]?.device.deviceId;
        return { rows, continuation: consumedAll ? undefined : encodeContinuation(after ?? '') };
      }
      if (batch.next === undefined) return { rows, continuation: undefined };
    }
    return { rows, continuation: after === undefined ? undefined : encodeContinuation(after) };
  }

  // ---------------------------------------------------------------- device side

  /**
   * Authenticates a device connection: a SAS password (device key, or a policy with DeviceConnect) or an X.509
   * client certificate whose thumbprint matches the identity. Disabled devices are refused. Throws 401.
   */
  async authenticateDevice(deviceId: string, cred: { password?: string; certificate?: X509Certificate }): Promise<DeviceIdentity> {
    const fail = () => new HomingError('IotHubUnauthorizedAccess', 'Unauthorized');
    try {
      validateDeviceId(deviceId);
    } catch {
      throw fail();
    }
    const device = await this.opts.store.getDevice(this.hubId, deviceId);
    if (!device || device.status !== 'enabled') throw fail();
    const nowS = Math.floor(this.opts.clock.now() / 1000);
    if (cred.password !== undefined) {
      const token = parseSas(cred.password);
      if (!token || token.se + SAS_SKEW_SECONDS < nowS) throw fail();
      if (token.skn !== undefined && token.skn !== '') {
        // A hub policy with DeviceConnect may sign for any device.
        authorizePolicySas(token, this.opts.policies, this.opts.hostNames, nowS, 'DeviceConnect');
        return device;
      }
      const sr = token.sr.toLowerCase();
      const sep = sr.indexOf('/devices/');
      const okResource = sep > 0 && sr.slice(sep) === `/devices/${deviceId.toLowerCase()}` && hostMatches(sr.slice(0, sep), this.opts.hostNames);
      if (!okResource || device.authentication.type !== 'sas') throw fail();
      const { primaryKey, secondaryKey } = device.authentication.symmetricKey;
      if (!sasSignatureMatches(token, [primaryKey, secondaryKey])) throw fail();
      return device;
    }
    if (cred.certificate !== undefined) {
      if (device.authentication.type !== 'selfSigned') throw fail();
      const cert = cred.certificate;
      const now = this.opts.clock.now();
      if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now) throw fail();
      const sha1 = cert.fingerprint.replace(/:/g, '').toUpperCase();
      const sha256 = cert.fingerprint256.replace(/:/g, '').toUpperCase();
      const { primaryThumbprint, secondaryThumbprint } = device.authentication.x509Thumbprint;
      const ok = [primaryThumbprint, secondaryThumbprint].some((t) => t !== null && (t === sha1 || t === sha256));
      if (!ok) throw fail();
      return device;
    }
    throw fail();
  }

  /** Registers a live connection (a second one for the same device takes over) and records the state. */
  connected(conn: DeviceConnection): void {
    const prev = this.sessions.attach(conn);
    if (prev) prev.close('another connection for this device took over');
    const now = this.nowIso();
    this.activity.set(conn.deviceId, { deviceId: conn.deviceId, connectionState: 'Connected', connectionStateUpdatedTime: now, lastActivityTime: now });
  }

  disconnected(conn: DeviceConnection): void {
    if (!this.sessions.detach(conn)) return;
    const now = this.nowIso();
    const prev = this.activity.get(conn.deviceId);
    this.activity.set(conn.deviceId, { deviceId: conn.deviceId, connectionState: 'Disconnected', connectionStateUpdatedTime: now, lastActivityTime: prev?.lastActivityTime ?? now });
    // The device cannot answer calls sent over the connection that just closed.
    this.failPendingMethods(conn.deviceId, new HomingError('DeviceNotOnline', `Device ${conn.deviceId} disconnected before answering.`));
  }

  private failPendingMethods(deviceId: string | undefined, err: HomingError): void {
    for (const [rid, p] of this.pendingMethods) {
      if (deviceId !== undefined && p.deviceId !== deviceId) continue;
      clearTimeout(p.timer);
      this.pendingMethods.delete(rid);
      p.reject(err);
    }
  }

  touch(deviceId: string): void {
    const prev = this.activity.get(deviceId);
    const now = this.nowIso();
    this.activity.set(deviceId, { ...(prev ?? { deviceId }), lastActivityTime: now });
  }

  /** Writes buffered connection state and last-activity times to the store. */
  async flushActivity(): Promise<void> {
    if (this.activity.size === 0) return;
    const updates = [...this.activity.values()];
    this.activity.clear();
    await this.opts.store.recordConnections(this.hubId, updates);
  }

  recordTelemetry(m: Omit<TelemetryMessage, 'hubId' | 'receivedAt'>): void {
    this.telemetry.record({ ...m, hubId: this.hubId, receivedAt: this.nowIso() });
    this.touch(m.deviceId);
  }

  // ---------------------------------------------------------------- direct methods

  /** Invokes a direct method: 404 DeviceNotFound, 404 DeviceNotOnline, or 504 GatewayTimeout. */
  async invokeMethod(deviceId: string, body: JsonValue): Promise<MethodResult> {
    validateDeviceId(deviceId);
    const inv = parseMethodInvocation(body, this.opts.maxMethodTimeoutSeconds ?? 300);
    const device = await this.opts.store.getDevice(this.hubId, deviceId);
    if (!device) throw deviceNotFound(deviceId);
    const online = await this.sessions.waitForMethods(deviceId, inv.connectTimeoutInSeconds * 1000);
    const conn = this.sessions.get(deviceId);
    if (!online || !conn || !conn.acceptsMethods) {
      throw new HomingError('DeviceNotOnline', `Device ${deviceId} is not connected or does not accept direct methods.`);
    }
    const rid = (++this.methodSeq).toString(16);
    return new Promise<MethodResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pendingMethods.delete(rid);
        reject(new HomingError('GatewayTimeout', `Device ${deviceId} did not answer method ${inv.methodName} within ${inv.responseTimeoutInSeconds} s.`));
      }, inv.responseTimeoutInSeconds * 1000);
      this.pendingMethods.set(rid, { deviceId, resolve, reject, timer });
      try {
        conn.sendMethodRequest(inv.methodName, rid, Buffer.from(JSON.stringify(inv.payload)));
      } catch {
        clearTimeout(timer);
        this.pendingMethods.delete(rid);
        reject(new HomingError('DeviceNotOnline', `Device ${deviceId} could not be reached.`));
      }
    });
  }

  /** A device answered a method request. Unknown or foreign request ids are ignored. */
  methodResponse(deviceId: string, rid: string, status: number, payload: Buffer): void {
    const p = this.pendingMethods.get(rid);
    if (!p || p.deviceId !== deviceId) return;
    this.pendingMethods.delete(rid);
    clearTimeout(p.timer);
    let value: JsonValue = null;
    if (payload.length > 0) {
      const text = payload.toString('utf8');
      try {
        value = JSON.parse(text) as JsonValue;
      } catch {
        value = text;
      }
    }
    p.resolve({ status, payload: value });
  }

  /** Stops timers; pending method calls fail with GatewayTimeout. */
  close(): void {
    this.failPendingMethods(undefined, new HomingError('GatewayTimeout', 'The hub is shutting down.'));
    for (const conn of [...this.sessions.all()]) {
      this.sessions.detach(conn);
      conn.close('server shutting down');
    }
  }
}

/** The twin content of an import: sections without `$version` / `$metadata`, and the versions to keep. */
interface ImportedTwinContent {
  tags: JsonObject;
  desired: JsonObject;
  reported: JsonObject;
  desiredVersion: number;
  reportedVersion: number;
}

/** Validates `tags` and `properties.desired` / `properties.reported` (with their `$version`) of an import body. */
export function parseImportedTwin(body: JsonValue): ImportedTwinContent {
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The device state must be a JSON object.');
  const sectionOf = (v: JsonValue | undefined, what: string, system: boolean): { props: JsonObject; version: number } => {
    if (v === undefined || v === null) return { props: {}, version: 1 };
    if (!isPlainObject(v)) throw new HomingError('ArgumentInvalid', `${what} must be an object.`);
    // Tags have no system keys: a `$` name there is refused by validateTwinPatch.
    let rest: JsonObject = v;
    let version: JsonValue = 1;
    if (system) {
      const { $version, $metadata: _m, ...props } = v;
      rest = props;
      version = $version ?? 1;
    }
    if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
      throw new HomingError('ArgumentInvalid', `${what}.$version must be an integer of at least 1.`);
    }
    validateTwinPatch(rest, what);
    // A whole document, not a patch: null values are dropped, as a merge patch onto nothing would.
    const props = mergePatch({}, rest);
    if (Buffer.byteLength(JSON.stringify(props)) > TWIN_SECTION_MAX_BYTES) throw new HomingError('TwinTooLarge', `${what} exceed ${TWIN_SECTION_MAX_BYTES} bytes.`);
    return { props, version };
  };
  const tags = sectionOf(body.tags, 'tags', false);
  const properties = body.properties;
  if (properties !== undefined && properties !== null && !isPlainObject(properties)) throw new HomingError('ArgumentInvalid', 'properties must be an object.');
  const desired = sectionOf(properties?.desired, 'properties.desired', true);
  const reported = sectionOf(properties?.reported, 'properties.reported', true);
  return { tags: tags.props, desired: desired.props, reported: reported.props, desiredVersion: desired.version, reportedVersion: reported.version };
}

/** `$metadata` for a whole section written now: every object level and leaf, desired ones with the version. */
function metadataFor(props: JsonObject, nowIso: string, version: number | undefined): MetadataNode {
  const node: MetadataNode = { $lastUpdated: nowIso };
  if (version !== undefined) node.$lastUpdatedVersion = version;
  for (const [k, v] of Object.entries(props)) {
    if (isPlainObject(v)) node[k] = metadataFor(v, nowIso, version);
    else {
      const leaf: MetadataNode = { $lastUpdated: nowIso };
      if (version !== undefined) leaf.$lastUpdatedVersion = version;
      node[k] = leaf;
    }
  }
  return node;
}

function importedTwin(deviceId: string, c: ImportedTwinContent, version: number, nowIso: string): TwinState {
  const section = (props: JsonObject, v: number, desired: boolean): PropertySection => ({ props, version: v, metadata: metadataFor(props, nowIso, desired ? v : undefined) });
  return {
    deviceId,
    etag: twinEtag(version),
    version,
    tags: c.tags,
    desired: section(c.desired, c.desiredVersion, true),
    reported: section(c.reported, c.reportedVersion, false),
  };
}

/** Deep equality of JSON values, object key order ignored. */
function jsonEqual(a: JsonValue | undefined, b: JsonValue | undefined): boolean {
  if (a === b) return true;
  if (isPlainObject(a) && isPlainObject(b)) {
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    return ka.every((k) => Object.hasOwn(b, k) && jsonEqual(a[k], b[k]));
  }
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => jsonEqual(x, b[i]));
  return false;
}

function sameIdentityFields(a: DeviceIdentity, b: DeviceIdentity): boolean {
  return (
    a.status === b.status &&
    a.statusReason === b.statusReason &&
    a.capabilities.iotEdge === b.capabilities.iotEdge &&
    !credentialsChanged(a, b)
  );
}

function sameTwinContent(t: TwinState, c: ImportedTwinContent): boolean {
  return (
    t.desired.version === c.desiredVersion &&
    t.reported.version === c.reportedVersion &&
    jsonEqual(t.tags, c.tags) &&
    jsonEqual(t.desired.props, c.desired) &&
    jsonEqual(t.reported.props, c.reported)
  );
}

function credentialsChanged(a: DeviceIdentity, b: DeviceIdentity): boolean {
  return JSON.stringify(a.authentication) !== JSON.stringify(b.authentication);
}

/** True when `host` (optionally with a port) names one of `hostNames`; ports are ignored on both sides. */
export function hostMatches(host: string, hostNames: readonly string[]): boolean {
  const bare = stripPort(host.toLowerCase());
  return hostNames.some((h) => stripPort(h.toLowerCase()) === bare);
}

export function normalizeEtag(v: string): string {
  const t = v.trim();
  if (t === '*') return '*';
  return t.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
}

function deviceNotFound(id: string): HomingError {
  return new HomingError('DeviceNotFound', `Device ${id} not found.`);
}

function encodeContinuation(after: string): string {
  return Buffer.from(JSON.stringify({ a: after })).toString('base64url');
}

function decodeContinuation(token: string): string {
  try {
    const v = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown;
    if (isPlainObject(v as JsonValue) && typeof (v as { a?: unknown }).a === 'string') return (v as { a: string }).a;
  } catch {
    // fall through
  }
  throw new HomingError('ArgumentInvalid', 'The continuation token is not valid.');
}

export function parseMethodInvocation(body: JsonValue, maxTimeout: number): MethodInvocation {
  if (!isPlainObject(body)) throw new HomingError('InvalidJson', 'The method invocation must be a JSON object.');
  const { methodName } = body;
  if (typeof methodName !== 'string' || methodName.length === 0 || methodName.length > 128 || /[/?#\s]/.test(methodName)) {
    throw new HomingError('ArgumentInvalid', 'methodName must be 1 to 128 characters without / ? # or spaces.');
  }
  const rt = body.responseTimeoutInSeconds ?? 30;
  const ct = body.connectTimeoutInSeconds ?? 0;
  if (typeof rt !== 'number' || !Number.isInteger(rt) || rt < 5 || rt > maxTimeout) {
    throw new HomingError('ArgumentInvalid', `responseTimeoutInSeconds must be an integer from 5 to ${maxTimeout}.`);
  }
  if (typeof ct !== 'number' || !Number.isInteger(ct) || ct < 0 || ct > maxTimeout) {
    throw new HomingError('ArgumentInvalid', `connectTimeoutInSeconds must be an integer from 0 to ${maxTimeout}.`);
  }
  const payload = body.payload === undefined ? null : body.payload;
  if (Buffer.byteLength(JSON.stringify(payload)) > 128 * 1024) throw new HomingError('MessageTooLarge', 'The method payload exceeds 128 KiB.');
  return { methodName, payload, responseTimeoutInSeconds: rt, connectTimeoutInSeconds: ct };
}

/** SHA-1 and SHA-256 thumbprints (uppercase hex) of a DER certificate. */
export function thumbprints(der: Buffer): { sha1: string; sha256: string } {
  return {
    sha1: createHash('sha1').update(der).digest('hex').toUpperCase(),
    sha256: createHash('sha256').update(der).digest('hex').toUpperCase(),
  };
}
