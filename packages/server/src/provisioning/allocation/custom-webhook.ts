import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { rootCertificates } from 'node:tls';
import type { AllocationContext, AllocationDecision, AllocationDevice } from '../../core/allocation.ts';
import { systemClock, type Clock } from '../../core/clock.ts';
import { HomingError } from '../../core/errors.ts';
import { isPlainObject, jsonByteLength, type JsonObject, type JsonValue } from '../../core/json.ts';
import { TWIN_SECTION_MAX_BYTES, validateTwinPatch } from '../../core/twin.ts';
import type { Logger } from '../../observability/logger.ts';
import { enrollmentGroupToJson, individualEnrollmentToJson } from '../enrollments/wire.ts';
import type { InitialTwin, LinkedHub } from '../model.ts';

/**
 * The `custom` allocation policy: a webhook (dps-behavior.md §3.5, docs/api/allocation.md).
 *
 * Every registration through a custom enrollment POSTs Azure's `AllocationRequest` JSON to the enrollment's
 * `customAllocationDefinition.webhookUrl` (query string kept: Azure Functions keys travel as `?code=`) and reads an
 * `AllocationResponse` `{iotHubHostName, initialTwin?, payload?}`. Anything else (non-2xx, invalid JSON, a hub that
 * was not offered, a timeout, a connection error, a body over 96 KB) fails the registration with 400207. No retries
 * inside one registration: the device retries.
 *
 * Secrets: the request carries no key material (attestation reduced to its type); log lines and error messages never
 * show the webhook URL's query string or the signing secret.
 */

/** `DpsConfig.customAllocation`. */
export interface CustomAllocationConfig {
  /** Bound on one webhook call (connect, request, whole response), ms. Default 10 000. */
  timeoutMs?: number;
  /**
   * When set, requests carry `x-homing-timestamp` (unix seconds) and
   * `x-homing-signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>`. Never logged.
   */
  signingSecret?: string;
  /** PEM file of extra CA certificates trusted for HTTPS webhooks (besides the system's). */
  caFile?: string;
}

export const DEFAULT_WEBHOOK_TIMEOUT_MS = 10_000;
export const MAX_WEBHOOK_TIMEOUT_MS = 30_000;
/** Largest webhook response read (as DPS's payload limit). */
export const MAX_WEBHOOK_RESPONSE_BYTES = 96 * 1024;

/** Checks a custom allocation config (throws an Error naming the bad field). */
export function validateCustomAllocationConfig(cfg: CustomAllocationConfig): void {
  // Bounded well below the 60 s after which a silent assignment counts as abandoned (RegistrationService).
  if (cfg.timeoutMs !== undefined && (!Number.isInteger(cfg.timeoutMs) || cfg.timeoutMs < 1 || cfg.timeoutMs > MAX_WEBHOOK_TIMEOUT_MS)) {
    throw new Error(`timeoutMs must be an integer from 1 to ${MAX_WEBHOOK_TIMEOUT_MS} (ms)`);
  }
  if (cfg.signingSecret !== undefined && (typeof cfg.signingSecret !== 'string' || cfg.signingSecret.length < 16)) {
    throw new Error('signingSecret must be a string of at least 16 characters');
  }
  if (cfg.caFile !== undefined && (typeof cfg.caFile !== 'string' || cfg.caFile === '')) throw new Error('caFile must be a file path');
}

// ------------------------------------------------------------------------------------------------ HTTP port

export interface WebhookRequest {
  url: URL;
  /** The raw JSON body (what the signature covers). */
  body: string;
  headers: Record<string, string>;
  timeoutMs: number;
  maxResponseBytes: number;
}

export interface WebhookResponse {
  status: number;
  body: Buffer;
}

/** A webhook call that did not produce a whole response. `reason` never holds the URL's query string. */
export class WebhookCallError extends Error {
  constructor(
    readonly kind: 'timeout' | 'network' | 'tooLarge',
    readonly reason: string,
  ) {
    super(reason);
    this.name = 'WebhookCallError';
  }
}

/** POSTs a webhook request; rejects with WebhookCallError only. Injectable for tests. */
export type WebhookTransport = (req: WebhookRequest) => Promise<WebhookResponse>;

/** `https://host/path?code=secret` → `https://host/path?<redacted>` (no user info, no query). */
export function redactUrl(url: string | URL): string {
  try {
    const u = typeof url === 'string' ? new URL(url) : url;
    return `${u.protocol}//${u.host}${u.pathname}${u.search ? '?<redacted>' : ''}`;
  } catch {
    return '<invalid URL>';
  }
}

/** Drops query strings from any URL-looking text (error messages of the HTTP stack). */
function redactText(s: string): string {
  return s.replace(/\?[^\s"'<>]*/g, '?<redacted>').slice(0, 300);
}

/**
 * The default transport: node's http/https, one connection per call (no keep-alive), trusting the system CAs plus
 * `ca`. The timeout bounds the whole exchange.
 */
export function nodeWebhookTransport(opts: { ca?: readonly string[] } = {}): WebhookTransport {
  const httpsAgent = new https.Agent({ keepAlive: false, ...(opts.ca && opts.ca.length > 0 ? { ca: [...rootCertificates, ...opts.ca] } : {}) });
  const httpAgent = new http.Agent({ keepAlive: false });
  return (req) =>
    new Promise<WebhookResponse>((resolve, reject) => {
      let settled = false;
      let r: http.ClientRequest | undefined;
      const timer = setTimeout(() => {
        fail(new WebhookCallError('timeout', 'timeout'));
        r?.destroy();
      }, req.timeoutMs);
      const finish = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const fail = (e: WebhookCallError): void => finish(() => reject(e));
      const isHttps = req.url.protocol === 'https:';
      const options: https.RequestOptions = {
        method: 'POST',
        headers: { ...req.headers, 'content-length': String(Buffer.byteLength(req.body, 'utf8')) },
        agent: isHttps ? httpsAgent : httpAgent,
      };
      const onResponse = (res: http.IncomingMessage): void => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          if (settled) return;
          size += chunk.length;
          if (size > req.maxResponseBytes) {
            fail(new WebhookCallError('tooLarge', `the response is larger than ${req.maxResponseBytes} bytes`));
            res.destroy();
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => finish(() => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) })));
        res.on('error', (e) => fail(new WebhookCallError('network', redactText(e.message))));
        res.on('close', () => {
          if (!res.complete) fail(new WebhookCallError('network', 'the connection closed before the response ended'));
        });
      };
      try {
        r = isHttps ? https.request(req.url, options, onResponse) : http.request(req.url, options, onResponse);
      } catch (e) {
        fail(new WebhookCallError('network', redactText(e instanceof Error ? e.message : String(e))));
        return;
      }
      r.on('error', (e) => fail(new WebhookCallError('network', redactText(e.message))));
      r.end(req.body);
    });
}

// ------------------------------------------------------------------------------------------------ request

/**
 * The `AllocationRequest` body (§3.5): the enrollment as the service API serializes it with `attestation` reduced to
 * `{type}`, the device runtime context (current hub and device id only on re-registration, `symmetricKey: {}` or
 * the X.509 certificate details, the device payload), and the offered hub names (`ctx.hubs`, unfiltered).
 */
export function buildAllocationRequest(ctx: AllocationContext, device: AllocationDevice): JsonObject {
  const e = device.enrollment;
  const enrollment = e.kind === 'individual' ? individualEnrollmentToJson(e.value) : enrollmentGroupToJson(e.value);
  enrollment.attestation = { type: e.value.attestation.type };
  const rc: JsonObject = { registrationId: ctx.registrationId };
  if (device.currentHub !== undefined) {
    rc.currentIotHubHostName = device.currentHub;
    if (device.currentDeviceId !== undefined) rc.currentDeviceId = device.currentDeviceId;
  }
  if (device.attestation.type === 'x509') rc.x509 = device.attestation.x509 ?? {};
  else rc.symmetricKey = {};
  if (device.payload !== undefined) rc.payload = device.payload;
  return {
    [e.kind === 'individual' ? 'individualEnrollment' : 'enrollmentGroup']: enrollment,
    deviceRuntimeContext: rc,
    linkedHubs: ctx.hubs.map((h) => h.name),
  };
}

/** `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, the `x-homing-signature` header value. */
export function signWebhookBody(secret: string, timestampSeconds: number, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestampSeconds}.${body}`, 'utf8').digest('hex')}`;
}

// ------------------------------------------------------------------------------------------------ response

export type ParsedAllocationResponse =
  | { ok: true; hub: LinkedHub; initialTwin?: InitialTwin; payload?: JsonObject }
  | { ok: false; reason: string };

function parseJsonStrict(text: string): JsonValue | undefined {
  try {
    return JSON.parse(text, (key: string, value: unknown) => {
      if (key === '__proto__') throw new SyntaxError('__proto__ key');
      return value;
    }) as JsonValue;
  } catch {
    return undefined;
  }
}

function shortName(v: string): string {
  return JSON.stringify(v.length > 128 ? `${v.slice(0, 128)}...` : v);
}

function twinSection(v: JsonValue | undefined, what: string): JsonObject | undefined {
  if (v === undefined || v === null) return undefined;
  validateTwinPatch(v, what);
  if (jsonByteLength(v) > TWIN_SECTION_MAX_BYTES) throw new HomingError('TwinTooLarge', `${what} exceeds ${TWIN_SECTION_MAX_BYTES} bytes.`);
  return v;
}

function parseInitialTwin(v: JsonValue | undefined): InitialTwin | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isPlainObject(v)) throw new HomingError('InvalidJson', 'initialTwin must be a JSON object.');
  const out: InitialTwin = {};
  const tags = twinSection(v.tags, 'initialTwin.tags');
  if (tags !== undefined) out.tags = tags;
  const props = v.properties;
  if (props !== undefined && props !== null) {
    if (!isPlainObject(props)) throw new HomingError('InvalidJson', 'initialTwin.properties must be a JSON object.');
    // Only desired properties are seeded; `reported` belongs to the device and is ignored.
    const desired = twinSection(props.desired, 'initialTwin.properties.desired');
    out.properties = desired === undefined ? {} : { desired };
  }
  return out;
}

/** Validates an `AllocationResponse` body against the offered hubs (names compare case-insensitively). */
export function parseAllocationResponse(body: Buffer, hubs: readonly LinkedHub[]): ParsedAllocationResponse {
  const json = parseJsonStrict(body.toString('utf8'));
  if (json === undefined) return { ok: false, reason: 'the webhook response is not valid JSON' };
  if (!isPlainObject(json)) return { ok: false, reason: 'the webhook response is not a JSON object' };
  const name = json.iotHubHostName;
  if (typeof name !== 'string' || name === '') return { ok: false, reason: 'the webhook response has no iotHubHostName' };
  const hub = hubs.find((h) => h.name.toLowerCase() === name.toLowerCase());
  if (!hub) {
    return { ok: false, reason: `the webhook chose the IoT hub ${shortName(name)}, which is not one of the linked hubs offered (${hubs.map((h) => h.name).join(', ')})` };
  }
  let initialTwin: InitialTwin | undefined;
  try {
    initialTwin = parseInitialTwin(json.initialTwin);
  } catch (e) {
    return { ok: false, reason: `the webhook's initialTwin is invalid: ${e instanceof Error ? e.message : String(e)}` };
  }
  const payload = json.payload;
  if (payload !== undefined && payload !== null && !isPlainObject(payload)) return { ok: false, reason: "the webhook's payload must be a JSON object" };
  return {
    ok: true,
    hub,
    ...(initialTwin !== undefined ? { initialTwin } : {}),
    ...(isPlainObject(payload) ? { payload } : {}),
  };
}

// ------------------------------------------------------------------------------------------------ allocator

export interface CustomWebhookAllocatorOptions {
  config?: CustomAllocationConfig | undefined;
  logger: Logger;
  /** For the signature timestamp. Default: the system clock. */
  clock?: Clock;
  /** Default: `nodeWebhookTransport` trusting the system CAs plus `config.caFile`. */
  transport?: WebhookTransport;
}

export type CustomWebhookAllocator = (ctx: AllocationContext) => Promise<AllocationDecision>;

/** Reads a PEM bundle: every certificate in it. Throws an Error naming the file (never its content). */
export function readCaFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`customAllocation.caFile: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  const certs = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (certs.length === 0) throw new Error(`customAllocation.caFile: ${path} holds no PEM certificate`);
  return certs;
}

/** The custom allocation policy as an async allocator for RegistrationService. */
export function createCustomWebhookAllocator(opts: CustomWebhookAllocatorOptions): CustomWebhookAllocator {
  const cfg = opts.config ?? {};
  const clock = opts.clock ?? systemClock;
  const timeoutMs = cfg.timeoutMs ?? DEFAULT_WEBHOOK_TIMEOUT_MS;
  const transport = opts.transport ?? nodeWebhookTransport(cfg.caFile ? { ca: readCaFile(cfg.caFile) } : {});
  const log = opts.logger;

  return async (ctx) => {
    const failed = (message: string): AllocationDecision => ({ kind: 'failed', errorName: 'CustomAllocationFailed', message, policy: ctx.policy });
    const device = ctx.device;
    if (!device) return failed('Custom allocation failed: the registration context is missing.');
    const def = device.enrollment.value.customAllocationDefinition;
    if (!def) return failed('Custom allocation failed: the enrollment has no customAllocationDefinition.');
    let url: URL;
    try {
      url = new URL(def.webhookUrl);
    } catch {
      return failed('Custom allocation failed: the webhook URL is not a valid URL.');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return failed('Custom allocation failed: the webhook URL must be http or https.');
    if (ctx.hubs.length === 0) {
      const stale = ctx.unlinked.length > 0 ? ` Listed hubs that are not linked: ${ctx.unlinked.join(', ')}.` : '';
      return { kind: 'failed', errorName: 'NoEligibleHub', message: `No eligible IoT hub: the enrollment allows no linked hub.${stale}`, policy: ctx.policy };
    }

    const body = JSON.stringify(buildAllocationRequest(ctx, device));
    const headers: Record<string, string> = {
      'content-type': 'application/json; charset=utf-8',
      accept: 'application/json',
      'user-agent': 'homing-dps',
    };
    if (cfg.signingSecret) {
      const ts = Math.floor(clock.now() / 1000);
      headers['x-homing-timestamp'] = String(ts);
      headers['x-homing-signature'] = signWebhookBody(cfg.signingSecret, ts, body);
    }
    const where = { webhook: redactUrl(url), registrationId: ctx.registrationId };
    let res: WebhookResponse;
    try {
      res = await transport({ url, body, headers, timeoutMs, maxResponseBytes: MAX_WEBHOOK_RESPONSE_BYTES });
    } catch (e) {
      const reason = e instanceof WebhookCallError ? e.reason : redactText(e instanceof Error ? e.message : String(e));
      log.warn({ ...where, reason }, 'custom allocation webhook call failed');
      return failed(`Custom allocation failed: ${reason}`);
    }
    if (res.status < 200 || res.status > 299) {
      log.warn({ ...where, status: res.status }, 'custom allocation webhook answered an error status');
      return failed(`Custom allocation failed with status code: ${res.status}`);
    }
    const parsed = parseAllocationResponse(res.body, ctx.hubs);
    if (!parsed.ok) {
      log.warn({ ...where, reason: parsed.reason }, 'custom allocation webhook answered an unusable response');
      return failed(`Custom allocation failed: ${parsed.reason}.`);
    }
    log.debug({ ...where, hub: parsed.hub.name }, 'custom allocation webhook chose a hub');
    return {
      kind: 'assigned',
      hub: parsed.hub,
      policy: ctx.policy,
      ...(parsed.initialTwin !== undefined ? { initialTwin: parsed.initialTwin } : {}),
      ...(parsed.payload !== undefined ? { payload: parsed.payload } : {}),
    };
  };
}
