import { createHmac } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type ConsoleMessage, type Page } from 'playwright-core';
import { REPO_ROOT, type ConnectionJson } from '../../server/test/helpers/homing-process.ts';

/** Where the browser tests save their screenshots (git-ignored; CI keeps them as artifacts). */
export const SCREENSHOT_DIR = join(REPO_ROOT, 'artifacts', 'screenshots');

/**
 * The server serves the built portal (packages/portal/dist, made by the root `npm run build`). When a checkout has
 * not built it yet, build it now (vite, about a second) so the tests test the real bundle.
 */
export function ensurePortalBuilt(): void {
  if (existsSync(join(REPO_ROOT, 'packages/portal/dist/index.html'))) return;
  execFileSync('npm', ['run', 'build', '-w', '@homing/portal'], { cwd: REPO_ROOT, stdio: 'ignore' });
}

/** Debian's chromium (`apt-get install chromium`); HOMING_CHROMIUM overrides the path. */
export const CHROMIUM = process.env.HOMING_CHROMIUM ?? '/usr/bin/chromium';

export function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--disable-gpu', '--disable-dev-shm-usage'] });
}

/**
 * A browser context at a laptop size. The dev CA is not in chromium's trust store, so the test context ignores
 * certificate errors (only here; the server itself serves the real dev-CA-signed certificate).
 */
export function newContext(browser: Browser): Promise<BrowserContext> {
  return browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } });
}

/** Collects console errors and page errors of a page; `allowed` filters expected ones (e.g. an expected 412). */
export function watchConsole(page: Page): { errors: string[]; allow: (re: RegExp) => void } {
  const errors: string[] = [];
  const allowed: RegExp[] = [];
  page.on('console', (m: ConsoleMessage) => {
    if (m.type() !== 'error') return;
    const text = `${m.text()} @ ${m.location().url}`;
    if (!allowed.some((re) => re.test(text))) errors.push(text);
  });
  page.on('pageerror', (e: Error) => errors.push(`pageerror: ${e.message}`));
  return { errors, allow: (re) => allowed.push(re) };
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
}

export function parseConnectionString(cs: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of cs.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

export function sas(host: string, keyName: string, key: string): string {
  const se = Math.floor(Date.now() / 1000) + 3600;
  const sr = encodeURIComponent(host);
  const sig = createHmac('sha256', Buffer.from(key, 'base64')).update(`${sr}\n${se}`).digest('base64');
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${se}&skn=${encodeURIComponent(keyName)}`;
}

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

/** A DPS service / admin API call over real TLS with the dev CA. */
export function serviceCall(conn: ConnectionJson, auth: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const host = conn.dps.deviceHost;
  const ca = readFileSync(conn.caCertPath);
  const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host,
        port: 443,
        method,
        path: path.includes('?') || path.startsWith('/homing/') ? path : `${path}?api-version=2021-10-01`,
        ca,
        servername: /^[\d.]+$/.test(host) ? undefined : host,
        headers: { authorization: auth, ...(data ? { 'content-type': 'application/json', 'content-length': String(data.length) } : {}), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = text.length > 0 ? JSON.parse(text) : undefined;
          } catch {
            // not JSON
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed });
        });
      },
    );
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

/** base64(HMAC-SHA256(groupKey, registrationId)): a group member's device key. */
export function deviceKey(groupKey: string, registrationId: string): string {
  return createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId).digest('base64');
}

/** GET on a hub's service API; resolves with the status code. */
export function hubCall(host: string, caCertPath: string, auth: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port: 443, method: 'GET', path, ca: readFileSync(caCertPath), headers: { authorization: auth } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}
