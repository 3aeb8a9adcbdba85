import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import { parseSas } from '../../core/sas.ts';
import type { InstanceResolver } from '../../provisioning/instances.ts';
import type { QuotaService } from '../../provisioning/quotas/quota-service.ts';
import type { FinishedOperationRow, PortalQueries, PortalRecordFilter } from '../../store/kysely/portal-queries.ts';
import type { Logger } from '../../observability/logger.ts';
import { JSON_CT } from './errors.ts';
import { header, serviceRoute, type ServiceHandler, type ServiceRight } from './service-auth.ts';

/**
 * Homing admin routes for the web portal (docs/portal.md), on the DPS service API listener, authorized like the
 * rest of the admin API (service-auth.ts: Host header, else SAS `sr` host; every failure the same 401 401000):
 *
 * - `GET /homing/whoami` (any valid policy): the signed-in policy's name and rights, so the portal shows only what
 *   the policy may do (the routes refuse anyway), and which optional admin routes this listener has (`features`);
 * - `GET /homing/registrations?status=&hub=&group=&after=&limit=` (RegistrationStatusRead): registration records
 *   of the whole instance, paged by registration id (`next` → `after`);
 * - `GET /homing/stats` (RegistrationStatusRead): assigned devices per linked hub (counted at most every 1.5 s, with a
 *   short sampled history),
 *   records per status, and per minute for the last hour: finished registrations (assigned / failed, from the
 *   stored operations) and device API calls answered 429 (counted at the transports: this HTTPS listener and the DPS MQTT realm), next to the
 *   registrations-per-minute quota;
 * - `GET /homing/events?since=` (RegistrationStatusRead): a Server-Sent Events stream of registration events
 *   (`assigned`, `migrated`, `reset`, `failed`, `disabled`). The stream polls the stored registration operations
 *   (indexed by status and update time) once a second for those finished after its cursor: nothing in the
 *   registration path has to publish, and events of other processes sharing the database show up too.
 */
export interface PortalAdminApiDeps {
  instances: InstanceResolver;
  queries: PortalQueries;
  quotas: QuotaService;
  clock: Clock;
  logger: Logger;
  /** Event stream poll interval (default 1000 ms). */
  eventPollMs?: number;
  /**
   * Device API answer counters, fed by both device transports (`onAnswer` of the HTTPS device API and of the DPS MQTT
   * realm). Default: a counter of its own that nothing feeds.
   */
  counters?: DeviceApiCounters;
}

export type PortalEventType = 'assigned' | 'migrated' | 'reset' | 'failed' | 'disabled';

export interface PortalEvent {
  type: PortalEventType;
  registrationId: string;
  deviceId?: string;
  assignedHub?: string;
  status: string;
  substatus?: string;
  errorCode?: number;
  errorMessage?: string;
  time: string;
  operationId: string;
}

const MINUTE_MS = 60_000;
const HISTORY_MINUTES = 60;
const SAMPLE_EVERY_MS = 2_000;
const MAX_SAMPLES = 900;
/** How long record counts are reused (they scan the records of the instance). */
const STATS_TTL_MS = 1_500;

function isoMinute(ms: number): string {
  return new Date(ms).toISOString().slice(0, 16);
}

/** Maps a finished operation to a portal event (undefined when it has no usable result). */
export function eventOf(op: FinishedOperationRow): PortalEvent | undefined {
  const r = op.result ?? {};
  const status = typeof r.status === 'string' ? r.status : op.status;
  const substatus = typeof r.substatus === 'string' ? r.substatus : undefined;
  let type: PortalEventType;
  if (status === 'assigned') type = substatus === 'deviceDataMigrated' ? 'migrated' : substatus === 'deviceDataReset' || substatus === 'reprovisionedToInitialAssignment' ? 'reset' : 'assigned';
  else if (status === 'failed') type = 'failed';
  else if (status === 'disabled') type = 'disabled';
  else return undefined;
  const str = (v: unknown): string | undefined => (typeof v === 'string' && v.length > 0 ? v : undefined);
  const ev: PortalEvent = {
    type,
    registrationId: str(r.registrationId) ?? op.registrationKey,
    status,
    time: op.updatedAt,
    operationId: op.operationId,
  };
  const deviceId = str(r.deviceId);
  if (deviceId !== undefined) ev.deviceId = deviceId;
  const hub = str(r.assignedHub);
  if (hub !== undefined) ev.assignedHub = hub;
  if (substatus !== undefined) ev.substatus = substatus;
  if (typeof r.errorCode === 'number') ev.errorCode = r.errorCode;
  const msg = str(r.errorMessage);
  if (msg !== undefined) ev.errorMessage = msg;
  return ev;
}

/** Id scopes counted at most (the instances of one Homing are far fewer). */
export const MAX_COUNTED_SCOPES = 1024;

/**
 * Rolling per-minute counters of device API answers, per id scope (the last HISTORY_MINUTES minutes). One instance
 * is fed by both device transports: this HTTPS listener's responses and the DPS MQTT realm's answers.
 */
export class DeviceApiCounters {
  /** Id scopes with counters (read by tests). */
  get scopes(): number {
    return this.minutes.size;
  }

  private readonly minutes = new Map<string, Map<string, { calls: number; throttled: number }>>();

  count(idScope: string, nowMs: number, status: number): void {
    const scope = idScope.toLowerCase();
    let m = this.minutes.get(scope);
    if (m === undefined) {
      // Any id scope can be written in a request path or an MQTT username: keep a bounded number (oldest out).
      if (this.minutes.size >= MAX_COUNTED_SCOPES) {
        const oldest = this.minutes.keys().next();
        if (oldest.done !== true) this.minutes.delete(oldest.value);
      }
      this.minutes.set(scope, (m = new Map()));
    }
    const k = isoMinute(nowMs);
    const c = m.get(k) ?? { calls: 0, throttled: 0 };
    c.calls++;
    if (status === 429) c.throttled++;
    m.set(k, c);
    if (m.size > HISTORY_MINUTES + 5) {
      const oldest = isoMinute(nowMs - HISTORY_MINUTES * MINUTE_MS);
      for (const key of m.keys()) if (key < oldest) m.delete(key);
    }
  }

  of(idScope: string): Map<string, { calls: number; throttled: number }> {
    return this.minutes.get(idScope.toLowerCase()) ?? new Map();
  }
}

interface Sample {
  t: string;
  hubs: Record<string, number>;
}

export function registerPortalAdminApi(app: FastifyInstance, deps: PortalAdminApiDeps): void {
  const { queries, clock } = deps;
  const counters = deps.counters ?? new DeviceApiCounters();
  const history = new Map<string, Sample[]>();
  const streams = new Set<() => void>();

  // Open event streams end when the listener closes (they would hold it open otherwise).
  app.addHook('preClose', (done: () => void) => {
    for (const end of [...streams]) end();
    done();
  });

  function route(url: string, right: ServiceRight, handler: ServiceHandler): void {
    serviceRoute(app, deps, { method: 'GET', url, right, handler });
  }

  const sendJson = (reply: FastifyReply, body: unknown): FastifyReply => reply.code(200).header('content-type', JSON_CT).header('cache-control', 'no-store').send(JSON.stringify(body));

  function queryString(req: FastifyRequest, name: string): string | undefined {
    const v = (req.query as Record<string, unknown> | undefined)?.[name];
    const s = Array.isArray(v) ? v[0] : v;
    return typeof s === 'string' && s.length > 0 ? s : undefined;
  }

  route('/homing/whoami', 'any', async (req, reply, instance) => {
    const skn = parseSas(header(req, 'authorization'))?.skn;
    const policy = instance.policies.find((p) => p.keyName === skn);
    // Optional admin routes other modules mount on this listener: the portal shows their controls only when present.
    const features = {
      deprovision: app.hasRoute({ method: 'POST', url: '/homing/registrations/:id/deprovision' }),
      fleetJobs: app.hasRoute({ method: 'GET', url: '/homing/fleet/jobs' }),
    };
    return sendJson(reply, { keyName: policy?.keyName ?? null, rights: policy?.rights ?? [], instance: instance.name, idScope: instance.idScope, serviceHostNames: instance.serviceHostNames, features });
  });

  route('/homing/registrations', 'RegistrationStatusRead', async (req, reply, instance) => {
    const rawLimit = queryString(req, 'limit');
    const limit = rawLimit === undefined ? 50 : Number(rawLimit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new HomingError('ArgumentInvalid', 'limit must be an integer from 1 to 500.');
    const status = queryString(req, 'status');
    if (status !== undefined && !['unassigned', 'assigning', 'assigned', 'failed', 'disabled'].includes(status)) {
      throw new HomingError('ArgumentInvalid', 'status must be one of unassigned, assigning, assigned, failed, disabled.');
    }
    const filter: PortalRecordFilter = {};
    if (status !== undefined) filter.status = status;
    const hub = queryString(req, 'hub');
    if (hub !== undefined) filter.hub = hub;
    const group = queryString(req, 'group');
    if (group !== undefined) filter.groupId = group;
    const after = queryString(req, 'after');
    const page = await queries.listRecords(instance.name, { limit, filter, ...(after === undefined ? {} : { after }) });
    const items = page.items.map((r) => {
      const d = r.doc;
      const e = d.enrollment as { kind?: string; enrollmentGroupId?: string; registrationId?: string } | undefined;
      return {
        registrationId: d.registrationId,
        deviceId: d.deviceId,
        assignedHub: d.assignedHub,
        status: d.status,
        substatus: d.substatus,
        errorCode: d.errorCode,
        errorMessage: d.errorMessage,
        createdDateTimeUtc: d.createdDateTimeUtc,
        lastUpdatedDateTimeUtc: d.lastUpdatedDateTimeUtc,
        attestationType: d.attestationType,
        enrollmentKind: e?.kind,
        enrollmentGroupId: e?.kind === 'group' ? e.enrollmentGroupId : undefined,
        etag: r.etag,
      };
    });
    return sendJson(reply, page.next === undefined ? { items } : { items, next: page.next });
  });

  // Record counts scan the instance's records: computed at most once per STATS_TTL_MS per instance, shared by viewers.
  const countCache = new Map<string, { at: number; value: Promise<Awaited<ReturnType<PortalQueries['recordCounts']>>> }>();
  const recordCounts = (instanceName: string, now: number) => {
    const hit = countCache.get(instanceName);
    if (hit !== undefined && now - hit.at < STATS_TTL_MS) return hit.value;
    const value = queries.recordCounts(instanceName);
    countCache.set(instanceName, { at: now, value });
    value.catch(() => countCache.delete(instanceName));
    return value;
  };

  route('/homing/stats', 'RegistrationStatusRead', async (_req, reply, instance) => {
    const now = clock.now();
    const { perHub, perStatus } = await recordCounts(instance.name, now);
    const hubs = instance.linkedHubs.map((h) => {
      let devices = 0;
      for (const [name, n] of perHub) if (name.toLowerCase() === h.name.toLowerCase()) devices += n;
      return { name: h.name, location: h.location, allocationWeight: h.allocationWeight, applyAllocationPolicy: h.applyAllocationPolicy, devices };
    });
    // Assigned records naming hubs no longer linked still count.
    for (const [name, n] of perHub) if (!hubs.some((h) => h.name.toLowerCase() === name.toLowerCase())) hubs.push({ name, location: '', allocationWeight: 0, applyAllocationPolicy: false, devices: n });

    let samples = history.get(instance.name);
    if (samples === undefined) history.set(instance.name, (samples = []));
    const last = samples[samples.length - 1];
    if (last === undefined || now - Date.parse(last.t) >= SAMPLE_EVERY_MS) {
      samples.push({ t: new Date(now).toISOString(), hubs: Object.fromEntries(hubs.map((h) => [h.name, h.devices])) });
      if (samples.length > MAX_SAMPLES) samples.splice(0, samples.length - MAX_SAMPLES);
    }

    const since = new Date(now - HISTORY_MINUTES * MINUTE_MS).toISOString();
    const finished = await queries.finishedPerMinute(instance.name, since);
    const calls = counters.of(instance.idScope);
    const perMinute: { minute: string; assigned: number; failed: number; calls: number; throttled: number }[] = [];
    for (let i = HISTORY_MINUTES - 1; i >= 0; i--) {
      const minute = isoMinute(now - i * MINUTE_MS);
      const c = calls.get(minute);
      const row = { minute, assigned: 0, failed: 0, calls: c?.calls ?? 0, throttled: c?.throttled ?? 0 };
      for (const f of finished) if (f.minute === minute) {
        if (f.status === 'assigned') row.assigned += f.n;
        else row.failed += f.n;
      }
      perMinute.push(row);
    }
    const statuses = Object.fromEntries(perStatus);
    const q = deps.quotas.effective(instance);
    return sendJson(reply, {
      time: new Date(now).toISOString(),
      hubs,
      statuses,
      perMinute,
      quota: { registrationsPerMinute: q.registrationsPerMinute ?? null },
      history: samples,
    });
  });

  route('/homing/events', 'RegistrationStatusRead', async (req, reply, instance) => {
    const sinceParam = queryString(req, 'since');
    const now = clock.now();
    let cursor = sinceParam !== undefined && !Number.isNaN(Date.parse(sinceParam)) ? new Date(Date.parse(sinceParam)).toISOString() : new Date(now - 5 * MINUTE_MS).toISOString();
    // Operations seen at exactly the cursor time (the next poll asks again from there).
    let seenAtCursor = new Set<string>();
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.write(': homing registration events\nretry: 2000\n\n');
    let closed = false;
    let timer: NodeJS.Timeout | undefined;
    let heartbeat = 0;
    const end = (): void => {
      if (closed) return;
      closed = true;
      if (timer) clearTimeout(timer);
      streams.delete(end);
      res.end();
    };
    streams.add(end);
    req.raw.once('close', end);
    res.once('close', end);
    const poll = async (): Promise<void> => {
      if (closed) return;
      try {
        const ops = await queries.finishedOperationsSince(instance.name, cursor);
        for (const op of ops) {
          const id = `${op.operationId}:${op.version}`;
          if (op.updatedAt === cursor && seenAtCursor.has(id)) continue;
          if (op.updatedAt > cursor) {
            cursor = op.updatedAt;
            seenAtCursor = new Set();
          }
          seenAtCursor.add(id);
          const ev = eventOf(op);
          if (ev !== undefined && !closed) res.write(`event: registration\nid: ${op.updatedAt}\ndata: ${JSON.stringify(ev)}\n\n`);
        }
        if (++heartbeat % 15 === 0 && !closed) res.write(': keep-alive\n\n');
      } catch (err) {
        deps.logger.warn({ err }, 'portal event stream poll failed');
      }
      if (!closed) timer = setTimeout(() => void poll(), deps.eventPollMs ?? 1000);
    };
    await poll();
  });
}
