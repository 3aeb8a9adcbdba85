import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Clock } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import type { JsonValue } from '../../core/json.ts';
import type { DpsRight } from '../../core/policies.ts';
import {
  dryRunToJson,
  fleetDeviceToJson,
  fleetJobToJson,
  parseCreateRequest,
  type FleetService,
} from '../../provisioning/fleet/fleet-service.ts';
import type { FleetDeviceState, FleetJob } from '../../provisioning/fleet/model.ts';
import type { InstanceResolver } from '../../provisioning/instances.ts';
import { DPS_SERVICE_BODY_LIMIT } from './dps-service-api.ts';
import { JSON_CT } from './errors.ts';
import { serviceRoute, type ServiceHandler } from './service-auth.ts';

/**
 * Homing's admin API for phased fleet reprovisioning (docs/api/fleet.md), on the DPS listener:
 * - `POST /homing/fleet/jobs`: create and start a job (201), or `dryRun: true` → the plan (200);
 * - `GET /homing/fleet/jobs`: the instance's jobs, newest first;
 * - `GET /homing/fleet/jobs/{id}`: one job with its progress, rate and ETA;
 * - `GET /homing/fleet/jobs/{id}/devices?state=&after=&top=`: its devices;
 * - `POST /homing/fleet/jobs/{id}/pause|resume|cancel`.
 * Authentication is the admin API's (service-auth.ts: Host header, else SAS `sr` host; every failure the same 401
 * 401000, before the body is read). Reads need a policy with **RegistrationStatusRead**; creating and steering jobs
 * (a dry run included) need **RegistrationStatusWrite**.
 */
export interface FleetApiDeps {
  instances: InstanceResolver;
  fleet: FleetService;
  clock: Clock;
  bodyLimit?: number;
}

const DEVICE_STATES: readonly FleetDeviceState[] = ['pending', 'invoked', 'moved', 'unchanged', 'failed'];

function send(reply: FastifyReply, status: number, body: unknown): FastifyReply {
  return reply.code(status).header('content-type', JSON_CT).send(JSON.stringify(body));
}

function intQuery(v: unknown, name: string, min: number, max: number): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || n < min || n > max) throw new HomingError('ArgumentInvalid', `${name} must be an integer from ${min} to ${max}.`);
  return n;
}

export function registerFleetApi(app: FastifyInstance, deps: FleetApiDeps): void {
  const bodyLimit = deps.bodyLimit ?? DPS_SERVICE_BODY_LIMIT;
  const json = (job: FleetJob, nextWaveAtMs?: number) => fleetJobToJson(job, deps.clock.now(), nextWaveAtMs);

  function route(method: 'GET' | 'POST', url: string, right: DpsRight, handler: ServiceHandler): void {
    serviceRoute(app, deps, { method, url, right, bodyLimit, handler });
  }

  route('POST', '/homing/fleet/jobs', 'RegistrationStatusWrite', async (req, reply, instance) => {
    const request = parseCreateRequest(req.body as JsonValue | undefined);
    const result = await deps.fleet.create(instance, request);
    if ('dryRun' in result) return send(reply, 200, dryRunToJson(result));
    return send(reply.header('location', `/homing/fleet/jobs/${result.id}`), 201, json(result));
  });

  route('GET', '/homing/fleet/jobs', 'RegistrationStatusRead', async (req, reply, instance) => {
    const q = req.query as Record<string, unknown>;
    const top = intQuery(q.top, 'top', 1, 1000) ?? 100;
    const jobs = await deps.fleet.list(instance, top);
    return send(reply, 200, jobs.map((j) => json(j)));
  });

  route('GET', '/homing/fleet/jobs/:id', 'RegistrationStatusRead', async (req, reply, instance) => {
    const { job, nextWaveAtMs } = await deps.fleet.get(instance, (req.params as { id: string }).id);
    return send(reply, 200, json(job, nextWaveAtMs));
  });

  route('GET', '/homing/fleet/jobs/:id/devices', 'RegistrationStatusRead', async (req, reply, instance) => {
    const q = req.query as Record<string, unknown>;
    let state: FleetDeviceState | undefined;
    if (q.state !== undefined && q.state !== '') {
      if (typeof q.state !== 'string' || !(DEVICE_STATES as readonly string[]).includes(q.state)) {
        throw new HomingError('ArgumentInvalid', `state must be one of ${DEVICE_STATES.join(', ')}.`);
      }
      state = q.state as FleetDeviceState;
    }
    const after = intQuery(q.after, 'after', 0, Number.MAX_SAFE_INTEGER);
    const top = intQuery(q.top, 'top', 1, 1000) ?? 100;
    const devices = await deps.fleet.devices(instance, (req.params as { id: string }).id, { limit: top + 1, ...(state === undefined ? {} : { state }), ...(after === undefined ? {} : { afterSeq: after }) });
    const page = devices.slice(0, top);
    const last = page[page.length - 1];
    if (devices.length > top && last !== undefined) reply.header('x-ms-continuation', String(last.seq));
    return send(reply, 200, page.map(fleetDeviceToJson));
  });

  for (const action of ['pause', 'resume', 'cancel'] as const) {
    route('POST', `/homing/fleet/jobs/:id/${action}`, 'RegistrationStatusWrite', async (req, reply, instance) => {
      const id = (req.params as { id: string }).id;
      const job = await deps.fleet[action](instance, id);
      return send(reply, 200, json(job));
    });
  }
}
