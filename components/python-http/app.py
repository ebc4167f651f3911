"""A plain `wasi:http/proxy` component in Python, built with componentize-py.

It is what `wasmtime serve` (and `capbroker serve`) runs, one instance per
request:

- `GET /hello` answers 200 `hello from python`;
- `PUT` (or `POST`) `/upload/NAME` writes the body to `/uploads/NAME` with
  `open(..., 'wb')` and answers 201 `stored N bytes`, or 500 `error: TYPE
  MESSAGE` (e.g. `error: FileNotFoundError [Errno 44] No such file or
  directory: '/uploads/x'`); a NAME that is not one file name answers 400;
- anything else answers 404 `no such route`.

Build (see docs/guests.md):

    componentize-py -d components/python-http/wit -w proxy componentize \
        -p components/python-http app -o http.wasm
"""

from urllib.parse import unquote

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    Method_Get,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# `blocking-write-and-flush` takes at most 4096 bytes a call.
WRITE_CHUNK = 4096


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        method = request.method()
        path = (request.path_with_query() or "").split("?", 1)[0]
        if isinstance(method, Method_Get) and path == "/hello":
            status, body = 200, b"hello from python"
        elif isinstance(method, (Method_Put, Method_Post)) and path.startswith("/upload/"):
            status, body = upload(request, path[len("/upload/"):])
        else:
            status, body = 404, b"no such route"
        send(response_out, status, body)


def upload(request, name):
    """Streams the request's body into /uploads/NAME (NAME percent-decoded)."""
    try:
        name = unquote(name, errors="strict")
    except UnicodeDecodeError:
        return 400, b"bad request: the upload's NAME is not UTF-8 once decoded"
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        return 400, b"bad request: the upload's NAME must be one file name"
    written = 0
    try:
        with open(f"/uploads/{name}", "wb") as f:
            # The stream is a child of the body: it goes first.
            with request.consume() as body, body.stream() as stream:
                while True:
                    try:
                        chunk = stream.blocking_read(64 * 1024)
                    except Err as e:
                        if isinstance(e.value, StreamError_Closed):
                            break
                        raise
                    f.write(chunk)
                    written += len(chunk)
    except OSError as e:
        return 500, f"error: {type(e).__name__} {e}".encode()
    except Err as e:
        return 500, f"error: reading the body: {e.value}".encode()
    return 201, f"stored {written} bytes".encode()


def send(response_out, status, body):
    headers = Fields.from_list(
        [
            ("content-type", b"text/plain; charset=utf-8"),
            ("content-length", str(len(body)).encode()),
        ]
    )
    response = OutgoingResponse(headers)
    response.set_status_code(status)
    out = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with out.write() as stream:
        for i in range(0, len(body), WRITE_CHUNK):
            stream.blocking_write_and_flush(body[i : i + WRITE_CHUNK])
    OutgoingBody.finish(out, None)
