//! Load on the web-server example, in one run on this machine:
//! (a) capbroker with a child process per request (the example as is);
//! (b) the same handler logic in one long-lived instance, no children
//!     (`isolate = no`);
//! (c) `wasmtime serve` with an equivalent `wasi:http` handler
//!     (components/http-hello), if a `wasmtime` binary is found: `$WASMTIME`,
//!     `target/tools/bin/wasmtime` (`cargo install --locked wasmtime-cli@48.0.8
//!     --root target/tools`), or `PATH`.
//! Each serves `GET /` to 16 concurrent clients, a new connection per
//! request, for 5 seconds after a 1-second warm-up; requests/s and p50/p99
//! latency are printed, and the ratios the issue asks for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const WINDOW: Duration = Duration::from_secs(5);
const WARMUP: Duration = Duration::from_secs(1);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn build_guests() -> PathBuf {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet"])
        .current_dir(root().join("components"))
        .status()
        .expect("build the guest components");
    assert!(status.success());
    root().join("target/guests/wasm32-wasip2/release")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Server {
    /// Starts `cmd` quietly and waits until it listens on `port`.
    fn start(mut cmd: Command, port: u16) -> (Server, u16) {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server(child);
        wait_for(port);
        (server, port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server on {port} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn capbroker(guests: &Path, dir: &Path, isolate: bool) -> (Server, u16) {
    let port = free_port();
    let conf = dir.join(if isolate { "isolated" } else { "shared" });
    std::fs::create_dir_all(conf.join("uploads")).unwrap();
    std::fs::write(
        conf.join("server.conf"),
        format!(
            "listen = 127.0.0.1:{port}\ngreeting = hello, bench\nisolate = {}\n",
            if isolate { "yes" } else { "no" }
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capbroker"));
    cmd.args([
        "run",
        "--dir",
        &format!("cfg={}:ro", conf.display()),
        "--dir",
        &format!("uploads={}", conf.join("uploads").display()),
        "--listen",
        &format!("web=127.0.0.1:{port}"),
        "--spawn",
        "workers=max-memory=64MiB,max-fuel=4G,timeout=10s,max-children=400",
    ])
    .arg(guests.join("web_server.wasm"));
    Server::start(cmd, port)
}

fn wasmtime_binary() -> Option<PathBuf> {
    if let Some(w) = std::env::var_os("WASMTIME") {
        return Some(w.into());
    }
    let local = root().join("target/tools/bin/wasmtime");
    if local.exists() {
        return Some(local);
    }
    let found = Command::new("wasmtime").arg("--version").output().ok()?;
    found.status.success().then(|| "wasmtime".into())
}

fn wasmtime_serve(wasmtime: &Path, guests: &Path) -> (Server, u16) {
    let port = free_port();
    let mut cmd = Command::new(wasmtime);
    // `-S cli`: Rust's std imports wasi:cli, which serve links only on request.
    cmd.args(["serve", "-S", "cli", "--addr", &format!("127.0.0.1:{port}")])
        .arg(guests.join("http_hello.wasm"));
    Server::start(cmd, port)
}

/// One request on a new connection; the latency, if the answer was a 200.
fn get(port: u16) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).ok()?;
    (reply.starts_with(b"HTTP/1.1 200") && reply.ends_with(b"hello, bench"))
        .then(|| start.elapsed())
}

struct Stats {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

fn load(port: u16) -> Stats {
    let run = |window: Duration| {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|_| {
                std::thread::spawn(move || {
                    let end = Instant::now() + window;
                    let (mut ok, mut errors) = (Vec::new(), 0);
                    while Instant::now() < end {
                        match get(port) {
                            Some(d) => ok.push(d),
                            None => errors += 1,
                        }
                    }
                    (ok, errors)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut errors = 0;
        for t in threads {
            let (ok, e) = t.join().unwrap();
            all.extend(ok);
            errors += e;
        }
        (all, errors)
    };
    run(WARMUP);
    let (mut all, errors) = run(WINDOW);
    all.sort();
    let at = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    Stats {
        rps: all.len() as f64 / WINDOW.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        errors,
    }
}

fn show(label: &str, s: &Stats) {
    println!(
        "{label:<46} {:>8.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
        s.rps,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.errors
    );
}

fn main() {
    let guests = build_guests();
    let dir = tempfile::tempdir().unwrap();
    println!("web benchmark: GET / with {CLIENTS} concurrent clients, a connection per request, {WINDOW:?} each");
    let a = {
        let (_server, port) = capbroker(&guests, dir.path(), true);
        load(port)
    };
    show("(a) capbroker, a child process per request", &a);
    let b = {
        let (_server, port) = capbroker(&guests, dir.path(), false);
        load(port)
    };
    show("(b) capbroker, one long-lived instance", &b);
    println!("a/b: {:.2} (target ≥ 0.5)", a.rps / b.rps);
    match wasmtime_binary() {
        Some(w) => {
            let c = {
                let (_server, port) = wasmtime_serve(&w, &guests);
                load(port)
            };
            show("(c) wasmtime serve, a fresh instance per request", &c);
            println!("a/c: {:.2} (target > 1)", a.rps / c.rps);
        }
        None => println!(
            "(c) skipped: no wasmtime binary (cargo install --locked wasmtime-cli@48.0.8 --root target/tools)"
        ),
    }
}
