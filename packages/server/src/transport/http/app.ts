import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { SecureContextOptions } from 'node:tls';
import { HomingError } from '../../core/errors.ts';
import type { Logger } from '../../observability/logger.ts';
import type { Metrics } from '../../observability/metrics.ts';
import { DirectRoutes, type AnswerListener } from './direct-routes.ts';
import { sendError, type ErrorFlavor } from './errors.ts';

export interface HttpsAppOptions {
  /** Server certificate chain and key (PEM). Omit for plain HTTP (only in tests that do not need TLS). */
  tls?: SecureContextOptions & { requestCert?: boolean };
  logger: Logger;
  metrics?: Metrics;
  /** Largest accepted body, bytes. */
  bodyLimit?: number;
  /** Error body flavour for routes that do not set their own (see errors.ts). */
  errorFlavor: ErrorFlavor;
  /** A label for metrics. */
  api: string;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Error body flavour for this route. */
    errorFlavor?: ErrorFlavor;
  }
}

/** The direct routes of the apps made by {@link createHttpsApp} (direct-routes.ts). */
const directRoutesByApp = new WeakMap<FastifyInstance, DirectRoutes>();

/** The direct routes of an app made by {@link createHttpsApp} (undefined for any other fastify app). */
export function directRoutesOf(app: FastifyInstance): DirectRoutes | undefined {
  return directRoutesByApp.get(app);
}

/**
 * Tells `listener` the method, URL and status of every answer of an app, whether fastify or one of its direct routes
 * sent it (fastify's onResponse hooks do not see the direct routes' answers).
 */
export function observeAnswers(app: FastifyInstance, listener: AnswerListener): void {
  app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => listener({ method: req.method, url: req.url, status: reply.statusCode }));
  directRoutesOf(app)?.onAnswer(listener);
}

const ROUTER_OPTIONS = { caseSensitive: false, ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, maxParamLength: 512 };
/** Idle keep-alive connections are kept this long (the service SDKs use a keep-alive agent). */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

/**
 * The common fastify setup for every Homing API listener:
 * - case-insensitive routes and trailing-slash tolerance (the SDKs vary both);
 * - JSON bodies parsed here, whatever the Content-Type says, with clean 400s; empty bodies are allowed;
 * - one error handler mapping to the right wire body; 404s in the same shape;
 * - keep-alive (the service SDKs use a keep-alive agent);
 * - the listener's server is made here: its request listener offers each request to the app's direct routes first
 *   (direct-routes.ts; the DPS device runtime registers some), and hands every other request to fastify.
 */
export function createHttpsApp(o: HttpsAppOptions): FastifyInstance {
  const https = o.tls ? { ...o.tls, rejectUnauthorized: false, minVersion: 'TLSv1.2' as const } : null;
  const direct = new DirectRoutes({ logger: o.logger, ...(o.metrics ? { metrics: o.metrics } : {}), api: o.api, router: ROUTER_OPTIONS });
  const serverFactory = (handler: (req: IncomingMessage, res: ServerResponse) => void): Server => {
    const listener = (req: IncomingMessage, res: ServerResponse) => direct.dispatch(req, res, handler);
    const server: Server = https ? createHttpsServer(https, listener) : createHttpServer(listener);
    // What fastify sets on a server it makes itself (it leaves a factory's server alone).
    server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
    server.requestTimeout = 0;
    server.setTimeout(0);
    return server;
  };
  const app = Fastify({
    serverFactory,
    loggerInstance: o.logger.child({ api: o.api }),
    logController: new LogController({ disableRequestLogging: true }),
    frameworkErrors: (err: Error, req: FastifyRequest, reply: FastifyReply) => {
      const bad = new HomingError('ArgumentInvalid', 'The request URL or headers are malformed.');
      void err;
      return sendError(reply, bad, req.routeOptions?.config?.errorFlavor ?? o.errorFlavor, o.logger);
    },
    bodyLimit: o.bodyLimit ?? 1024 * 1024,
    routerOptions: ROUTER_OPTIONS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    requestIdHeader: false,
    return503OnClosing: true,
  }) as unknown as FastifyInstance;
  directRoutesByApp.set(app, direct);
  // Every fastify route goes into the direct routes' shadow router, so a direct route answers only the requests
  // fastify itself would route to it.
  app.addHook('onRoute', (r) => direct.note(r.method, r.url));
  app.addHook('preClose', (done) => {
    direct.close();
    done();
  });

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req: FastifyRequest, body: Buffer, done: (err: Error | null, body?: unknown) => void) => {
    if (body.length === 0) return done(null, undefined);
    try {
      done(null, JSON.parse(body.toString('utf8')));
    } catch {
      done(new HomingError('InvalidJson', 'The body is not valid JSON.'));
    }
  });

  app.setErrorHandler((err: unknown, req: FastifyRequest, reply: FastifyReply) => {
    const flavor = req.routeOptions.config?.errorFlavor ?? o.errorFlavor;
    return sendError(reply, err, flavor, o.logger);
  });
  app.setNotFoundHandler((req: FastifyRequest, reply: FastifyReply) => {
    return sendError(reply, new HomingError('NotFound', `No route for ${req.method} ${req.url.split('?')[0]}.`), o.errorFlavor, o.logger);
  });

  if (o.metrics) {
    const m = o.metrics;
    app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => {
      m.httpRequests.inc({ api: o.api, status: String(reply.statusCode) });
      m.httpDuration.observe({ api: o.api }, reply.elapsedTime / 1000);
      void req;
    });
  }
  return app;
}

/**
 * Splits a raw URL path into percent-decoded segments (split first, then decode, so %2F stays inside a segment).
 * Returns undefined for malformed escapes.
 */
export function pathSegments(url: string): string[] | undefined {
  const path = url.split('?')[0] ?? '';
  try {
    return path.split('/').filter((s) => s.length > 0).map((s) => decodeURIComponent(s));
  } catch {
    return undefined;
  }
}
