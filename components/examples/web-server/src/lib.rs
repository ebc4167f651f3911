//! An HTTP/1.1 server in which every request runs in a child process.
//!
//! - The root reads `server.conf` through `cfg`, drops it, keeps only a
//!   create-only copy of `uploads`, listens through `web`, and from then on
//!   only accepts connections: each goes to a *connection* child (which gets
//!   the connection, the uploads handle and the spawner), so that a slow
//!   request never holds up the next.
//! - The connection child reads the request and spawns a *handler* child
//!   with a CPU, memory and time budget and no handles at all, except for
//!   `POST /upload/NAME`, whose handler gets the create-only uploads handle.
//!   The handler gets the request as input and returns the response; if it
//!   runs out of CPU, memory or time, the connection child answers 503.
//! - Routes: `/` (the greeting), `/sandbox` (what a handler can reach:
//!   nothing), `/upload/NAME`, and `/spin`, `/hog`, `/sleep`, which exhaust
//!   CPU, memory and time on purpose.
//! - With `isolate = no` in `server.conf`, the root answers every request
//!   itself, one at a time, with no child processes: the load benchmark's
//!   baseline (a runaway request then stalls everything, which is the point
//!   of isolating them).

use capbroker_sdk::{
    export_service, service, Dir, ExitStatus, Grants, Limits, Request, Rights, Share, Shared,
    Spawner, TcpStream,
};

/// What a connection child may use: enough to read a request and wait.
const CONNECTION: Limits = Limits {
    max_memory: 32 << 20,
    max_fuel: 2_000_000_000,
    timeout_ms: 10_000,
};

/// What a request handler may use.
const HANDLER: Limits = Limits {
    max_memory: 16 << 20,
    max_fuel: 100_000_000,
    timeout_ms: 1_000,
};

const MAX_HEAD: usize = 16 << 10;
const MAX_BODY: usize = 1 << 20;

struct Server;

impl service::Guest for Server {
    fn requests() -> Vec<Request> {
        vec![
            Request::dir("cfg", Rights::READ, "reads server.conf"),
            Request::dir(
                "uploads",
                Rights::CREATE,
                "where POST /upload/NAME puts files",
            ),
            Request::listen("web", "the address server.conf names"),
            Request::spawner("workers", "a child per connection and one per request"),
        ]
    }

    fn run(_args: Vec<String>) -> Result<(), String> {
        let mut grants = Grants::granted();
        let cfg = grants.dir("cfg")?;
        let conf = cfg.read_to_string("server.conf").map_err(|e| e.message())?;
        drop(cfg);
        let addr = setting(&conf, "listen").ok_or("server.conf has no `listen = ADDRESS:PORT`")?;
        let greeting = setting(&conf, "greeting")
            .unwrap_or("hello from capbroker")
            .to_string();

        let uploads = grants.dir("uploads")?;
        let uploads = uploads.attenuate(Rights::CREATE).map_err(|e| e.message())?;
        let web = grants.listen("web")?;
        let listener = web.listen(addr).map_err(|e| e.message())?;
        drop(web);
        println!("serving on http://{}", listener.local_address());
        if setting(&conf, "isolate") == Some("no") {
            let mut input = greeting.into_bytes();
            input.push(b'\n');
            loop {
                let Ok(client) = listener.accept() else {
                    continue;
                };
                let reply = match read_request(&client) {
                    Ok(request) => handle(
                        &[input.as_slice(), &request].concat(),
                        Grants::from(Vec::new()),
                    ),
                    Err(msg) => response(400, &msg),
                };
                let _ = client.write(&reply);
                let _ = client.shutdown();
            }
        }
        let workers = grants.spawner("workers")?;

        let mut connections = Vec::new();
        loop {
            let client = match listener.accept() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("accept: {}", e.message());
                    continue;
                }
            };
            // Forget connections that are done (dropping a live one would end it).
            connections.retain(|p: &capbroker_sdk::Process| p.try_wait().is_none());
            let shares = [
                Share {
                    name: "client".into(),
                    handle: Shared::TcpStream(&client),
                },
                Share {
                    name: "uploads".into(),
                    handle: Shared::Dir(uploads.as_raw()),
                },
                Share {
                    name: "workers".into(),
                    handle: Shared::Spawner(&workers),
                },
            ];
            match workers.spawn("self", &shares, CONNECTION, greeting.as_bytes()) {
                Ok(p) => connections.push(p),
                Err(e) => {
                    let _ = client.write(&response(503, &format!("busy: {}", e.message())));
                }
            }
        }
    }

    fn start(input: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut grants = Grants::granted();
        match grants.tcp_stream("client") {
            Ok(client) => {
                let uploads = grants.dir("uploads")?;
                let workers = grants.spawner("workers")?;
                serve(&client, &uploads, &workers, &input);
                Ok(Vec::new())
            }
            Err(_) => Ok(handle(&input, grants)),
        }
    }
}

fn setting<'a>(conf: &'a str, key: &str) -> Option<&'a str> {
    conf.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim())
    })
}

fn response(code: u16, body: &str) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Service Unavailable",
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one request: the head, then a body of `Content-Length` bytes.
fn read_request(client: &TcpStream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too large".into());
        }
        let chunk = client.read(64 << 10).map_err(|e| e.message())?;
        if chunk.is_empty() {
            return Err("connection closed mid-request".into());
        }
        buf.extend(chunk);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| "bad content-length".to_string())
        })
        .transpose()?
        .unwrap_or(0);
    if length > MAX_BODY {
        return Err("body too large".into());
    }
    while buf.len() < head_end + length {
        let chunk = client.read(64 << 10).map_err(|e| e.message())?;
        if chunk.is_empty() {
            return Err("connection closed mid-body".into());
        }
        buf.extend(chunk);
    }
    buf.truncate(head_end + length);
    Ok(buf)
}

/// A connection child: one request, handled in a child of its own.
fn serve(client: &TcpStream, uploads: &Dir, workers: &Spawner, greeting: &[u8]) {
    let reply = match read_request(client) {
        Err(msg) => response(400, &msg),
        Ok(request) => {
            let upload =
                request.starts_with(b"POST /upload/") || request.starts_with(b"PUT /upload/");
            let shares: Vec<Share<'_>> = if upload {
                vec![Share {
                    name: "uploads".into(),
                    handle: Shared::Dir(uploads.as_raw()),
                }]
            } else {
                Vec::new()
            };
            let mut input = greeting.to_vec();
            input.push(b'\n');
            input.extend(request);
            match workers.spawn("self", &shares, HANDLER, &input) {
                Err(e) => response(503, &format!("busy: {}", e.message())),
                Ok(handler) => match handler.wait() {
                    ExitStatus::Finished(out) => out,
                    ExitStatus::OutOfCpu => response(503, "the handler ran out of CPU"),
                    ExitStatus::OutOfMemory => response(503, "the handler ran out of memory"),
                    ExitStatus::TimedOut => response(503, "the handler ran out of time"),
                    ExitStatus::Killed => response(503, "the handler was stopped"),
                    ExitStatus::Failed(m) => response(500, &m),
                    ExitStatus::Trapped(_) => response(500, "the handler crashed"),
                },
            }
        }
    };
    let _ = client.write(&reply);
    let _ = client.shutdown();
}

/// A handler child: the request in, the response out; no other authority.
fn handle(input: &[u8], mut grants: Grants) -> Vec<u8> {
    let split = input.iter().position(|b| *b == b'\n').unwrap_or(0);
    let greeting = String::from_utf8_lossy(&input[..split]);
    let request = &input[(split + 1).min(input.len())..];
    let head_end = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(request.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&request[..head_end]);
    let body = &request[head_end..];
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/") => response(200, &greeting),
        ("GET", "/spin") => loop {
            std::hint::black_box(());
        },
        ("GET", "/hog") => {
            let mut hoard = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        ("GET", "/sleep") => {
            std::thread::sleep(std::time::Duration::from_secs(60));
            response(200, "slept")
        }
        ("GET", "/sandbox") => {
            let fs = std::fs::read_dir("/").map(|_| "open").unwrap_or("refused");
            let file = std::fs::read("/etc/hostname")
                .map(|_| "open")
                .unwrap_or("refused");
            let net = std::net::TcpStream::connect("127.0.0.1:80")
                .map(|_| "open")
                .unwrap_or("refused");
            let env = std::env::vars().count();
            response(
                200,
                &format!(
                    "fs={fs} file={file} net={net} env={env} handles={}",
                    grants.names().len()
                ),
            )
        }
        ("POST" | "PUT", p) if p.starts_with("/upload/") => {
            let Ok(uploads) = grants.dir("uploads") else {
                return response(500, "no uploads handle");
            };
            let name = &p["/upload/".len()..];
            match uploads.write(name, body) {
                Ok(()) => response(201, &format!("stored {name} ({} bytes)", body.len())),
                Err(e) => response(403, &e.message()),
            }
        }
        _ => response(404, "no such route"),
    }
}

export_service!(Server);
