"""A capbroker app in Python, on the capbroker package (components/python-sdk).

The seed's contract: read the configuration, then give up the filesystem in
one line. On the way it shows the package's shape:

1. `cfg` lives in a `with` block: the configuration is read through it and
   the handle is dropped when the block ends, for good.
2. It takes `data` and gives up the grants it did not take
   (`grants.close()`). Through `data` it reads, attenuates and derives a
   handle on `sub`; each refusal is an exception that prints as the Rust
   SDK's error does and is also the built-in one (`PermissionError`, ...).
3. `capbroker.pledge("filesystem")`: every handle, and the file it still
   holds open, refuses what follows (a misspelt authority, or none, is an
   error that gives up nothing). Run with the argument `uncaught`, the last
   refusal is not caught and becomes `run`'s error, as `?` does in Rust.
"""

import copy
import io

import capbroker
import wit_world
from capbroker import Rights, grants

READ_LIST = Rights.READ | Rights.LIST


class WitWorld(wit_world.WitWorld):
    def requests(self):
        return [
            capbroker.request("cfg", Rights.READ, "reads app.conf"),
            capbroker.request("data", READ_LIST | Rights.WRITE, "reads and attenuates it"),
            capbroker.request("spare", Rights.READ, "not needed after all", optional=True),
            capbroker.request.spawner("workers", "would run one child per file", optional=True),
        ]

    def run(self, args):
        # 1. A scoped handle: `cfg` is gone when the block ends.
        with grants["cfg"] as cfg:
            conf = cfg.read_text("app.conf")
        print("config:", conf.strip())
        for what, again in [("lookup", lambda: grants["cfg"]), ("use", lambda: cfg.read_text("app.conf"))]:
            try:
                again()
                print(f"cfg {what} after its block: allowed?!")
            except capbroker.Error as e:
                print(f"cfg {what} after its block: {type(e).__name__}: {e}")

        # 2. Refusals as Python exceptions. Whatever is not taken by now is
        # given up.
        try:
            grants.spawner("data")  # a lookup of the wrong kind leaves it be
            print("data as a spawner: allowed?!")
        except capbroker.NotGranted as e:
            print(f"data as a spawner: {type(e).__name__}: {e}")
        data = grants["data"]
        print("grants left:", ",".join(grants.names()) or "none")
        grants.close()
        print("after grants.close():", ",".join(grants.names()) or "none")
        print("read:", data.read_text("hello.txt"))
        if "bad-args" in args:
            return bad_arguments(data)
        with data.open("hello.txt", "rb") as f:  # a Python file: seek, tell, lines
            f.seek(-3, io.SEEK_END)
            print("tail:", f.read().decode(), "at", f.tell())
        try:
            data.attenuate(READ_LIST).write_file("hello.txt", "changed")
            print("write through read-only: allowed?!")
        except PermissionError as e:  # a capbroker.Denied is one
            print(f"write through read-only: {type(e).__name__}: {e}")
        with data.open_dir("sub", READ_LIST) as sub:
            print("sub lists:", ",".join(sorted(e.name for e in sub.list())))
            for path in ["../hello.txt", "missing.txt"]:
                try:
                    sub.read_file(path)
                    print(f"read {path}: allowed?!")
                except OSError as e:
                    print(f"read {path}: {type(e).__name__}: {e}")

        # 3. One line gives up the filesystem; the open file goes with it.
        # Unbuffered (as `open(..., "rb", buffering=0)` is in Python): a
        # buffered file would already hold the whole small file, and hand
        # out after the pledge what it read before.
        held = data.open("hello.txt", "rb", buffering=0)
        print("held file, first bytes:", held.read(2).decode())
        for names in [("filesytem",), ()]:
            try:
                capbroker.pledge(*names)
                print(f"pledge{names}: allowed?!")
            except (ValueError, TypeError) as e:
                print(f"pledge{names}: {type(e).__name__}: {e}")
        print("renounced:", ",".join(sorted(capbroker.renounced())) or "nothing")
        capbroker.pledge("filesystem")
        print("renounced:", ",".join(sorted(capbroker.renounced())) or "nothing")
        if "uncaught" in args:
            data.read_file("hello.txt")  # ends the run with the error's sentence
        for what, after in [("read", lambda: data.read_file("hello.txt")), ("held file", lambda: held.read())]:
            try:
                after()
                print(f"after pledge, {what}: allowed?!")
            except PermissionError as e:
                print(f"after pledge, {what}: {type(e).__name__}: {e}")


def bad_arguments(data: capbroker.Dir) -> None:
    """Arguments the bindings cannot take are the exceptions Python raises
    for them, before anything reaches the host (run with `bad-args`)."""
    sub = data.open_dir("sub", Rights.READ)
    dropped = sub.raw
    sub.close()
    with data.open("hello.txt", "rb", buffering=0) as f:
        for what, bad in [
            ("seek(-1)", lambda: f.seek(-1)),
            ("read(1.5)", lambda: f.read(1.5)),
            ("write_file('x.txt', 5)", lambda: data.write_file("x.txt", 5)),  # type: ignore[arg-type]
            ("read_text(b'hello.txt')", lambda: data.read_text(b"hello.txt")),  # type: ignore[arg-type]
            ("open('hello.txt', 'rw')", lambda: data.open("hello.txt", "rw")),
            ("attenuate('read')", lambda: data.attenuate("read")),  # type: ignore[arg-type]
            ("read_file('\\udcff.txt')", lambda: data.read_file("\udcff.txt")),
            ("copy.copy(data)", lambda: copy.copy(data)),
            ("Dir(a dropped raw).list()", lambda: capbroker.Dir(dropped).list()),
        ]:
            try:
                bad()
                print(f"{what}: allowed?!")
            except (TypeError, ValueError) as e:
                print(f"{what}: {type(e).__name__}: {e}")
        print("read(2**32):", f.read(2**32).decode())
