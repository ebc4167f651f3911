// capbroker for JavaScript components built with componentize-js.
//
// The generated bindings work, but are not JavaScript: grants come as a list
// of `{ tag, val }` variants, a refusal is a `ComponentError` whose `payload`
// is another variant, and rights are objects of booleans. This module is the
// thin layer that makes each of those one idiomatic line:
//
//     import { grants, pledge } from '../js-sdk/capbroker.js';
//
//     {
//       using cfg = grants.dir('cfg');      // dropped at the block's end
//       conf = cfg.readFile('app.conf', 'utf8');
//     }
//     pledge('filesystem');                 // and now every handle refuses
//
// Errors are `Error` subclasses (`DeniedError`, `NotFoundError`, ...) whose
// `code` is the WIT case (`denied`, `not-found`, ...) and whose message is
// the Rust SDK's `Display` text. One thrown out of `run` reaches the host as
// `run`'s error string, as `?` does in Rust.
//
// componentize-js resolves only relative imports, so an app imports this
// file by its path (or a bundler resolves `capbroker` to it; see
// docs/guests.md).

import { granted } from 'capbroker:caps/grants@0.1.0';
import * as rawPledge from 'capbroker:caps/pledge@0.1.0';

// --- Rights and flags ---------------------------------------------------------

/** The WIT `rights` flags in declaration order, the order messages use. */
export const RIGHTS = Object.freeze(['read', 'write', 'create', 'list', 'remove']);

// The command line's short spellings of rights.
const RIGHTS_SHORT = Object.freeze({ ro: ['read', 'list'], rw: RIGHTS });

const AUTHORITIES = Object.freeze(['filesystem', 'network', 'environment', 'spawn']);

const OPEN_FLAGS = Object.freeze(['read', 'write', 'append', 'create', 'exclusive', 'truncate']);

// Node's `fs.open` flag strings, so `dir.open('out.txt', 'w')` reads as it
// does in Node. Each maps to the WIT open-flags it means.
const NODE_FLAGS = Object.freeze({
  r: ['read'],
  'r+': ['read', 'write'],
  w: ['write', 'create', 'truncate'],
  wx: ['write', 'create', 'exclusive'],
  'w+': ['read', 'write', 'create', 'truncate'],
  'wx+': ['read', 'write', 'create', 'exclusive'],
  a: ['append', 'create'],
  ax: ['append', 'create', 'exclusive'],
  'a+': ['read', 'append', 'create'],
  'ax+': ['read', 'append', 'create', 'exclusive'],
});

// A bad argument is thrown as the error JavaScript uses for it (TypeError,
// RangeError), never passed on: the bindings would trap on some (a negative
// u64) and quietly mis-read others (a length of 1.5 reads nothing, which is
// the end of the file). It carries a string `payload`, so one the app does
// not catch ends the run with its message instead of trapping.
function argError(Class, message) {
  const e = new Class(message);
  Object.defineProperty(e, 'payload', { value: `${e.name}: ${message}` });
  return e;
}

/**
 * Wraps an export such as `run` so that any error it throws ends the call
 * with `Name: message`. componentize-js ends `run` with an error only for a
 * thrown value carrying its own string `payload` (as this module's errors
 * do); on any other, the app's own bug or `throw new Error(...)`, it traps
 * and prints nothing of it.
 */
export function entry(fn) {
  return function (...args) {
    try {
      return fn.apply(this, args);
    } catch (e) {
      if (e !== null && typeof e === 'object' && Object.hasOwn(e, 'payload')) throw e;
      let text;
      try {
        text = e instanceof Error ? `${e.name}: ${e.message}` : `uncaught: ${String(e)}`;
      } catch {
        text = 'an uncaught exception that cannot be printed';
      }
      const err = new Error(text);
      Object.defineProperty(err, 'payload', { value: text });
      throw err;
    }
  };
}

function pathOf(path) {
  if (typeof path !== 'string') {
    throw argError(TypeError, `a capbroker path is a string, not ${typeof path}`);
  }
  // A lone surrogate has no UTF-8 spelling: the bindings would send U+FFFD
  // in its place, and so name another file.
  if (!path.isWellFormed()) {
    throw argError(TypeError, `a capbroker path is well-formed Unicode; ${JSON.stringify(path)} has a lone surrogate`);
  }
  return path;
}

const U32 = 2 ** 32 - 1;
const U64 = 2n ** 64n - 1n;

// A whole number in [0, top] as the bindings take it (a number, or a bigint
// for a u64).
function wholeNumber(value, what, top) {
  if (typeof value !== 'number' && typeof value !== 'bigint') {
    throw argError(TypeError, `${what} must be a number, not ${typeof value}`);
  }
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw argError(RangeError, Number.isInteger(value)
      ? `${what} of ${value} is past 2 ** 53 - 1, where numbers stop being exact: pass a bigint`
      : `${what} must be a whole number, not ${value}`);
  }
  const big = BigInt(value);
  if (big < 0n || big > BigInt(top)) {
    throw argError(RangeError, `${what} must be between 0 and ${top}, not ${value}`);
  }
  return big;
}

// A set of names, from `'read,list'`, `['read', 'list']` or the bindings'
// `{ read: true, list: true }`, as a WIT flags object. An unknown name is a
// TypeError, never a silently smaller (or larger) set.
function flagsOf(value, names, what) {
  let list;
  if (typeof value === 'string' && names === RIGHTS && value in RIGHTS_SHORT) {
    list = RIGHTS_SHORT[value];
  } else if (typeof value === 'string') {
    list = value === '' || value === 'none' ? [] : value.split(',').map((s) => s.trim());
  } else if (Array.isArray(value)) {
    list = value;
  } else if (value !== null && typeof value === 'object') {
    // for...in, not Object.keys: inherited flags count too, so no object
    // shape gives fewer rights than it reads as.
    list = [];
    for (const k in value) if (value[k]) list.push(k);
  } else {
    throw argError(TypeError, `${what} must be a string like 'read,list', an array or an object, not ${value}`);
  }
  const flags = {};
  for (const name of list) {
    if (typeof name !== 'string') {
      throw argError(TypeError, `each ${what} is a name (a string), not ${Array.isArray(name) ? 'an array' : typeof name}`);
    }
    if (!names.includes(name)) {
      throw argError(TypeError, `unknown ${what} \`${name}\`: one of ${names.join(', ')}`);
    }
    flags[name] = true;
  }
  return flags;
}

// WIT flags as an array of names in declaration order; its `String()` is
// the command line's spelling (`read,list`).
function namesOf(flags, names) {
  return names.filter((n) => flags[n]);
}

/** Rights as the command line spells them (`read,list`; `none` when empty). */
export function rightsList(rights) {
  const names = namesOf(flagsOf(rights, RIGHTS, 'right'), RIGHTS);
  return names.length ? names.join(',') : 'none';
}

// --- Errors -------------------------------------------------------------------

/**
 * A capbroker call failed. `code` is the WIT case (`denied`, `not-found`,
 * ...), or `not-granted` / `dropped` for the SDK's own failures; the message
 * is the Rust SDK's sentence.
 */
export class CapbrokerError extends Error {
  constructor(message, code, wit) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    /** The host's WIT error (`{ tag, val }`), or undefined for the SDK's own. */
    this.wit = wit;
    // componentize-js turns an exception thrown out of an export returning
    // `result<_, string>` into that error only when it carries a string
    // `payload`; without one the component traps.
    Object.defineProperty(this, 'payload', { value: message });
  }
}

/** The handle lacks a right; `missing` names the rights it lacked. */
export class DeniedError extends CapbrokerError {
  get missing() {
    return namesOf(this.wit.val, RIGHTS);
  }
}
/** The path leads outside the handle. */
export class EscapeError extends CapbrokerError {}
export class NotFoundError extends CapbrokerError {}
export class ExistsError extends CapbrokerError {}
export class NotDirectoryError extends CapbrokerError {}
export class IsDirectoryError extends CapbrokerError {}
export class NotEmptyError extends CapbrokerError {}
export class InvalidError extends CapbrokerError {}
export class LimitExceededError extends CapbrokerError {}
export class IoError extends CapbrokerError {}
/** The handle was revoked by whoever holds its revoker. */
export class RevokedError extends CapbrokerError {}
/** A pledge or the broker's policy refuses the call. */
export class RefusedError extends CapbrokerError {}
/** No handle of that kind under that name: never granted, or taken already. */
export class NotGrantedError extends CapbrokerError {}
/** The handle was given up (its `using` block ended, or `close()`). */
export class DroppedError extends CapbrokerError {}

// WIT case -> [class, sentence]; the sentences are the Rust SDK's.
const FROM_WIT = {
  denied: [DeniedError, (v) => `denied: the handle lacks ${rightsList(v)}`],
  escape: [EscapeError, (v) => `escape: \`${v}\` leads outside the handle`],
  'not-found': [NotFoundError, (v) => `not found: \`${v}\``],
  exists: [ExistsError, (v) => `exists: \`${v}\``],
  'not-directory': [NotDirectoryError, (v) => `not a directory: \`${v}\``],
  'is-directory': [IsDirectoryError, (v) => `is a directory: \`${v}\``],
  'not-empty': [NotEmptyError, (v) => `directory not empty: \`${v}\``],
  invalid: [InvalidError, (v) => `invalid: ${v}`],
  'limit-exceeded': [LimitExceededError, (v) => `limit exceeded: ${v}`],
  io: [IoError, (v) => `i/o error: ${v}`],
  revoked: [RevokedError, () => 'revoked: the handle was revoked'],
  refused: [RefusedError, (v) => `refused: ${v}`],
};

/** The SDK's error for a WIT `error` value (`{ tag, val }`). */
export function fromWit(wit) {
  const [Class, sentence] = FROM_WIT[wit.tag];
  return new Class(sentence(wit.val), wit.tag, wit);
}

// Calls a binding, throwing the SDK's error instead of a ComponentError.
function call(f) {
  try {
    return f();
  } catch (e) {
    const wit = e !== null && typeof e === 'object' && Object.hasOwn(e, 'payload') ? e.payload : undefined;
    if (wit !== null && typeof wit === 'object' && Object.hasOwn(FROM_WIT, wit.tag)) {
      throw fromWit(wit);
    }
    throw e;
  }
}

// --- Handles ------------------------------------------------------------------

const encoder = new TextEncoder();

function bytesOf(data) {
  if (typeof data === 'string') return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw argError(TypeError, 'data must be a string, a Uint8Array or an ArrayBuffer');
}

// `readFile(path, 'utf8')` and `readFile(path, { encoding: 'utf8' })`, as
// in Node; no encoding gives the bytes.
function decodeAs(bytes, options) {
  const encoding = typeof options === 'string' ? options : options?.encoding;
  return encoding == null ? bytes : decoderFor(encoding).decode(bytes);
}

function decoderFor(encoding) {
  try {
    // A byte-order mark stays in the text, as Node's readFile keeps it.
    return new TextDecoder(encoding, { ignoreBOM: true });
  } catch {
    throw argError(RangeError, `unknown encoding \`${encoding}\``);
  }
}

// Resources given up through this module. A second wrapper of the same
// resource (`Dir.fromRaw(d.raw)`) or a `.raw` kept from before would
// otherwise reach a handle the host has forgotten, which traps the
// component; with this, it throws DroppedError.
const givenUp = new WeakSet();

/** Drops `raw` at the host, once, and remembers that it is gone. */
function giveUp(raw) {
  if (givenUp.has(raw)) return;
  givenUp.add(raw);
  raw[Symbol.dispose]();
}

/** Owns one resource; `using`, `close()` and `Symbol.dispose` drop it for good. */
class Handle {
  #raw;
  #kind;

  constructor(raw, kind) {
    this.#raw = raw;
    this.#kind = kind;
  }

  /** The generated resource, for what this layer does not cover. */
  get raw() {
    return this.live();
  }

  /** @protected */
  live() {
    if (this.#raw === undefined || givenUp.has(this.#raw)) {
      throw new DroppedError(`dropped: the ${this.#kind} was given up`, 'dropped');
    }
    return this.#raw;
  }

  /** Whether the handle was given up. */
  get closed() {
    return this.#raw === undefined || givenUp.has(this.#raw);
  }

  /** Drops the handle now; the host forgets it. Calling it again does nothing. */
  close() {
    const raw = this.#raw;
    this.#raw = undefined;
    if (raw !== undefined) giveUp(raw);
  }

  [Symbol.dispose]() {
    this.close();
  }
}

// The host returns at most this much per read call.
const READ_CHUNK = 1 << 20;

// A size as Node's `stat` gives it, a number (exact up to 8 PiB); the
// nanoseconds stay a bigint, which they need.
function statOf(raw) {
  return { kind: raw.kind, size: Number(raw.size), modifiedNs: raw.modifiedNs };
}

/** An open file. `read` and `write` move a position, as Node's file handles do. */
export class File extends Handle {
  constructor(raw) {
    super(raw, 'file');
  }

  /**
   * Up to `length` bytes from the position; all that is left when `length`
   * is omitted. An empty array means the end of the file.
   */
  read(length) {
    const f = this.live();
    if (length !== undefined) {
      const n = Number(wholeNumber(length, 'a read length', U32));
      return call(() => f.read(n));
    }
    const chunks = [];
    let total = 0;
    for (;;) {
      const chunk = call(() => f.read(READ_CHUNK));
      if (chunk.length === 0) break;
      chunks.push(chunk);
      total += chunk.length;
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.length;
    }
    return all;
  }

  /** The rest of the file as text (UTF-8 unless `encoding` says otherwise). */
  readText(encoding = 'utf-8') {
    const decoder = decoderFor(encoding);
    return decoder.decode(this.read());
  }

  /**
   * The lines from the position to the end, as text (UTF-8 unless
   * `encoding` says otherwise), without their `\n` or `\r\n`, as Node's
   * `filehandle.readLines()` gives them; read a chunk at a time, so a
   * refusal part way (a pledge, a revoke) is thrown from the loop.
   */
  *readLines(encoding = 'utf-8') {
    const decoder = decoderFor(encoding);
    const f = this.live();
    let pending = '';
    for (;;) {
      const chunk = call(() => f.read(READ_CHUNK));
      pending += decoder.decode(chunk, { stream: chunk.length > 0 });
      const lines = pending.split('\n');
      pending = lines.pop();
      for (const line of lines) yield line.endsWith('\r') ? line.slice(0, -1) : line;
      if (chunk.length === 0) break;
    }
    if (pending !== '') yield pending;
  }

  /** Writes all of `data` (a string is written as UTF-8); returns its length. */
  write(data) {
    const bytes = bytesOf(data);
    const f = this.live();
    call(() => f.write(bytes));
    return bytes.length;
  }

  /** Moves to an absolute offset (the WIT has no relative seek). */
  seek(offset) {
    const to = wholeNumber(offset, 'a seek offset', U64);
    const f = this.live();
    call(() => f.seek(to));
    return offset;
  }

  /** `{ kind, size, modifiedNs }` of the open file. */
  stat() {
    const f = this.live();
    return statOf(call(() => f.stat()));
  }
}

/**
 * A directory handle. Paths are relative to it and cannot leave it; the
 * methods are the WIT `dir`'s, with Node's conveniences (`'utf8'`, flag
 * strings) where they help.
 */
export class Dir extends Handle {
  constructor(raw) {
    super(raw, 'directory');
  }

  /** Wraps a generated `dir` (e.g. one shared with a child). */
  static fromRaw(raw) {
    return new Dir(raw);
  }

  /** The rights this handle carries, as names: `String(dir.rights)` is `read,list`. */
  get rights() {
    return namesOf(this.live().rights(), RIGHTS);
  }

  /** The file's bytes, or its text with an encoding (`'utf8'` or `{ encoding }`). */
  readFile(path, options) {
    const d = this.live();
    return decodeAs(
      call(() => d.readFile(pathOf(path))),
      options,
    );
  }

  /** Creates or replaces the file with `data` (a string is written as UTF-8). */
  writeFile(path, data) {
    const bytes = bytesOf(data);
    const d = this.live();
    call(() => d.writeFile(pathOf(path), bytes));
  }

  /**
   * Opens a file: `flags` is a Node flag string (`'r'`, `'r+'`, `'w'`,
   * `'wx'`, `'a'`, ...) or open-flag names (`'read,append'`).
   */
  open(path, flags = 'r') {
    if (typeof flags === 'string' && !Object.hasOwn(NODE_FLAGS, flags) && !flags.includes(',') && !OPEN_FLAGS.includes(flags)) {
      throw argError(
        TypeError,
        `unknown open flags \`${flags}\`: a Node flag string (${Object.keys(NODE_FLAGS).join(', ')}) or open-flag names (${OPEN_FLAGS.join(',')})`,
      );
    }
    const wit = Object.hasOwn(NODE_FLAGS, flags)
      ? flagsOf(NODE_FLAGS[flags], OPEN_FLAGS, 'open flag')
      : flagsOf(flags, OPEN_FLAGS, 'open flag');
    const d = this.live();
    return new File(call(() => d.openFile(pathOf(path), wit)));
  }

  /** The entries (`{ name, kind }`) of the directory at `path`. */
  list(path = '.') {
    const d = this.live();
    return call(() => d.list(pathOf(path)));
  }

  /** `{ kind, size, modifiedNs }` of `path`, following symbolic links within the handle. */
  stat(path) {
    const d = this.live();
    return statOf(call(() => d.stat(pathOf(path))));
  }

  /**
   * Whether `path` exists. Only "not found" is `false`: a denial or an
   * escape is thrown, so a refusal never reads as absence.
   */
  exists(path) {
    try {
      this.stat(path);
      return true;
    } catch (e) {
      if (e instanceof NotFoundError) return false;
      throw e;
    }
  }

  createDir(path) {
    const d = this.live();
    call(() => d.createDir(pathOf(path)));
  }

  removeFile(path) {
    const d = this.live();
    call(() => d.removeFile(pathOf(path)));
  }

  removeDir(path) {
    const d = this.live();
    call(() => d.removeDir(pathOf(path)));
  }

  rename(from, to) {
    const d = this.live();
    call(() => d.rename(pathOf(from), pathOf(to)));
  }

  /** A handle on `path` with at most `rights` (a subset of this one's). */
  openDir(path, rights) {
    const wit = flagsOf(rights, RIGHTS, 'right');
    const d = this.live();
    return new Dir(call(() => d.openDir(pathOf(path), wit)));
  }

  /** A new handle on the same directory with only `rights`; this one is unchanged. */
  attenuate(rights) {
    const wit = flagsOf(rights, RIGHTS, 'right');
    const d = this.live();
    return new Dir(call(() => d.attenuate(wit)));
  }

  /**
   * A copy of this handle and the generated `revoker` that ends it (and
   * everything derived from it): `const [dir, revoker] = data.revocable()`.
   */
  revocable() {
    const d = this.live();
    const [copy, revoker] = call(() => d.revocable());
    return [new Dir(copy), revoker];
  }
}

// --- Grants, requests, pledges -----------------------------------------------

/**
 * The handles the operator granted, by name. Each is taken once: the host
 * hands a grant over a single time, so a handle dropped after it cannot be
 * looked up again (the second lookup throws NotGrantedError, as the Rust
 * SDK's `Grants::dir` fails).
 */
export class Grants {
  #left;

  // Lazily: `granted()` may only be called from inside `run`.
  #all() {
    this.#left ??= new Map(granted().map((g) => [g.name, g.handle]));
    return this.#left;
  }

  #take(name, tag, kind) {
    const handle = this.#all().get(name);
    if (handle?.tag !== tag) {
      throw new NotGrantedError(`no ${kind} granted as \`${name}\``, 'not-granted');
    }
    this.#all().delete(name);
    return handle.val;
  }

  /** Takes the directory granted as `name`. */
  dir(name) {
    return new Dir(this.#take(name, 'dir', 'directory'));
  }

  /** Takes the spawner granted as `name` (the generated resource). */
  spawner(name) {
    return this.#take(name, 'spawner', 'spawner');
  }

  /** Takes the listen right granted as `name` (the generated resource). */
  listen(name) {
    return this.#take(name, 'listen', 'listen right');
  }

  /** Takes the connect right granted as `name` (the generated resource). */
  connect(name) {
    return this.#take(name, 'connect', 'connect right');
  }

  /** Takes the UDP right granted as `name` (the generated resource). */
  udp(name) {
    return this.#take(name, 'udp', 'UDP right');
  }

  /** Takes the TCP stream shared as `name` (the generated resource). */
  tcpStream(name) {
    return this.#take(name, 'tcp-stream', 'TCP stream');
  }

  /** Whether a handle is left under `name`. */
  has(name) {
    return this.#all().has(name);
  }

  /** The names of the grants not taken yet. */
  names() {
    return [...this.#all().keys()].sort();
  }

  /**
   * Drops every handle not taken yet, for good: what the app did not ask
   * for by name is given up, as dropping `Grants` does in Rust.
   */
  close() {
    const left = this.#all();
    for (const handle of left.values()) giveUp(handle.val);
    left.clear();
  }

  [Symbol.dispose]() {
    this.close();
  }
}

/** The component's grants. */
export const grants = new Grants();

function requestFor(name, wants, about, optional) {
  if (typeof name !== 'string' || typeof about !== 'string') {
    throw argError(TypeError, "a request's name and about are strings");
  }
  return { name, wants, optional: Boolean(optional), about };
}

/**
 * Requests for the app's `requests()` export: what it needs and why, shown
 * to the operator and checked against the grants before `run`.
 */
export const request = Object.freeze({
  dir: (name, rights, about, { optional = false } = {}) =>
    requestFor(name, { tag: 'dir', val: flagsOf(rights, RIGHTS, 'right') }, about, optional),
  spawner: (name, about, { optional = false } = {}) => requestFor(name, { tag: 'spawner' }, about, optional),
  listen: (name, about, { optional = false } = {}) => requestFor(name, { tag: 'listen' }, about, optional),
  connect: (name, about, { optional = false } = {}) => requestFor(name, { tag: 'connect' }, about, optional),
  udp: (name, about, { optional = false } = {}) => requestFor(name, { tag: 'udp' }, about, optional),
});

/**
 * Gives up each named authority (`filesystem`, `network`, `environment`,
 * `spawn`) for the rest of the instance's life. Unlike OpenBSD's pledge,
 * the names are what goes, not what stays: after `pledge('filesystem')`
 * every handle and open file throws RefusedError. A misspelt name, or none,
 * throws a TypeError before anything is given up.
 */
export function pledge(...authorities) {
  // No names would give up nothing, which reads like OpenBSD's `pledge("")`
  // (give up everything) and must not pass for a pledge.
  if (authorities.length === 0) {
    throw argError(TypeError, `pledge needs what to give up: one or more of ${AUTHORITIES.join(', ')}`);
  }
  rawPledge.renounce(flagsOf(authorities, AUTHORITIES, 'authority'));
}

/** The authorities given up so far. */
export function renounced() {
  return namesOf(rawPledge.renounced(), AUTHORITIES);
}

/** Narrows a WASI preopen to `subPath` and `rights`, for good. */
export function unveil(preopen, subPath, rights) {
  const wit = flagsOf(rights, RIGHTS, 'right');
  call(() => rawPledge.unveil(pathOf(preopen), pathOf(subPath), wit));
}
