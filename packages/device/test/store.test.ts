import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileAssignmentStore, MemoryAssignmentStore, parseAssignment, type Assignment } from '../src/index.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'homing-store-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const A: Assignment = {
  idScope: '0ne00000001',
  registrationId: 'dev-1',
  assignedHub: 'hub-a.example:8883',
  deviceId: 'dev-1',
  assignedAt: '2026-01-01T00:00:00.000Z',
  substatus: 'initialAssignment',
  payload: { zone: 'eu', list: [1, 2] },
  etag: 'e1',
};

test('file store: round trip, mode 0600, nested directory created, no temporary file left', async () => {
  const path = join(dir, 'nested', 'deeper', 'assignment.json');
  const s = new FileAssignmentStore(path);
  assert.equal(await s.load(), undefined);
  await s.save(A);
  assert.deepEqual(await s.load(), A);
  assert.equal((await stat(path)).mode & 0o777, 0o600);
  assert.deepEqual(await readdir(join(dir, 'nested', 'deeper')), ['assignment.json']);
  const doc = JSON.parse(await readFile(path, 'utf8')) as { version: number };
  assert.equal(doc.version, 1);
  await s.save({ ...A, assignedHub: 'hub-b.example' });
  assert.equal((await s.load())?.assignedHub, 'hub-b.example');
  await s.clear();
  assert.equal(await s.load(), undefined);
  await s.clear(); // idempotent
});

test('file store: concurrent saves leave one complete document', async () => {
  const path = join(dir, 'concurrent.json');
  const s = new FileAssignmentStore(path);
  await Promise.all(Array.from({ length: 20 }, (_, i) => s.save({ ...A, deviceId: `dev-${i}` })));
  const got = await s.load();
  assert.ok(got && /^dev-\d+$/.test(got.deviceId));
  assert.deepEqual((await readdir(dir)).filter((f) => f.startsWith('concurrent')), ['concurrent.json']);
});

test('file store: a corrupt, foreign or incomplete file loads as "no assignment" (the device registers again)', async () => {
  const path = join(dir, 'bad.json');
  const s = new FileAssignmentStore(path);
  for (const content of ['{not json', '{"version":2,"assignment":{}}', '{"version":1,"assignment":{"idScope":"x"}}', '[]', '']) {
    await writeFile(path, content);
    assert.equal(await s.load(), undefined, content);
  }
});

test('parseAssignment keeps optional fields only when present; memory store copies', async () => {
  assert.deepEqual(parseAssignment({ idScope: 's', registrationId: 'r', assignedHub: 'h', deviceId: 'd', assignedAt: 't' }), {
    idScope: 's',
    registrationId: 'r',
    assignedHub: 'h',
    deviceId: 'd',
    assignedAt: 't',
  });
  assert.equal(parseAssignment({ idScope: 's', registrationId: 'r', assignedHub: '', deviceId: 'd', assignedAt: 't' }), undefined);
  const m = new MemoryAssignmentStore();
  await m.save(A);
  const loaded = await m.load();
  assert.ok(loaded);
  loaded.deviceId = 'changed';
  assert.equal((await m.load())?.deviceId, 'dev-1');
});
