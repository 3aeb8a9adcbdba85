import { HomingError } from './errors.ts';
import { isPlainObject, type JsonObject, type JsonValue } from './json.ts';

/**
 * The IoT Hub device query language, the subset Homing supports: a small pure tokenizer, a recursive-descent
 * parser and an evaluator over the service-side Twin JSON of one device.
 *
 *   query    := SELECT select FROM devices [WHERE expr]
 *   select   := '*' | COUNT '(' ')' [AS name] | field (',' field)*        field := path [AS name]
 *   expr     := and (OR and)*          and := not (AND not)*          not := NOT not | cmp
 *   cmp      := operand [ ('=' | '!=' | '<>' | '<' | '>' | '<=' | '>=') operand | [NOT] IN list ]
 *   operand  := literal | path | FUNC '(' [expr (',' expr)*] ')' | '(' expr ')'
 *   list     := '[' [literal (',' literal)*] ']' | '(' ... ')'
 *   path     := name ('.' name | '[' string | integer ']')*
 *   literal  := 'string' | "string" | number | true | false | null       ('' or \' escape a quote)
 *
 * Keywords and function names are case-insensitive; property names are case-sensitive. Evaluation follows the
 * Cosmos-style three-valued logic IoT Hub uses: a missing property or a comparison between different types is
 * `undefined`, which is neither true nor false, so `x != 1` does not match twins without `x`. A row matches only
 * when WHERE evaluates to exactly `true`.
 *
 * Syntax errors are HomingError ArgumentInvalid with a 1-based character position in the message and in
 * `info.position`.
 */

export type QueryValue = JsonValue | undefined;

export type CompareOp = '=' | '!=' | '<' | '>' | '<=' | '>=';

export type Expr =
  | { kind: 'literal'; value: JsonValue }
  | { kind: 'path'; path: readonly (string | number)[] }
  | { kind: 'compare'; op: CompareOp; left: Expr; right: Expr }
  | { kind: 'in'; negated: boolean; value: Expr; list: readonly JsonValue[] }
  | { kind: 'and' | 'or'; left: Expr; right: Expr }
  | { kind: 'not'; expr: Expr }
  | { kind: 'call'; fn: FunctionName; args: readonly Expr[] };

export type SelectClause =
  | { kind: 'all' }
  | { kind: 'count'; alias: string }
  | { kind: 'fields'; fields: readonly { path: readonly (string | number)[]; alias: string }[] };

export interface TwinQuery {
  select: SelectClause;
  /** The collection queried; only `devices` is supported. */
  from: 'devices';
  where: Expr | undefined;
}

/** Longest accepted query text (IoT Hub accepts 8 KiB). */
export const MAX_QUERY_LENGTH = 8192;
const MAX_NESTING = 64;

// ------------------------------------------------------------------------------------------------- tokenizer

type TokenKind = 'name' | 'string' | 'number' | 'punct' | 'eof';

interface Token {
  kind: TokenKind;
  /** The name, the decoded string, the number text or the punctuation. */
  text: string;
  /** 0-based offset in the query text. */
  pos: number;
}

function syntaxError(pos: number, message: string): HomingError {
  const at = pos + 1;
  return new HomingError('ArgumentInvalid', `Query syntax error at position ${at}: ${message}`, { info: { position: String(at) } });
}

const PUNCT2 = ['!=', '<>', '<=', '>='];
const PUNCT1 = new Set(['*', ',', '.', '(', ')', '[', ']', '=', '<', '>']);

function isNameStart(c: string): boolean {
  return /[A-Za-z_$]/.test(c);
}

function isNamePart(c: string): boolean {
  return /[A-Za-z0-9_$]/.test(c);
}

export function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charAt(i);
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const start = i;
    if (c === "'" || c === '"') {
      let value = '';
      i++;
      let closed = false;
      while (i < n) {
        const d = text.charAt(i);
        if (d === c) {
          if (text.charAt(i + 1) === c) {
            value += c;
            i += 2;
            continue;
          }
          i++;
          closed = true;
          break;
        }
        if (d === '\\' && i + 1 < n && ["'", '"', '\\'].includes(text.charAt(i + 1))) {
          value += text.charAt(i + 1);
          i += 2;
          continue;
        }
        value += d;
        i++;
      }
      if (!closed) throw syntaxError(start, 'unterminated string literal.');
      out.push({ kind: 'string', text: value, pos: start });
      continue;
    }
    const num = /^-?(\d+(\.\d+)?|\.\d+)([eE][+-]?\d+)?/.exec(text.slice(i));
    if (num && (c !== '-' || /[\d.]/.test(text.charAt(i + 1)))) {
      if (isNamePart(text.charAt(i + num[0].length))) throw syntaxError(start, `invalid number '${text.slice(i, i + num[0].length + 1)}'.`);
      out.push({ kind: 'number', text: num[0], pos: start });
      i += num[0].length;
      continue;
    }
    if (isNameStart(c)) {
      while (i < n && isNamePart(text.charAt(i))) i++;
      out.push({ kind: 'name', text: text.slice(start, i), pos: start });
      continue;
    }
    const two = text.slice(i, i + 2);
    if (PUNCT2.includes(two)) {
      out.push({ kind: 'punct', text: two === '<>' ? '!=' : two, pos: start });
      i += 2;
      continue;
    }
    if (PUNCT1.has(c)) {
      out.push({ kind: 'punct', text: c, pos: start });
      i++;
      continue;
    }
    throw syntaxError(start, `unexpected character '${c}'.`);
  }
  out.push({ kind: 'eof', text: '', pos: n });
  return out;
}

// ------------------------------------------------------------------------------------------------- parser

const KEYWORDS = new Set(['select', 'from', 'where', 'and', 'or', 'not', 'in', 'as', 'true', 'false', 'null']);

type FunctionName =
  | 'is_defined' | 'is_null' | 'is_bool' | 'is_number' | 'is_string' | 'is_object' | 'is_array' | 'is_primitive'
  | 'startswith' | 'endswith' | 'contains' | 'array_contains' | 'array_length' | 'lower' | 'upper' | 'length';

/** Supported functions and their arity. */
const FUNCTIONS: Readonly<Record<FunctionName, number>> = {
  is_defined: 1, is_null: 1, is_bool: 1, is_number: 1, is_string: 1, is_object: 1, is_array: 1, is_primitive: 1,
  startswith: 2, endswith: 2, contains: 2, array_contains: 2, array_length: 1, lower: 1, upper: 1, length: 1,
};

function isFunctionName(s: string): s is FunctionName {
  return Object.hasOwn(FUNCTIONS, s);
}

function describe(t: Token): string {
  if (t.kind === 'eof') return 'the end of the query';
  if (t.kind === 'string') return `string '${t.text.slice(0, 32)}'`;
  return `'${t.text}'`;
}

class Parser {
  private i = 0;
  private depth = 0;

  constructor(private readonly tokens: readonly Token[]) {}

  private peek(offset = 0): Token {
    const t = this.tokens[Math.min(this.i + offset, this.tokens.length - 1)];
    if (!t) throw new Error('tokenizer produced no eof token');
    return t;
  }

  private next(): Token {
    const t = this.peek();
    if (this.i < this.tokens.length - 1) this.i++;
    return t;
  }

  private isKeyword(t: Token, kw: string): boolean {
    return t.kind === 'name' && t.text.toLowerCase() === kw;
  }

  private isPunct(t: Token, p: string): boolean {
    return t.kind === 'punct' && t.text === p;
  }

  private expectKeyword(kw: string): Token {
    const t = this.next();
    if (!this.isKeyword(t, kw)) throw syntaxError(t.pos, `expected ${kw.toUpperCase()} but found ${describe(t)}.`);
    return t;
  }

  private expectPunct(p: string): Token {
    const t = this.next();
    if (!this.isPunct(t, p)) throw syntaxError(t.pos, `expected '${p}' but found ${describe(t)}.`);
    return t;
  }

  parseQuery(): TwinQuery {
    this.expectKeyword('select');
    const select = this.parseSelect();
    this.expectKeyword('from');
    const from = this.next();
    if (from.kind !== 'name' || from.text.toLowerCase() !== 'devices') {
      throw syntaxError(from.pos, `expected the collection 'devices' but found ${describe(from)}.`);
    }
    if (this.isPunct(this.peek(), '.')) throw syntaxError(this.peek().pos, 'only FROM devices is supported (no modules or jobs).');
    let where: Expr | undefined;
    if (this.isKeyword(this.peek(), 'where')) {
      this.next();
      where = this.parseExpr();
    }
    const end = this.peek();
    if (end.kind !== 'eof') throw syntaxError(end.pos, `unexpected ${describe(end)}; expected WHERE or the end of the query.`);
    return { select, from: 'devices', where };
  }

  private parseSelect(): SelectClause {
    const t = this.peek();
    if (this.isPunct(t, '*')) {
      this.next();
      return { kind: 'all' };
    }
    if (this.isKeyword(t, 'count') && this.isPunct(this.peek(1), '(')) {
      this.next();
      this.next();
      this.expectPunct(')');
      return { kind: 'count', alias: this.parseAlias() ?? '$1' };
    }
    const fields: { path: (string | number)[]; alias: string }[] = [];
    for (;;) {
      const start = this.peek();
      if (start.kind !== 'name' || KEYWORDS.has(start.text.toLowerCase())) {
        throw syntaxError(start.pos, `expected *, COUNT() or a property path but found ${describe(start)}.`);
      }
      const path = this.parsePath();
      const last = path[path.length - 1];
      fields.push({ path, alias: this.parseAlias() ?? String(last) });
      if (!this.isPunct(this.peek(), ',')) break;
      this.next();
    }
    return { kind: 'fields', fields };
  }

  private parseAlias(): string | undefined {
    if (!this.isKeyword(this.peek(), 'as')) return undefined;
    this.next();
    const t = this.next();
    if (t.kind === 'name') return t.text;
    if (t.kind === 'string' && t.text.length > 0) return t.text;
    throw syntaxError(t.pos, `expected an alias after AS but found ${describe(t)}.`);
  }

  private nest<T>(pos: number, fn: () => T): T {
    if (++this.depth > MAX_NESTING) throw syntaxError(pos, `expressions nest deeper than ${MAX_NESTING} levels.`);
    try {
      return fn();
    } finally {
      this.depth--;
    }
  }

  /** A lone condition followed by the end of the text. */
  parseStandaloneCondition(): Expr {
    const e = this.parseExpr();
    const end = this.peek();
    if (end.kind !== 'eof') throw syntaxError(end.pos, `unexpected ${describe(end)}; expected AND, OR or the end of the condition.`);
    return e;
  }

  parseExpr(): Expr {
    return this.nest(this.peek().pos, () => {
      let left = this.parseAnd();
      while (this.isKeyword(this.peek(), 'or')) {
        this.next();
        left = { kind: 'or', left, right: this.parseAnd() };
      }
      return left;
    });
  }

  private parseAnd(): Expr {
    let left = this.parseNot();
    while (this.isKeyword(this.peek(), 'and')) {
      this.next();
      left = { kind: 'and', left, right: this.parseNot() };
    }
    return left;
  }

  private parseNot(): Expr {
    if (this.isKeyword(this.peek(), 'not')) {
      const t = this.next();
      return this.nest(t.pos, () => ({ kind: 'not', expr: this.parseNot() }));
    }
    return this.parseComparison();
  }

  private parseComparison(): Expr {
    const left = this.parseOperand();
    const t = this.peek();
    if (t.kind === 'punct' && ['=', '!=', '<', '>', '<=', '>='].includes(t.text)) {
      this.next();
      return { kind: 'compare', op: t.text as CompareOp, left, right: this.parseOperand() };
    }
    if (this.isKeyword(t, 'in')) {
      this.next();
      return { kind: 'in', negated: false, value: left, list: this.parseList() };
    }
    if (this.isKeyword(t, 'not') && this.isKeyword(this.peek(1), 'in')) {
      this.next();
      this.next();
      return { kind: 'in', negated: true, value: left, list: this.parseList() };
    }
    return left;
  }

  private parseList(): JsonValue[] {
    const open = this.next();
    let close: string;
    if (this.isPunct(open, '[')) close = ']';
    else if (this.isPunct(open, '(')) close = ')';
    else throw syntaxError(open.pos, `expected '[' or '(' after IN but found ${describe(open)}.`);
    const items: JsonValue[] = [];
    if (this.isPunct(this.peek(), close)) {
      this.next();
      return items;
    }
    for (;;) {
      const t = this.peek();
      const lit = this.tryLiteral();
      if (lit === undefined) throw syntaxError(t.pos, `expected a literal in the IN list but found ${describe(t)}.`);
      items.push(lit.value);
      const sep = this.next();
      if (this.isPunct(sep, close)) return items;
      if (!this.isPunct(sep, ',')) throw syntaxError(sep.pos, `expected ',' or '${close}' but found ${describe(sep)}.`);
    }
  }

  /** Consumes a literal when the next token is one. */
  private tryLiteral(): { value: JsonValue } | undefined {
    const t = this.peek();
    if (t.kind === 'string') {
      this.next();
      return { value: t.text };
    }
    if (t.kind === 'number') {
      this.next();
      const v = Number(t.text);
      if (!Number.isFinite(v)) throw syntaxError(t.pos, `number ${t.text} is out of range.`);
      return { value: v };
    }
    if (t.kind === 'name') {
      const kw = t.text.toLowerCase();
      if (kw === 'true' || kw === 'false' || kw === 'null') {
        this.next();
        return { value: kw === 'null' ? null : kw === 'true' };
      }
    }
    return undefined;
  }

  private parseOperand(): Expr {
    const t = this.peek();
    const lit = this.tryLiteral();
    if (lit !== undefined) return { kind: 'literal', value: lit.value };
    if (this.isPunct(t, '(')) {
      this.next();
      const e = this.parseExpr();
      this.expectPunct(')');
      return e;
    }
    if (t.kind === 'name' && !KEYWORDS.has(t.text.toLowerCase())) {
      if (this.isPunct(this.peek(1), '(')) return this.parseCall();
      return { kind: 'path', path: this.parsePath() };
    }
    throw syntaxError(t.pos, `expected a value, a property path or '(' but found ${describe(t)}.`);
  }

  private parseCall(): Expr {
    const nameTok = this.next();
    const fn = nameTok.text.toLowerCase();
    if (!isFunctionName(fn)) throw syntaxError(nameTok.pos, `unknown function '${nameTok.text}'.`);
    this.expectPunct('(');
    const args: Expr[] = [];
    if (!this.isPunct(this.peek(), ')')) {
      for (;;) {
        args.push(this.parseExpr());
        if (!this.isPunct(this.peek(), ',')) break;
        this.next();
      }
    }
    this.expectPunct(')');
    const arity = FUNCTIONS[fn];
    if (args.length !== arity) {
      throw syntaxError(nameTok.pos, `${fn.toUpperCase()} takes ${arity} argument${arity === 1 ? '' : 's'}, got ${args.length}.`);
    }
    if (fn === 'is_defined' && args[0]?.kind !== 'path') throw syntaxError(nameTok.pos, 'IS_DEFINED takes a property path.');
    return { kind: 'call', fn, args };
  }

  private parsePath(): (string | number)[] {
    const first = this.next();
    const path: (string | number)[] = [first.text];
    for (;;) {
      const t = this.peek();
      if (this.isPunct(t, '.')) {
        this.next();
        const name = this.next();
        if (name.kind !== 'name') throw syntaxError(name.pos, `expected a property name after '.' but found ${describe(name)}.`);
        path.push(name.text);
      } else if (this.isPunct(t, '[')) {
        this.next();
        const key = this.next();
        if (key.kind === 'string') path.push(key.text);
        else if (key.kind === 'number' && /^\d+$/.test(key.text)) path.push(Number(key.text));
        else throw syntaxError(key.pos, `expected a quoted property name or an array index but found ${describe(key)}.`);
        this.expectPunct(']');
      } else {
        return path;
      }
    }
  }
}

/** Parses a query. Throws HomingError ArgumentInvalid with the 1-based position of the problem. */
export function parseTwinQuery(text: string): TwinQuery {
  if (typeof text !== 'string' || text.trim().length === 0) throw new HomingError('ArgumentInvalid', 'The query is empty.');
  if (text.length > MAX_QUERY_LENGTH) throw new HomingError('ArgumentInvalid', `The query is longer than ${MAX_QUERY_LENGTH} characters.`);
  return new Parser(tokenize(text)).parseQuery();
}

/** Parses a condition alone (no SELECT ... FROM), as jobs and configurations carry them. */
export function parseCondition(text: string): Expr {
  if (typeof text !== 'string' || text.trim().length === 0) throw new HomingError('ArgumentInvalid', 'The condition is empty.');
  if (text.length > MAX_QUERY_LENGTH) throw new HomingError('ArgumentInvalid', `The condition is longer than ${MAX_QUERY_LENGTH} characters.`);
  return new Parser(tokenize(text)).parseStandaloneCondition();
}

// ------------------------------------------------------------------------------------------------- evaluator

type TypeTag = 'undefined' | 'null' | 'boolean' | 'number' | 'string' | 'array' | 'object';

function typeTag(v: QueryValue): TypeTag {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  switch (typeof v) {
    case 'boolean':
      return 'boolean';
    case 'number':
      return 'number';
    case 'string':
      return 'string';
    default:
      return 'object';
  }
}

function deepEqual(a: JsonValue, b: JsonValue): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i] as JsonValue));
  if (isPlainObject(a) && isPlainObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k] as JsonValue, b[k] as JsonValue));
  }
  return false;
}

/** Compares two values; `undefined` when either is missing or their types differ. */
export function compareValues(op: CompareOp, a: QueryValue, b: QueryValue): boolean | undefined {
  const ta = typeTag(a);
  if (a === undefined || b === undefined || ta !== typeTag(b)) return undefined;
  if (op === '=') return deepEqual(a, b);
  if (op === '!=') return !deepEqual(a, b);
  let c: number;
  if (ta === 'number' || ta === 'boolean') c = Number(a) - Number(b);
  else if (ta === 'string') c = (a as string) < (b as string) ? -1 : (a as string) > (b as string) ? 1 : 0;
  else if (ta === 'null') c = 0;
  else return undefined;
  switch (op) {
    case '<':
      return c < 0;
    case '>':
      return c > 0;
    case '<=':
      return c <= 0;
    default:
      return c >= 0;
  }
}

function resolvePath(doc: JsonObject, path: readonly (string | number)[]): QueryValue {
  let cur: QueryValue = doc;
  for (const seg of path) {
    if (typeof seg === 'number') {
      if (!Array.isArray(cur)) return undefined;
      cur = cur[seg];
    } else {
      if (!isPlainObject(cur) || !Object.hasOwn(cur, seg)) return undefined;
      cur = cur[seg];
    }
  }
  return cur;
}

function callFunction(fn: FunctionName, args: readonly QueryValue[]): QueryValue {
  const [a, b] = args;
  switch (fn) {
    case 'is_defined':
      return a !== undefined;
    case 'is_null':
      return a === null;
    case 'is_bool':
      return typeof a === 'boolean';
    case 'is_number':
      return typeof a === 'number';
    case 'is_string':
      return typeof a === 'string';
    case 'is_object':
      return isPlainObject(a);
    case 'is_array':
      return Array.isArray(a);
    case 'is_primitive':
      return a === null || ['boolean', 'number', 'string'].includes(typeof a);
    case 'startswith':
      return typeof a === 'string' && typeof b === 'string' ? a.startsWith(b) : undefined;
    case 'endswith':
      return typeof a === 'string' && typeof b === 'string' ? a.endsWith(b) : undefined;
    case 'contains':
      return typeof a === 'string' && typeof b === 'string' ? a.includes(b) : undefined;
    case 'array_contains':
      return Array.isArray(a) && b !== undefined ? a.some((x) => deepEqual(x, b)) : undefined;
    case 'array_length':
      return Array.isArray(a) ? a.length : undefined;
    case 'lower':
      return typeof a === 'string' ? a.toLowerCase() : undefined;
    case 'upper':
      return typeof a === 'string' ? a.toUpperCase() : undefined;
    case 'length':
      return typeof a === 'string' ? a.length : undefined;
  }
}

/** Evaluates an expression against one document. Logical operators use three-valued logic (undefined = unknown). */
export function evaluate(e: Expr, doc: JsonObject): QueryValue {
  switch (e.kind) {
    case 'literal':
      return e.value;
    case 'path':
      return resolvePath(doc, e.path);
    case 'compare':
      return compareValues(e.op, evaluate(e.left, doc), evaluate(e.right, doc));
    case 'in': {
      const v = evaluate(e.value, doc);
      if (v === undefined) return undefined;
      const found = e.list.some((x) => compareValues('=', v, x) === true);
      return e.negated ? !found : found;
    }
    case 'and': {
      const l = evaluate(e.left, doc);
      if (l === false) return false;
      const r = evaluate(e.right, doc);
      if (r === false) return false;
      return l === true && r === true ? true : undefined;
    }
    case 'or': {
      const l = evaluate(e.left, doc);
      if (l === true) return true;
      const r = evaluate(e.right, doc);
      if (r === true) return true;
      return l === false && r === false ? false : undefined;
    }
    case 'not': {
      const v = evaluate(e.expr, doc);
      return typeof v === 'boolean' ? !v : undefined;
    }
    case 'call':
      return callFunction(e.fn, e.args.map((a) => evaluate(a, doc)));
  }
}

/** True when the document passes the query's WHERE clause (or there is none). */
export function matchesQuery(q: TwinQuery, doc: JsonObject): boolean {
  return q.where === undefined || evaluate(q.where, doc) === true;
}

/** The result row for a matching document: the whole document for `*`, the selected fields otherwise. */
export function projectRow(q: TwinQuery, doc: JsonObject): JsonObject {
  if (q.select.kind !== 'fields') return doc;
  const out: JsonObject = {};
  for (const f of q.select.fields) {
    const v = resolvePath(doc, f.path);
    if (v !== undefined) out[f.alias] = v;
  }
  return out;
}
