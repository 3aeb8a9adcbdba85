import { readFileSync } from 'node:fs';
import { check, flipGroup, moveAll, openWorld, type WorldSpec } from './move-world.ts';

/**
 * A child process for the crash tests: opens the world of `argv[2]` (a WorldSpec JSON file) as node `crash-node`,
 * resumes the moves it owned (as a restarted node does), then, in mode `move`, re-registers the devices not yet on
 * the group's hubs (mode `flip` points the group at the other side); in mode `recover` (and `check`) it prints the invariant report. `argv[4]` (JSON) says where to kill itself with SIGKILL: after the nth recorded move step of a kind
 * ({step, nth}), or after some milliseconds ({afterMs}). Prints one JSON
 * line when it ends on its own.
 */
const [specFile, mode, killJson] = process.argv.slice(2);
if (!specFile || !mode) throw new Error('usage: move-worker SPEC.json move|recover|check|flip [KILL_JSON]');
const spec = JSON.parse(readFileSync(specFile, 'utf8')) as WorldSpec;
const kill = killJson ? (JSON.parse(killJson) as { step?: string; nth?: number; afterMs?: number }) : {};

let seen = 0;
const world = await openWorld(spec, {
  nodeId: 'crash-node',
  afterStep: (m) => {
    if (kill.step !== undefined && m.step === kill.step && ++seen >= (kill.nth ?? 1)) process.kill(process.pid, 'SIGKILL');
  },
});
if (kill.afterMs !== undefined) setTimeout(() => process.kill(process.pid, 'SIGKILL'), kill.afterMs);

const resumed = mode === 'check' ? 0 : (await world.service.recoverInterrupted()).moves;
const out: Record<string, unknown> = { resumed };
if (mode === 'move') Object.assign(out, await moveAll(world, 8));
if (mode === 'flip') out.iotHubs = await flipGroup(world);
if (mode === 'check' || mode === 'recover') Object.assign(out, await check(world));
await world.close();
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
