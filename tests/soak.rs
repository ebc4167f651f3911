//! The soak: the web-server example under a steady load of well-formed
//! requests with abusive ones mixed in, for `CAPBROKER_SOAK_SECS` (default
//! 120; `90`, `90s`, `10m` and `1h` are all accepted; `just soak 1h`).
//!
//! The load is fixed and well below the server's capacity (docs/soak.md):
//! - 4 clients, each sending a well-formed request every 25 ms (160/s in
//!   all): `GET /`, `GET /sandbox`, `GET /nope`, an upload inside the folder
//!   (whose file must then hold exactly the bytes sent) and a second upload
//!   of the same name (refused: the folder is create-only). Each must get
//!   exactly its normal answer.
//! - 2 abusive clients, one request every 100 ms each: `/spin`, `/hog`,
//!   `/sleep` (503 and the reason), an oversized head, an oversized
//!   `Content-Length` with and without the body (400 or a cut connection),
//!   malformed requests (a garbage request line, binary bytes, an empty
//!   head, a bad `Content-Length`, a request cut short, a connection closed
//!   at once), and uploads outside the folder (`..`, an absolute name, a
//!   detour through a subfolder: 403, and nothing written anywhere).
//! - slow clients, a new one every second, at most 6 at a time: one
//!   trickles a whole `GET /` a byte at a time over 3 s (and must get its
//!   normal answer), one sends nothing, one stops halfway through its head
//!   (the server must close those two within 30 s).
//!
//! Every 5 s the server's RSS and fd count, the requests done and the errors
//! are printed and written to `target/soak/curve.csv`. After a 15 s warm-up
//! the soak fails if RSS grows more than 64 MiB or the fds by more than 32
//! over the first post-warm-up sample; at the end, once its clients are
//! gone, the server must be back to the fds it held before the load. It also
//! fails on any wrong answer, to a well-formed request or an abusive one.
//! The server's stderr goes to `target/soak/server.log`.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::web::Server;

const GREETING: &str = "hello, soak";
const GOOD_CLIENTS: usize = 4;
const GOOD_EVERY: Duration = Duration::from_millis(25);
const ABUSIVE_CLIENTS: usize = 2;
const ABUSIVE_EVERY: Duration = Duration::from_millis(100);
const SLOW_EVERY: Duration = Duration::from_secs(1);
const MAX_SLOW: usize = 6;
const WARMUP: Duration = Duration::from_secs(15);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const RSS_BOUND_MIB: u64 = 64;
const FD_BOUND: usize = 32;
/// How long any answer may take (a `/sleep` takes 1 s, a silent client 10 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// The soak's length from `CAPBROKER_SOAK_SECS`: seconds, or with a unit.
fn duration() -> Duration {
    let Ok(v) = std::env::var("CAPBROKER_SOAK_SECS") else {
        return Duration::from_secs(120);
    };
    let v = v.trim();
    let (num, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = num
        .parse()
        .unwrap_or_else(|_| panic!("CAPBROKER_SOAK_SECS=`{v}`: seconds, or 10m, 1h"));
    let scale = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        other => panic!("CAPBROKER_SOAK_SECS=`{v}`: unknown unit `{other}`"),
    };
    Duration::from_secs(n * scale)
}

#[derive(Default)]
struct Stats {
    good: AtomicU64,
    abusive: AtomicU64,
    slow: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    slow_open: AtomicUsize,
}

struct Soak {
    port: u16,
    uploads: std::path::PathBuf,
    scratch: std::path::PathBuf,
    start: Instant,
    stop: AtomicBool,
    stats: Stats,
}

impl Soak {
    fn error(&self, what: String) {
        let n = self.stats.errors.fetch_add(1, Relaxed);
        let line = format!("[{:.1}s] {what}", self.start.elapsed().as_secs_f64());
        if n < 5 {
            eprintln!("soak error: {line}");
        }
        let mut first = self.stats.first_errors.lock().unwrap();
        if first.len() < 50 {
            first.push(line);
        }
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(ANSWER_WITHIN))?;
        s.set_write_timeout(Some(ANSWER_WITHIN))?;
        Ok(s)
    }

    /// Sends `raw` on a fresh connection and reads until the server closes.
    fn exchange(&self, raw: &[u8]) -> Reply {
        let mut s = match self.connect() {
            Ok(s) => s,
            Err(e) => return Reply::Cut(format!("connect: {e}")),
        };
        if let Err(e) = s.write_all(raw) {
            return read_reply(&mut s).or_cut(format!("write: {e}"));
        }
        read_reply(&mut s)
    }
}

/// What the server did with a request.
#[derive(Debug)]
enum Reply {
    /// A response: the status code and the body.
    Answer(u16, String),
    /// The connection ended without one (reset, closed, timed out).
    Cut(String),
}

impl Reply {
    fn or_cut(self, why: String) -> Reply {
        match self {
            Reply::Answer(..) => self,
            Reply::Cut(e) => Reply::Cut(format!("{why}; {e}")),
        }
    }
}

fn read_reply(s: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    if let Err(e) = s.read_to_end(&mut buf) {
        if buf.is_empty() {
            use std::io::ErrorKind::{TimedOut, WouldBlock};
            let timed_out = matches!(e.kind(), TimedOut | WouldBlock);
            return Reply::Cut(if timed_out {
                format!("read: timed out after {ANSWER_WITHIN:?}")
            } else {
                format!("read: {e}")
            });
        }
    }
    if buf.is_empty() {
        return Reply::Cut("closed with no answer".into());
    }
    let text = String::from_utf8_lossy(&buf);
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Reply::Answer(0, format!("no head end in {text:?}"));
    };
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse::<usize>().ok());
    if !text.starts_with("HTTP/1.1 ") || length != Some(body.len()) {
        return Reply::Answer(0, format!("malformed response {text:?}"));
    }
    Reply::Answer(code, body.to_string())
}

fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: soak\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// A little xorshift generator, so that runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Paces a client at one request every `every`, without bursts to catch up.
fn pace(soak: &Soak, next: &mut Instant, every: Duration) -> bool {
    *next += every;
    let now = Instant::now();
    if *next > now {
        std::thread::sleep(*next - now);
    } else {
        *next = now;
    }
    !soak.stop.load(Relaxed)
}

/// A client of well-formed requests only; each must get its normal answer.
fn good_client(soak: &Soak, id: usize) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (id as u64 + 1));
    let mut next = Instant::now();
    let mut n = 0u64;
    while pace(soak, &mut next, GOOD_EVERY) {
        n += 1;
        let check = |what: &str, raw: &[u8], want: (u16, &str)| {
            let reply = soak.exchange(raw);
            soak.stats.good.fetch_add(1, Relaxed);
            match &reply {
                Reply::Answer(code, body) if (*code, body.as_str()) == want => true,
                _ => {
                    soak.error(format!("{what}: wanted {want:?}, got {reply:?}"));
                    false
                }
            }
        };
        match n % 10 {
            0..=4 => {
                check("GET /", &request("GET", "/", b""), (200, GREETING));
            }
            5 => {
                check(
                    "GET /sandbox",
                    &request("GET", "/sandbox", b""),
                    (200, "fs=refused file=refused net=refused env=0 handles=0"),
                );
            }
            6 => {
                check(
                    "GET /nope",
                    &request("GET", "/nope", b""),
                    (404, "no such route"),
                );
            }
            7 | 8 => {
                // Up to 64 KiB, now and then up to the server's 1 MiB limit.
                let len = if n % 100 == 7 {
                    (rng.next() % (1 << 20)) as usize
                } else {
                    (rng.next() % (64 << 10)) as usize
                };
                let bytes = rng.bytes(len);
                let name = format!("c{id}-{n}.bin");
                let stored = check(
                    "upload",
                    &request("POST", &format!("/upload/{name}"), &bytes),
                    (201, &format!("stored {name} ({len} bytes)")),
                );
                let file = soak.uploads.join(&name);
                let holds = |after: &str| {
                    let held = std::fs::read(&file).ok();
                    let intact = held.as_deref() == Some(&bytes[..]);
                    if !intact {
                        soak.error(format!(
                            "upload {name}{after}: the file holds {}, not the {len} bytes sent",
                            held.map_or("nothing".into(), |h| format!("{} other bytes", h.len()))
                        ));
                    }
                    intact
                };
                if stored && holds("") && n % 10 == 8 {
                    // Create-only: the same name again is refused, the file kept.
                    check(
                        "second upload",
                        &request("PUT", &format!("/upload/{name}"), b"again"),
                        (403, "denied: the handle lacks write"),
                    );
                    holds(", after a second upload");
                }
                // Keep the disk flat over an hour.
                let _ = std::fs::remove_file(&file);
            }
            _ => {
                check(
                    "GET / (HTTP/1.0, headers)",
                    b"GET / HTTP/1.0\r\nUser-Agent: soak\r\nAccept: */*\r\nX-Pad: \
                      0123456789abcdef\r\n\r\n",
                    (200, GREETING),
                );
            }
        }
    }
}

/// What an abusive request may get.
enum Want {
    /// This status, with a body containing this.
    Answer(u16, &'static str),
    /// This answer, or the connection cut (a refusal before the whole
    /// request was read may reach the client as a reset).
    AnswerOrCut(u16, &'static str),
    /// Nothing in particular (the client leaves at once).
    Anything,
}

fn abusive_client(soak: &Soak, id: usize) {
    let mut rng = Rng(0xdead_beef ^ (id as u64 + 1) << 32);
    let mut next = Instant::now();
    let mut n = id as u64 * 7;
    let outside = soak.scratch.join("outside");
    while pace(soak, &mut next, ABUSIVE_EVERY) {
        n += 1;
        let (what, raw, want): (&str, Vec<u8>, Want) = match n % 16 {
            0 => (
                "/spin",
                request("GET", "/spin", b""),
                Want::Answer(503, "CPU"),
            ),
            1 => (
                "/hog",
                request("GET", "/hog", b""),
                Want::Answer(503, "memory"),
            ),
            2 => (
                "/sleep",
                request("GET", "/sleep", b""),
                Want::Answer(503, "time"),
            ),
            3 => {
                let mut raw = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
                raw.extend(std::iter::repeat_n(b'a', 20 << 10));
                (
                    "oversized head",
                    raw,
                    Want::AnswerOrCut(400, "request head too large"),
                )
            }
            4 => (
                "oversized Content-Length",
                b"POST /upload/big HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n".to_vec(),
                Want::AnswerOrCut(400, "body too large"),
            ),
            5 => (
                "oversized body",
                request("POST", "/upload/big", &rng.bytes(1_500_000)),
                Want::AnswerOrCut(400, "body too large"),
            ),
            6 => (
                "garbage request line",
                b"GARBAGE\r\n\r\n".to_vec(),
                Want::Answer(404, "no such route"),
            ),
            7 => {
                let mut raw = rng.bytes(200);
                raw.retain(|b| *b != b'\r');
                raw.extend_from_slice(b"\r\n\r\n");
                ("binary head", raw, Want::Answer(404, "no such route"))
            }
            8 => (
                "empty head",
                b"\r\n\r\n".to_vec(),
                Want::Answer(404, "no such route"),
            ),
            9 => (
                "bad Content-Length",
                b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n".to_vec(),
                Want::Answer(400, "bad content-length"),
            ),
            10 => (
                "negative Content-Length",
                b"POST /upload/neg HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(),
                Want::Answer(400, "bad content-length"),
            ),
            11 => {
                // Half a head, then the client stops writing.
                let reply = match soak.connect() {
                    Ok(mut s) => {
                        let _ = s.write_all(b"GET / HT");
                        let _ = s.shutdown(Shutdown::Write);
                        read_reply(&mut s)
                    }
                    Err(e) => Reply::Cut(format!("connect: {e}")),
                };
                soak.stats.abusive.fetch_add(1, Relaxed);
                judge(
                    soak,
                    "cut-short head",
                    &reply,
                    &Want::AnswerOrCut(400, "closed mid-request"),
                );
                continue;
            }
            12 => ("connect and leave", Vec::new(), Want::Anything),
            13 => (
                "upload to ..",
                request("POST", "/upload/../escaped.txt", b"x"),
                Want::Answer(403, "escape"),
            ),
            14 => (
                "upload to an absolute name",
                request(
                    "POST",
                    &format!("/upload/{}/abs.txt", outside.display()),
                    b"x",
                ),
                Want::Answer(403, ""),
            ),
            _ => (
                "upload through a subfolder to ..",
                request("POST", "/upload/sub/../../escaped2.txt", b"x"),
                Want::Answer(403, ""),
            ),
        };
        soak.stats.abusive.fetch_add(1, Relaxed);
        if raw.is_empty() {
            drop(soak.connect());
            continue;
        }
        let reply = soak.exchange(&raw);
        judge(soak, what, &reply, &want);
    }
}

fn judge(soak: &Soak, what: &str, reply: &Reply, want: &Want) {
    let ok = match (want, reply) {
        (Want::Anything, _) => true,
        (Want::Answer(c, s) | Want::AnswerOrCut(c, s), Reply::Answer(code, body)) => {
            code == c && body.contains(s)
        }
        (Want::AnswerOrCut(..), Reply::Cut(why)) => !why.contains("timed out"),
        (Want::Answer(..), Reply::Cut(_)) => false,
    };
    if !ok {
        let want = match want {
            Want::Answer(c, s) => format!("{c} with `{s}`"),
            Want::AnswerOrCut(c, s) => format!("{c} with `{s}`, or a cut"),
            Want::Anything => unreachable!(),
        };
        soak.error(format!("{what}: wanted {want}, got {reply:?}"));
    }
}

/// Opens slow connections: one trickling a whole request (which must get
/// its normal answer), one silent, one stopping halfway through its head
/// (both must be closed by the server within [`ANSWER_WITHIN`]).
fn slow_clients(soak: &Arc<Soak>) {
    let mut next = Instant::now();
    let mut n = 0u64;
    let mut threads = Vec::new();
    while pace(soak, &mut next, SLOW_EVERY) {
        threads.retain(|t: &std::thread::JoinHandle<()>| !t.is_finished());
        if soak.stats.slow_open.load(Relaxed) >= MAX_SLOW {
            continue;
        }
        n += 1;
        soak.stats.slow_open.fetch_add(1, Relaxed);
        let soak = soak.clone();
        threads.push(std::thread::spawn(move || {
            slow_client(&soak, n % 3);
            soak.stats.slow.fetch_add(1, Relaxed);
            soak.stats.slow_open.fetch_sub(1, Relaxed);
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
}

fn slow_client(soak: &Soak, kind: u64) {
    let mut s = match soak.connect() {
        Ok(s) => s,
        Err(e) => return soak.error(format!("slow client: connect: {e}")),
    };
    let began = Instant::now();
    match kind {
        0 => {
            let raw = b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n";
            for b in raw {
                if s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(3000 / raw.len() as u64));
            }
            match read_reply(&mut s) {
                Reply::Answer(200, body) if body == GREETING => {}
                reply => soak.error(format!(
                    "trickled GET /: wanted (200, {GREETING:?}), got {reply:?}"
                )),
            }
        }
        _ => {
            if kind == 2 {
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: so");
            }
            let reply = read_reply(&mut s);
            let held = began.elapsed();
            let ok = match &reply {
                Reply::Answer(code, _) => (400..600).contains(code),
                Reply::Cut(why) => !why.contains("timed out"),
            };
            if !ok || held >= ANSWER_WITHIN {
                soak.error(format!(
                    "slow client ({}): held {held:?}, got {reply:?}",
                    if kind == 1 { "silent" } else { "half a head" }
                ));
            }
        }
    }
}

#[test]
fn soak() {
    let length = duration();
    let out = support::root().join("target/soak");
    std::fs::create_dir_all(&out).unwrap();
    let log = std::fs::File::create(out.join("server.log")).unwrap();
    let mut server = Server::start_with(GREETING, log.into());
    std::fs::create_dir_all(server.tree.path("uploads/sub")).unwrap();

    // A few requests of each kind before the load, then the fds at rest.
    for path in ["/", "/sandbox", "/nope"] {
        assert_eq!(
            server.request("GET", path, b"").0,
            if path == "/nope" { 404 } else { 200 }
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle_fds = server.fds();

    let soak = Arc::new(Soak {
        port: server.port,
        uploads: server.tree.path("uploads"),
        scratch: server.tree.tmp.path().to_path_buf(),
        start: Instant::now(),
        stop: AtomicBool::new(false),
        stats: Stats::default(),
    });
    let mut threads = Vec::new();
    for id in 0..GOOD_CLIENTS {
        let soak = soak.clone();
        threads.push(std::thread::spawn(move || good_client(&soak, id)));
    }
    for id in 0..ABUSIVE_CLIENTS {
        let soak = soak.clone();
        threads.push(std::thread::spawn(move || abusive_client(&soak, id)));
    }
    {
        let soak = soak.clone();
        threads.push(std::thread::spawn(move || slow_clients(&soak)));
    }

    println!(
        "soak: {}s; {GOOD_CLIENTS} clients of well-formed requests at one per {GOOD_EVERY:?} \
         each, {ABUSIVE_CLIENTS} abusive at one per {ABUSIVE_EVERY:?}, a slow client per \
         {SLOW_EVERY:?} (at most {MAX_SLOW}); bounds after {WARMUP:?}: RSS +{RSS_BOUND_MIB} MiB, \
         fds +{FD_BOUND}; idle fds {idle_fds}",
        length.as_secs()
    );
    let mut csv = String::from("secs,rss_kib,fds,good,abusive,slow,errors\n");
    println!(
        "{:>6} {:>9} {:>5} {:>8} {:>8} {:>6} {:>6}",
        "t(s)", "RSS(MiB)", "fds", "good", "abusive", "slow", "errors"
    );
    let mut baseline: Option<(u64, usize)> = None;
    let mut peak = (0u64, 0usize);
    let mut next = soak.start;
    loop {
        next += SAMPLE_EVERY;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        if let Ok(Some(status)) = server.child.try_wait() {
            soak.error(format!("the server exited: {status}"));
            break;
        }
        let t = soak.start.elapsed();
        let (rss, fds) = (server.rss_kib(), server.fds());
        let s = &soak.stats;
        let row = [
            s.good.load(Relaxed),
            s.abusive.load(Relaxed),
            s.slow.load(Relaxed),
            s.errors.load(Relaxed),
        ];
        println!(
            "{:>6.0} {:>9.1} {:>5} {:>8} {:>8} {:>6} {:>6}",
            t.as_secs_f64(),
            rss as f64 / 1024.0,
            fds,
            row[0],
            row[1],
            row[2],
            row[3]
        );
        csv += &format!(
            "{:.1},{rss},{fds},{},{},{},{}\n",
            t.as_secs_f64(),
            row[0],
            row[1],
            row[2],
            row[3]
        );
        std::fs::write(out.join("curve.csv"), &csv).unwrap();
        peak = (peak.0.max(rss), peak.1.max(fds));
        match baseline {
            None if t >= WARMUP => baseline = Some((rss, fds)),
            None => {}
            Some((rss0, fds0)) => {
                if rss > rss0 + (RSS_BOUND_MIB << 10) {
                    soak.error(format!(
                        "RSS grew from {} MiB to {} MiB (bound: +{RSS_BOUND_MIB} MiB)",
                        rss0 >> 10,
                        rss >> 10
                    ));
                }
                if fds > fds0 + FD_BOUND {
                    soak.error(format!(
                        "fds grew from {fds0} to {fds} (bound: +{FD_BOUND})"
                    ));
                }
            }
        }
        if t >= length || s.errors.load(Relaxed) > 0 {
            break;
        }
    }
    soak.stop.store(true, Relaxed);
    let secs = soak.start.elapsed().as_secs_f64();
    for t in threads {
        t.join().unwrap();
    }

    // At rest again: the server holds what it held before the load, still
    // answers, and nothing was written outside the uploads folder.
    let deadline = Instant::now() + ANSWER_WITHIN;
    while server.fds() > idle_fds && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let rest_fds = server.fds();
    if rest_fds > idle_fds {
        soak.error(format!(
            "at rest the server holds {rest_fds} fds, {idle_fds} before the load"
        ));
    }
    match soak.exchange(&request("GET", "/", b"")) {
        Reply::Answer(200, body) if body == GREETING => {}
        reply => soak.error(format!("GET / after the soak: {reply:?}")),
    }
    let mut outside: Vec<_> = std::fs::read_dir(server.tree.outside())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside.sort();
    let mut top: Vec<_> = std::fs::read_dir(server.tree.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    let mut uploads: Vec<_> = std::fs::read_dir(server.tree.path("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    uploads.sort();
    if outside != ["secret"] || top != ["conf", "outside", "root", "uploads"] || uploads != ["sub"]
    {
        soak.error(format!(
            "files written where they should not be: outside {outside:?}, top {top:?}, \
             uploads {uploads:?}"
        ));
    }

    let s = &soak.stats;
    let done = s.good.load(Relaxed) + s.abusive.load(Relaxed) + s.slow.load(Relaxed);
    println!(
        "soak: {done} requests in {secs:.0}s ({:.0}/s: {} well-formed, {} abusive, {} slow), \
         peak RSS {:.1} MiB, peak fds {}, {rest_fds} fds at rest ({idle_fds} before), \
         {} errors; curve in {}",
        done as f64 / secs,
        s.good.load(Relaxed),
        s.abusive.load(Relaxed),
        s.slow.load(Relaxed),
        peak.0 as f64 / 1024.0,
        peak.1,
        s.errors.load(Relaxed),
        out.join("curve.csv").display()
    );
    let errors = s.first_errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "the soak failed ({} errors; the first {}):\n{}",
        s.errors.load(Relaxed),
        errors.len(),
        errors.join("\n")
    );
}

/// Not part of the soak: the server's capacity in this build, as the soak
/// runs it (16 clients, a new connection per `GET /`, as fast as they can,
/// 5 s after a 1 s warm-up). `cargo test -p capbroker --test soak capacity
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn capacity() {
    let server = Server::start_with(GREETING, std::process::Stdio::null());
    let port = server.port;
    let run = |secs: u64| {
        let until = Instant::now() + Duration::from_secs(secs);
        let threads: Vec<_> = (0..16)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < until {
                        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                        s.write_all(&request("GET", "/", b"")).unwrap();
                        let mut buf = Vec::new();
                        s.read_to_end(&mut buf).unwrap();
                        assert!(buf.starts_with(b"HTTP/1.1 200"));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum::<u64>()
    };
    run(1);
    let n = run(5);
    println!("capacity: {} requests/s (GET /, 16 clients)", n / 5);
}
