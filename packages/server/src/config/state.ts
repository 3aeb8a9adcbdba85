import { existsSync } from 'node:fs';
import { readFile, writeFile, mkdir, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import type { HubRight, SharedAccessPolicy } from '../core/policies.ts';
import { defaultHubPolicies } from './config.ts';

/**
 * Secrets generated on first run and kept in DIR/state.json (mode 0600): the hubs' shared access policies. A restart
 * reuses them, so connection strings stay valid.
 */
export interface PersistedState {
  version: 1;
  hubs: Record<string, { policies: SharedAccessPolicy<HubRight>[] }>;
}

export async function loadOrCreateState(dataDir: string, hubHostNames: readonly string[]): Promise<PersistedState> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const path = join(dataDir, 'state.json');
  let state: PersistedState = { version: 1, hubs: {} };
  if (existsSync(path)) {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as PersistedState;
    if (parsed.version !== 1 || typeof parsed.hubs !== 'object') throw new Error(`${path} is not a Homing state file`);
    state = parsed;
  }
  let changed = !existsSync(path);
  for (const host of hubHostNames) {
    const key = host.toLowerCase();
    if (!state.hubs[key]) {
      state.hubs[key] = { policies: defaultHubPolicies() };
      changed = true;
    }
  }
  if (changed) {
    await writeFile(path, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    await chmod(path, 0o600);
  }
  return state;
}

/**
 * This node's stable id (DIR/node-id), created on first run. Durable work a node owns (hub moves) is resumed by the
 * same node at once after a restart; other nodes wait for its lease to end. Nodes sharing a database need distinct
 * data directories.
 */
export async function loadOrCreateNodeId(dataDir: string, newId: () => string): Promise<string> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const path = join(dataDir, 'node-id');
  if (existsSync(path)) {
    const id = (await readFile(path, 'utf8')).trim();
    if (/^[A-Za-z0-9._-]{1,128}$/.test(id)) return id;
    throw new Error(`${path} does not hold a node id`);
  }
  const id = newId();
  await writeFile(path, `${id}\n`, { mode: 0o600 });
  return id;
}
