"""A capbroker app in Python, built with componentize-py.

It asks for one directory, `data`, reads through it, derives a read-only
handle on `sub`, drops `data`, and shows that every refused call surfaces as
a Python exception (`componentize_py_types.Err`) carrying capbroker's error.
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import capbroker_caps_types as types
from wit_world.imports import grants as g

READ_LIST = types.Rights.READ | types.Rights.LIST


def code(err: Err) -> str:
    """`denied(write)`, `escape(..)`: the error's kind and its detail."""
    value = err.value
    kind = type(value).__name__.removeprefix("Error_")
    kind = "".join("-" + c.lower() if c.isupper() else c for c in kind).lstrip("-")
    detail = value.value if hasattr(value, "value") else ""
    if isinstance(detail, types.Rights):
        detail = ",".join(r.name.lower() for r in types.Rights if r in detail)
    return f"{kind}({detail})"


class WitWorld(wit_world.WitWorld):
    def requests(self):
        rights = READ_LIST | types.Rights.WRITE
        return [types.Request("data", types.Wants_Dir(rights), False, "reads and attenuates it")]

    def run(self, args):
        data = next(x.handle.value for x in g.granted() if x.name == "data")
        print("read:", data.read_file("hello.txt").decode())

        read_only = data.attenuate(READ_LIST)
        try:
            read_only.write_file("hello.txt", b"changed")
            print("write: allowed?!")
        except Err as e:
            print("write through read-only:", code(e))

        sub = data.open_dir("sub", READ_LIST)
        data.__exit__(None, None, None)  # drop `data`: only `sub` is left
        print("sub lists:", ",".join(sorted(e.name for e in sub.list("."))))
        for path in ["../hello.txt", "/etc/passwd"]:
            try:
                sub.read_file(path)
                print(path, "allowed?!")
            except Err as e:
                print(f"read {path}:", code(e))
        try:
            sub.attenuate(types.Rights.WRITE)
        except Err as e:
            print("regain write:", code(e))
