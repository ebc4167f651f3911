// A capbroker app in JavaScript, built with componentize-js.
//
// It asks for one directory, `data`, reads through it, derives a read-only
// handle on `sub`, drops `data`, and shows that every refused call surfaces
// as a JS exception whose `payload` is capbroker's error.

import { granted } from 'capbroker:caps/grants@0.1.0';

const READ_LIST = { read: true, list: true };

/** `denied(write)`, `escape(..)`: the error's kind and its detail. */
function code(e) {
  const err = e.payload;
  if (err === undefined) throw e;
  let detail = err.val ?? '';
  if (typeof detail === 'object') {
    detail = ['read', 'write', 'create', 'list', 'remove'].filter((r) => detail[r]).join(',');
  }
  return `${err.tag}(${detail})`;
}

const text = (bytes) => new TextDecoder().decode(bytes);

export function requests() {
  return [
    {
      name: 'data',
      wants: { tag: 'dir', val: { read: true, write: true, list: true } },
      optional: false,
      about: 'reads and attenuates it',
    },
  ];
}

export function run(args) {
  const data = granted().find((g) => g.name === 'data').handle.val;
  console.log(`read: ${text(data.readFile('hello.txt'))}`);

  const readOnly = data.attenuate(READ_LIST);
  try {
    readOnly.writeFile('hello.txt', new TextEncoder().encode('changed'));
    console.log('write: allowed?!');
  } catch (e) {
    console.log(`write through read-only: ${code(e)}`);
  }

  const sub = data.openDir('sub', READ_LIST);
  data[Symbol.dispose](); // drop `data`: only `sub` is left
  const names = sub.list('.').map((e) => e.name).sort();
  console.log(`sub lists: ${names.join(',')}`);
  for (const path of ['../hello.txt', '/etc/passwd']) {
    try {
      sub.readFile(path);
      console.log(`${path} allowed?!`);
    } catch (e) {
      console.log(`read ${path}: ${code(e)}`);
    }
  }
  try {
    sub.attenuate({ write: true });
  } catch (e) {
    console.log(`regain write: ${code(e)}`);
  }
}
