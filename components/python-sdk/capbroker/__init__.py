"""capbroker for Python components built with componentize-py.

The generated bindings work, but are not Python: grants come as a list of
variants, a refusal is `componentize_py_types.Err` wrapping a dataclass, and a
handle is given up with `handle.__exit__(None, None, None)`. This package is
the thin layer that makes each of those one idiomatic line:

    from capbroker import grants, pledge

    with grants["cfg"] as cfg:          # the handle is dropped at the block's end
        conf = cfg.read_text("app.conf")
    pledge("filesystem")                # and now every handle refuses

Errors print as the Rust SDK's `Display` does ("denied: the handle lacks
write") and are also the built-in exception Python code already handles for
the same failure (`PermissionError`, `FileNotFoundError`, ...), the way the
Rust SDK's error becomes a `std::io::Error` of the matching kind.
"""

from __future__ import annotations

import functools
import io
import operator
import os
import weakref
from types import TracebackType
from typing import Any, Callable, Literal, TypeVar

import wit_world
from componentize_py_types import Err
from wit_world.imports import capbroker_caps_types as _types
from wit_world.imports import fs as _fs
from wit_world.imports import grants as _grants
from wit_world.imports import net as _net
from wit_world.imports import pledge as _pledge
from wit_world.imports import spawn as _spawn

Rights = _types.Rights
OpenFlags = _fs.OpenFlags
Entry = _fs.Entry
Stat = _fs.Stat

__all__ = [
    "Rights", "OpenFlags", "Entry", "Stat", "Dir", "File", "Grants", "grants",
    "request", "pledge", "renounced", "unveil", "rights_list",
    "Error", "Denied", "Escape", "NotFound", "Exists", "NotDirectory", "IsDirectory",
    "NotEmpty", "Invalid", "LimitExceeded", "IoError", "Revoked", "Refused",
    "NotGranted", "Dropped",
]

Authority = Literal["filesystem", "network", "environment", "spawn"]


def rights_list(rights: Rights) -> str:
    """Rights as the command line spells them, e.g. `read,list` (`none` when empty)."""
    return ",".join((r.name or "").lower() for r in Rights if r in rights) or "none"


# --- Errors -----------------------------------------------------------------
# One class per WIT case, each also the built-in exception std Python raises
# for the same failure, so `except PermissionError` catches a denial. Only the
# message is passed to the constructor: OSError reads a second argument as
# (errno, strerror) and would print "[Errno ...]".

class Error(Exception):
    """A capbroker call failed. `str()` is the sentence; `code` the WIT case."""

    code: str = "error"
    #: The host's WIT error (`Error_Denied(...)`, ...), or None when the
    #: failure is the SDK's own (a missing grant, a dropped handle).
    wit: _types.Error | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class Denied(Error, PermissionError):
    code = "denied"

    @property
    def missing(self) -> Rights:
        """The rights the handle lacked."""
        assert isinstance(self.wit, _types.Error_Denied)
        return self.wit.value


class Escape(Error, PermissionError): code = "escape"
class Revoked(Error, PermissionError): code = "revoked"
class Refused(Error, PermissionError): code = "refused"
class NotFound(Error, FileNotFoundError): code = "not-found"
class Exists(Error, FileExistsError): code = "exists"
class NotDirectory(Error, NotADirectoryError): code = "not-directory"
class IsDirectory(Error, IsADirectoryError): code = "is-directory"
class NotEmpty(Error, OSError): code = "not-empty"
class Invalid(Error, ValueError): code = "invalid"
class LimitExceeded(Error, OSError): code = "limit-exceeded"
class IoError(Error, OSError): code = "io"


class NotGranted(Error, LookupError):
    """No handle of that kind under that name: never granted, or taken already."""

    code = "not-granted"
    name: str = ""


class Dropped(Error, ValueError):
    """The handle was given up (its `with` block ended, or `close()`).

    A ValueError, like I/O on a closed Python file; the host has already
    forgotten the handle, so nothing could bring it back.
    """

    code = "dropped"


# WIT case -> (class, sentence); the sentences are the Rust SDK's.
_FROM_WIT: dict[type, tuple[type[Error], Callable[[object], str]]] = {
    _types.Error_Denied: (Denied, lambda v: f"denied: the handle lacks {rights_list(v)}"),  # type: ignore[arg-type]
    _types.Error_Escape: (Escape, lambda v: f"escape: `{v}` leads outside the handle"),
    _types.Error_NotFound: (NotFound, lambda v: f"not found: `{v}`"),
    _types.Error_Exists: (Exists, lambda v: f"exists: `{v}`"),
    _types.Error_NotDirectory: (NotDirectory, lambda v: f"not a directory: `{v}`"),
    _types.Error_IsDirectory: (IsDirectory, lambda v: f"is a directory: `{v}`"),
    _types.Error_NotEmpty: (NotEmpty, lambda v: f"directory not empty: `{v}`"),
    _types.Error_Invalid: (Invalid, lambda v: f"invalid: {v}"),
    _types.Error_LimitExceeded: (LimitExceeded, lambda v: f"limit exceeded: {v}"),
    _types.Error_Io: (IoError, lambda v: f"i/o error: {v}"),
    _types.Error_Revoked: (Revoked, lambda v: "revoked: the handle was revoked"),
    _types.Error_Refused: (Refused, lambda v: f"refused: {v}"),
}


def _from_wit(wit: _types.Error) -> Error:
    cls, sentence = _FROM_WIT[type(wit)]
    e = cls(sentence(getattr(wit, "value", None)))
    e.wit = wit
    return e


T = TypeVar("T")


def _call(f: Callable[..., T], *args: object) -> T:
    """Calls a binding, raising the SDK's error instead of `Err`."""
    try:
        return f(*args)
    except Err as e:
        # `from None`: the binding's Err says nothing the new error does not.
        raise _from_wit(e.value) from None


# --- Arguments ------------------------------------------------------------
# A value the bindings cannot lower (a negative offset, bytes for a path)
# aborts the component inside componentize-py instead of raising, so each
# is checked here first and raised as the exception Python raises for it.

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


def _path(path: str | os.PathLike[str]) -> str:
    """A path as the WIT string; `pathlib` paths work as they do for `open`."""
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"a capbroker path is text (str or a str PathLike), not {type(path).__name__}")
    try:
        path.encode()
    except UnicodeEncodeError:
        # A lone surrogate (from os.fsdecode of undecodable bytes) has no
        # UTF-8 spelling, so it can name nothing the host has.
        raise ValueError(f"a capbroker path is UTF-8 text; {path!r} is not") from None
    return path


def _bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"data must be bytes-like or str, not {type(data).__name__}")


def _index(value: int, what: str, top: int) -> int:
    value = operator.index(value)  # TypeError for a float or a str, as io does
    if not 0 <= value <= top:
        raise ValueError(f"{what} must be between 0 and {top}, not {value}")
    return value


# --- Handles ----------------------------------------------------------------
# Resources given up through this package. A second wrapper of the same
# resource (`Dir(d.raw)`) or a `.raw` kept from before would otherwise reach
# a handle the host has forgotten, which traps the component; with this, it
# raises Dropped. (componentize-py's resources are weakly referenceable:
# they free themselves through weakref.finalize.)
_given_up: weakref.WeakSet[Any] = weakref.WeakSet()


def _give_up(raw: Any) -> None:
    """Drops `raw` at the host, once, and remembers that it is gone."""
    if raw not in _given_up:
        _given_up.add(raw)
        raw.__exit__(None, None, None)


class _NoCopy:
    """Handles are not copied: two wrappers of one resource would disagree
    on whether it was given up. Derive another with `attenuate`."""

    def __copy__(self) -> Any:
        raise TypeError(f"a capbroker {type(self).__name__} cannot be copied; derive one with attenuate()")

    def __deepcopy__(self, memo: Any) -> Any:
        return self.__copy__()

    def __reduce__(self) -> Any:
        return self.__copy__()


class File(_NoCopy, io.RawIOBase):
    """An open file, as Python's own unbuffered binary file (`io.RawIOBase`).

    `Dir.open` wraps it in `io`'s buffers and text layer as the built-in
    `open` does, so lines, `readline`, `seek(offset, whence)` and `tell`
    work as on any Python file. Closing it (or its `with` block, or its
    wrapper's) drops the handle for good; using it afterwards raises
    `Dropped`.

    The WIT file only seeks to an absolute offset and does not report its
    position, so the position is tracked here, as the Rust SDK does.
    """

    def __init__(self, raw: _fs.File, flags: OpenFlags, name: str = "", mode: str = "") -> None:
        super().__init__()
        self._file: _fs.File | None = raw
        self._readable = OpenFlags.READ in flags
        self._writable = bool(flags & (OpenFlags.WRITE | OpenFlags.APPEND))
        self._append = OpenFlags.APPEND in flags
        # Where the next read lands, as the OS keeps it: the start, also in
        # append mode until a write. None: at the end, which only the host
        # knows (after an append).
        self._pos: int | None = 0
        #: The path it was opened with, relative to its directory.
        self.name = name
        #: The mode it was opened with (`"rb"`, ...), or "" for OpenFlags.
        self.mode = mode

    def _live(self) -> _fs.File:
        if self._file is None or self._file in _given_up:
            raise Dropped("dropped: the file was given up")
        return self._file

    @property
    def raw(self) -> Any:
        """The generated resource, for what this layer does not cover."""
        return self._live()

    def readable(self) -> bool:
        self._live()
        return self._readable

    def writable(self) -> bool:
        self._live()
        return self._writable

    def seekable(self) -> bool:
        self._live()
        return True

    def _can(self, reading: bool) -> _fs.File:
        file = self._live()
        if not (self._readable if reading else self._writable):
            raise io.UnsupportedOperation(f"File not open for {'reading' if reading else 'writing'}")
        return file

    def readinto(self, buffer: Any) -> int:
        """Reads at most 1 MiB per call (the host's cap): a short read, as a
        raw file's may be; `read()` and the buffered layers loop."""
        file = self._can(reading=True)
        view = memoryview(buffer).cast("B")
        if len(view) == 0:
            return 0
        data = _call(file.read, min(len(view), _U32))
        n = min(len(data), len(view))  # the host never sends more; do not trust it blindly
        view[:n] = data[:n]
        if self._pos is not None:
            self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (at most 1 MiB per call), or to the end when
        `size` is negative or None. Empty at the end of the file."""
        size = -1 if size is None else operator.index(size)
        file = self._can(reading=True)
        if size < 0:
            return self.readall()
        if size == 0:
            return b""
        data = _call(file.read, min(size, _U32))[:size]
        if self._pos is not None:
            self._pos += len(data)
        return data

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(1 << 20):  # the host's per-call cap
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, data: Any) -> int:
        file = self._can(reading=False)
        if isinstance(data, str):  # as a raw Python file: bytes only
            raise TypeError("a bytes-like object is required, not 'str'")
        data = _bytes(data)
        _call(file.write, data)
        self._pos = None if self._append or self._pos is None else self._pos + len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        offset = operator.index(offset)
        if whence == io.SEEK_SET:
            base = 0
        elif whence == io.SEEK_CUR:
            base = self.tell()
        elif whence == io.SEEK_END:
            base = self.stat().size
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        target = base + offset
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        _call(self._live().seek, _index(target, "a seek position", _U64))
        self._pos = target
        return target

    def tell(self) -> int:
        self._live()
        if self._pos is None:
            self._pos = self.stat().size
        return self._pos

    def stat(self) -> Stat:
        return _call(self._live().stat)

    def close(self) -> None:
        """Drops the file now; the host forgets it. Idempotent."""
        file, self._file = self._file, None
        if file is not None:
            _give_up(file)
        super().close()


# Modes as the built-in `open` spells them, as WIT open-flags.
_MODES = {
    "r": OpenFlags.READ,
    "w": OpenFlags.WRITE | OpenFlags.CREATE | OpenFlags.TRUNCATE,
    "x": OpenFlags.WRITE | OpenFlags.CREATE | OpenFlags.EXCLUSIVE,
    "a": OpenFlags.APPEND | OpenFlags.CREATE,
}


def _flags_of(mode: str) -> tuple[OpenFlags, bool]:
    """The open-flags and whether the mode is binary, checked as `open` does."""
    kinds = [c for c in mode if c in _MODES]
    if (
        len(kinds) != 1
        or any(mode.count(c) > 1 for c in mode)
        or set(mode) - set("rwxa+bt")
        or ("b" in mode and "t" in mode)
    ):
        raise ValueError(f"invalid mode: {mode!r}")
    flags = _MODES[kinds[0]]
    if "+" in mode:
        flags |= OpenFlags.READ if kinds[0] == "a" else OpenFlags.READ | OpenFlags.WRITE
    return flags, "b" in mode


class Dir(_NoCopy):
    """A directory handle; paths are relative to it and cannot leave it.
    `with` and `close()` drop it for good."""

    def __init__(self, raw: _fs.Dir) -> None:
        self._raw: _fs.Dir | None = raw

    def _live(self) -> Any:  # the generated Dir; Any keeps it usable
        if self._raw is None or self._raw in _given_up:
            raise Dropped("dropped: the directory was given up")
        return self._raw

    @property
    def raw(self) -> Any:
        """The generated resource, for what this layer does not cover."""
        return self._live()

    def close(self) -> None:
        """Drops the handle now; the host forgets it. Idempotent."""
        raw, self._raw = self._raw, None
        if raw is not None:
            _give_up(raw)

    def __enter__(self) -> Dir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def rights(self) -> Rights:
        return self._live().rights()

    def read_file(self, path: str | os.PathLike[str]) -> bytes:
        """The whole file (at most 64 MiB; stream larger ones with `open`)."""
        return _call(self._live().read_file, _path(path))

    def read_text(self, path: str | os.PathLike[str], encoding: str = "utf-8") -> str:
        return self.read_file(path).decode(encoding)

    def write_file(self, path: str | os.PathLike[str], contents: bytes | str) -> None:
        _call(self._live().write_file, _path(path), _bytes(contents))

    def open(
        self,
        path: str | os.PathLike[str],
        mode: str | OpenFlags = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """Opens a file as the built-in `open` does: `mode` is `"r"`, `"w"`,
        `"x"`, `"a"`, with `"+"`, `"b"` or `"t"`; text is UTF-8 unless
        `encoding` says otherwise; `buffering=0` (binary only) gives the
        raw `File`. Given `OpenFlags` instead of a mode, it returns the raw
        `File` with exactly those flags."""
        name = _path(path)
        if isinstance(mode, OpenFlags):
            return File(_call(self._live().open_file, name, mode), mode, name)
        flags, binary = _flags_of(mode)
        buffering = operator.index(buffering)
        if binary and (encoding or errors or newline is not None):
            raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
        if not binary and buffering == 0:
            raise ValueError("can't have unbuffered text I/O")
        raw = File(_call(self._live().open_file, name, flags), flags, name, mode)
        if "a" in mode:
            raw.seek(0, io.SEEK_END)  # as Python's own files start in append mode
        if buffering == 0:
            return raw
        line_buffering = buffering == 1 and not binary
        size = buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE
        if "+" in mode:
            buffered: io.BufferedIOBase = io.BufferedRandom(raw, size)
        elif flags & OpenFlags.READ:
            buffered = io.BufferedReader(raw, size)
        else:
            buffered = io.BufferedWriter(raw, size)
        if binary:
            return buffered
        text = io.TextIOWrapper(buffered, encoding or "utf-8", errors, newline, line_buffering)  # type: ignore[type-var]
        text.mode = mode  # type: ignore[misc]  # as `open` sets it
        return text

    def list(self, path: str | os.PathLike[str] = ".") -> list[Entry]:
        return _call(self._live().list, _path(path))

    def stat(self, path: str | os.PathLike[str]) -> Stat:
        """Metadata of `path`, following symbolic links within the handle."""
        return _call(self._live().stat, _path(path))

    def exists(self, path: str | os.PathLike[str]) -> bool:
        """Whether `path` exists. Only "not found" is False: a denial or an
        escape is raised, so a refusal never reads as absence."""
        try:
            self.stat(path)
            return True
        except NotFound:
            return False

    def create_dir(self, path: str | os.PathLike[str]) -> None:
        _call(self._live().create_dir, _path(path))

    def remove_file(self, path: str | os.PathLike[str]) -> None:
        _call(self._live().remove_file, _path(path))

    def remove_dir(self, path: str | os.PathLike[str]) -> None:
        _call(self._live().remove_dir, _path(path))

    def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        _call(self._live().rename, _path(src), _path(dst))

    def open_dir(self, path: str | os.PathLike[str], rights: Rights) -> Dir:
        """A handle on `path` with at most `rights` (a subset of this one's)."""
        return Dir(_call(self._live().open_dir, _path(path), _rights(rights)))

    def attenuate(self, rights: Rights) -> Dir:
        """A new handle on the same directory with only `rights`."""
        return Dir(_call(self._live().attenuate, _rights(rights)))


def _rights(rights: Rights) -> Rights:
    if not isinstance(rights, Rights):
        raise TypeError(f"rights must be capbroker.Rights, not {type(rights).__name__}")
    return rights


# --- Grants, requests, pledges ---------------------------------------------

class Grants:
    """The handles the operator granted, by name.

    `grants["data"]` takes the directory out: the host hands each grant over
    once, so a handle dropped after it cannot be looked up again (the second
    lookup raises NotGranted, as the Rust SDK's `Grants::dir` does).
    """

    def __init__(self) -> None:
        self._left: dict[str, object] | None = None

    def _all(self) -> dict[str, object]:
        # Lazily: `granted()` may only be called from inside `run`.
        if self._left is None:
            self._left = {g.name: g.handle for g in _grants.granted()}
        return self._left

    def _take_as(self, name: str, kind: str, variant: type) -> Any:
        # A handle of another kind stays for a later taker, as in Rust.
        handle = self._all().get(name)
        if not isinstance(handle, variant):
            e = NotGranted(f"no {kind} granted as `{name}`")
            e.name = name
            raise e
        del self._all()[name]
        return handle.value  # type: ignore[attr-defined]

    def __getitem__(self, name: str) -> Dir:
        return self.dir(name)

    def dir(self, name: str) -> Dir:
        """Takes the directory granted as `name` (as `grants[name]`)."""
        return Dir(self._take_as(name, "directory", _grants.Handle_Dir))

    def spawner(self, name: str) -> _spawn.Spawner:
        """Takes the spawner granted as `name` (the generated resource)."""
        return self._take_as(name, "spawner", _grants.Handle_Spawner)

    def listen(self, name: str) -> _net.ListenRight:
        """Takes the listen right granted as `name` (the generated resource)."""
        return self._take_as(name, "listen right", _grants.Handle_Listen)

    def connect(self, name: str) -> _net.ConnectRight:
        """Takes the connect right granted as `name` (the generated resource)."""
        return self._take_as(name, "connect right", _grants.Handle_Connect)

    def udp(self, name: str) -> _net.UdpRight:
        """Takes the UDP right granted as `name` (the generated resource)."""
        return self._take_as(name, "UDP right", _grants.Handle_Udp)

    def tcp_stream(self, name: str) -> _net.TcpStream:
        """Takes the TCP stream shared as `name` (the generated resource)."""
        return self._take_as(name, "TCP stream", _grants.Handle_TcpStream)

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def take(self, name: str) -> object | None:
        """Any handle under `name`: a `Dir` for a directory, the generated
        resource for the other kinds; None when there is none."""
        handle = self._all().pop(name, None)
        if handle is None:
            return None
        if isinstance(handle, _grants.Handle_Dir):
            return Dir(handle.value)
        return handle.value  # type: ignore[attr-defined]

    def names(self) -> list[str]:
        """The names not taken yet."""
        return sorted(self._all())

    def close(self) -> None:
        """Drops every handle not taken yet, for good: what the app did not
        ask for by name is given up, as dropping `Grants` does in Rust."""
        left = self._all()
        for handle in left.values():
            _give_up(handle.value)  # type: ignore[attr-defined]
        left.clear()


grants = Grants()


class _Request:
    """Requests for the app's `requests()`: what it needs and why, shown to
    the operator. `request(name, rights, about)` asks for a directory;
    `request.spawner(name, about)`, `.listen`, `.connect` and `.udp` for
    the other kinds. `optional=True` lets the app start without it."""

    @staticmethod
    def _of(name: str, wants: Any, about: str, optional: bool) -> _types.Request:
        if not isinstance(name, str) or not isinstance(about, str):
            raise TypeError("a request's name and about are str")
        return _types.Request(name, wants, bool(optional), about)

    def __call__(self, name: str, rights: Rights, about: str, *, optional: bool = False) -> _types.Request:
        """A request for a directory with at most `rights`."""
        return self._of(name, _types.Wants_Dir(_rights(rights)), about, optional)

    def dir(self, name: str, rights: Rights, about: str, *, optional: bool = False) -> _types.Request:
        """A request for a directory with at most `rights`."""
        return self(name, rights, about, optional=optional)

    def spawner(self, name: str, about: str, *, optional: bool = False) -> _types.Request:
        """A request for a spawner."""
        return self._of(name, _types.Wants_Spawner(), about, optional)

    def listen(self, name: str, about: str, *, optional: bool = False) -> _types.Request:
        """A request for a listen right."""
        return self._of(name, _types.Wants_Listen(), about, optional)

    def connect(self, name: str, about: str, *, optional: bool = False) -> _types.Request:
        """A request for a connect right."""
        return self._of(name, _types.Wants_Connect(), about, optional)

    def udp(self, name: str, about: str, *, optional: bool = False) -> _types.Request:
        """A request for a UDP right."""
        return self._of(name, _types.Wants_Udp(), about, optional)


request = _Request()


_AUTHORITY = {
    "filesystem": _pledge.Authority.FILESYSTEM,
    "network": _pledge.Authority.NETWORK,
    "environment": _pledge.Authority.ENVIRONMENT,
    "spawn": _pledge.Authority.SPAWN,
}


def pledge(authority: Authority, *more: Authority) -> None:
    """Gives up each named authority for the rest of the instance's life.

    Unlike OpenBSD's pledge, the names are what goes, not what stays (as
    in the Rust SDK's `pledge::filesystem()`): after `pledge("filesystem")`
    every handle and open file refuses with Refused, a PermissionError. A
    misspelt name is a ValueError, and no name a TypeError, before
    anything is given up.
    """
    # At least one name: none would give up nothing, which reads like
    # OpenBSD's pledge("") (give up everything) and must not pass for one.
    flags = _pledge.Authority(0)
    for name in (authority, *more):
        if name not in _AUTHORITY:
            raise ValueError(f"unknown authority `{name}`: one of {', '.join(_AUTHORITY)}")
        flags |= _AUTHORITY[name]
    _pledge.renounce(flags)


def renounced() -> set[str]:
    """The authorities given up so far."""
    given = _pledge.renounced()
    return {name for name, flag in _AUTHORITY.items() if flag in given}


def unveil(preopen: str, sub_path: str, rights: Rights) -> None:
    """Narrows a WASI preopen to `sub_path` and `rights`, for good."""
    _call(_pledge.unveil, _path(preopen), _path(sub_path), _rights(rights))


# --- Uncaught errors ----------------------------------------------------------
# componentize-py turns an exception out of `run` (or a child's `start`) into
# the export's error only when its type is exactly `componentize_py_types.Err`;
# any other exception traps the component. So that an uncaught capbroker
# error ends the run with its sentence, as `?` does in Rust and as the
# JavaScript module's errors do, every subclass of the world's generated
# `WitWorld` gets its entry points wrapped when the class is made. Other
# exceptions (the app's bugs) still trap, with their traceback, as a Rust
# panic does.

def _ending_with_sentence(entry: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(entry)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        try:
            return entry(*args, **kwargs)
        except Error as e:
            raise Err(str(e)) from e

    wrapped._capbroker_wrapped = True  # type: ignore[attr-defined]
    return wrapped


def _wrap_entry_points(cls: type, **kwargs: Any) -> None:
    super(wit_world.WitWorld, cls).__init_subclass__(**kwargs)  # type: ignore[misc]
    # Looked up through the whole MRO: `run` may come from a mixin that is
    # not itself a WitWorld.
    for name in ("run", "start"):
        entry = getattr(cls, name, None)
        if callable(entry) and not getattr(entry, "_capbroker_wrapped", False):
            setattr(cls, name, _ending_with_sentence(entry))


wit_world.WitWorld.__init_subclass__ = classmethod(_wrap_entry_points)  # type: ignore[assignment]
