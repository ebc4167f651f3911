//! Bounded host (invariant 9): what one guest can make the host hold or do
//! is bounded by that guest's own limits. Each test is a way a guest once
//! made the host hold or do more (issue 16, cases 8 to 10), or one close to
//! it.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use capbroker::Components;
use capbroker::{AppComponent, Limits};
use support::{capbroker, guest, probe_component, runtime, spawner, text, Probe};

const MIB: usize = 1 << 20;

fn field(out: &str, key: &str) -> usize {
    out.split([',', ':'])
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no `{key}` in `{out}`"))
        .parse()
        .unwrap()
}

// Case 8: mailboxes were bounded in messages (64), not bytes, so a child
// could park 64 times its memory in the host.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_child_queues_count_against_its_memory() {
    let mut p = Probe::start(&[spawner(
        "sp=max-memory=8MiB,max-fuel=10G,timeout=5s,max-children=4",
    )])
    .await;
    // 64 messages of 2 MiB: 128 MiB the parent never reads. The child's
    // sends wait once its 8 MiB hold its memory and what is queued.
    p.expect(&[
        (
            "spawn sp self 8388608,10000000000,1000 - c sendbig 2 64",
            "ok",
        ),
        ("wait c", "ok:timed-out"),
    ])
    .await;
    let got = p.step("precv-all c").await;
    let bytes = field(&got, "bytes");
    assert!(field(&got, "count") >= 1, "{got}");
    assert!(
        bytes <= 8 * MIB,
        "a child with 8 MiB queued {bytes} bytes: {got}"
    );

    // A message that cannot fit beside the sender's own memory, even with
    // the mailbox empty, is refused with a value; the child goes on.
    p.expect(&[
        ("spawn sp self budget - big sendbig 6 1", "ok"),
        ("wait big", "ok:finished:ok:sent=0,err=limit-exceeded"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_a_parent_queues_count_against_its_memory() {
    let limits = Limits {
        max_memory: 32 * MIB,
        ..Limits::default()
    };
    let mut p = Probe::start_with(
        &[spawner(
            "sp=max-memory=8MiB,max-fuel=10G,timeout=5s,max-children=4",
        )],
        &limits,
    )
    .await;
    // A child that never reads; the parent's sends wait once its 32 MiB are
    // full, and fail once the child has ended.
    p.expect(&[(
        "spawn sp self 8388608,10000000000,1500 - c sleep 1000",
        "ok",
    )])
    .await;
    let got = p.step("psendbig c 4 64").await;
    let sent = field(&got, "sent");
    assert!(
        sent * 4 * MIB <= 32 * MIB,
        "a parent with 32 MiB queued {sent} messages of 4 MiB: {got}"
    );
    assert!(got.contains("err=invalid"), "{got}");
}

// Case 9: the `requests` export ran with no limits (`inspect`, `--learn`)
// and outside `--timeout`.

/// How starting `spin` under `limits` fails, and how long it took; failing
/// the test if it is still going after 20 s.
async fn start_fails(spin: &AppComponent, limits: &Limits) -> (String, Duration) {
    let started = Instant::now();
    let start = spin.start(&[], limits, Arc::new(Components::new()));
    let err = tokio::time::timeout(Duration::from_secs(20), start)
        .await
        .unwrap_or_else(|_| panic!("`requests` ran on past {limits:?}"))
        .err()
        .expect("a spinning `requests` started");
    (format!("{err:#}"), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_run_under_limits() {
    let spin = runtime().load(&guest("spin")).expect("load spin");

    // Alone (as `inspect` and `--learn` call it): 1 s and 100M fuel at most.
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), spin.requests())
        .await
        .expect("`requests` spun on without limits")
        .expect_err("a spinning `requests` returned");
    assert!(started.elapsed() < Duration::from_secs(5), "{err:#}");
    assert!(format!("{err:#}").contains("requests"), "{err:#}");

    // Under the operator's timeout, as `run` is.
    let timeout = Some(Duration::from_millis(300));
    let (err, took) = start_fails(
        &spin,
        &Limits {
            timeout,
            ..Limits::default()
        },
    )
    .await;
    assert!(took < Duration::from_secs(3), "{err}");
    assert!(err.contains("ran past its timeout of 300ms"), "{err}");

    // Under the operator's fuel.
    let max_fuel = Some(10_000_000);
    let (err, _) = start_fails(
        &spin,
        &Limits {
            max_fuel,
            ..Limits::default()
        },
    )
    .await;
    assert!(err.contains("fuel"), "{err}");
}

/// Runs the binary, killing it if it is still running after `limit`.
fn capbroker_within(args: &[&str], limit: Duration) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

#[test]
fn the_binary_bounds_requests() {
    let spin = guest("spin");
    let spin = spin.to_str().unwrap();
    let limit = Duration::from_secs(15);
    for args in [
        &["inspect", spin][..],
        &["run", "--timeout", "1s", spin],
        &["run", "--learn", "/dev/null", "--timeout", "1s", spin],
    ] {
        let (out, took) = capbroker_within(args, limit);
        let stderr = text(&out.stderr);
        assert!(
            took < Duration::from_secs(6),
            "{args:?} took {took:?}: {stderr}"
        );
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains("requests"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // The probe's own requests still answer at once.
    let out = capbroker(&["inspect", guest("probe").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

// Case 10: a spawn's shares were checked for duplicates pairwise, outside
// fuel and timeout.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_shares_are_capped_and_checked_in_linear_time() {
    let mut p = Probe::start(&[spawner(
        "sp=max-memory=16MiB,max-fuel=1G,timeout=2s,max-children=4",
    )])
    .await;
    let started = Instant::now();
    let got = p.step("spawn-shares sp 30000").await;
    let took = started.elapsed();
    assert!(got.starts_with("err:limit-exceeded:shares"), "{got}");
    assert!(got.contains("at most 64"), "{got}");
    assert!(took < Duration::from_secs(1), "30000 shares took {took:?}");
    p.expect(&[
        ("spawn-shares sp 65", "err:limit-exceeded:shares"),
        // The child takes its grants and reports how many more there were.
        ("spawn-shares sp 64", "ok:finished:"),
        (
            "spawn-shares sp 64 dup",
            "err:invalid:grant `s0` is given twice",
        ),
        (
            "spawn-shares sp 3 dup",
            "err:invalid:grant `s0` is given twice",
        ),
        ("running sp", "ok:0"),
    ])
    .await;
}

// A memory limit per child covers all its linear memories.

/// A child component with two core modules, each with a memory of
/// `pages` 64 KiB pages; its `start` returns `ok` with nothing.
fn two_module_child(pages: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
            (core module $a
                (memory (export "memory") {pages})
                (func (export "realloc") (param i32 i32 i32 i32) (result i32)
                    i32.const 1024)
                (func (export "start") (param i32 i32) (result i32)
                    i32.const 16))
            (core module $b (memory (export "memory") {pages}))
            (core instance $a (instantiate $a))
            (core instance $b (instantiate $b))
            (func (export "start") (param "input" (list u8))
                (result (result (list u8) (error string)))
                (canon lift (core func $a "start") (memory (core memory $a "memory"))
                    (realloc (core func $a "realloc")))))"#
    ))
    .expect("valid WAT")
}

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_memory_limit_covers_all_its_memories() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Components::new();
    c.insert("probe", probe_component().instance_pre().clone())
        .unwrap();
    // 2 × 40 MiB, each under the 64 MiB budget, together over it.
    for (name, pages) in [("twice40", 640), ("twice8", 128)] {
        let path = write(tmp.path(), name, &two_module_child(pages));
        c.insert(name, runtime().load_child(&path).unwrap())
            .unwrap();
    }
    let mut p = Probe::start_in(
        &[spawner(
            "sp=max-memory=64MiB,max-fuel=1G,timeout=2s,max-children=4",
        )],
        &Limits::default(),
        Arc::new(c),
    )
    .await;
    p.expect(&[
        ("spawn sp twice40 budget - big", "ok"),
        ("wait big", "ok:out-of-memory"),
        ("spawn sp twice8 budget - small", "ok"),
        ("wait small", "ok:finished:"),
    ])
    .await;
}

#[test]
fn a_module_with_two_memories_is_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(
        tmp.path(),
        "twomem",
        &wat::parse_str(
            r#"(component
                (core module $m (memory 1) (memory 1))
                (core instance (instantiate $m)))"#,
        )
        .expect("valid WAT"),
    );
    let err = runtime()
        .load_child(&path)
        .err()
        .expect("a module with two memories loaded");
    let msg = format!("{err:#}");
    assert!(msg.contains("more than one memory"), "{msg}");
}

/// What the host reads for a guest must fit the guest's memory budget: a
/// child with 4 MiB cannot make the host read a 16 MB file for it.
#[tokio::test]
async fn reading_a_file_is_bounded_by_the_readers_memory() {
    let tree = support::Tree::new();
    std::fs::write(tree.path("root/big.bin"), vec![7u8; 16 << 20]).unwrap();
    let mut p = Probe::start(&[
        support::dir_at("data", &tree.root(), "rw"),
        spawner("sp=max-memory=64MiB,max-fuel=1G,timeout=10s,max-children=4"),
    ])
    .await;
    p.expect(&[
        (
            "spawn sp self 4194304,1000000000,5000 data C read data big.bin",
            "ok",
        ),
        ("wait C", "ok:finished:err:limit-exceeded:max-memory"),
        ("spawn sp self budget data D stat data big.bin", "ok"),
        ("wait D", "ok:finished:ok:file:16777216"),
    ])
    .await;
}

/// A child's large result, held by the host for the parent, keeps the
/// child's place in `max-children` until the parent drops its handle: the
/// host holds at most the spawner's budget of results.
#[tokio::test]
async fn large_results_count_as_children_until_dropped() {
    let mut p = Probe::start(&[spawner(
        "sp=max-memory=16MiB,max-fuel=1G,timeout=10s,max-children=2",
    )])
    .await;
    p.expect(&[
        ("spawn sp self budget - A bigout 100000", "ok"),
        ("wait A", "ok:finished:ok:xxxx"),
        ("spawn sp self budget - B bigout 100000", "ok"),
        ("wait B", "ok:finished:ok:xxxx"),
        ("spawn sp self budget - C bigout 10", "err:limit-exceeded"),
        ("pdrop A", "ok"),
        ("spawn sp self budget - C bigout 10", "ok"),
        ("wait C", "ok:finished:ok:xxxxxxxxxx"),
        // A small result gives the place back at once, handle held or not.
        ("spawn sp self budget - D bigout 10", "ok"),
        ("wait D", "ok:finished"),
        ("spawn sp self budget - E bigout 10", "ok"),
    ])
    .await;
}

/// A child holds no more handles than its parent may.
#[tokio::test]
async fn a_child_holds_no_more_handles_than_its_parent() {
    let tree = support::Tree::new();
    let limits = Limits {
        max_handles: 32,
        ..Limits::default()
    };
    let mut p = Probe::start_with(
        &[
            support::dir_at("data", &tree.root(), "rw"),
            spawner("sp=max-memory=16MiB,max-fuel=1G,timeout=10s,max-children=2"),
        ],
        &limits,
    )
    .await;
    let got = p.step("spawn sp self budget data C exhaust data").await;
    assert_eq!(got, "ok");
    let got = p.step("wait C").await;
    assert!(got.starts_with("ok:finished:err:limit-exceeded:"), "{got}");
    let held: usize = got
        .trim_start_matches("ok:finished:err:limit-exceeded:")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(held < 32, "the child held {held} handles");
}

/// What a guest asks a handle to keep is bounded, and checked in bounded
/// time: a derived spawner names each component once and no more than its
/// own; a derived network right holds at most 64 ranges; a handle is made
/// revocable at most 64 times over.
#[tokio::test]
async fn derived_handles_keep_bounded_lists() {
    let tree = support::Tree::new();
    let mut p = Probe::start(&[
        support::dir_at("data", &tree.root(), "rw"),
        spawner(
            "sp=max-memory=16MiB,max-fuel=1G,timeout=10s,max-children=4,components=probe+worker",
        ),
        capbroker::grants::Grant::parse_connect("api=127.0.0.1:1-65535").unwrap(),
    ])
    .await;
    p.expect(&[
        (
            "attenuate-spawner sp budget 2 probe+probe S",
            "err:invalid:component `probe` is named twice",
        ),
        (
            "attenuate-spawner sp budget 2 probe+worker+probe S",
            "err:refused:components: 3 asked",
        ),
        ("attenuate-spawner sp budget 2 probe S", "ok"),
    ])
    .await;
    let many = (1..=65)
        .map(|i| format!("127.0.0.1:{i}-{i}"))
        .collect::<Vec<_>>()
        .join(",");
    p.expect(&[(&format!("net-attenuate api {many} N"), "err:limit-exceeded")])
        .await;
    let mut name = "data".to_string();
    for i in 0..64 {
        let next = format!("r{i}");
        assert_eq!(p.step(&format!("revocable {name} {next} k{i}")).await, "ok");
        name = next;
    }
    p.expect(&[(&format!("revocable {name} deeper kk"), "err:limit-exceeded")])
        .await;
}

/// What the host reads for a WASI directory listing counts against the
/// lister's memory: listings of a big directory held at once end in
/// `insufficient-memory`, not in host memory beyond the budget.
#[tokio::test]
async fn wasi_listings_count_against_memory() {
    let tree = support::Tree::new();
    let big = tree.path("root/big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..2000 {
        std::fs::write(big.join(format!("{i:06}{}", "x".repeat(100))), "").unwrap();
    }
    let limits = Limits {
        max_memory: 16 << 20,
        ..Limits::default()
    };
    let mut p = Probe::start_with(&[support::dir_at("a", &big, "ro")], &limits).await;
    p.expect(&[("wasi-hold a read,list D", "ok")]).await;
    let got = p.step("wasi-listings D 500").await;
    let held: usize = got
        .strip_prefix("err:io:wasi insufficient-memory after ")
        .unwrap_or_else(|| panic!("{got}"))
        .parse()
        .unwrap();
    // Each listing holds about 2000 × 170 bytes; 16 MiB fits fewer than 100.
    assert!((1..100).contains(&held), "{held} listings held");
    // Dropped, they give their room back.
    p.expect(&[("wasi-listings D 1", "ok:1")]).await;
}

/// A spawner is attenuated at most 64 times over (a deeper chain made the
/// host's stack overflow when dropped), and a share's name is bounded.
#[tokio::test]
async fn spawner_chains_and_share_names_are_bounded() {
    let tree = support::Tree::new();
    let mut p = Probe::start(&[
        support::dir_at("data", &tree.root(), "rw"),
        spawner("sp=max-memory=16MiB,max-fuel=1G,timeout=10s,max-children=4"),
    ])
    .await;
    let mut name = "sp".to_string();
    for i in 0..64 {
        let next = format!("s{i}");
        let step = format!("attenuate-spawner {name} budget 4 probe {next}");
        assert_eq!(p.step(&step).await, "ok", "{step}");
        name = next;
    }
    p.expect(&[(
        &format!("attenuate-spawner {name} budget 4 probe deeper"),
        "err:limit-exceeded",
    )])
    .await;
    let long = "n".repeat(300);
    p.expect(&[
        (&format!("attenuate data read {long}"), "ok"),
        (
            &format!("spawn sp self budget {long} C granted"),
            "err:invalid:a share's name",
        ),
    ])
    .await;
}

/// A spawn's input, which the host holds until the child's entry point
/// returns, counts against the child's memory.
#[tokio::test]
async fn a_spawns_input_counts_against_the_childs_memory() {
    let mut p = Probe::start(&[spawner(
        "sp=max-memory=64MiB,max-fuel=1G,timeout=10s,max-children=4",
    )])
    .await;
    let big = "x".repeat(5 << 20);
    p.expect(&[
        (
            &format!("spawn sp self 4194304,1000000000,5000 - C {big}"),
            "err:limit-exceeded:the input of",
        ),
        ("spawn sp self 4194304,1000000000,5000 - D granted", "ok"),
        ("wait D", "ok:finished"),
    ])
    .await;
}
