import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isHomingError } from '../../src/core/errors.ts';
import type { JsonObject } from '../../src/core/json.ts';
import { compareValues, evaluate, matchesQuery, parseCondition, parseTwinQuery, projectRow, tokenize } from '../../src/core/twin-query.ts';

const twin: JsonObject = {
  deviceId: 'dev-1',
  status: 'enabled',
  connectionState: 'Disconnected',
  capabilities: { iotEdge: false },
  tags: { location: { region: 'US', building: 43 }, 'build-no': 'b7', env: 'prod', list: [1, 'two', { three: 3 }] },
  properties: {
    desired: { telemetryInterval: 30, $version: 4 },
    reported: { firmware: { version: '1.2.0' }, temp: 21.5, online: true, nothing: null, $version: 9 },
  },
};

function where(cond: string, doc: JsonObject = twin): boolean {
  return matchesQuery(parseTwinQuery(`SELECT * FROM devices WHERE ${cond}`), doc);
}

/** Asserts a syntax error at a 1-based position. */
function syntaxErrorAt(query: string, position: number, messagePart?: RegExp): void {
  assert.throws(
    () => parseTwinQuery(query),
    (e: unknown) => {
      assert.ok(isHomingError(e), 'a HomingError');
      assert.equal(e.errorName, 'ArgumentInvalid');
      assert.equal(e.info?.position, String(position), `position in ${JSON.stringify(query)}: ${e.message}`);
      assert.match(e.message, new RegExp(`position ${position}\\b`));
      if (messagePart) assert.match(e.message, messagePart);
      return true;
    },
  );
}

describe('twin query: tokenizer', () => {
  it('splits names, strings, numbers and operators with positions', () => {
    const t = tokenize(`SELECT * FROM devices WHERE a.b <> 'x''y' AND c >= -1.5e2`);
    assert.deepEqual(
      t.map((x) => [x.kind, x.text, x.pos]),
      [
        ['name', 'SELECT', 0], ['punct', '*', 7], ['name', 'FROM', 9], ['name', 'devices', 14], ['name', 'WHERE', 22],
        ['name', 'a', 28], ['punct', '.', 29], ['name', 'b', 30], ['punct', '!=', 32], ['string', "x'y", 35],
        ['name', 'AND', 42], ['name', 'c', 46], ['punct', '>=', 48], ['number', '-1.5e2', 51], ['eof', '', 57],
      ],
    );
  });

  it('reads double-quoted strings, doubled quotes and backslash-escaped quotes', () => {
    assert.deepEqual(tokenize(`"a""b" 'it\\'s' "c\\\\d"`).slice(0, 3).map((x) => x.text), ['a"b', "it's", 'c\\d']);
  });
});

describe('twin query: parser', () => {
  it('parses SELECT * FROM devices with and without WHERE, keywords in any case', () => {
    assert.deepEqual(parseTwinQuery('SELECT * FROM devices'), { select: { kind: 'all' }, from: 'devices', where: undefined });
    const q = parseTwinQuery("select * from DEVICES where deviceId = 'x'");
    assert.equal(q.select.kind, 'all');
    assert.deepEqual(q.where, { kind: 'compare', op: '=', left: { kind: 'path', path: ['deviceId'] }, right: { kind: 'literal', value: 'x' } });
  });

  it('parses COUNT() with and without an alias', () => {
    assert.deepEqual(parseTwinQuery('SELECT COUNT() AS numberOfDevices FROM devices').select, { kind: 'count', alias: 'numberOfDevices' });
    assert.deepEqual(parseTwinQuery('select count() from devices where status = "enabled"').select, { kind: 'count', alias: '$1' });
  });

  it('parses projections with aliases', () => {
    const q = parseTwinQuery('SELECT deviceId, properties.reported.temp AS t, tags.location.region FROM devices');
    assert.deepEqual(q.select, {
      kind: 'fields',
      fields: [
        { path: ['deviceId'], alias: 'deviceId' },
        { path: ['properties', 'reported', 'temp'], alias: 't' },
        { path: ['tags', 'location', 'region'], alias: 'region' },
      ],
    });
    assert.deepEqual(projectRow(q, twin), { deviceId: 'dev-1', t: 21.5, region: 'US' });
  });

  it('gives AND precedence over OR, and NOT over AND', () => {
    const q = parseTwinQuery('SELECT * FROM devices WHERE a = 1 OR NOT b = 2 AND c = 3');
    assert.equal(q.where?.kind, 'or');
    if (q.where?.kind !== 'or') return;
    assert.equal(q.where.right.kind, 'and');
    if (q.where.right.kind !== 'and') return;
    assert.equal(q.where.right.left.kind, 'not');
  });

  it('parses a lone condition', () => {
    assert.equal(evaluate(parseCondition("tags.env = 'prod' AND deviceId IN ['dev-1']"), twin), true);
    assert.throws(() => parseCondition('a = 1 b'), /position 7/);
  });

  it('reports the position of syntax errors', () => {
    syntaxErrorAt('SELEC * FROM devices', 1, /expected SELECT/);
    syntaxErrorAt('SELECT * FROM', 14, /'devices'/);
    syntaxErrorAt('SELECT * FROM enrollments', 15, /'devices'/);
    syntaxErrorAt('SELECT * FROM devices.modules', 22, /only FROM devices/);
    syntaxErrorAt('SELECT * FROM devices WHERE', 28, /expected a value/);
    syntaxErrorAt("SELECT * FROM devices WHERE deviceId = 'abc", 40, /unterminated string/);
    syntaxErrorAt('SELECT * FROM devices WHERE (a = 1', 35, /expected '\)'/);
    syntaxErrorAt('SELECT * FROM devices WHERE a = 1 b = 2', 35, /unexpected 'b'/);
    syntaxErrorAt('SELECT * FROM devices WHERE a ~ 1', 31, /unexpected character '~'/);
    syntaxErrorAt('SELECT * FROM devices WHERE a IN 1', 34, /after IN/);
    syntaxErrorAt('SELECT * FROM devices WHERE a IN [1, b]', 38, /literal in the IN list/);
    syntaxErrorAt('SELECT * FROM devices WHERE FOO(a)', 29, /unknown function 'FOO'/);
    syntaxErrorAt('SELECT * FROM devices WHERE STARTSWITH(a)', 29, /takes 2 arguments, got 1/);
    syntaxErrorAt('SELECT * FROM devices WHERE IS_DEFINED(1)', 29, /property path/);
    syntaxErrorAt('SELECT * FROM devices WHERE tags. = 1', 35, /property name after '\.'/);
    syntaxErrorAt('SELECT * FROM devices WHERE a = 12abc', 33, /invalid number/);
    syntaxErrorAt('SELECT * FROM devices GROUP BY status', 23, /unexpected 'GROUP'/);
    syntaxErrorAt('SELECT TOP 5 * FROM devices', 12, /expected FROM/);
  });

  it('refuses empty, oversized and absurdly nested queries', () => {
    for (const q of ['', '   ', `SELECT * FROM devices WHERE a = '${'x'.repeat(9000)}'`, `SELECT * FROM devices WHERE ${'('.repeat(200)}a = 1${')'.repeat(200)}`]) {
      assert.throws(() => parseTwinQuery(q), (e: unknown) => isHomingError(e) && e.errorName === 'ArgumentInvalid');
    }
  });
});

describe('twin query: evaluation', () => {
  it('compares top-level fields, tags and properties', () => {
    assert.equal(where("deviceId = 'dev-1'"), true);
    assert.equal(where("deviceId = 'DEV-1'"), false, 'string values are case-sensitive');
    assert.equal(where("status = 'enabled' AND connectionState = 'Disconnected'"), true);
    assert.equal(where("tags.location.region = 'US'"), true);
    assert.equal(where('tags.location.building >= 43 AND tags.location.building < 44'), true);
    assert.equal(where('properties.desired.telemetryInterval > 10'), true);
    assert.equal(where("properties.reported.firmware.version = '1.2.0'"), true);
    assert.equal(where('properties.reported.temp <= 21.5'), true);
    assert.equal(where('properties.reported.online = true'), true);
    assert.equal(where('capabilities.iotEdge = false'), true);
    assert.equal(where('properties.reported.$version = 9'), true);
    assert.equal(where("tags['build-no'] = 'b7'"), true);
    assert.equal(where("tags.list[1] = 'two' AND tags.list[2].three = 3"), true);
  });

  it('supports != and <> alike, and NOT', () => {
    assert.equal(where("tags.env != 'dev'"), true);
    assert.equal(where("tags.env <> 'prod'"), false);
    assert.equal(where("NOT tags.env = 'prod'"), false);
    assert.equal(where("NOT (tags.env = 'dev' OR tags.env = 'test')"), true);
  });

  it('supports IN with brackets or parentheses, and NOT IN', () => {
    assert.equal(where("deviceId IN ['a', 'dev-1']"), true);
    assert.equal(where("deviceId IN ('a', 'b')"), false);
    assert.equal(where("deviceId NOT IN ('a', 'b')"), true);
    assert.equal(where('tags.location.building IN [42, 43]'), true);
    assert.equal(where('deviceId IN []'), false);
  });

  it('treats missing properties as unknown: neither = nor != match', () => {
    assert.equal(where("tags.missing = 'x'"), false);
    assert.equal(where("tags.missing != 'x'"), false);
    assert.equal(where("NOT tags.missing = 'x'"), false);
    assert.equal(where("tags.missing IN ['x']"), false);
    assert.equal(where("tags.missing NOT IN ['x']"), false);
    assert.equal(where("tags.missing = 'x' OR deviceId = 'dev-1'"), true, 'unknown OR true is true');
    assert.equal(where("tags.missing = 'x' AND deviceId = 'dev-1'"), false);
  });

  it('treats comparisons between different types as unknown', () => {
    assert.equal(where("tags.location.building = '43'"), false);
    assert.equal(where("tags.location.building != '43'"), false);
    assert.equal(where('tags.env > 1'), false);
    assert.equal(compareValues('<', 'a', 'b'), true);
    assert.equal(compareValues('<', 1, 'b'), undefined);
    assert.equal(compareValues('=', { a: [1] }, { a: [1] }), true);
    assert.equal(compareValues('<', { a: 1 }, { a: 2 }), undefined);
  });

  it('supports null literals and IS_* functions', () => {
    assert.equal(where('properties.reported.nothing = null'), true);
    assert.equal(where('IS_NULL(properties.reported.nothing)'), true);
    assert.equal(where('IS_DEFINED(properties.reported.firmware)'), true);
    assert.equal(where('is_defined(properties.reported.missing)'), false);
    assert.equal(where('NOT IS_DEFINED(properties.reported.missing)'), true);
    assert.equal(where('IS_OBJECT(tags.location) AND IS_NUMBER(properties.reported.temp) AND IS_STRING(deviceId)'), true);
    assert.equal(where('IS_BOOL(properties.reported.online) AND IS_ARRAY(tags.list) AND IS_PRIMITIVE(tags.env)'), true);
  });

  it('supports string and array functions', () => {
    assert.equal(where("STARTSWITH(deviceId, 'dev-')"), true);
    assert.equal(where("ENDSWITH(deviceId, '-2')"), false);
    assert.equal(where("CONTAINS(tags.env, 'ro')"), true);
    assert.equal(where("ARRAY_CONTAINS(tags.list, 'two')"), true);
    assert.equal(where('ARRAY_LENGTH(tags.list) = 3'), true);
    assert.equal(where("LOWER(tags.location.region) = 'us' AND UPPER('a') = 'A' AND LENGTH(deviceId) = 5"), true);
  });

  it('accepts a bare boolean property as a condition', () => {
    assert.equal(where('properties.reported.online'), true);
    assert.equal(where('capabilities.iotEdge'), false);
    assert.equal(where('tags.env'), false, 'a string is not true');
  });

  it('does not resolve inherited object members', () => {
    assert.equal(where('IS_DEFINED(tags.constructor)'), false);
    assert.equal(where('IS_DEFINED(tags.toString)'), false);
  });
});
