import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ERROR_CATALOGUE, type ErrorName } from '../../src/core/errors.ts';

const DOC = fileURLToPath(new URL('../../../../docs/errors.md', import.meta.url));

interface DocRow {
  name: string;
  status: number;
  code: number;
  when: string;
}

/** The rows of the catalogue table: `| Name | HTTP | errorCode | When |`. */
function parseErrorTable(markdown: string): DocRow[] {
  const lines = markdown.split('\n');
  const header = lines.findIndex((l) => /^\|\s*Name\s*\|\s*HTTP\s*\|\s*errorCode\s*\|\s*When\s*\|\s*$/.test(l));
  if (header < 0) throw new Error('docs/errors.md has no | Name | HTTP | errorCode | When | table');
  const rows: DocRow[] = [];
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith('|')) break;
    const cells = line.split('|').slice(1, -1).map((c) => c.trim());
    const [name = '', status = '', code = '', when = ''] = cells;
    rows.push({ name, status: Number(status), code: Number(code), when });
  }
  return rows;
}

describe('docs/errors.md', () => {
  const rows = parseErrorTable(readFileSync(DOC, 'utf8'));
  const catalogue = Object.entries(ERROR_CATALOGUE) as [ErrorName, (typeof ERROR_CATALOGUE)[ErrorName]][];

  it('lists every catalogue entry with its HTTP status and code', () => {
    const byName = new Map(rows.map((r) => [r.name, r]));
    const missing = catalogue.filter(([name]) => !byName.has(name)).map(([name]) => name);
    assert.deepEqual(missing, [], 'entries of ERROR_CATALOGUE missing from docs/errors.md');
    for (const [name, def] of catalogue) {
      const row = byName.get(name);
      assert.equal(row?.status, def.status, `${name}: HTTP status`);
      assert.equal(row?.code, def.code, `${name}: errorCode`);
    }
  });

  it('lists nothing that is not in the catalogue, each name once, each with a description', () => {
    const extra = rows.filter((r) => !(r.name in ERROR_CATALOGUE)).map((r) => r.name);
    assert.deepEqual(extra, [], 'rows of docs/errors.md that ERROR_CATALOGUE does not have');
    assert.equal(new Set(rows.map((r) => r.name)).size, rows.length, 'duplicate names');
    assert.equal(rows.length, catalogue.length);
    for (const r of rows) assert.ok(r.when.length > 10, `${r.name}: the When column is empty`);
  });

  it('keeps the catalogue itself consistent: code = status x 1000 + sub-code, codes unique', () => {
    const codes = new Set<number>();
    for (const [name, def] of catalogue) {
      assert.equal(Math.floor(def.code / 1000), def.status, `${name}: code ${def.code} does not start with its status ${def.status}`);
      assert.ok(!codes.has(def.code), `${name}: code ${def.code} is used twice`);
      codes.add(def.code);
    }
  });

  it('parses the table format it checks', () => {
    const md = '# x\n\n| Name | HTTP | errorCode | When |\n|---|---|---|---|\n| A | 400 | 400001 | some text here |\n\nafter';
    assert.deepEqual(parseErrorTable(md), [{ name: 'A', status: 400, code: 400001, when: 'some text here' }]);
    assert.throws(() => parseErrorTable('no table'), /no \| Name/);
  });
});
