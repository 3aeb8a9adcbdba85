#!/usr/bin/env node
// Runs the test suites with node's test runner on the TypeScript sources (tsx), no build needed.
//   node scripts/test.mjs            every test file
//   node scripts/test.mjs unit       only fast unit tests (test/core, test/provisioning unit files)
//   node scripts/test.mjs <filter>   files whose path contains <filter>
// PostgreSQL suites run when HOMING_TEST_DATABASE_URL (or DATABASE_URL) is set.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';

const root = new URL('..', import.meta.url).pathname;
const filter = process.argv[2];

function walk(dir, out) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    if (e === 'node_modules' || e === 'dist') continue;
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (e.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const files = [];
for (const pkg of readdirSync(join(root, 'packages'))) walk(join(root, 'packages', pkg, 'test'), files);
files.sort();
const selected = files.filter((f) => {
  const rel = relative(root, f);
  if (!filter) return true;
  if (filter === 'unit') return /\/test\/core\//.test(rel) || /\.unit\.test\.ts$/.test(rel);
  return rel.includes(filter);
});
if (selected.length === 0) {
  console.error(`no test files match ${filter ?? '(all)'}`);
  process.exit(1);
}
const concurrency = Math.max(1, Math.min(4, availableParallelism()));
const args = [
  '--conditions=homing-source',
  '--import', 'tsx',
  '--test',
  `--test-concurrency=${concurrency}`,
  '--test-timeout=180000',
  ...selected.map((f) => relative(root, f)),
];
const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit' });
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
