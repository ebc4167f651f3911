//! Leaks and bombs (issue 18): after very many children, ended every way a
//! limit or a parent can end them, the host comes back to where it was; a
//! recursive spawn bomb and a mailbox flood stay inside their budgets.
//!
//! The leak test measures the whole host process (its RSS, open files and
//! threads, from `/proc/self`), so it runs alone, in a process of its own:
//! `ten_thousand_children_leave_the_host_as_it_was` runs this binary again
//! for the ignored test `leak_alone` and nothing else. The bomb and the
//! flood count the live instances of this process: they run one at a time
//! (`SERIAL`).

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capbroker::run::ctx::live_instances;
use support::{dir_at, spawner, Probe, Tree};
use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

const MIB: u64 = 1 << 20;

/// What the host process holds, from `/proc/self`.
#[derive(Debug, Clone, Copy)]
struct Held {
    rss_kib: u64,
    fds: usize,
    threads: usize,
    instances: usize,
}

fn status_field(status: &str, key: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// What the host holds now. Memory the allocator keeps free for later is
/// given back to the kernel first (`malloc_trim`): a leak is memory still
/// allocated, not memory cached by malloc.
fn held() -> Held {
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    Held {
        rss_kib: status_field(&status, "VmRSS:"),
        // Reading the folder opens one more, the same each time.
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
        threads: status_field(&status, "Threads:") as usize,
        instances: live_instances(),
    }
}

/// The names of this process's threads, for a failure message.
fn thread_names() -> String {
    let names = std::fs::read_dir("/proc/self/task").unwrap().map(|t| {
        let comm = t.unwrap().path().join("comm");
        std::fs::read_to_string(comm)
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    names.collect::<Vec<_>>().join(", ")
}

/// What this process's file descriptors point to, for a failure message
/// (the first 20).
fn open_files() -> String {
    let fds = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .take(20)
        .map(|fd| {
            let fd = fd.unwrap().path();
            format!("{}", std::fs::read_link(&fd).unwrap_or(fd).display())
        });
    fds.collect::<Vec<_>>().join(", ")
}

#[test]
fn ten_thousand_children_leave_the_host_as_it_was() {
    support::guests(); // built here, not in the child
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["leak_alone", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .output()
        .expect("run the leak test alone");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The figures, for the log of a passing run too.
    println!("{stdout}");
    if !out.status.success() {
        println!("{stderr}");
    }
    assert!(out.status.success(), "the leak test failed alone");
    assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
    println!("the leak test took {:?}", started.elapsed());
}

/// Children per ending per round; `ROUNDS` rounds of the four endings make
/// the 10,000, after `WARM_UP` rounds.
const BATCH: usize = 125;
const ROUNDS: usize = 20;
const WARM_UP: usize = 2;

/// The tolerances, against the baseline taken after the warm-up (also in
/// docs/processes.md). Open files and threads come back exactly (no more
/// than before): every child is a task on the runtime's own workers and
/// closes what it opened. RSS may differ by malloc's fragmentation and by
/// which pooled slots happen to be resident (each keeps up to 256 KiB of
/// linear memory, 64 KiB of tables and 64 KiB of stack resident by design,
/// and the warm-up reaches as many slots at once as the run): 8 MiB, under
/// 1 KiB a child. Measured: 0.1 to 0.3 MiB.
const RSS_TOLERANCE_KIB: u64 = 8 << 10;
const FD_TOLERANCE: usize = 0;
const THREAD_TOLERANCE: usize = 0;

/// One round: `BATCH` children ending each way, each holding host files
/// (a file or a directory opened from a shared directory) when it ends.
async fn round(p: &mut Probe, i: usize, n: usize) {
    let mib16 = 16 * MIB;
    let cases = [
        (
            format!("spawn sp self budget data K*{n}! open data hello.txt read F;sleep 10000"),
            "killed",
        ),
        (
            format!("spawn sp self budget data M*{n} open data hello.txt read F;alloc 1;alloc 64"),
            "out-of-memory",
        ),
        (
            format!("spawn sp self {mib16},2000000,3000 data C*{n} open-dir data sub read X;loop"),
            "out-of-cpu",
        ),
        (
            format!(
                "spawn sp self {mib16},1000000000,30 data T*{n} open data hello.txt read F;sleep 10000"
            ),
            "timed-out",
        ),
    ];
    for (cmd, ending) in &cases {
        let got = p.step(cmd).await;
        assert_eq!(got, format!("ok:{ending}#{n}"), "round {i}: `{cmd}`");
    }
}

#[ignore = "run alone, in a process of its own, by ten_thousand_children_leave_the_host_as_it_was"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_alone() {
    let tree = Tree::new();
    let mut p = Probe::start(&[
        dir_at("data", &tree.root(), "rw"),
        spawner("sp=max-memory=16MiB,max-fuel=1G,timeout=3s,max-children=200"),
    ])
    .await;
    let started = Instant::now();
    for i in 0..WARM_UP {
        round(&mut p, i, BATCH).await;
    }
    let warm = started.elapsed();
    let before = held();
    let started = Instant::now();
    for i in WARM_UP..WARM_UP + ROUNDS {
        round(&mut p, i, BATCH).await;
    }
    let run = started.elapsed();
    p.expect(&[("running sp", "ok:0"), ("read data hello.txt", "ok:hello")])
        .await;
    let after = held();
    println!(
        "warm-up: {} children in {warm:?}; run: {} children in {run:?}",
        4 * BATCH * WARM_UP,
        4 * BATCH * ROUNDS
    );
    println!("before: {before:?}");
    println!("after:  {after:?}");
    assert_eq!(
        after.instances, before.instances,
        "children's stores outlived them"
    );
    assert!(
        after.fds <= before.fds + FD_TOLERANCE,
        "{} open files before, {} after 10,000 children: {}",
        before.fds,
        after.fds,
        open_files()
    );
    assert!(
        after.threads <= before.threads + THREAD_TOLERANCE,
        "{} threads before, {} after 10,000 children: {}",
        before.threads,
        after.threads,
        thread_names()
    );
    let grown = after.rss_kib.saturating_sub(before.rss_kib);
    assert!(
        grown <= RSS_TOLERANCE_KIB,
        "RSS grew by {grown} KiB over 10,000 children (from {} KiB), more than {RSS_TOLERANCE_KIB} KiB",
        before.rss_kib
    );
}

/// Samples the live instances and the RSS every millisecond until `stop`;
/// the most of each seen.
fn sample_peaks(stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, u64)> {
    tokio::spawn(async move {
        let (mut instances, mut rss_kib) = (0, 0);
        while !stop.load(Ordering::Acquire) {
            instances = instances.max(live_instances());
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            rss_kib = rss_kib.max(status_field(&status, "VmRSS:"));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (instances, rss_kib)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursive_spawn_bomb_stays_inside_its_budget() {
    let _s = serial().await;
    const MAX_CHILDREN: usize = 48;
    let mut p = Probe::start(&[spawner(&format!(
        "sp=max-memory=8MiB,max-fuel=1G,timeout=10s,max-children={MAX_CHILDREN}"
    ))])
    .await;
    let base = held();
    let stop = Arc::new(AtomicBool::new(false));
    let peaks = sample_peaks(stop.clone());
    let started = Instant::now();
    // Every child spawns four of itself, sharing the spawner, and waits.
    p.expect(&[("spawn sp self budget sp B bomb sp", "ok")])
        .await;
    let got = p.step("wait B").await;
    let took = started.elapsed();
    stop.store(true, Ordering::Release);
    let (peak, peak_rss_kib) = peaks.await.unwrap();
    let grown_mib = peak_rss_kib.saturating_sub(base.rss_kib) / 1024;
    println!(
        "bomb: {got} in {took:?}; at most {peak} instances and {grown_mib} MiB more, from {base:?}"
    );
    // The first child's own spawns may be refused: its first children
    // start at once and take the budget first.
    assert!(got.starts_with("ok:finished:ok:spawned="), "{got}");
    assert!(
        peak <= base.instances + MAX_CHILDREN,
        "{peak} instances alive at once, from {} and {MAX_CHILDREN} children",
        base.instances
    );
    assert!(
        peak > base.instances + MAX_CHILDREN / 2,
        "the bomb never came near its budget: {peak} instances"
    );
    // What a child makes the host hold is bounded by its memory limit, so
    // the bomb's by 48 of them.
    assert!(
        grown_mib <= MAX_CHILDREN as u64 * 8,
        "a bomb of {MAX_CHILDREN} children of 8 MiB made the host hold {grown_mib} MiB more"
    );
    assert!(took < Duration::from_secs(60), "the bomb took {took:?}");
    p.expect(&[("running sp", "ok:0")]).await;
    assert_eq!(live_instances(), base.instances, "the bomb left stores");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_flood_stays_inside_its_budget() {
    let _s = serial().await;
    const CHILDREN: usize = 16;
    const MEMORY_MIB: u64 = 8;
    let mut p = Probe::start(&[spawner(&format!(
        "sp=max-memory={MEMORY_MIB}MiB,max-fuel=10G,timeout=300ms,max-children={CHILDREN}"
    ))])
    .await;
    let base = held();
    // Each child sends 64 messages of 1 MiB its parent does not read, and
    // waits once its memory holds its own and what is queued; one sends
    // 100,000 empty ones, and waits at the mailbox's depth.
    for i in 0..CHILDREN - 1 {
        p.expect(&[(&format!("spawn sp self budget - F{i} sendbig 1 64"), "ok")])
            .await;
    }
    p.expect(&[("spawn sp self budget - E sendbig 0 100000", "ok")])
        .await;
    for i in 0..CHILDREN - 1 {
        p.expect(&[(&format!("wait F{i}"), "ok:timed-out")]).await;
    }
    p.expect(&[
        ("wait E", "ok:timed-out"),
        // Ended children with messages unread keep their places.
        ("running sp", &format!("ok:{CHILDREN}")),
        ("spawn sp self budget - X memory", "err:limit-exceeded"),
    ])
    .await;
    let flooded = held();
    let grown_mib = flooded.rss_kib.saturating_sub(base.rss_kib) / 1024;
    println!("flood: {grown_mib} MiB held from {base:?}");
    assert!(
        grown_mib <= CHILDREN as u64 * MEMORY_MIB,
        "{CHILDREN} children of {MEMORY_MIB} MiB made the host hold {grown_mib} MiB"
    );
    let mut total = 0;
    for i in 0..CHILDREN - 1 {
        let got = p.step(&format!("precv-all F{i}")).await;
        let bytes: u64 = got.rsplit_once("bytes=").unwrap().1.parse().unwrap();
        assert!(bytes <= MEMORY_MIB * MIB, "F{i}: {got}");
        total += bytes;
    }
    assert!(
        total >= 2 * MIB * (CHILDREN as u64 - 1),
        "the flood queued only {total} bytes"
    );
    p.expect(&[
        ("precv-all E", "ok:count=64,bytes=0"),
        ("running sp", "ok:0"),
    ])
    .await;
    let after = held();
    assert_eq!(after.instances, base.instances);
    let left_mib = after.rss_kib.saturating_sub(base.rss_kib) / 1024;
    assert!(left_mib <= 16, "the flood left {left_mib} MiB behind");
}
