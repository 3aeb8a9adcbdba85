import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join, relative, sep } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../../observability/logger.ts';

/**
 * Serves the web portal (the built `@homing/portal` package, docs/portal.md) at `/portal/` on the DPS service API
 * listener. The portal is a static single-page app that calls the public DPS service API and the Homing admin API
 * on the same origin, signing its own SAS tokens in the browser: this module only hands out files.
 *
 * - The files are read once at start-up (a few hundred KB) and served from memory: no path from the URL ever
 *   reaches the file system.
 * - Hashed assets (`/portal/assets/*`) are cached for a year; `index.html` is never cached.
 * - Every answer carries a strict Content-Security-Policy (same-origin scripts, styles, connections; no framing).
 * - When the portal was not built (`npm run build` builds it), the listener still starts: `/portal/` answers 503
 *   with a hint, and one log line says so.
 */
export interface PortalMount {
  /** Whether the built files were found. */
  mounted: boolean;
  /** The directory served, when mounted. */
  distDir?: string;
}

interface PortalFile {
  body: Buffer;
  type: string;
  immutable: boolean;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
  '.map': 'application/json; charset=utf-8',
};

const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'self'",
  "form-action 'self'",
].join('; ');

/** The `dist` directory of the installed `@homing/portal` package, or undefined when the package is missing. */
export function locatePortalDist(): string | undefined {
  try {
    const pkg = createRequire(import.meta.url).resolve('@homing/portal/package.json');
    return join(dirname(pkg), 'dist');
  } catch {
    return undefined;
  }
}

function loadFiles(dir: string): Map<string, PortalFile> {
  const files = new Map<string, PortalFile>();
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else {
        const rel = relative(dir, p).split(sep).join('/');
        files.set(rel, { body: readFileSync(p), type: TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream', immutable: rel.startsWith('assets/') });
      }
    }
  };
  walk(dir);
  return files;
}

function secure(reply: FastifyReply): FastifyReply {
  return reply
    .header('content-security-policy', CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('x-frame-options', 'DENY');
}

/** Mounts the portal on `app` (before it listens). `distDir` overrides where the built files are looked for. */
export function registerPortal(app: FastifyInstance, opts: { logger: Logger; distDir?: string }): PortalMount {
  const distDir = opts.distDir ?? locatePortalDist();
  let files: Map<string, PortalFile> | undefined;
  if (distDir !== undefined && existsSync(join(distDir, 'index.html'))) files = loadFiles(distDir);
  else {
    opts.logger.warn(
      { distDir: distDir ?? null },
      'web portal not built: /portal/ is unavailable (run `npm run build` at the repository root to build @homing/portal)',
    );
  }

  const serve = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const path = (req.url.split('?')[0] ?? '').replace(/\/{2,}/g, '/');
    if (/^\/portal$/i.test(path)) return reply.redirect('/portal/', 302);
    secure(reply);
    if (files === undefined) {
      return reply.code(503).header('content-type', 'text/plain; charset=utf-8').header('cache-control', 'no-store').send('The Homing web portal is not built. Run `npm run build` at the repository root, then restart homing.\n');
    }
    let rel: string;
    try {
      rel = decodeURIComponent(path.replace(/^\/portal\/?/i, ''));
    } catch {
      rel = '';
    }
    const file = files.get(rel);
    if (file !== undefined && rel !== 'index.html') {
      return reply
        .code(200)
        .header('content-type', file.type)
        .header('cache-control', file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache')
        .send(file.body);
    }
    // A missing asset is a 404; any other path is the app itself (it routes in the browser).
    if (rel.startsWith('assets/') || /\.[a-z0-9]+$/i.test(rel) && rel !== 'index.html') {
      return reply.code(404).header('content-type', 'text/plain; charset=utf-8').send('Not found\n');
    }
    const index = files.get('index.html');
    if (index === undefined) return reply.code(503).header('content-type', 'text/plain; charset=utf-8').send('The Homing web portal is not built.\n');
    return reply.code(200).header('content-type', index.type).header('cache-control', 'no-store').send(index.body);
  };

  app.route({ method: 'GET', url: '/portal', handler: serve });
  app.route({ method: 'GET', url: '/portal/*', handler: serve });
  return distDir !== undefined && files !== undefined ? { mounted: true, distDir } : { mounted: false };
}
