//! `serve`: `capbroker serve` against `wasmtime serve` (wasmtime-cli
//! 48.0.8), both with a fresh instance per request of the same `wasi:http`
//! component (components/http-hello), under the same load in the same run.
//! Target: at least 1.5 times wasmtime's requests/s, p99 no worse.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::load::{self, Server};
use crate::report::{spread, Metric, Target};
use crate::Opts;

/// `$WASMTIME`, `target/tools/bin/wasmtime` (where `just bench` installs
/// it), or `wasmtime` on `PATH`.
pub fn wasmtime_binary() -> Option<PathBuf> {
    if let Some(w) = std::env::var_os("WASMTIME") {
        return Some(w.into());
    }
    let local = crate::root().join("target/tools/bin/wasmtime");
    if local.exists() {
        return Some(local);
    }
    let found = Command::new("wasmtime").arg("--version").output().ok()?;
    found.status.success().then(|| "wasmtime".into())
}

fn has_serve(capbroker: &Path) -> bool {
    Command::new(capbroker)
        .args(["serve", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn run(opts: &Opts, guests: &Path) -> Metric {
    let m = Metric::new("serve", "ratio", Target::AtLeast(1.5));
    let capbroker = Path::new(env!("CARGO_BIN_EXE_capbroker"));
    if !has_serve(capbroker) {
        return m.skipped(format!(
            "`{} serve --help` failed: this build of capbroker has no `serve` subcommand",
            capbroker.display()
        ));
    }
    let Some(wasmtime) = wasmtime_binary() else {
        return m.skipped(
            "no wasmtime binary: set WASMTIME, or `cargo install --locked \
             wasmtime-cli@48.0.8 --root target/tools`",
        );
    };
    let version = Command::new(&wasmtime)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let hello = guests.join("http_hello.wasm");
    let start = |program: &Path, args: &[&str]| {
        let port = load::free_port();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg(&hello);
        Server::start(cmd, port)
    };
    let ours = match start(capbroker, &["serve"]) {
        Ok(s) => s,
        Err(e) => return m.skipped(format!("capbroker serve did not start: {e}")),
    };
    // `-S cli`: Rust's std imports wasi:cli, which serve links only on request.
    let theirs = match start(&wasmtime, &["serve", "-S", "cli"]) {
        Ok(s) => s,
        Err(e) => return m.skipped(format!("wasmtime serve did not start: {e}")),
    };
    let (rounds, warmup, window) = load::plan(opts.quick);
    let stats = load::rounds(
        &[(&ours, "hello, bench"), (&theirs, "hello, bench")],
        rounds,
        warmup,
        window,
    );
    let (a, b) = (&stats[0], &stats[1]);
    let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a.rps / b.rps).collect();
    let (a_rps, a_p99) = load::medians(a);
    let (b_rps, b_p99) = load::medians(b);
    let mut detail = format!(
        "GET / from {} keep-alive clients, {rounds} rounds of {window:?} after {warmup:?} \
         of warm-up each, in random order\n",
        load::CLIENTS
    );
    for (label, s) in [("capbroker serve", a), (&*format!("{version} serve"), b)] {
        for (i, r) in s.iter().enumerate() {
            detail += &format!("{label:<24} round {i}: {}\n", r.line());
        }
    }
    detail += &format!(
        "median: capbroker {a_rps:.0} req/s p99 {a_p99:.2} ms; wasmtime {b_rps:.0} req/s \
         p99 {b_p99:.2} ms\nratio of req/s: {}",
        spread(&ratios, 2)
    );
    let errors: usize = a.iter().chain(b).map(|s| s.errors).sum();
    Metric {
        value: Ok(crate::report::median(&mut ratios.clone())),
        also: vec![
            (
                format!("p99 no worse ({a_p99:.2} ms against {b_p99:.2} ms)"),
                a_p99 <= b_p99,
            ),
            (format!("no failed requests ({errors})"), errors == 0),
        ],
        detail,
        ..m
    }
}
