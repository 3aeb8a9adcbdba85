import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { isJsonObject, type JsonValue } from '../json.ts';

/** Where a device was provisioned: what it needs to boot straight onto its hub. Holds no secret. */
export interface Assignment {
  idScope: string;
  registrationId: string;
  /** The hub host name DPS returned (may carry `:port`). */
  assignedHub: string;
  deviceId: string;
  substatus?: string;
  /** The custom allocation payload DPS returned, if any. */
  payload?: JsonValue;
  /** ISO-8601 time the device learned this assignment. */
  assignedAt: string;
  /** The registration record's etag, when DPS sent one. */
  etag?: string;
}

/** Persistence of the assignment. Implementations must make `save` atomic: a crash leaves the old or the new one. */
export interface AssignmentStore {
  load(): Promise<Assignment | undefined>;
  save(assignment: Assignment): Promise<void>;
  clear(): Promise<void>;
}

/** Keeps the assignment in memory only (tests, or devices without storage: every boot registers). */
export class MemoryAssignmentStore implements AssignmentStore {
  constructor(private assignment?: Assignment) {}
  load(): Promise<Assignment | undefined> {
    return Promise.resolve(this.assignment === undefined ? undefined : { ...this.assignment });
  }
  save(assignment: Assignment): Promise<void> {
    this.assignment = { ...assignment };
    return Promise.resolve();
  }
  clear(): Promise<void> {
    this.assignment = undefined;
    return Promise.resolve();
  }
}

const FORMAT_VERSION = 1;

/**
 * A JSON file: `{"version":1,"assignment":{...}}`, written atomically (temporary file in the same directory, fsync,
 * rename, directory fsync) with mode 0600. A missing, unreadable or malformed file loads as "no assignment", so the
 * device registers again rather than failing to boot.
 */
export class FileAssignmentStore implements AssignmentStore {
  constructor(readonly path: string) {}

  async load(): Promise<Assignment | undefined> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    try {
      const doc: unknown = JSON.parse(text);
      if (!isJsonObject(doc) || doc.version !== FORMAT_VERSION) return undefined;
      return parseAssignment(doc.assignment);
    } catch {
      return undefined;
    }
  }

  async save(assignment: Assignment): Promise<void> {
    const dir = dirname(this.path);
    await mkdir(dir, { recursive: true });
    const tmp = `${this.path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const data = `${JSON.stringify({ version: FORMAT_VERSION, assignment }, null, 2)}\n`;
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(data, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await rename(tmp, this.path);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    await syncDir(dir);
  }

  async clear(): Promise<void> {
    await rm(this.path, { force: true });
    await syncDir(dirname(this.path));
  }
}

async function syncDir(dir: string): Promise<void> {
  try {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // Some platforms cannot fsync a directory; the rename is still atomic.
  }
}

/** Validates a stored assignment; undefined when a required field is missing. */
export function parseAssignment(v: unknown): Assignment | undefined {
  if (!isJsonObject(v)) return undefined;
  const str = (k: string): string | undefined => (typeof v[k] === 'string' && v[k] !== '' ? (v[k] as string) : undefined);
  const idScope = str('idScope');
  const registrationId = str('registrationId');
  const assignedHub = str('assignedHub');
  const deviceId = str('deviceId');
  const assignedAt = str('assignedAt');
  if (!idScope || !registrationId || !assignedHub || !deviceId || !assignedAt) return undefined;
  const a: Assignment = { idScope, registrationId, assignedHub, deviceId, assignedAt };
  const substatus = str('substatus');
  if (substatus) a.substatus = substatus;
  const etag = str('etag');
  if (etag) a.etag = etag;
  if (v.payload !== undefined) a.payload = v.payload;
  return a;
}
