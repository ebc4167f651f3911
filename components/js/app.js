// A capbroker app in JavaScript, on the capbroker module (components/js-sdk),
// built with componentize-js.
//
// The seed's contract: read the configuration, then give up the filesystem
// in one line. On the way it shows the module's shape:
//
// 1. `cfg` is declared with `using`: the configuration is read through it
//    and the handle is dropped when the block ends, for good.
// 2. It takes `data` and gives up the grants it did not take
//    (`grants.close()`). Through `data` it reads, attenuates and derives a
//    handle on `sub`; each refusal is an Error subclass (`DeniedError`, ...)
//    carrying capbroker's code, whose message is the Rust SDK's.
// 3. `pledge('filesystem')`: every handle, and the file it still holds open,
//    refuses what follows (a misspelt authority, or none, is a TypeError that
//    gives up nothing). Run with the argument `uncaught`, the last refusal is
//    not caught and becomes `run`'s error, as `?` does in Rust.

import { entry, grants, pledge, renounced, request, CapbrokerError, Dir } from '../js-sdk/capbroker.js';

export function requests() {
  return [
    request.dir('cfg', 'read', 'reads app.conf'),
    request.dir('data', 'read,write,list', 'reads and attenuates it'),
    request.dir('spare', 'read', 'not needed after all', { optional: true }),
  ];
}

/**
 * Runs `f`, printing what it returned or the error it threw as JS prints it.
 * @param {string} what
 * @param {() => unknown} f
 */
function attempt(what, f) {
  try {
    const got = f();
    console.log(`${what}: allowed?! ${got ?? ''}`);
  } catch (e) {
    if (!(e instanceof CapbrokerError)) throw e;
    console.log(`${what}: ${e} [${e.code}]`);
  }
}

// `entry` ends the run with the message of any error `main` does not catch
// (componentize-js would trap on one that is not capbroker's, printing
// nothing of it).
export const run = entry(main);

/** @param {string[]} args */
function main(args) {
  // 1. A scoped handle: `cfg` is gone when the block ends.
  let conf;
  let kept;
  {
    using cfg = grants.dir('cfg');
    conf = cfg.readFile('app.conf', 'utf8');
    kept = cfg;
  }
  console.log(`config: ${conf.trim()}`);
  // The app's own uncaught error still ends the run with its message.
  if (args.includes('bug')) throw new Error('config key `port` missing');
  attempt('cfg lookup after its block', () => grants.dir('cfg'));
  attempt('cfg use after its block', () => kept.readFile('app.conf', 'utf8'));

  // 2. Refusals as exceptions. Whatever is not taken by now is given up.
  const data = grants.dir('data');
  console.log(`grants left: ${grants.names().join(',') || 'none'}`);
  grants.close();
  console.log(`after grants.close(): ${grants.names().join(',') || 'none'}`);
  console.log(`read: ${data.readFile('hello.txt', 'utf8')}`);
  if (args.includes('bad-args')) return badArguments(data);
  attempt('write through read-only', () => data.attenuate('read,list').writeFile('hello.txt', 'changed'));
  {
    using lines = data.open('lines.txt');
    console.log(`lines: ${[...lines.readLines()].join('|')}; ${data.stat('lines.txt').size + 1} with a newline`);
  }
  {
    using sub = data.openDir('sub', 'read,list');
    console.log(`sub lists: ${sub.list().map((e) => e.name).sort().join(',')}`);
    for (const path of ['../hello.txt', '/etc/passwd', 'missing.txt']) {
      attempt(`read ${path}`, () => sub.readFile(path));
    }
    attempt('regain write', () => sub.attenuate('read,write'));
  }

  // 3. One line gives up the filesystem; the open file goes with it.
  using held = data.open('hello.txt');
  console.log(`held file, first bytes: ${new TextDecoder().decode(held.read(2))}`);
  try {
    // @ts-expect-error: tsc catches the misspelling; at run time it is a TypeError
    pledge('filesytem');
  } catch (e) {
    console.log(`misspelt pledge: ${e}`);
  }
  try {
    // @ts-expect-error: and a pledge that names nothing
    pledge();
  } catch (e) {
    console.log(`empty pledge: ${e}`);
  }
  console.log(`renounced: ${renounced().join(',') || 'nothing'}`);
  pledge('filesystem');
  console.log(`renounced: ${renounced().join(',') || 'nothing'}`);
  if (args.includes('uncaught')) {
    data.readFile('hello.txt');
  }
  attempt('after pledge, read', () => data.readFile('hello.txt'));
  attempt('after pledge, held file', () => held.readText());
}

/**
 * Arguments the bindings cannot take are the errors JavaScript throws for
 * them, before anything reaches the host (run with `bad-args`).
 * @param {import('../js-sdk/capbroker.js').Dir} data
 */
function badArguments(data) {
  using f = data.open('hello.txt');
  const sub = data.openDir('sub', 'read');
  const dropped = sub.raw;
  sub.close();
  /** @type {[string, () => unknown][]} */
  const calls = [
    ['seek(-1)', () => f.seek(-1)],
    ['read(1.5)', () => f.read(1.5)],
    ['seek(2 ** 53)', () => f.seek(2 ** 53)],
    ['read(-1)', () => f.read(-1)],
    // @ts-expect-error: a string length
    ["read('3')", () => f.read('3')],
    // @ts-expect-error: a number as data
    ["writeFile('x.txt', 5)", () => data.writeFile('x.txt', 5)],
    // @ts-expect-error: a number as a path
    ['readFile(5)', () => data.readFile(5)],
    ["open('hello.txt', 'rw')", () => data.open('hello.txt', 'rw')],
    ["attenuate('reed')", () => data.attenuate('reed')],
    ["readFile('\\uD800.txt')", () => data.readFile('\uD800.txt')],
    // @ts-expect-error: an array of names
    ["pledge(['filesystem'])", () => pledge(['filesystem'])],
    ['Dir.fromRaw(a dropped raw).list()', () => Dir.fromRaw(dropped).list()],
  ];
  for (const [what, bad] of calls) {
    try {
      bad();
      console.log(`${what}: allowed?!`);
    } catch (e) {
      console.log(`${what}: ${e}`);
    }
  }
  console.log(`the file still reads: ${f.readText()}`);
}
