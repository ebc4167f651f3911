//! The instance pool follows the operator's budgets: a spawner granted
//! `max-children=N` can have N children alive at once, each waiting on its
//! mailbox, beyond the 1,000 instances of the default pool; the next spawn
//! is refused with `limit-exceeded`; and what 10,000 idle children cost the
//! host stays under 1 GiB. Budgets the pool cannot hold stop a run before
//! anything starts, saying so.
//!
//! The idle test measures the whole host process (its RSS, from
//! `/proc/self`), so it runs alone, in a process of its own, as
//! `tests/leak.rs` does.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capbroker::grants::Grant;
use capbroker::run::ctx::live_instances;
use capbroker::{Components, Limits, Pool, Runtime};
use support::{guest, spawner, Probe};

/// Idle children alive at once: ten times what the default pool holds.
const IDLE: usize = 10_000;

/// What they may cost the host together, over what it held before.
const MAX_RSS_KIB: u64 = 1 << 20;

#[test]
fn ten_thousand_idle_children_fit_in_a_pool_sized_from_their_budget() {
    support::guests(); // built here, not in the child
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["idle_alone", "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .output()
        .expect("run the idle test alone");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.status.success() {
        println!("{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(out.status.success(), "the idle test failed alone");
    assert!(stdout.contains("test result: ok. 1 passed"), "{stdout}");
}

fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The host's RSS, after malloc gave back what it keeps free.
fn rss_kib() -> u64 {
    unsafe { libc::malloc_trim(0) };
    status_kib("VmRSS:")
}

/// The kernel memory maps the host holds (Linux allows 65,530 by default).
fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[ignore = "run alone, in a process of its own, by ten_thousand_idle_children_fit_in_a_pool_sized_from_their_budget"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_alone() {
    let grants = [spawner(&format!(
        "sp=max-memory=1MiB,max-fuel=1G,timeout=120s,max-children={IDLE},components=tiny"
    ))];
    let limits = Limits {
        max_handles: IDLE + 64,
        ..Limits::default()
    };
    let budgets = grants.iter().filter_map(|g| match &g.grant {
        Grant::Spawner(s) => Some(s),
        _ => None,
    });
    let pool = Pool::for_budgets(limits.max_memory as u64, budgets).unwrap();
    assert_eq!(pool.instances as usize, IDLE + 1, "{pool:?}");
    let rt = Runtime::with_pool(&pool).unwrap();
    let probe = rt.load(&guest("probe")).unwrap();
    let mut components = Components::new();
    components
        .insert("tiny", rt.load_child(&guest("tiny")).unwrap())
        .unwrap();
    let mut p = Probe::start_app(&probe, &grants, &limits, Arc::new(components)).await;

    // One child first, so that what every child shares (the module's code
    // and memory image) is not counted against the idle ones.
    p.expect(&[("spawn sp tiny budget - W wait", "ok"), ("pdrop W", "ok")])
        .await;
    settle(&mut p, 0).await;
    let base_instances = live_instances();
    let (rss_before, maps_before) = (rss_kib(), maps());

    let started = Instant::now();
    for i in 0..IDLE {
        let got = p.step(&format!("spawn sp tiny budget - I{i} wait")).await;
        assert_eq!(got, "ok", "child {i}");
    }
    let took = started.elapsed();
    p.expect(&[("running sp", &format!("ok:{IDLE}"))]).await;
    assert_eq!(live_instances(), base_instances + IDLE);
    for i in (0..IDLE).step_by(IDLE / 10) {
        p.expect(&[(&format!("try-wait I{i}"), "ok:running")]).await;
    }
    // One more than the budget: refused by the spawner, not by the pool.
    let refused = p.step("spawn sp tiny budget - X wait").await;
    assert!(
        refused.starts_with("err:limit-exceeded:max-children"),
        "{refused}"
    );
    let (rss_after, maps_after) = (rss_kib(), maps());
    let grown = rss_after.saturating_sub(rss_before);
    println!(
        "{IDLE} idle children spawned in {took:?}: host RSS {rss_before} KiB -> {rss_after} KiB \
         (+{grown} KiB, {} bytes a child); memory maps {maps_before} -> {maps_after}; {pool:?}, {:?}",
        grown * 1024 / IDLE as u64,
        pool.plan().unwrap(),
    );
    assert!(
        rss_after <= MAX_RSS_KIB,
        "{IDLE} idle children: the host holds {rss_after} KiB, more than {MAX_RSS_KIB} KiB"
    );

    for i in 0..IDLE {
        p.expect(&[(&format!("pdrop I{i}"), "ok")]).await;
    }
    settle(&mut p, 0).await;
    assert_eq!(
        live_instances(),
        base_instances,
        "children's stores outlived them"
    );
    // The places are back: as many again fit.
    p.expect(&[("spawn sp tiny budget - A wait", "ok"), ("pdrop A", "ok")])
        .await;
}

/// Waits until `running sp` says `n`.
async fn settle(p: &mut Probe, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if p.step("running sp").await == format!("ok:{n}") {
            return;
        }
        assert!(Instant::now() < deadline, "children did not end");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Budgets the pool cannot hold stop the run before any guest runs, with
/// the reason and what to change; the broker does not panic.
#[test]
fn budgets_beyond_the_pool_are_refused_at_the_start() {
    let probe = guest("probe");
    let out = support::capbroker(&[
        "run",
        "--spawn",
        "a=max-memory=1MiB,max-children=15000",
        "--spawn",
        "b=max-memory=1MiB,max-children=15000",
        probe.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("30001 instances"), "{stderr}");
    assert!(stderr.contains("lower max-children"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = support::capbroker(&[
        "run",
        "--spawn",
        "a=max-memory=4GiB,max-children=15000",
        probe.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("address space"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// What explicit bounds checks cost a busy guest: the same child, making
/// random reads and writes in 1 MiB of its memory, in a pool of 4 GiB slots
/// (no bounds checks) and in one sized for 10,000 children (slots of the
/// largest budget, so bounds checks), rounds interleaved. A measurement,
/// not a check: `cargo test -p capbroker --test pool
/// bounds_check_cost -- --ignored --nocapture`.
#[ignore = "a measurement"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_check_cost() {
    const ROUNDS: usize = 15;
    const N: u64 = 20_000_000;
    let grants = [spawner(
        "sp=max-memory=16MiB,max-fuel=100G,timeout=60s,max-children=10000,components=tiny",
    )];
    let limits = Limits::default();
    let pools = [
        Pool::default(),
        Pool {
            instances: 10_001,
            max_memory: limits.max_memory as u64,
        },
    ];
    let mut probes = Vec::new();
    for pool in &pools {
        let rt = Runtime::with_pool(pool).unwrap();
        let probe = rt.load(&guest("probe")).unwrap();
        let mut components = Components::new();
        components
            .insert("tiny", rt.load_child(&guest("tiny")).unwrap())
            .unwrap();
        let p = Probe::start_app(&probe, &grants, &limits, Arc::new(components)).await;
        probes.push((rt, p, Vec::new()));
    }
    for _ in 0..ROUNDS {
        for (_, p, times) in &mut probes {
            let started = Instant::now();
            p.expect(&[(&format!("spawn sp tiny budget - B busy {N}"), "ok")])
                .await;
            let got = p.step("wait B").await;
            times.push(started.elapsed());
            assert!(got.starts_with("ok:finished:"), "{got}");
            p.expect(&[("pdrop B", "ok")]).await;
        }
    }
    let mut medians = Vec::new();
    for ((_, _, times), pool) in probes.iter_mut().zip(&pools) {
        times.sort();
        let median = times[ROUNDS / 2];
        println!(
            "{:?}: median {median:?} (min {:?}, max {:?})",
            pool.plan().unwrap(),
            times[0],
            times[ROUNDS - 1]
        );
        medians.push(median);
    }
    println!(
        "bounds checks: {:+.1}%",
        (medians[1].as_secs_f64() / medians[0].as_secs_f64() - 1.0) * 100.0
    );
}
