/** Output helpers: human-readable text by default, JSON with --json. */

export interface OutputFlags {
  json?: boolean;
}

/** Where the CLI writes (replaceable, so tests can run main() in process without touching process.stdout). */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

const processIo: CliIo = {
  out: (t) => void process.stdout.write(t),
  err: (t) => void process.stderr.write(t),
};

let io: CliIo = processIo;

/** Sets the output sink; returns a function that restores the previous one. */
export function setIo(next: CliIo): () => void {
  const prev = io;
  io = next;
  return () => {
    io = prev;
  };
}

/** A line on stdout. */
export function writeOut(text: string): void {
  io.out(text.endsWith('\n') ? text : `${text}\n`);
}

/** A line on stderr (diagnostics, progress, errors). */
export function writeErr(text: string): void {
  io.err(text.endsWith('\n') ? text : `${text}\n`);
}

export function printJson(value: unknown): void {
  writeOut(JSON.stringify(value, null, 2));
}

function scalar(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

/** A nested object as indented `key: value` lines (arrays of scalars inline, other arrays as `- ` items). */
export function renderObject(value: unknown, indent = 0): string {
  const pad = ' '.repeat(indent);
  if (value === null || typeof value !== 'object') return `${pad}${scalar(value)}`;
  const lines: string[] = [];
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v] as const) : Object.entries(value as Record<string, unknown>);
  for (const [k, v] of entries) {
    const label = Array.isArray(value) ? '-' : `${k}:`;
    if (v !== null && typeof v === 'object') {
      const isEmpty = Array.isArray(v) ? v.length === 0 : Object.keys(v).length === 0;
      if (isEmpty) lines.push(`${pad}${label} ${Array.isArray(v) ? '[]' : '{}'}`);
      else if (Array.isArray(v) && v.every((x) => x === null || typeof x !== 'object')) lines.push(`${pad}${label} ${v.map(scalar).join(', ')}`);
      else lines.push(`${pad}${label}`, renderObject(v, indent + 2));
    } else if (v !== undefined) {
      lines.push(`${pad}${label} ${scalar(v)}`);
    }
  }
  return lines.join('\n');
}

/** A table with a header row; cells are padded to the widest value of their column. */
export function renderTable(headers: readonly string[], rows: readonly (readonly unknown[])[]): string {
  const cells = rows.map((r) => headers.map((_h, i) => (r[i] === undefined ? '' : scalar(r[i]))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]): string => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ').trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

/** Prints one object: JSON, or indented key/value lines. */
export function printObject(flags: OutputFlags, value: unknown): void {
  if (flags.json) printJson(value);
  else writeOut(renderObject(value));
}

/** Prints a list: JSON array, or a table (with a count line when empty). */
export function printList(flags: OutputFlags, items: readonly unknown[], headers: readonly string[], row: (item: never) => readonly unknown[], empty = 'nothing found'): void {
  if (flags.json) {
    printJson(items);
    return;
  }
  if (items.length === 0) {
    writeOut(`(${empty})`);
    return;
  }
  writeOut(renderTable(headers, items.map((i) => row(i as never))));
}

/** Prints a one-line confirmation, or `{"ok": true, ...}` with --json. */
export function printDone(flags: OutputFlags, message: string, extra: Record<string, unknown> = {}): void {
  if (flags.json) printJson({ ok: true, ...extra });
  else writeOut(message);
}
