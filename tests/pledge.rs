//! `pledge` and `unveil`: a plain WASI program (components/std-probe, Rust
//! `std` only, plus the SDK's one-line pledge calls) gives up authority as
//! it runs, through the `capbroker` binary. After a pledge the standard
//! library sees permission errors and the program keeps running; nothing
//! it calls brings the authority back.

mod support;

use std::process::{Command, Output};

use support::{echo_server, expect, guest, lines, spawner, Probe, Tree};

fn std_probe(grants: &[&str], steps: &[&str]) -> Output {
    let probe = guest("std-probe");
    Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .arg("run")
        .args(grants)
        .arg(&probe)
        .args(steps)
        .output()
        .expect("run capbroker")
}

fn data_grant(tree: &Tree, rights: &str) -> String {
    format!("/data={}{rights}", tree.root().display())
}

#[test]
fn pledging_the_filesystem_closes_preopens_and_open_files() {
    let tree = Tree::new();
    let out = std_probe(
        &["--dir", &data_grant(&tree, "")],
        &[
            "read",
            "/data/hello.txt",
            "hold",
            "/data/sub/inner.txt",
            "list",
            "/data",
            "pledge",
            "fs",
            "read",
            "/data/hello.txt",
            "create",
            "/data/new.txt",
            "list",
            "/data",
            "stat",
            "/data/hello.txt",
            "hold-write",
            "changed",
            "hold-read",
            "write",
            "/data/hello.txt",
            "changed",
            "pledge",
            "fs",
            "read",
            "/data/hello.txt",
        ],
    );
    expect(
        &lines(&out),
        &[
            "ok read hello",
            "ok hold",
            "ok list hello.txt,sub",
            "ok pledge fs",
            "err permission-denied read",
            "err permission-denied create",
            "err permission-denied list",
            "err permission-denied stat",
            "err permission-denied hold-write",
            "err permission-denied hold-read",
            "err permission-denied write",
            "ok pledge fs",
            "err permission-denied read",
        ],
    );
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
    assert_eq!(tree.read("root/sub/inner.txt").as_deref(), Some("inner"));
    assert!(tree.read("root/new.txt").is_none());
}

#[test]
fn preopen_rights_are_capbroker_rights() {
    let tree = Tree::new();
    let out = std_probe(
        &["--dir", &data_grant(&tree, ":read,list")],
        &[
            "read",
            "/data/hello.txt",
            "list",
            "/data/sub",
            "write",
            "/data/hello.txt",
            "x",
            "create",
            "/data/new.txt",
            "mkdir",
            "/data/d",
            "remove",
            "/data/hello.txt",
            "read",
            "/data/../outside/secret",
        ],
    );
    expect(
        &lines(&out),
        &[
            "ok read hello",
            "ok list deeper,inner.txt",
            "err permission-denied write",
            "err permission-denied create",
            "err permission-denied mkdir",
            "err permission-denied remove",
            "err",
        ],
    );
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
}

#[test]
fn unveil_narrows_and_neither_dotdot_nor_links_get_around_it() {
    let tree = Tree::new();
    // A link inside the unveiled part that leads back up to the preopen.
    std::os::unix::fs::symlink("..", tree.path("root/sub/up")).unwrap();
    let out = std_probe(
        &["--dir", &data_grant(&tree, "")],
        &[
            "hold",
            "/data/sub/up/hello.txt",
            "unveil",
            "/data",
            "sub",
            "read,list",
            "read",
            "/data/sub/inner.txt",
            "list",
            "/data/sub",
            "read",
            "/data/hello.txt",
            "read",
            "/data/sub/../hello.txt",
            "read",
            "/data/sub/up/hello.txt",
            "list",
            "/data/sub/up",
            "hold-read",
            "list",
            "/data",
            "write",
            "/data/sub/inner.txt",
            "x",
            "create",
            "/data/sub/new.txt",
            // Narrower still, relative to `sub`; then nothing widens.
            "unveil",
            "/data",
            "deeper",
            "list",
            "read",
            "/data/sub/inner.txt",
            "list",
            "/data/sub/deeper",
            "unveil",
            "/data",
            ".",
            "read,list",
            "unveil",
            "/data",
            "..",
            "list",
            "unveil",
            "/nosuch",
            ".",
            "read",
        ],
    );
    expect(
        &lines(&out),
        &[
            "ok hold",
            "ok unveil /data sub",
            "ok read inner",
            "ok list deeper,inner.txt,up",
            "err permission-denied read",
            "err permission-denied read",
            "err permission-denied read",
            "err permission-denied list",
            "err permission-denied hold-read",
            "err permission-denied list",
            "err permission-denied write",
            "err permission-denied create",
            "ok unveil /data deeper",
            "err permission-denied read",
            "ok list",
            "err denied unveil",
            "err escape unveil",
            "err not-found unveil",
        ],
    );
    assert_eq!(tree.read("root/sub/inner.txt").as_deref(), Some("inner"));
}

#[test]
fn pledging_the_environment_hides_it() {
    let out = std_probe(
        &["--env", "GREETING=hi", "--env", "OTHER=x"],
        &["pledge", "env", "env", "GREETING", "env", "NOT_GRANTED"],
    );
    expect(
        &lines(&out),
        &["ok pledge env", "err not-found env", "err not-found env"],
    );
    let out = std_probe(
        &["--env", "GREETING=hi"],
        &["env", "GREETING", "env", "HOME"],
    );
    expect(&lines(&out), &["ok env hi", "err not-found env"]);
}

#[test]
fn pledging_the_network_closes_new_and_open_connections() {
    let port = echo_server(2);
    let addr = format!("127.0.0.1:{port}");
    let out = std_probe(
        &["--connect", &format!("echo={addr}")],
        &[
            "connect",
            &addr,
            "send",
            "hi",
            "connect",
            &format!("127.0.0.1:{}", port.wrapping_add(1).max(1)),
            "pledge",
            "net",
            "send",
            "again",
            "connect",
            &addr,
        ],
    );
    expect(
        &lines(&out),
        &[
            "ok connect",
            "ok send hi",
            "err permission-denied connect",
            "ok pledge net",
            // wasi-libc reports a failed socket stream as EIO.
            "err",
            "err permission-denied connect",
        ],
    );
    // Nothing granted: no network at all.
    let out = std_probe(&[], &["connect", &addr]);
    expect(&lines(&out), &["err permission-denied connect"]);
}

#[tokio::test]
async fn pledging_spawn_disables_every_spawner() {
    let mut p = Probe::start(&[spawner(
        "sp=max-memory=16MiB,max-fuel=100M,timeout=2s,max-children=4",
    )])
    .await;
    assert_eq!(p.step("spawn sp self budget - A memory").await, "ok");
    assert_eq!(p.step("pledge-spawn").await, "ok");
    assert_eq!(
        p.step("spawn sp self budget - B memory").await,
        "err:refused:spawning was pledged away"
    );
}

/// A pledge of spawning reaches the copies of the spawner given to
/// children too: a parent that gave up spawning cannot spawn through a
/// child it can still talk to.
#[tokio::test]
async fn pledging_spawn_reaches_the_spawners_children_hold() {
    let mut p = Probe::start(&[spawner(
        "sp=max-memory=16MiB,max-fuel=100M,timeout=5s,max-children=4",
    )])
    .await;
    p.expect(&[
        (
            "spawn sp self budget sp C recv;spawn sp self budget - G memory",
            "ok",
        ),
        ("pledge-spawn", "ok"),
        ("psend C go", "ok"),
        (
            "wait C",
            "ok:finished:ok:go\nerr:refused:spawning was pledged away",
        ),
    ])
    .await;
}
