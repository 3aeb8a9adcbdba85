import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { SecureContextOptions } from 'node:tls';
import { HomingError } from '../../core/errors.ts';
import type { Logger } from '../../observability/logger.ts';
import type { Metrics } from '../../observability/metrics.ts';
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

/**
 * The common fastify setup for every Homing API listener:
 * - case-insensitive routes and trailing-slash tolerance (the SDKs vary both);
 * - JSON bodies parsed here, whatever the Content-Type says, with clean 400s; empty bodies are allowed;
 * - one error handler mapping to the right wire body; 404s in the same shape;
 * - keep-alive (the service SDKs use a keep-alive agent).
 */
export function createHttpsApp(o: HttpsAppOptions): FastifyInstance {
  const https = o.tls ? { ...o.tls, allowHTTP1: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' as const } : null;
  const app = Fastify({
    ...(https ? { https } : {}),
    loggerInstance: o.logger.child({ api: o.api }),
    logController: new LogController({ disableRequestLogging: true }),
    frameworkErrors: (err: Error, req: FastifyRequest, reply: FastifyReply) => {
      const bad = new HomingError('ArgumentInvalid', 'The request URL or headers are malformed.');
      void err;
      return sendError(reply, bad, req.routeOptions?.config?.errorFlavor ?? o.errorFlavor, o.logger);
    },
    bodyLimit: o.bodyLimit ?? 1024 * 1024,
    routerOptions: { caseSensitive: false, ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, maxParamLength: 512 },
    keepAliveTimeout: 65_000,
    requestIdHeader: false,
    return503OnClosing: true,
  }) as unknown as FastifyInstance;

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
