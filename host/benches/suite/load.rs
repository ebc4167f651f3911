//! The one HTTP load generator `serve` and `isolate` share, and the
//! servers they start.
//!
//! `CLIENTS` threads, each on its own keep-alive HTTP/1.1 connection,
//! send `GET /` one request after another; a connection the server closes
//! (`Connection: close`, or a reset) is opened again, and that connect is
//! counted in the next request's latency. Requests started during the
//! warm-up are not counted; the window is fixed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::report::quantile;

pub const CLIENTS: usize = 16;

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Starts `cmd` quietly and waits until it listens on `port`; fails
    /// with what it printed if it exits first.
    pub fn start(mut cmd: Command, port: u16) -> Result<Server, String> {
        let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log.reopen().map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                let said = std::fs::read_to_string(log.path()).unwrap_or_default();
                return Err(format!("{cmd:?} exited ({status}): {}", said.trim()));
            }
            if Instant::now() > deadline {
                return Err(format!("{cmd:?} did not listen on {port} within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One window of load on one server.
pub struct Stats {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: usize,
    /// Connections opened in the window.
    pub connects: usize,
}

impl Stats {
    pub fn line(&self) -> String {
        format!(
            "{:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  connections {}",
            self.rps,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3,
            self.errors,
            self.connects
        )
    }
}

/// `GET /` from `CLIENTS` keep-alive clients for `warmup`, then counted
/// for `window`. Each answer must be a 200 whose body holds `expect`.
pub fn run(port: u16, expect: &'static str, warmup: Duration, window: Duration) -> Stats {
    let start = Instant::now() + Duration::from_millis(5);
    let counted_from = start + warmup;
    let end = counted_from + window;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn: Option<BufReader<TcpStream>> = None;
                let (mut ok, mut errors, mut connects) = (Vec::new(), 0, 0);
                while Instant::now() < start {
                    std::hint::spin_loop();
                }
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    let counted = t >= counted_from;
                    let fresh = conn.is_none();
                    let result = request(&mut conn, port, expect);
                    let done = Instant::now();
                    if !counted || done > end {
                        continue;
                    }
                    if fresh {
                        connects += 1;
                    }
                    match result {
                        Ok(()) => ok.push(done - t),
                        Err(_) => errors += 1,
                    }
                }
                (ok, errors, connects)
            })
        })
        .collect();
    let (mut all, mut errors, mut connects) = (Vec::new(), 0, 0);
    for t in threads {
        let (ok, e, c) = t.join().unwrap();
        all.extend(ok);
        errors += e;
        connects += c;
    }
    all.sort();
    let (p50, p99) = if all.is_empty() {
        (Duration::MAX, Duration::MAX)
    } else {
        (quantile(&all, 0.5), quantile(&all, 0.99))
    };
    Stats {
        rps: all.len() as f64 / window.as_secs_f64(),
        p50,
        p99,
        errors,
        connects,
    }
}

/// One request on `conn` (opened first if there is none); the connection
/// is kept unless the server closes it or it fails.
fn request(conn: &mut Option<BufReader<TcpStream>>, port: u16, expect: &str) -> io::Result<()> {
    if conn.is_none() {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        *conn = Some(BufReader::with_capacity(16 << 10, s));
    }
    let r = conn.as_mut().unwrap();
    let result = (|| {
        r.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let (status, body, close) = response(r)?;
        if status != 200 || !String::from_utf8_lossy(&body).contains(expect) {
            return Err(io::Error::other(format!("status {status}")));
        }
        Ok(close)
    })();
    match result {
        Ok(false) => Ok(()),
        Ok(true) => {
            *conn = None;
            Ok(())
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

/// Reads one response: its status, its body, and whether the server closes
/// the connection after it.
fn response(r: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<u8>, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => length = v.parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.contains("chunked"),
            "connection" => close = v.contains("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..])?;
            line.clear();
            r.read_line(&mut line)?;
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
        close = true;
    }
    Ok((status, body, close))
}

/// The same load on each server, `rounds` times, in a new random order
/// each round: `out[server][round]`.
pub fn rounds(
    servers: &[(&Server, &'static str)],
    rounds: usize,
    warmup: Duration,
    window: Duration,
) -> Vec<Vec<Stats>> {
    let mut out: Vec<Vec<Stats>> = servers.iter().map(|_| Vec::new()).collect();
    let mut order: Vec<usize> = (0..servers.len()).collect();
    let mut rng = crate::report::Shuffle::from_clock();
    for _ in 0..rounds {
        rng.shuffle(&mut order);
        for &i in &order {
            let (server, expect) = servers[i];
            out[i].push(run(server.port, expect, warmup, window));
        }
    }
    out
}

/// Window lengths: (rounds, warm-up, window).
pub fn plan(quick: bool) -> (usize, Duration, Duration) {
    if quick {
        (3, Duration::from_millis(500), Duration::from_secs(2))
    } else {
        (5, Duration::from_secs(1), Duration::from_secs(5))
    }
}

/// The medians over rounds of req/s and p99 (ms).
pub fn medians(stats: &[Stats]) -> (f64, f64) {
    let mut rps: Vec<f64> = stats.iter().map(|s| s.rps).collect();
    let mut p99: Vec<f64> = stats.iter().map(|s| s.p99.as_secs_f64() * 1e3).collect();
    (
        crate::report::median(&mut rps),
        crate::report::median(&mut p99),
    )
}
