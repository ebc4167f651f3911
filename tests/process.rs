//! Child processes: every way a child can end, each ending alone while its
//! siblings and parent go on; the host freeing what a child held; mailboxes;
//! and a child getting only the handles its parent shares.
//!
//! Tests here run one at a time (`SERIAL`): one of them counts the live
//! instances of the whole test process.

mod support;

use support::{dir_at, spawner, Probe, Tree};
use tokio::sync::{Mutex, MutexGuard};

static SERIAL: Mutex<()> = Mutex::const_new(());

async fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().await
}

const SP: &str = "sp=max-memory=16MiB,max-fuel=1000G,timeout=3s,max-children=200";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_way_of_ending_has_its_own_status() {
    let _s = serial().await;
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw"), spawner(SP)]).await;
    let mib16 = 16 << 20;
    p.expect(&[
        ("spawn sp self budget - ok memory", "ok"),
        ("wait ok", "ok:finished:ok:"),
        ("spawn sp self budget - failed fail on purpose", "ok"),
        ("wait failed", "ok:failed:on purpose"),
        ("spawn sp self budget - trapped trap", "ok"),
        ("wait trapped", "ok:trapped:"),
        ("spawn sp self budget - oom alloc 64", "ok"),
        ("wait oom", "ok:out-of-memory"),
        (
            &format!("spawn sp self {mib16},50000000,3000 - cpu loop"),
            "ok",
        ),
        ("wait cpu", "ok:out-of-cpu"),
        (
            &format!("spawn sp self {mib16},200000000,300 - sleepy sleep 5000"),
            "ok",
        ),
        ("wait sleepy", "ok:timed-out"),
        ("spawn sp self budget - victim sleep 5000", "ok"),
        ("try-wait victim", "ok:running"),
        ("kill victim", "ok"),
        ("wait victim", "ok:killed"),
        ("wait victim", "ok:killed"),
        ("try-wait victim", "ok:killed"),
        // A spawn runs its child's first stretch itself, but hands a busy
        // child over by the next epoch tick: the spawn returns, the child
        // still runs, and the parent can end it.
        (
            &format!("spawn sp self {mib16},1000000000000,3000 - spinner loop"),
            "ok",
        ),
        ("try-wait spinner", "ok:running"),
        ("kill spinner", "ok"),
        ("wait spinner", "ok:killed"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_child_cannot_outrun_its_timeout() {
    let _s = serial().await;
    // Fuel enough for minutes: only the timeout (and epoch yields) stop it.
    let mut p = Probe::start(&[spawner(
        "sp=max-memory=16MiB,max-fuel=1000G,timeout=60s,max-children=4",
    )])
    .await;
    let started = std::time::Instant::now();
    p.expect(&[
        ("spawn sp self 16777216,1000000000000,400 - busy loop", "ok"),
        ("wait busy", "ok:timed-out"),
    ])
    .await;
    assert!(
        started.elapsed().as_secs() < 30,
        "the timeout did not stop a busy child"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_children_end_alone_while_100_siblings_finish() {
    let _s = serial().await;
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw"), spawner(SP)]).await;
    p.expect(&[
        (
            "spawn sp self 16777216,200000000000,1500 - spinner loop",
            "ok",
        ),
        ("spawn sp self budget - hog alloc 64", "ok"),
        ("spawn sp self budget - crasher trap", "ok"),
        (
            "spawn sp self 16777216,200000000,1500 - sleeper sleep 10000",
            "ok",
        ),
        (
            "spawn sp self budget - S*100 memory;alloc 2",
            "ok:finished#100",
        ),
        ("wait spinner", "ok:timed-out"),
        ("wait hog", "ok:out-of-memory"),
        ("wait crasher", "ok:trapped:"),
        ("wait sleeper", "ok:timed-out"),
        ("read data hello.txt", "ok:hello"),
        ("running sp", "ok:0"),
    ])
    .await;
}

/// VmRSS of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_frees_what_an_ended_child_held() {
    let _s = serial().await;
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw"), spawner(SP)]).await;
    let instances = capbroker::run::ctx::live_instances();
    let handles = p.live_handles();
    // Warm up, then measure: 8 rounds of 25 children, each taking 8 MiB and
    // holding handles, ending every way there is.
    p.expect(&[("spawn sp self budget data W*10 alloc 8", "ok:finished#10")])
        .await;
    let rss = rss_kib();
    for round in 0..8 {
        let cmds = [
            "spawn sp self budget data A*10 alloc 8;open-dir data sub read X;open data hello.txt read F",
            "spawn sp self budget data B*5 alloc 8;trap",
            "spawn sp self budget data C*5 alloc 8;alloc 64",
            "spawn sp self 16777216,3000000,3000 data D*5 alloc 8;loop",
        ];
        let want = [
            "finished#10",
            "trapped#5",
            "out-of-memory#5",
            "out-of-cpu#5",
        ];
        for (cmd, want) in cmds.iter().zip(want) {
            let got = p.step(cmd).await;
            assert_eq!(got, format!("ok:{want}"), "round {round}: {cmd}");
        }
    }
    p.expect(&[
        ("spawn sp self budget - K sleep 10000", "ok"),
        ("pdrop K", "ok"),
    ])
    .await;
    // A dropped process handle kills the child; give its task a moment.
    for _ in 0..100 {
        if capbroker::run::ctx::live_instances() == instances {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        capbroker::run::ctx::live_instances(),
        instances,
        "a child's store outlived it"
    );
    assert_eq!(
        p.live_handles(),
        handles,
        "the parent's table kept process handles"
    );
    let grown_mib = rss_kib().saturating_sub(rss) / 1024;
    assert!(grown_mib < 64, "200 children left {grown_mib} MiB behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_carry_messages_both_ways() {
    let _s = serial().await;
    let mut p = Probe::start(&[spawner(SP)]).await;
    p.expect(&[
        ("recv", "ok:none"),
        ("send x", "err:invalid:this process has no parent"),
        ("spawn sp self budget - E echo", "ok"),
        ("psend E one", "ok"),
        ("psend E two", "ok"),
        ("precv E", "ok:echo:one"),
        ("precv E", "ok:echo:two"),
        ("kill E", "ok"),
        ("wait E", "ok:killed"),
        ("psend E three", "err:invalid:the process has ended"),
        ("spawn sp self budget - T send hi;send there;recv", "ok"),
        ("precv T", "ok:hi"),
        ("precv T", "ok:there"),
        ("psend T bye", "ok"),
        ("wait T", "ok:finished:ok\nok\nok:bye"),
        ("precv T", "ok:none"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_gets_only_what_its_parent_shares() {
    let _s = serial().await;
    let tree = Tree::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut p = Probe::start(&[
        dir_at("data", &tree.root(), "rw"),
        dir_at("a", &tree.root(), "ro"),
        spawner(SP),
    ])
    .await;
    let input = format!(
        "read a hello.txt;write a x y;read data hello.txt;spawn sp self budget - G memory;ambient {addr}"
    );
    p.expect(&[
        (&format!("spawn sp self budget a C {input}"), "ok"),
        ("read a hello.txt", "ok:hello"),
    ])
    .await;
    let got = p.step("wait C").await;
    let lines: Vec<&str> = got
        .strip_prefix("ok:finished:")
        .expect(&got)
        .lines()
        .collect();
    assert_eq!(lines[0], "ok:hello", "{got}");
    assert_eq!(lines[1], "err:denied:write,create", "{got}");
    assert_eq!(lines[2], "err:invalid:probe holds no dir `data`", "{got}");
    assert_eq!(lines[3], "err:invalid:probe holds no spawner `sp`", "{got}");
    assert!(
        lines[4].contains("env=0") && !lines[4].contains("net=connected"),
        "{got}"
    );
    assert!(
        !lines[4].contains("fs=open") && lines[4].contains("cwd=refused"),
        "{got}"
    );
    // A handle the parent dropped cannot be shared.
    p.expect(&[
        ("drop a", "ok"),
        (
            "spawn sp self budget a D memory",
            "err:invalid:probe holds no handle `a`",
        ),
    ])
    .await;
}
