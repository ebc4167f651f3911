//! A `wasi:http` proxy component that reports what one request can reach,
//! for testing `capbroker serve` (and comparing with `wasmtime serve`).
//!
//! It is written as an ordinary handler would be: Rust's `std` for files
//! (`wasi:filesystem`), the environment (`wasi:cli/environment`), sockets
//! (`wasi:sockets`) and sleeping (`wasi:clocks`), plus `wasi:http` for the
//! request itself and for outgoing requests. Each path is one probe:
//!
//! | request | answer |
//! |---|---|
//! | `GET /hello` | 200 `hello` |
//! | `PUT` or `POST /upload/NAME` | the body written to `/uploads/NAME`: 201 `stored N bytes` |
//! | `GET /read?path=P` | 200 and the file's content |
//! | `GET /list?path=P` | 200 and the entries' names, sorted, one a line |
//! | `GET /write?path=P&data=D` | `D` written to `P` (created or truncated): 200 `ok` |
//! | `GET /preopens` | 200 and the preopened directories' guest paths, one a line |
//! | `GET /env?key=K` | 200 and the value, or 404 `unset` |
//! | `GET /envall` | 200 and every `K=V`, sorted, one a line |
//! | `GET /connect?addr=IP:PORT` | a TCP connection: 200 `connected` |
//! | `GET /fetch?url=URL` | an outgoing `GET`: 200 `STATUS BODY`, or 502 `error: ErrorCode` |
//! | `GET /spin` | loops forever, never answering |
//! | `GET /hog` | allocates and touches 1 MiB at a time until an allocation fails, then 500 `error: OutOfMemory after N MiB` (if the host let it get that far) |
//! | `GET /sleep?ms=N` | sleeps, then 200 `slept` |
//! | `GET /stream-then-spin` | sends the head (200) and `part\n`, flushes, then loops forever |
//! | `GET /echo-path` | 200 and the path with its query, as the component saw it |
//! | anything else | 404 `no such probe` |
//!
//! A failed file or socket call answers 500 `error: KIND MESSAGE` (`KIND` is
//! the `std::io::ErrorKind`, e.g. `error: NotFound No such file or
//! directory (os error 44)`). Query values are percent-decoded (`%XX` only;
//! `+` stays a `+`); a missing parameter, a bad escape, text that is not
//! UTF-8, or an upload name that is not one plain file name answers 400.

use std::io::Write as _;
use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use wasip2::io::streams::StreamError;

struct Probe;

/// An answer: its status and its body (sent as `text/plain`).
struct Reply {
    status: u16,
    body: Vec<u8>,
}

fn reply(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Reply {
        status,
        body: body.into(),
    }
}

fn bad(why: impl std::fmt::Display) -> Reply {
    reply(400, format!("bad request: {why}"))
}

fn io_error(e: std::io::Error) -> Reply {
    reply(500, format!("error: {:?} {e}", e.kind()))
}

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, query),
            None => (target.as_str(), ""),
        };
        let method = request.method();
        let is_get = matches!(method, Method::Get);
        let answer = if is_get && path == "/stream-then-spin" {
            stream_then_spin(response_out)
        } else if let (Method::Put | Method::Post, Some(name)) =
            (&method, path.strip_prefix("/upload/"))
        {
            upload(&request, name)
        } else if !is_get {
            Ok(reply(404, "no such probe"))
        } else {
            get(path, query, &target)
        };
        drop(request);
        send(response_out, answer.unwrap_or_else(|e| e));
    }
}

/// The `GET` probes.
fn get(path: &str, query: &str, target: &str) -> Result<Reply, Reply> {
    Ok(match path {
        "/hello" => reply(200, "hello"),
        "/read" => reply(200, std::fs::read(param(query, "path")?).map_err(io_error)?),
        "/list" => {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(param(query, "path")?).map_err(io_error)? {
                let entry = entry.map_err(io_error)?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            reply(200, lines(names))
        }
        "/write" => {
            let (path, data) = (param(query, "path")?, param(query, "data")?);
            std::fs::write(path, data).map_err(io_error)?;
            reply(200, "ok")
        }
        "/preopens" => {
            let dirs = wasip2::filesystem::preopens::get_directories();
            reply(200, lines(dirs.into_iter().map(|(_, path)| path)))
        }
        "/env" => match std::env::var_os(param(query, "key")?) {
            Some(value) => reply(200, value.to_string_lossy().into_owned()),
            None => reply(404, "unset"),
        },
        "/envall" => {
            let mut vars: Vec<String> = std::env::vars_os()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect();
            vars.sort();
            reply(200, lines(vars))
        }
        "/connect" => {
            std::net::TcpStream::connect(param(query, "addr")?.as_str()).map_err(io_error)?;
            reply(200, "connected")
        }
        "/fetch" => fetch(&param(query, "url")?)?,
        "/spin" => spin(),
        "/hog" => hog(),
        "/sleep" => {
            let ms: u64 = param(query, "ms")?
                .parse()
                .map_err(|e| bad(format!("ms: {e}")))?;
            std::thread::sleep(Duration::from_millis(ms));
            reply(200, "slept")
        }
        "/echo-path" => reply(200, target),
        "/remember" => {
            // What an earlier request left in this instance's memory: with
            // a fresh instance per request, always nothing.
            static LAST: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            let before = std::mem::replace(&mut *last, param(query, "value")?);
            reply(200, before)
        }
        "/fields" => {
            // `n` header sets each holding one value of `size` bytes, all
            // kept until the answer: host memory the guest asks for.
            let number = |key| -> Result<usize, Reply> {
                param(query, key)?
                    .parse()
                    .map_err(|e| bad(format!("{key}: {e}")))
            };
            let (n, size) = (number("n")?, number("size")?);
            let mut held = Vec::with_capacity(n);
            for i in 0..n {
                let fields = Fields::new();
                if let Err(e) = fields.set("x-big", &[vec![b'a'; size]]) {
                    return Err(reply(500, format!("error: fields {i}: {e:?}")));
                }
                held.push(fields);
            }
            reply(200, format!("held {}", held.len()))
        }
        _ => reply(404, "no such probe"),
    })
}

/// `PUT /upload/NAME`: streams the body into `/uploads/NAME`.
fn upload(request: &IncomingRequest, name: &str) -> Result<Reply, Reply> {
    let name = decode(name)?;
    // Any name, `/` and `..` included: keeping the upload in its folder
    // is the host's job, which this probe is here to test.
    if name.is_empty() {
        return Err(bad("the upload needs a NAME"));
    }
    let mut file = std::fs::File::create(format!("/uploads/{name}")).map_err(io_error)?;
    let body = request
        .consume()
        .map_err(|()| reply(500, "error: the request body was already taken"))?;
    let mut stream = body
        .stream()
        .map_err(|()| reply(500, "error: the request body has no stream"))?;
    let n = std::io::copy(&mut stream, &mut file).map_err(io_error)?;
    Ok(reply(201, format!("stored {n} bytes")))
}

/// `GET /fetch?url=URL`: one outgoing `GET` through `wasi:http`.
fn fetch(url: &str) -> Result<Reply, Reply> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(bad("the url must start with http:// or https://"));
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(bad("the url has no host"));
    }
    let path = match tail.starts_with('/') {
        true => tail.to_string(),
        false => format!("/{tail}"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| bad("bad scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| bad(format!("bad authority `{authority}`")))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| bad(format!("bad path `{path}`")))?;
    let upstream = |e| reply(502, format!("error: {e:?}"));
    let out_body = request
        .body()
        .map_err(|()| reply(500, "error: the request has no body"))?;
    let future = outgoing_handler::handle(request, None).map_err(upstream)?;
    OutgoingBody::finish(out_body, None).map_err(upstream)?;
    let response = loop {
        match future.get() {
            Some(Ok(result)) => break result.map_err(upstream)?,
            Some(Err(())) => return Err(reply(500, "error: the response was taken twice")),
            None => future.subscribe().block(),
        }
    };
    let mut answer = format!("{} ", response.status()).into_bytes();
    let body = response
        .consume()
        .map_err(|()| reply(500, "error: the response body was already taken"))?;
    let stream = body
        .stream()
        .map_err(|()| reply(500, "error: the response body has no stream"))?;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => answer.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(match wasip2::http::types::http_error_code(&e) {
                    Some(code) => upstream(code),
                    None => reply(502, format!("error: {}", e.to_debug_string())),
                })
            }
        }
    }
    Ok(reply(200, answer))
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Takes memory 1 MiB at a time, writing every byte, until an allocation
/// fails (or the host stops the instance first).
fn hog() -> Reply {
    // Infallible allocations, as most code makes them: past the budget the
    // allocator aborts, and the instance traps.
    const MIB: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        chunks.push(std::hint::black_box(vec![0xa5; MIB]));
    }
}

/// Sends the head and a first piece of the body, then never finishes.
fn stream_then_spin(response_out: ResponseOutparam) -> ! {
    let response = OutgoingResponse::new(Fields::new());
    if let Ok(body) = response.body() {
        ResponseOutparam::set(response_out, Ok(response));
        if let Ok(mut stream) = body.write() {
            let _ = stream.write_all(b"part\n");
            let _ = stream.flush();
            spin();
        }
    }
    spin()
}

fn send(response_out: ResponseOutparam, answer: Reply) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
    let _ = headers.set(
        "content-length",
        &[answer.body.len().to_string().into_bytes()],
    );
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(answer.status);
    let Ok(body) = response.body() else { return };
    ResponseOutparam::set(response_out, Ok(response));
    if let Ok(mut stream) = body.write() {
        let _ = stream.write_all(&answer.body);
        let _ = stream.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Each item followed by a newline.
fn lines(items: impl IntoIterator<Item = String>) -> String {
    items.into_iter().map(|s| s + "\n").collect()
}

/// The percent-decoded value of the first `key=…` in the query.
fn param(query: &str, key: &str) -> Result<String, Reply> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(k)? == key {
            return decode(v);
        }
    }
    Err(bad(format!("missing parameter `{key}`")))
}

/// `%XX` escapes decoded; the result must be UTF-8.
fn decode(s: &str) -> Result<String, Reply> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(hex);
            let lo = bytes.next().and_then(hex);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(bad(format!("bad percent escape in `{s}`"))),
            }
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).map_err(|_| bad(format!("`{s}` is not UTF-8 once decoded")))
}

wasip2::http::proxy::export!(Probe);
