//! capbroker's benchmark suite: every figure a ratio (or amount) against an
//! anchor measured in the same run, printed as a table and as one JSON
//! line per metric (docs/performance.md).
//!
//! ```sh
//! cargo bench --bench suite                        # every metric
//! cargo bench --bench suite -- --quick             # fewer, shorter rounds
//! cargo bench --bench suite -- --only spawn,file-read
//! ```
//!
//! Metrics: `serve`, `start`, `isolate`, `spawn`, `file-read`,
//! `idle-children`, `runaway` and `metering`. Where a metric compares, its anchor and its
//! subject run interleaved, in a new random order each round, and the
//! figure is the median over the rounds; each prints its spread.
//!
//! `PROFILE=spawn` (or `spawn-anchor`, `file-read`, `file-read-wasi`,
//! `file-read-anchor`) runs only that operation `PROFILE_COUNT` times, for
//! a profiler such as `valgrind --tool=callgrind`.

mod file_read;
mod idle;
mod isolate;
mod load;
mod report;
mod runaway;
mod serve;
mod spawn;
mod start;

use std::path::{Path, PathBuf};
use std::process::Command;

use report::Metric;

/// How the suite was asked to run.
pub struct Opts {
    /// Fewer and shorter rounds: the whole suite in under three minutes on
    /// a 2-core machine.
    pub quick: bool,
}

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the guest components (a no-op when they are up to date) and
/// gives the folder they are in.
pub fn guests() -> PathBuf {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet"])
        .current_dir(root().join("components"))
        .status()
        .expect("build the guest components");
    assert!(status.success(), "the guest components did not build");
    root().join("target/guests/wasm32-wasip2/release")
}

const ALL: [&str; 8] = [
    "serve",
    "start",
    "isolate",
    "spawn",
    "file-read",
    "idle-children",
    "runaway",
    "metering",
];

fn main() {
    let mut quick = false;
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => {
                let list = args.next().expect("--only takes a list: spawn,file-read");
                only = Some(list.split(',').map(|s| s.trim().to_string()).collect());
            }
            // `cargo bench` passes `--bench`; a filter or a flag meant for
            // libtest means nothing here.
            _ => {}
        }
    }
    if let Some(only) = &only {
        if let Some(bad) = only.iter().find(|m| !ALL.contains(&m.as_str())) {
            eprintln!("no metric `{bad}`: the metrics are {}", ALL.join(", "));
            std::process::exit(2);
        }
    }
    if let Ok(what) = std::env::var("PROFILE") {
        let n = std::env::var("PROFILE_COUNT").map_or(100_000, |n| n.parse().unwrap());
        if what.starts_with("spawn") {
            spawn::profile(&what, n);
        } else {
            file_read::profile(&what, n);
        }
        return;
    }
    let wanted = |m: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == m));
    let opts = Opts { quick };
    println!(
        "capbroker benchmark suite{}: {} cores, {}",
        if quick { " (quick)" } else { "" },
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| format!("load average {}", l.trim()))
            .unwrap_or_default()
    );
    println!();
    let guests = guests();
    let mut metrics: Vec<Metric> = Vec::new();
    let mut add = |m: Metric| {
        m.print_now();
        metrics.push(m);
    };
    if wanted("serve") {
        add(serve::run(&opts, &guests));
    }
    if wanted("start") {
        add(start::run(&opts, &guests));
    }
    if wanted("isolate") {
        add(isolate::run(&opts, &guests));
    }
    if wanted("spawn") {
        add(spawn::run(&opts, &guests));
    }
    if wanted("file-read") {
        add(file_read::run(&opts));
    }
    if wanted("idle-children") {
        add(idle::run(&opts, &guests));
    }
    if wanted("runaway") || wanted("metering") {
        let (runaway, metering) =
            runaway::run(&opts, &guests, wanted("runaway"), wanted("metering"));
        for m in [runaway, metering].into_iter().flatten() {
            add(m);
        }
    }
    report::print_all(&metrics);
}
