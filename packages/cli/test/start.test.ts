import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { readFileSync, existsSync, mkdtempSync, chmodSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { X509Certificate, createHmac } from 'node:crypto';
import { spawn } from 'node:child_process';
import { startHomingProcess, CLI_SOURCE, REPO_ROOT, type HomingProcess } from '../../server/test/helpers/homing-process.ts';
import { uniqueLoopback } from '../../server/test/helpers/ids.ts';

/**
 * The fallback test runs `homing start` as `nobody` (uid 65534), which must reach the checkout's sources and
 * node_modules: every directory above it must be searchable by others. A clone inside a private directory (e.g.
 * `mktemp -d`, mode 0700) is not; the test then says why it is skipped instead of failing on module resolution.
 */
function unreachableByNobody(): string | false {
  for (let d = REPO_ROOT; ; d = dirname(d)) {
    const mode = statSync(d).mode;
    if ((mode & 0o001) === 0) return `the checkout is not reachable by the unprivileged user: ${d} is not searchable by others`;
    if (dirname(d) === d) return false;
  }
}

function sas(cs: string): { host: string; token: string } {
  const host = /HostName=([^;]+)/.exec(cs)?.[1] ?? '';
  const keyName = /SharedAccessKeyName=([^;]+)/.exec(cs)?.[1] ?? '';
  const key = /SharedAccessKey=([^;]+)/.exec(cs)?.[1] ?? '';
  const se = Math.floor(Date.now() / 1000) + 600;
  const sig = createHmac('sha256', Buffer.from(key, 'base64')).update(`${host}\n${se}`).digest('base64');
  return { host, token: `SharedAccessSignature sr=${host}&sig=${encodeURIComponent(sig)}&skn=${keyName}&se=${se}` };
}

function call(cs: string, ca: string, port: number, method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  const { host, token } = sas(cs);
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, ca, headers: { authorization: token, 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? (JSON.parse(text) as unknown) : null }));
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

function twoHosts(): [string, string] {
  const a = uniqueLoopback();
  let b = uniqueLoopback();
  while (b === a) b = uniqueLoopback();
  return [a, b];
}

describe('homing start', () => {
  const started: HomingProcess[] = [];
  after(async () => {
    for (const p of started) {
      await p.stop();
      p.cleanup();
    }
  });

  it('writes connection.json with exactly the documented fields, a dev CA and certificates for every hub', async () => {
    const [a, b] = twoHosts();
    const p = await startHomingProcess(['--hub-hosts', `${a},${b}`]);
    started.push(p);
    const c = p.connection;
    assert.deepEqual(Object.keys(c).filter((k) => k !== 'portalUrl').sort(), ['caCertPath', 'dps', 'hubs']);
    assert.deepEqual(Object.keys(c.dps).sort(), ['deviceHost', 'idScope', 'serviceConnectionString']);
    assert.match(c.dps.idScope, /^0ne[0-9A-F]{8}$/i);
    assert.match(c.dps.serviceConnectionString, new RegExp(`^HostName=${c.dps.deviceHost.replace(/\./g, '\\.')};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=`));
    assert.equal(c.hubs.length, 2);
    for (const [i, h] of c.hubs.entries()) {
      assert.deepEqual(Object.keys(h).sort(), ['connectionString', 'hostName', 'httpsPort', 'mqttPort']);
      assert.equal(h.hostName, [a, b][i]);
      assert.equal(h.httpsPort, 443);
      assert.equal(h.mqttPort, 8883);
      assert.match(h.connectionString, new RegExp(`^HostName=${h.hostName.replace(/\./g, '\\.')};SharedAccessKeyName=iothubowner;SharedAccessKey=[A-Za-z0-9+/=]{44}$`));
    }
    assert.ok(existsSync(c.caCertPath));
    const serverCert = new X509Certificate(readFileSync(join(p.dataDir, 'tls', 'server.pem')));
    assert.ok(serverCert.checkIssued(new X509Certificate(readFileSync(c.caCertPath))));
    assert.match(serverCert.subjectAltName ?? '', new RegExp(`IP Address:${a.replace(/\./g, '\\.')}`));
    assert.match(serverCert.subjectAltName ?? '', new RegExp(`IP Address:${b.replace(/\./g, '\\.')}`));
    assert.equal(statSync(join(p.dataDir, 'tls', 'ca-key.pem')).mode & 0o777, 0o600);
    assert.match(p.stdout(), /Homing is running\./);
    assert.match(p.stdout(), /NODE_EXTRA_CA_CERTS=/);
    assert.doesNotMatch(p.stdout() + p.stderr(), /SharedAccessKey=/, 'keys are not printed');
  });

  it('stops gracefully on SIGINT and keeps all data and keys across a restart', async () => {
    const [a, b] = twoHosts();
    const dpsHost = uniqueLoopback();
    const first = await startHomingProcess(['--hub-hosts', `${a},${b}`, '--dps-host', dpsHost]);
    const hub = first.connection.hubs[0];
    assert.ok(hub);
    const ca = readFileSync(first.connection.caCertPath, 'utf8');
    const created = await call(hub.connectionString, ca, hub.httpsPort, 'PUT', '/devices/keep-me?api-version=2021-04-12', { deviceId: 'keep-me' });
    assert.equal(created.status, 200);
    const patched = await call(hub.connectionString, ca, hub.httpsPort, 'PATCH', '/twins/keep-me?api-version=2021-04-12', { tags: { site: 'A' } });
    assert.equal(patched.status, 200);
    first.child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => first.child.once('exit', resolve));
    assert.equal(code, 0);
    assert.match(first.stdout(), /Homing stopped\./);

    const second = await startHomingProcess(['--hub-hosts', `${a},${b}`, '--dps-host', dpsHost], { dataDir: first.dataDir });
    started.push(second);
    assert.deepEqual(second.connection, first.connection, 'same keys, same ports, same CA');
    const got = await call(hub.connectionString, ca, hub.httpsPort, 'GET', '/twins/keep-me?api-version=2021-04-12');
    assert.equal(got.status, 200);
    assert.deepEqual((got.json as { tags: unknown }).tags, { site: 'A' });
  });

  it('falls back from port 443 when it may not bind it, and says what that costs', { skip: unreachableByNobody() }, async () => {
    const [a, b] = twoHosts();
    const dir = mkdtempSync(join(tmpdir(), 'homing-nonroot-'));
    chmodSync(dir, 0o777);
    const child = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--conditions=homing-source', '--import', 'tsx', CLI_SOURCE, 'start', '--data-dir', dir, '--hub-hosts', `${a},${b}`, '--dps-host', uniqueLoopback()], {
      cwd: REPO_ROOT,
      env: { ...process.env, HOMING_LOG_LEVEL: 'warn', HOME: dir, npm_config_cache: join(dir, '.npm'), TSX_TSCONFIG_PATH: join(REPO_ROOT, 'tsconfig.json') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`not ready: ${out}\n${err}`)), 60_000);
      child.stdout.on('data', () => {
        if (out.includes('Homing is running.')) {
          clearTimeout(t);
          resolve();
        }
      });
      child.once('exit', (c) => {
        clearTimeout(t);
        reject(new Error(`exited ${c}: ${out}\n${err}`));
      });
    });
    const conn = JSON.parse(readFileSync(join(dir, 'connection.json'), 'utf8')) as { hubs: { httpsPort: number }[] };
    assert.equal(conn.hubs[0]?.httpsPort, 8443);
    assert.match(out, /HTTPS port 443 refused/);
    assert.match(out, /provisioning service .*HTTPS port 443 refused/);
    assert.match(out, /dial port 443 only/);
    child.kill('SIGTERM');
    const [code, sig] = await new Promise<[number | null, string | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
    assert.equal(code, 0, `exit ${code} ${sig}\n${out}\n${err}`);
  });

  it('rejects bad arguments with one clear line and a non-zero exit', async () => {
    const child = spawn(process.execPath, ['--conditions=homing-source', '--import', 'tsx', CLI_SOURCE, 'start', '--mqtt-port', 'seventy'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.notEqual(code, 0);
    assert.match(err, /port number/);
  });

  it('rejects a database pool size outside 1..1000 before starting anything', async () => {
    const child = spawn(process.execPath, ['--conditions=homing-source', '--import', 'tsx', CLI_SOURCE, 'start', '--database-pool-size', '0'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.notEqual(code, 0);
    assert.match(err, /--database-pool-size.*expected an integer from 1 to 1000/);
  });
});
