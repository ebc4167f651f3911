// Types for capbroker.js, the capbroker SDK for componentize-js apps.
// Editors and `tsc --checkJs` read them; the component never does.

/** A right on a directory handle. */
export type Right = 'read' | 'write' | 'create' | 'list' | 'remove';

/**
 * A set of rights: `'read,list'` (the command line's spelling; `''` or
 * `'none'` for no rights, `'ro'` for read,list, `'rw'` for all),
 * `['read', 'list']`, or the bindings' flags object.
 */
export type Rights = string | readonly Right[] | Partial<Record<Right, boolean>>;

/** What `pledge` gives up. */
export type Authority = 'filesystem' | 'network' | 'environment' | 'spawn';

/** Node's `fs.open` flag strings. */
export type NodeOpenFlags = 'r' | 'r+' | 'w' | 'wx' | 'w+' | 'wx+' | 'a' | 'ax' | 'a+' | 'ax+';

export type OpenFlag = 'read' | 'write' | 'append' | 'create' | 'exclusive' | 'truncate';

/** A Node flag string, open-flag names (`'read,append'`), an array or a flags object. */
export type OpenFlags = NodeOpenFlags | string | readonly OpenFlag[] | Partial<Record<OpenFlag, boolean>>;

export type EntryKind = 'file' | 'directory' | 'symlink' | 'other';

export interface Entry {
  name: string;
  kind: EntryKind;
}

export interface Stat {
  kind: EntryKind;
  /** Bytes, as a number (as Node's `stat` gives it). */
  size: number;
  modifiedNs: bigint | undefined;
}

/** The WIT `error` variant as the bindings give it. */
export type WitError =
  | { tag: 'denied'; val: Partial<Record<Right, boolean>> }
  | { tag: 'revoked' }
  | {
      tag:
        | 'escape'
        | 'not-found'
        | 'exists'
        | 'not-directory'
        | 'is-directory'
        | 'not-empty'
        | 'invalid'
        | 'limit-exceeded'
        | 'io'
        | 'refused';
      val: string;
    };

export type ErrorCode = WitError['tag'] | 'not-granted' | 'dropped';

/** The WIT `rights` names in declaration order. */
export const RIGHTS: readonly Right[];

/**
 * Wraps an export such as `run` so that any error it throws, not only
 * capbroker's, ends the call with `Name: message` instead of a trap:
 * `export const run = entry(main);`.
 */
export function entry<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R;

/** Rights as the command line spells them (`read,list`; `none` when empty). */
export function rightsList(rights: Rights): string;

/**
 * A capbroker call failed. `code` is the WIT case, or `not-granted` /
 * `dropped` for the SDK's own failures; the message is the Rust SDK's.
 */
export class CapbrokerError extends Error {
  constructor(message: string, code: ErrorCode, wit?: WitError);
  readonly code: ErrorCode;
  /** The host's error, or undefined for the SDK's own failures. */
  readonly wit: WitError | undefined;
}
export class DeniedError extends CapbrokerError {
  /** The rights the handle lacked. */
  readonly missing: Right[];
}
export class EscapeError extends CapbrokerError {}
export class NotFoundError extends CapbrokerError {}
export class ExistsError extends CapbrokerError {}
export class NotDirectoryError extends CapbrokerError {}
export class IsDirectoryError extends CapbrokerError {}
export class NotEmptyError extends CapbrokerError {}
export class InvalidError extends CapbrokerError {}
export class LimitExceededError extends CapbrokerError {}
export class IoError extends CapbrokerError {}
export class RevokedError extends CapbrokerError {}
export class RefusedError extends CapbrokerError {}
export class NotGrantedError extends CapbrokerError {}
export class DroppedError extends CapbrokerError {}

/** The SDK's error for a WIT `error` value. */
export function fromWit(wit: WitError): CapbrokerError;

declare class Handle implements Disposable {
  /** The generated resource, for what this layer does not cover. */
  readonly raw: any;
  /** Whether the handle was given up. */
  readonly closed: boolean;
  /** Drops the handle now; the host forgets it. Calling it again does nothing. */
  close(): void;
  [Symbol.dispose](): void;
}

/** An open file; `read` and `write` move a position. */
export class File extends Handle {
  /** Up to `length` bytes; all that is left when omitted. Empty at the end. */
  read(length?: number): Uint8Array;
  /** The rest of the file as text. */
  readText(encoding?: string): string;
  /** The lines from the position on, without `\n` or `\r\n`, read a chunk at a time. */
  readLines(encoding?: string): Generator<string, void, undefined>;
  /** Writes all of `data`; returns its length in bytes. */
  write(data: string | ArrayBufferView | ArrayBuffer): number;
  /** Moves to an absolute offset. */
  seek(offset: number | bigint): number | bigint;
  stat(): Stat;
}

/** A directory handle; paths are relative to it and cannot leave it. */
export class Dir extends Handle {
  /** Wraps a generated `dir`. */
  static fromRaw(raw: any): Dir;
  /** The rights this handle carries. */
  readonly rights: Right[];
  readFile(path: string): Uint8Array;
  readFile(path: string, options: string | { encoding: string }): string;
  writeFile(path: string, data: string | ArrayBufferView | ArrayBuffer): void;
  open(path: string, flags?: OpenFlags): File;
  list(path?: string): Entry[];
  /** Follows symbolic links within the handle. */
  stat(path: string): Stat;
  /** Only "not found" is false; a denial or escape is thrown. */
  exists(path: string): boolean;
  createDir(path: string): void;
  removeFile(path: string): void;
  removeDir(path: string): void;
  rename(from: string, to: string): void;
  /** A handle on `path` with at most `rights`. */
  openDir(path: string, rights: Rights): Dir;
  /** A new handle on the same directory with only `rights`. */
  attenuate(rights: Rights): Dir;
  /** A copy of this handle and the revoker that ends it. */
  revocable(): [Dir, { revoke(): void } & Disposable];
}

/** The handles the operator granted, each taken once by name. */
export class Grants implements Disposable {
  dir(name: string): Dir;
  spawner(name: string): any;
  listen(name: string): any;
  connect(name: string): any;
  udp(name: string): any;
  tcpStream(name: string): any;
  has(name: string): boolean;
  /** The names of the grants not taken yet. */
  names(): string[];
  /** Drops every handle not taken yet, for good. */
  close(): void;
  [Symbol.dispose](): void;
}

export const grants: Grants;

export interface Request {
  name: string;
  wants: { tag: 'dir'; val: Partial<Record<Right, boolean>> } | { tag: 'spawner' | 'listen' | 'connect' | 'udp' };
  optional: boolean;
  about: string;
}

interface RequestOptions {
  optional?: boolean;
}

/** Requests for the app's `requests()` export. */
export const request: {
  dir(name: string, rights: Rights, about: string, options?: RequestOptions): Request;
  spawner(name: string, about: string, options?: RequestOptions): Request;
  listen(name: string, about: string, options?: RequestOptions): Request;
  connect(name: string, about: string, options?: RequestOptions): Request;
  udp(name: string, about: string, options?: RequestOptions): Request;
};

/** Gives up each named authority (at least one) for the rest of the instance's life. */
export function pledge(authority: Authority, ...more: Authority[]): void;

/** The authorities given up so far. */
export function renounced(): Authority[];

/** Narrows a WASI preopen to `subPath` and `rights`, for good. */
export function unveil(preopen: string, subPath: string, rights: Rights): void;
