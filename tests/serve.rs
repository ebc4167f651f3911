//! `capbroker serve` end to end, through the binary, over real TCP, with an
//! unmodified `wasi:http/proxy` component (components/http-probe, built
//! with Rust's std, so it imports `wasi:filesystem`, `wasi:sockets` and
//! `wasi:cli/environment` as real handlers do): each route's grants and
//! nothing else, budgets answered 503 while other requests go on, a cut
//! connection once a head was sent, outgoing HTTP only within a route's
//! connect grant, and clear errors for bad routes.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{capbroker, events, guest, text, Tree};

fn probe() -> PathBuf {
    guest("http_probe")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `capbroker serve` process, killed when dropped.
struct Served {
    child: Child,
    port: u16,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// `capbroker serve -m MANIFEST` (the manifest's text, with `{port}`
    /// and `{component}` filled in, written into `tree`), plus `extra`
    /// arguments, with `SECRET` set in its own environment.
    fn start(tree: &Tree, manifest: &str, extra: &[&str]) -> Served {
        let port = free_port();
        let text = manifest
            .replace("{port}", &port.to_string())
            .replace("{component}", probe().to_str().unwrap());
        let path = tree.path("capbroker.toml");
        std::fs::write(&path, text).unwrap();
        let mut args = vec!["serve", "-q", "-m", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let child = Command::new(env!("CARGO_BIN_EXE_capbroker"))
            .args(&args)
            .env("SECRET", "host-secret")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let served = Served { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    /// One request; the status code and the body (chunked bodies joined).
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let reply = self.raw(method, path, body);
        let code = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let (head, rest) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            unchunk(rest).unwrap_or_else(|| panic!("{path}: a cut-off chunked body: {rest:?}"))
        } else {
            rest.to_string()
        };
        (code, body)
    }

    /// One request on a connection of its own; everything that came back
    /// until the server closed it.
    fn raw(&self, method: &str, path: &str, body: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut reply = Vec::new();
        // A reset after a cut is the end of the reply too.
        let _ = s.read_to_end(&mut reply);
        String::from_utf8_lossy(&reply).into_owned()
    }
}

/// A chunked body's data, or `None` if its last chunk never came.
fn unchunk(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

/// A plain HTTP server on a free port that answers every request with
/// `upstream-body`, counting the connections it took.
fn upstream() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken = std::sync::Arc::new(AtomicUsize::new(0));
    let count = taken.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\nupstream-body",
                );
            });
        }
    });
    (port, taken)
}

/// A manifest with one route for every request and no grants.
const NOTHING: &str = r#"
component = "{component}"
[serve]
addr = "127.0.0.1:{port}"
[[route]]
route = "/..."
"#;

#[test]
fn a_route_with_no_grants_reaches_no_file_socket_or_variable() {
    let tree = Tree::new();
    let (up, taken) = upstream();
    let s = Served::start(&tree, NOTHING, &[]);
    assert_eq!(s.request("GET", "/hello", b""), (200, "hello".into()));
    assert_eq!(s.request("GET", "/preopens", b""), (200, String::new()));
    let secret = tree.outside().join("SECRET");
    std::fs::write(&secret, "outside").unwrap();
    for path in [
        format!("/read?path={}", secret.display()),
        format!("/read?path={}", tree.path("capbroker.toml").display()),
        "/read?path=/etc/passwd".into(),
        "/list?path=/".into(),
        "/list?path=.".into(),
        "/write?path=/tmp/capbroker-serve-test&data=x".into(),
        format!("/connect?addr=127.0.0.1:{up}"),
    ] {
        let (code, body) = s.request("GET", &path, b"");
        assert_eq!(code, 500, "{path}: {body}");
        assert!(body.starts_with("error:"), "{path}: {body}");
    }
    assert!(!Path::new("/tmp/capbroker-serve-test").exists());
    // Outgoing HTTP is refused without a connect grant, before any
    // connection is made.
    let (code, body) = s.request("GET", &format!("/fetch?url=http://127.0.0.1:{up}/"), b"");
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("HttpRequestDenied"), "{body}");
    assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 0);
    // No variable, the server's own `SECRET` included.
    assert_eq!(s.request("GET", "/envall", b""), (200, String::new()));
    assert_eq!(s.request("GET", "/env?key=SECRET", b"").0, 404);
    // Every request has a fresh instance: nothing an earlier one left in
    // memory (on this or another connection) is there.
    for i in 0..20 {
        assert_eq!(
            s.request("GET", &format!("/remember?value=secret-{i}"), b""),
            (200, String::new())
        );
    }
    // The request got the path as sent.
    assert_eq!(
        s.request("GET", "/echo-path?a=%2e&b", b""),
        (200, "/echo-path?a=%2e&b".into())
    );
}

/// No routes: every request gets the flags' grants and budget.
const NO_ROUTES: &str = r#"
component = "{component}"
[serve]
addr = "127.0.0.1:{port}"
"#;

/// `wasmtime serve`'s spellings: `-S cli` is taken as given, `-S
/// inherit-env` gives every request the host's variables, and `-W fuel=`
/// and `-W max-memory-size=` are every request's budget.
#[test]
fn wasmtime_serves_spellings_set_every_requests_grants_and_budget() {
    let tree = Tree::new();
    let s = Served::start(
        &tree,
        NO_ROUTES,
        &[
            "-S",
            "cli,inherit-env",
            "-W",
            "fuel=200_000_000,max-memory-size=16MiB",
        ],
    );
    assert_eq!(
        s.request("GET", "/env?key=SECRET", b""),
        (200, "host-secret".into())
    );
    for (path, budget) in [("/spin", "CPU"), ("/hog", "memory")] {
        let (code, body) = s.request("GET", path, b"");
        assert_eq!(code, 503, "{path}: {body}");
        assert!(body.contains(budget), "{path}: {body}");
    }
    assert_eq!(s.request("GET", "/hello", b""), (200, "hello".into()));
}

/// The seed's server: a create-only upload folder on the upload route;
/// the same grant on `/read`, to show it cannot read back; nothing
/// elsewhere.
const UPLOADS: &str = r#"
component = "{component}"
[serve]
addr = "127.0.0.1:{port}"

[[route]]
route = "/upload/..."
methods = ["PUT", "POST"]
[route.dir."/uploads"]
path = "uploads"
rights = "create"

[[route]]
route = "/read"
[route.dir."/uploads"]
path = "uploads"
rights = "create"

[[route]]
route = "/env"
env = { GREETING = "hi" }

[[route]]
route = "/..."
"#;

#[test]
fn the_upload_route_writes_only_into_its_folder_and_cannot_read_it_back() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("uploads")).unwrap();
    std::fs::write(tree.outside().join("SECRET"), "outside").unwrap();
    std::os::unix::fs::symlink(tree.outside(), tree.path("uploads/out")).unwrap();
    let s = Served::start(&tree, UPLOADS, &[]);

    let (code, body) = s.request("PUT", "/upload/a.txt", b"uploaded bytes");
    assert_eq!((code, body.as_str()), (201, "stored 14 bytes"));
    assert_eq!(
        tree.read("uploads/a.txt").as_deref(),
        Some("uploaded bytes")
    );
    // Create-only: no replacing what is there.
    let (code, body) = s.request("POST", "/upload/a.txt", b"again");
    assert_eq!(code, 500, "{body}");
    assert_eq!(
        tree.read("uploads/a.txt").as_deref(),
        Some("uploaded bytes")
    );
    // Nor reading it back, with the same grant.
    let (code, body) = s.request("GET", "/read?path=/uploads/a.txt", b"");
    assert_eq!(code, 500, "{body}");
    assert!(!body.contains("uploaded"), "{body}");
    // Nothing leaves the folder: dot segments are refused before any
    // route, and a link out is not followed.
    for path in [
        "/upload/../escaped.txt",
        "/upload/%2e%2e/escaped.txt",
        "/upload/%2E%2e%2fescaped.txt",
        "/upload/x/../../escaped.txt",
    ] {
        assert_eq!(s.request("PUT", path, b"x").0, 400, "{path}");
    }
    for path in [
        "/upload/out/SECRET",
        "/upload/out/new.txt",
        "/upload/missing/x.txt",
    ] {
        let (code, body) = s.request("PUT", path, b"x");
        assert_eq!(code, 500, "{path}: {body}");
    }
    assert_eq!(
        std::fs::read_to_string(tree.outside().join("SECRET")).unwrap(),
        "outside"
    );
    assert!(!tree.outside().join("new.txt").exists());
    assert!(!tree.path("escaped.txt").exists());
    // A GET on the upload path is not the upload route's.
    assert_eq!(s.request("GET", "/upload/b.txt", b"").0, 404);
    // The other routes reach nothing of it.
    assert_eq!(s.request("GET", "/preopens", b""), (200, String::new()));
    // The env route gets its variable only.
    assert_eq!(
        s.request("GET", "/env?key=GREETING", b""),
        (200, "hi".into())
    );
    assert_eq!(s.request("GET", "/env?key=SECRET", b"").0, 404);
    let mut stored: Vec<_> = std::fs::read_dir(tree.path("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    stored.sort();
    assert_eq!(stored, ["a.txt", "out"]);
}

const BUDGETS: &str = r#"
component = "{component}"
[serve]
addr = "127.0.0.1:{port}"
[limits]
max-memory = "64MiB"
timeout = "20s"

[[route]]
route = "/spin"
[route.limits]
max-fuel = "200M"

[[route]]
route = "/hog"
[route.limits]
max-memory = "16MiB"

[[route]]
route = "/sleep"
[route.limits]
timeout = "300ms"

[[route]]
route = "/stream-then-spin"
[route.limits]
max-fuel = "200M"

[[route]]
route = "/..."
"#;

#[test]
fn a_request_past_its_budget_gets_503_while_the_others_are_served() {
    let tree = Tree::new();
    let audit = tree.path("audit.jsonl");
    let s = std::sync::Arc::new(Served::start(
        &tree,
        BUDGETS,
        &["--audit", audit.to_str().unwrap()],
    ));
    let started = Instant::now();
    let abusers: Vec<_> = ["/spin", "/hog", "/sleep?ms=5000"]
        .into_iter()
        .map(|path| {
            let s = s.clone();
            std::thread::spawn(move || (path, s.request("GET", path, b"")))
        })
        .collect();
    // Meanwhile, everyone else is served.
    let polite: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..10)
                    .map(|_| s.request("GET", "/hello", b""))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for p in polite {
        for r in p.join().unwrap() {
            assert_eq!(r, (200, "hello".into()));
        }
    }
    for a in abusers {
        let (path, (code, body)) = a.join().unwrap();
        assert_eq!(code, 503, "{path}: {body}");
        let budget = match path {
            "/spin" => "CPU",
            "/hog" => "memory",
            _ => "time",
        };
        assert!(body.contains(budget), "{path}: {body}");
    }
    assert!(started.elapsed() < Duration::from_secs(15));
    // And the server goes on.
    assert_eq!(s.request("GET", "/hello", b""), (200, "hello".into()));
    // The audit log has each request, its route and how it ended.
    let ev = events(&audit);
    let requests = ev.iter().filter(|e| e["event"] == "request").count();
    assert!(requests >= 44, "{requests} requests logged");
    for status in ["out-of-cpu", "out-of-memory", "timed-out"] {
        assert!(
            ev.iter()
                .any(|e| e["event"] == "exit" && e["status"] == status),
            "no {status} exit in the log"
        );
    }
}

#[test]
fn a_budget_spent_after_the_head_cuts_the_connection() {
    let tree = Tree::new();
    let s = Served::start(&tree, BUDGETS, &[]);
    let reply = s.raw("GET", "/stream-then-spin", b"");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("part\n"), "{reply}");
    // Never the chunked body's end: the client cannot take it for whole.
    assert!(!reply.ends_with("0\r\n\r\n"), "{reply:?}");
    assert_eq!(s.request("GET", "/hello", b""), (200, "hello".into()));
}

#[test]
fn outgoing_http_and_sockets_reach_only_the_route_grant() {
    let tree = Tree::new();
    let (up, taken) = upstream();
    let (other, other_taken) = upstream();
    let manifest = format!(
        r#"
component = "{{component}}"
[serve]
addr = "127.0.0.1:{{port}}"
[[route]]
route = "/fetch"
[route.connect]
upstream = "127.0.0.1:{up}"
[[route]]
route = "/connect"
[route.connect]
upstream = "127.0.0.1:{up}"
[[route]]
route = "/..."
"#
    );
    let s = Served::start(&tree, &manifest, &[]);
    let (code, body) = s.request("GET", &format!("/fetch?url=http://127.0.0.1:{up}/x"), b"");
    assert_eq!((code, body.as_str()), (200, "200 upstream-body"));
    assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 1);
    for url in [
        format!("http://127.0.0.1:{other}/"),
        format!("http://localhost:{up}/"),
        format!("http://[::ffff:127.0.0.1]:{up}/"),
        format!("http://0.0.0.0:{up}/"),
        format!("https://127.0.0.1:{other}/"),
    ] {
        let (code, body) = s.request("GET", &format!("/fetch?url={url}"), b"");
        assert_eq!(code, 502, "{url}: {body}");
        assert!(body.contains("HttpRequestDenied"), "{url}: {body}");
    }
    assert_eq!(
        s.request("GET", &format!("/connect?addr=127.0.0.1:{up}"), b""),
        (200, "connected".into())
    );
    let (code, body) = s.request("GET", &format!("/connect?addr=127.0.0.1:{other}"), b"");
    assert_eq!(code, 500, "{body}");
    assert_eq!(other_taken.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn a_request_no_route_matches_gets_404_without_an_instance() {
    let tree = Tree::new();
    let audit = tree.path("audit.jsonl");
    let manifest = r#"
component = "{component}"
[serve]
addr = "127.0.0.1:{port}"
[[route]]
route = "/hello"
methods = ["GET"]
"#;
    let s = Served::start(&tree, manifest, &["--audit", audit.to_str().unwrap()]);
    assert_eq!(s.request("GET", "/hello", b""), (200, "hello".into()));
    // The route takes a trailing slash (the probe itself knows only
    // `/hello`).
    assert_eq!(
        s.request("GET", "/hello/", b""),
        (404, "no such probe".into())
    );
    assert_eq!(s.request("POST", "/hello", b"").0, 404);
    assert_eq!(s.request("GET", "/envall", b"").0, 404);
    assert_eq!(s.request("GET", "/hello/x", b"").0, 404);
    let ev = events(&audit);
    let requests: Vec<_> = ev.iter().filter(|e| e["event"] == "request").collect();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests.iter().all(|e| e["route"] == "GET /hello"));
}

#[test]
fn malformed_routes_are_clear_errors() {
    let tree = Tree::new();
    let component = probe();
    let cases: [(&str, &str); 8] = [
        ("[[route]]\nroute = \"nope\"\n", "does not start with `/`"),
        (
            "[[route]]\nroute = \"/a/.../b\"\n",
            "`...` may only be the last segment",
        ),
        (
            "[[route]]\nroute = \"/a\"\nmethods = []\n",
            "methods: empty",
        ),
        (
            "[[route]]\nroute = \"/a\"\nmethods = [\"G T\"]\n",
            "is not an HTTP method",
        ),
        ("[[route]]\nrout = \"/a\"\n", "unknown field `rout`"),
        (
            "[[route]]\nroute = \"/a\"\n[route.spawn.w]\n",
            "unknown field `spawn`",
        ),
        (
            "[[route]]\nroute = \"/a\"\n[route.dir.\"/d\"]\npath = \"d\"\nrights = \"rwx\"\n",
            "rights",
        ),
        (
            "[dir.data]\npath = \".\"\n[[route]]\nroute = \"/a\"\n",
            "each route lists its own grants",
        ),
    ];
    for (i, (body, expected)) in cases.iter().enumerate() {
        let path = tree.path(&format!("bad{i}.toml"));
        std::fs::write(
            &path,
            format!("component = \"{}\"\n{body}", component.display()),
        )
        .unwrap();
        let out = capbroker(&["serve", "-m", path.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {err}");
        assert!(
            err.contains(expected),
            "{body}: expected `{expected}` in: {err}"
        );
        if i < 7 {
            assert!(err.contains(&format!("bad{i}.toml:")), "no line: {err}");
        }
    }
    // Routes are for `serve`, and a proxy component is served, not run.
    let path = tree.path("bad0.toml");
    std::fs::write(
        &path,
        format!(
            "component = \"{}\"\n[[route]]\nroute = \"/a\"\n",
            component.display()
        ),
    )
    .unwrap();
    let out = capbroker(&["run", "-m", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("capbroker serve"),
        "{}",
        text(&out.stderr)
    );
    let out = capbroker(&["run", component.to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains("capbroker serve"),
        "{}",
        text(&out.stderr)
    );
    // A route with as many directories as handles, whose every request
    // would trap, is refused at start; `-S http=n` asks for what cannot
    // be taken away.
    let dirs: String = (0..20)
        .map(|i| format!("[route.dir.\"/g{i}\"]\npath = \".\"\nrights = \"ro\"\n"))
        .collect();
    let path = tree.path("dirs.toml");
    std::fs::write(
        &path,
        format!(
            "component = \"{}\"\n[limits]\nmax-handles = 16\n[[route]]\nroute = \"/...\"\n{dirs}",
            component.display()
        ),
    )
    .unwrap();
    let out = capbroker(&["serve", "-m", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("grants 20 directories") && err.contains("max-handles is 16"),
        "{err}"
    );
    let out = capbroker(&["serve", "-S", "http=n", component.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("-S http"),
        "{}",
        text(&out.stderr)
    );
    // A component that is not a proxy is refused as one.
    let out = capbroker(&["serve", guest("std-probe").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a wasi:http proxy component"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_python_proxy_component_gets_only_its_upload_folder() {
    let wasm = support::python_http_guest();
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("uploads")).unwrap();
    let manifest = r#"
component = "{component}"
[serve]
addr = "127.0.0.1:{port}"
[[route]]
route = "/upload/..."
methods = ["PUT"]
[route.dir."/uploads"]
path = "uploads"
rights = "create"
[[route]]
route = "/..."
"#
    .replace("{component}", wasm.to_str().unwrap());
    // `Served::start` fills in the Rust probe; this manifest names Python's.
    let s = Served::start(&tree, &manifest, &[]);
    assert_eq!(
        s.request("GET", "/hello", b""),
        (200, "hello from python".into())
    );
    let (code, body) = s.request("PUT", "/upload/py.txt", b"from python");
    assert_eq!((code, body.as_str()), (201, "stored 11 bytes"));
    assert_eq!(tree.read("uploads/py.txt").as_deref(), Some("from python"));
    // The same handler on a route with nothing cannot write at all.
    let (code, body) = s.request("POST", "/upload/py2.txt", b"x");
    assert_eq!(code, 500, "{body}");
    assert!(!tree.path("uploads/py2.txt").exists());
}

#[test]
fn a_connection_that_sends_no_request_is_closed() {
    let tree = Tree::new();
    let s = Served::start(&tree, NOTHING, &[]);
    let started = Instant::now();
    let mut idle = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut trickle = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    trickle
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    trickle
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = idle.read_to_end(&mut buf);
    let _ = trickle.read_to_end(&mut buf);
    // Within the header timeout (10 s), not the client's 30 s.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.request("GET", "/hello", b""), (200, "hello".into()));
}

#[test]
fn an_instance_does_not_outlive_its_client() {
    let tree = Tree::new();
    let audit = tree.path("audit.jsonl");
    let s = Served::start(&tree, NOTHING, &["--audit", audit.to_str().unwrap()]);
    {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.write_all(b"GET /sleep?ms=60000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let killed = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"event\":\"exit\"") && l.contains("\"status\":\"killed\""));
        if killed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the instance ran on without its client"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn what_the_host_holds_for_http_fields_follows_the_memory_budget() {
    let tree = Tree::new();
    let manifest = r#"
component = "{component}"
[serve]
addr = "127.0.0.1:{port}"
[[route]]
route = "/small/..."
[route.limits]
max-memory = "4MiB"
[[route]]
route = "/..."
"#;
    let s = Served::start(&tree, manifest, &[]);
    // A budget of 256 MiB (the default) lets a 100 KB header through;
    // one of 4 MiB, over 1,024 handles, does not: whatever the guest
    // asks for, the host holds no more than its budget.
    assert_eq!(
        s.request("GET", "/fields?n=10&size=100000", b""),
        (200, "held 10".into())
    );
    let (code, body) = s.request("GET", "/small/x?n=1&size=100000", b"");
    // `/small/x` is not the probe's `/fields`: check through the route
    // with a probe path it knows.
    assert_eq!(code, 404, "{body}");
    let manifest = manifest.replace("/small/...", "/fields");
    drop(s);
    let s = Served::start(&tree, &manifest, &[]);
    // wasi-http traps a guest whose fields pass the limit.
    assert_eq!(
        s.request("GET", "/fields?n=1&size=100000", b""),
        (500, "the handler failed\n".into())
    );
    assert_eq!(
        s.request("GET", "/fields?n=100&size=4000", b""),
        (200, "held 100".into())
    );
}

#[test]
fn learning_writes_the_route_scoped_manifest_the_requests_needed() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("uploads")).unwrap();
    std::fs::create_dir_all(tree.path("data")).unwrap();
    std::fs::write(tree.path("data/a.txt"), "A").unwrap();
    std::fs::write(tree.path("data/b.txt"), "B").unwrap();
    let manifest = r#"
component = "{component}"
[serve]
addr = "127.0.0.1:{port}"
[limits]
timeout = "10s"
[[route]]
route = "/upload/..."
[route.dir."/uploads"]
path = "uploads"
rights = "rw"
[[route]]
route = "/read"
[route.dir."/data"]
path = "data"
rights = "rw"
[[route]]
route = "/write"
[route.dir."/data"]
path = "data"
rights = "rw"
[[route]]
route = "/..."
"#;
    let learned = tree.outside().join("learned.toml");
    let s = Served::start(&tree, manifest, &["--learn", learned.to_str().unwrap()]);
    assert_eq!(s.request("PUT", "/upload/u.txt", b"up").0, 201);
    assert_eq!(
        s.request("GET", "/read?path=/data/a.txt", b""),
        (200, "A".into())
    );
    // Writes the checks allow but the system refuses teach nothing: one to
    // the folder itself (it is a directory), one into a folder not there.
    assert_eq!(s.request("GET", "/write?path=/data&data=x", b"").0, 500);
    assert_eq!(
        s.request("GET", "/write?path=/data/sub/x.txt&data=x", b"")
            .0,
        500
    );
    assert_eq!(s.request("PUT", "/upload/sub/x.txt", b"x").0, 500);
    // Stopped as Ctrl-C stops it.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !learned.exists() {
        assert!(Instant::now() < deadline, "no learned manifest");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&learned).unwrap();
    // The base limits stay, each route keeps its pattern, and its grants
    // shrink to what was used.
    assert!(text.contains("timeout = \"10000ms\""), "{text}");
    // serve's own default handle limit, not run's wider one.
    assert!(text.contains("max-handles = 128\n"), "{text}");
    assert!(text.contains("route = \"/upload/...\""), "{text}");
    assert!(text.contains("route = \"/...\""), "{text}");
    assert!(text.contains("\"a.txt\""), "{text}");
    assert!(!text.contains("b.txt"), "{text}");
    assert!(!text.contains("sub/x.txt"), "{text}");
    let root_writes =
        |l: &str| l.starts_with("\".\" =") && (l.contains("write") || l.contains("create"));
    assert!(!text.lines().any(root_writes), "{text}");
    drop(s);

    // Served with what it learned: the same requests work, others do not.
    let path = tree.path("learned.toml");
    std::fs::copy(&learned, &path).unwrap();
    let port = free_port();
    let text = text.replace(
        &text
            .lines()
            .find(|l| l.starts_with("addr = "))
            .unwrap()
            .to_string(),
        &format!("addr = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&path, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args(["serve", "-q", "-m", path.to_str().unwrap()])
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let s = Served { child, port };
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        s.request("GET", "/read?path=/data/a.txt", b""),
        (200, "A".into())
    );
    assert_eq!(s.request("GET", "/read?path=/data/b.txt", b"").0, 500);
    // Only the names it used: learning cannot tell an upload folder from
    // a file list.
    assert_eq!(s.request("PUT", "/upload/u.txt", b"again").0, 201);
    assert_eq!(s.request("PUT", "/upload/u2.txt", b"up").0, 500);
}

#[test]
fn a_response_without_a_body_lets_the_instance_finish() {
    let tree = Tree::new();
    let audit = tree.path("audit.jsonl");
    let s = Served::start(&tree, NOTHING, &["--audit", audit.to_str().unwrap()]);
    // hyper sends no body to HEAD and drops it unread: no sign of the
    // client going, so the instance ends as it would have.
    // (The probe answers only GET /hello, so HEAD gets its 404, bodiless.)
    let reply = s.raw("HEAD", "/hello", b"");
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(reply.ends_with("\r\n\r\n"), "{reply:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exits: Vec<String> = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"event\":\"exit\""))
            .map(String::from)
            .collect();
        if let Some(e) = exits.first() {
            assert!(e.contains("\"status\":\"finished\""), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn requests_past_what_the_open_file_limit_holds_get_503_at_once() {
    use std::os::unix::process::CommandExt;
    let tree = Tree::new();
    let port = free_port();
    let path = tree.path("capbroker.toml");
    std::fs::write(
        &path,
        NOTHING
            .replace("{port}", &port.to_string())
            .replace("{component}", probe().to_str().unwrap()),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capbroker"));
    cmd.args(["serve", "-m", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // A quarter of 600 kept for the server, and 256 (twice the default
    // 128 handles) for one request: room for one request at a time.
    unsafe {
        cmd.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: 600,
                rlim_max: 600,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    };
    let child = cmd.spawn().unwrap();
    let s = std::sync::Arc::new(Served { child, port });
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the server did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sleeper = {
        let s = s.clone();
        std::thread::spawn(move || s.request("GET", "/sleep?ms=1500", b""))
    };
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = s.request("GET", "/hello", b"");
    assert_eq!(
        (code, body.as_str()),
        (503, "every instance is busy: try again\n")
    );
    assert_eq!(sleeper.join().unwrap(), (200, "slept".into()));
    // The place is free again.
    assert_eq!(s.request("GET", "/hello", b""), (200, "hello".into()));
}

/// When not even one request's host files fit the open-file limit beside
/// what the server keeps, it refuses to start rather than let one request
/// take the files `accept` needs.
#[test]
fn a_server_whose_open_file_limit_holds_no_request_refuses_to_start() {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 1100 && exec {} serve --addr 127.0.0.1:0 --max-handles 1000 {}",
            env!("CARGO_BIN_EXE_capbroker"),
            probe().display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not even one request fits"),
        "{}",
        text(&out.stderr)
    );
}
