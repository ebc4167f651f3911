//! `start`: how long a short program takes from exec to exit.
//! `capbroker run` of components/echo (a 96 KB plain Rust program) with its
//! compiled code in capbroker's cache, against `wasmtime run` (wasmtime-cli
//! 48.0.8) of the same component with wasmtime's cache warm. Target: at
//! most 1.2 times wasmtime's wall time (medians). Also reported: the first
//! run of each, with an empty cache (compiling), and `capbroker run` of
//! the component's `capbroker compile` artifact.
//!
//! Each cache is a folder of this run's own, so that neither the user's
//! caches nor an earlier run decide what is warm.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::report::{quantile, Metric, Target};
use crate::serve::wasmtime_binary;
use crate::Opts;

/// Runs `cmd` to its end, its output checked; how long that took.
fn timed(cmd: &mut Command) -> Result<Duration, String> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let took = t.elapsed();
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("hello there") {
        return Err(format!(
            "{cmd:?}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(took)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    quantile(&v, 0.5)
}

pub fn run(opts: &Opts, guests: &Path) -> Metric {
    let m = Metric::new("start", "ratio", Target::AtMost(1.2));
    let Some(wasmtime) = wasmtime_binary() else {
        return m.skipped(
            "no wasmtime binary: set WASMTIME, or `cargo install --locked \
             wasmtime-cli@48.0.8 --root target/tools`",
        );
    };
    match measure(opts, guests, &wasmtime) {
        Ok((ratio, detail)) => Metric {
            value: Ok(ratio),
            detail,
            ..m
        },
        Err(e) => m.skipped(e),
    }
}

fn measure(opts: &Opts, guests: &Path, wasmtime: &Path) -> Result<(f64, String), String> {
    let capbroker = Path::new(env!("CARGO_BIN_EXE_capbroker"));
    let echo = guests.join("echo.wasm");
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (runs, firsts) = if opts.quick { (10, 2) } else { (40, 5) };
    let ours = |cache: &Path, component: &Path| {
        let mut c = Command::new(capbroker);
        c.arg("run")
            .arg(component)
            .args(["hello", "there"])
            .env("CAPBROKER_CACHE_DIR", cache);
        c
    };
    let theirs = |cache: &Path| -> Result<Command, String> {
        let config = cache.with_extension("toml");
        std::fs::write(
            &config,
            format!("[cache]\ndirectory = \"{}\"\n", cache.display()),
        )
        .map_err(|e| e.to_string())?;
        let mut c = Command::new(wasmtime);
        c.arg("run")
            .arg("-C")
            .arg(format!("cache-config={}", config.display()))
            .arg(&echo)
            .args(["hello", "there"]);
        Ok(c)
    };
    // First runs: each with an empty cache of its own.
    let (mut first_ours, mut first_theirs) = (Vec::new(), Vec::new());
    for i in 0..firsts {
        let a = scratch.path().join(format!("first-ours-{i}"));
        first_ours.push(timed(&mut ours(&a, &echo))?);
        let b = scratch.path().join(format!("first-theirs-{i}"));
        first_theirs.push(timed(&mut theirs(&b)?)?);
    }
    // Warm: one cache each, filled by a first run; then interleaved runs.
    let (warm_ours, warm_theirs) = (scratch.path().join("ours"), scratch.path().join("theirs"));
    timed(&mut ours(&warm_ours, &echo))?;
    timed(&mut theirs(&warm_theirs)?)?;
    let artifact = scratch.path().join("echo.cwasm");
    let made = Command::new(capbroker)
        .arg("compile")
        .arg(&echo)
        .arg("-o")
        .arg(&artifact)
        .output()
        .map_err(|e| e.to_string())?;
    if !made.status.success() {
        return Err(format!(
            "capbroker compile: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    let (mut cached, mut warm, mut aot) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        cached.push(timed(&mut ours(&warm_ours, &echo))?);
        warm.push(timed(&mut theirs(&warm_theirs)?)?);
        aot.push(timed(&mut ours(&warm_ours, &artifact))?);
    }
    let (cached, warm, aot) = (median(cached), median(warm), median(aot));
    let (first_ours, first_theirs) = (median(first_ours), median(first_theirs));
    let ratio = cached.as_secs_f64() / warm.as_secs_f64();
    let detail = format!(
        "medians of {runs} runs, ms: capbroker run cached {:.1}, wasmtime run warm cache \
         {:.1}, capbroker run of the artifact {:.1}; first runs (empty cache, {firsts} \
         each): capbroker {:.1}, wasmtime {:.1} (ratio {:.2})",
        ms(cached),
        ms(warm),
        ms(aot),
        ms(first_ours),
        ms(first_theirs),
        first_ours.as_secs_f64() / first_theirs.as_secs_f64(),
    );
    Ok((ratio, detail))
}
