#!/usr/bin/env node
// The homing command. Runs the compiled CLI (npm run build, done by `npm ci` through the prepare script).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const compiled = new URL('../dist/main.js', import.meta.url);
if (!existsSync(fileURLToPath(compiled))) {
  console.error('homing: the CLI is not built. Run `npm ci` (or `npm run build`) at the repository root.');
  process.exit(1);
}
const { main } = await import(compiled.href);
process.exitCode = await main(process.argv);
