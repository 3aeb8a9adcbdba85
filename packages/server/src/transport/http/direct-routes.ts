import FindMyWay from 'find-my-way';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../../observability/logger.ts';
import type { Metrics } from '../../observability/metrics.ts';
import { HomingError } from '../../core/errors.ts';
import { errorAnswer, type ErrorFlavor, type HttpAnswer } from './errors.ts';

/**
 * Direct routes: a few hot routes answered straight from the `node:https` request event, without fastify's
 * per-request machinery (docs/adr/016-direct-device-routes.md).
 *
 * The DPS device runtime (register, operation polls, status lookups) is the hottest path of the provisioning
 * listener: every device opens a new TLS connection for one or two requests. Measured on that path, fastify's request
 * pipeline (request and reply objects, hooks, the content-type parser's async resource, reply serialization) cost
 * about 3.5 % of the server CPU per registration (bench/register-ab.ts). The routes registered here are served by
 * this module on a real listener; under `inject()` and for anything off the happy path, fastify serves the same
 * routes:
 *
 * - Routing is find-my-way, the router fastify uses, with the same options, holding a shadow copy of **every** route of
 *   the app (fastify's onRoute hook feeds it). A request goes to a direct route only when that route is what fastify
 *   itself would match for the method and URL; every other request, and every URL find-my-way calls bad, goes to
 *   fastify untouched.
 * - Requests a direct route would not handle the way fastify does go to fastify before their body is read: a
 *   Content-Type other than JSON (or none), a Content-Length over the route's limit, HEAD, and any request while
 *   the app is closing (fastify answers 503).
 * - The body is read with the route's limit (413 past it, for chunked bodies) and parsed as JSON (400 with the
 *   flavour's error body otherwise, `connection: close` as fastify does); an empty body is `undefined`.
 * - Handlers return an {@link HttpAnswer}; anything they throw becomes the flavour's error answer (errors.ts), the
 *   same function fastify's error handler uses. Request metrics are recorded as fastify's onResponse hook does.
 */
export interface DirectRoute {
  method: 'GET' | 'PUT' | 'POST';
  /** A find-my-way / fastify path pattern (the same string the fastify route is registered with). */
  url: string;
  /** Largest accepted body, bytes. */
  bodyLimit: number;
  /** Error body flavour. */
  errorFlavor: ErrorFlavor;
  handler(req: IncomingMessage, params: Readonly<Record<string, string | undefined>>, body: unknown): Promise<HttpAnswer>;
  /** Told every answer this route sent (its status), errors included. */
  observe?(params: Readonly<Record<string, string | undefined>>, status: number): void;
}

export interface DirectRoutesOptions {
  logger: Logger;
  metrics?: Metrics;
  /** The metrics label of the listener. */
  api: string;
  /** find-my-way options, the same as the fastify app's router options. */
  router: { caseSensitive: boolean; ignoreTrailingSlash: boolean; ignoreDuplicateSlashes: boolean; maxParamLength: number };
}

type Fallback = (req: IncomingMessage, res: ServerResponse) => void;

/** Told every answer a direct route sent. */
export type AnswerListener = (a: { method: string; url: string; status: number }) => void;

/** Content types a direct route parses itself (what the device SDKs send); anything else goes to fastify. */
const JSON_TYPE = /^application\/json\s*(;\s*charset\s*=\s*"?utf-8"?\s*)?$/i;

const METHODS_WITH_BODY = new Set(['PUT', 'POST']);

export class DirectRoutes {
  private readonly direct = new Map<string, DirectRoute>();
  /** Every route of the app, `METHOD url` (fastify's and the direct ones). */
  private readonly routes = new Set<string>();
  /** The shadow router, built on the first request after a route change. */
  private router: FindMyWay.Instance<FindMyWay.HTTPVersion.V1> | undefined;
  private closing = false;
  private readonly listeners: AnswerListener[] = [];

  constructor(private readonly o: DirectRoutesOptions) {}

  /** `listener` is told every answer of the direct routes (see `observeAnswers` in app.ts). */
  onAnswer(listener: AnswerListener): void {
    this.listeners.push(listener);
  }

  /** Routes served directly (read by tests). */
  get size(): number {
    return this.direct.size;
  }

  /** Adds a direct route. Its fastify route must be registered on the app too (inject() and the fallback use it). */
  add(route: DirectRoute): void {
    const key = `${route.method} ${route.url}`;
    if (this.direct.has(key)) throw new Error(`direct route ${key} is registered twice`);
    this.direct.set(key, route);
    this.note(route.method, route.url);
  }

  /** Called by the app's onRoute hook for every fastify route: the shadow router holds them all. */
  note(method: string | readonly string[], url: string): void {
    for (const m of typeof method === 'string' ? [method] : method) this.routes.add(`${m} ${url}`);
    this.router = undefined;
  }

  /** From now on every request goes to fastify (which answers 503 while closing). */
  close(): void {
    this.closing = true;
  }

  /** The request listener of the app's server: a direct route when one matches, else fastify's handler. */
  dispatch(req: IncomingMessage, res: ServerResponse, fallback: Fallback): void {
    const m = this.match(req);
    if (m === undefined) return fallback(req, res);
    const { route, params } = m;
    const started = performance.now();
    if (!METHODS_WITH_BODY.has(route.method)) {
      req.resume();
      this.run(route, req, res, params, undefined, started);
      return;
    }
    readBody(req, route.bodyLimit, (err, body) => {
      if (err !== undefined) return this.send(route, req, res, params, { ...errorAnswer(err, route.errorFlavor, this.o.logger), close: true }, started);
      this.run(route, req, res, params, body, started);
    });
  }

  private shadowRouter(): FindMyWay.Instance<FindMyWay.HTTPVersion.V1> {
    if (this.router !== undefined) return this.router;
    const r = FindMyWay({ ...this.o.router, querystringParser: () => ({}) });
    for (const key of this.routes) {
      const space = key.indexOf(' ');
      const method = key.slice(0, space) as FindMyWay.HTTPMethod;
      const url = key.slice(space + 1);
      try {
        r.on(method, url, noop, this.direct.get(key));
      } catch {
        // A method find-my-way does not know, or a pattern it folds into another (trailing slash): fastify serves it.
      }
    }
    this.router = r;
    return r;
  }

  private match(req: IncomingMessage): { route: DirectRoute; params: Readonly<Record<string, string | undefined>> } | undefined {
    if (this.closing || this.direct.size === 0) return undefined;
    const method = req.method;
    if (method !== 'GET' && method !== 'PUT' && method !== 'POST') return undefined;
    let found;
    try {
      found = this.shadowRouter().find(method, req.url ?? '/');
    } catch {
      return undefined;
    }
    // find-my-way keeps `null` as the store of a route registered without one: fastify's routes.
    const route = (found?.store ?? undefined) as DirectRoute | undefined;
    if (found === null || route === undefined) return undefined;
    if (METHODS_WITH_BODY.has(method)) {
      const type = req.headers['content-type'];
      if (type === undefined || !JSON_TYPE.test(type)) return undefined;
      const length = req.headers['content-length'];
      if (length !== undefined && !(Number(length) <= route.bodyLimit)) return undefined;
    }
    return { route, params: found.params };
  }

  private run(route: DirectRoute, req: IncomingMessage, res: ServerResponse, params: Readonly<Record<string, string | undefined>>, body: unknown, started: number): void {
    let pending: Promise<HttpAnswer>;
    try {
      pending = route.handler(req, params, body);
    } catch (e) {
      pending = Promise.reject(e);
    }
    pending.then(
      (a) => this.send(route, req, res, params, a, started),
      (e: unknown) => this.send(route, req, res, params, errorAnswer(e, route.errorFlavor, this.o.logger), started),
    );
  }

  private send(route: DirectRoute, req: IncomingMessage, res: ServerResponse, params: Readonly<Record<string, string | undefined>>, a: HttpAnswer & { close?: boolean }, started: number): void {
    if (res.headersSent || res.destroyed) return;
    const headers: Record<string, string> = { ...a.headers, 'content-length': String(Buffer.byteLength(a.body)) };
    // A body that was refused may still be arriving: close the connection after the answer, as fastify does.
    if (a.close) headers.connection = 'close';
    res.writeHead(a.status, headers);
    res.end(a.body);
    const m = this.o.metrics;
    if (m) {
      m.httpRequests.inc({ api: this.o.api, status: String(a.status) });
      m.httpDuration.observe({ api: this.o.api }, (performance.now() - started) / 1000);
    }
    route.observe?.(params, a.status);
    for (const l of this.listeners) l({ method: req.method ?? '', url: req.url ?? '', status: a.status });
  }
}

const noop = (): void => undefined;

/**
 * Reads a request body up to `limit` bytes and parses it as JSON (undefined when empty). Errors are the ones fastify
 * raises for the same cases, so errors.ts maps them alike: too large → 413, invalid JSON → 400.
 */
function readBody(req: IncomingMessage, limit: number, done: (err: unknown, body?: unknown) => void): void {
  const chunks: Buffer[] = [];
  let length = 0;
  let finished = false;
  const finish = (err: unknown, body?: unknown) => {
    if (finished) return;
    finished = true;
    req.off('data', onData);
    req.off('end', onEnd);
    req.off('error', onError);
    done(err, body);
  };
  const onData = (chunk: Buffer) => {
    length += chunk.length;
    if (length > limit) {
      // Stop buffering; the answer closes the connection.
      req.pause();
      finish(new HomingError('MessageTooLarge', 'The request body is too large.'));
      return;
    }
    chunks.push(chunk);
  };
  const onEnd = () => {
    if (length === 0) return finish(undefined, undefined);
    const text = chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks, length).toString('utf8');
    try {
      finish(undefined, JSON.parse(text));
    } catch {
      finish(new HomingError('InvalidJson', 'The body is not valid JSON.'));
    }
  };
  // An aborted request gets no answer (its connection is gone); the listener is left for the socket's own cleanup.
  const onError = () => {
    if (finished) return;
    finished = true;
    req.off('data', onData);
    req.off('end', onEnd);
  };
  req.on('data', onData);
  req.on('end', onEnd);
  req.on('error', onError);
}
