//! The `fs` interface through the broker library: every operation allowed
//! and refused per right, attenuation that only narrows, drops that free the
//! handle, streaming in bounded memory, and a bounded handle table.

mod support;

use capbroker::Limits;
use support::{dir_at, Probe, Tree};

/// Each operation with the rights it needs, and how to see it took effect.
const OPS: &[(&str, &str)] = &[
    ("read H hello.txt", "read"),
    ("write H hello.txt changed", "write"),
    ("write H new.txt fresh", "create"),
    ("list H .", "list"),
    ("stat H hello.txt", "list"),
    ("mkdir H newdir", "create"),
    ("rm H hello.txt", "remove"),
    ("rmdir H sub/deeper", "remove"),
    // At its source, a rename needs every right of the destination's grant.
    (
        "rename H hello.txt renamed.txt",
        "read,write,create,list,remove",
    ),
    ("open H hello.txt read F", "read"),
    ("open H hello.txt write F", "write"),
    ("open H hello.txt write,truncate F", "write"),
    ("open H hello.txt append F", "write"),
    ("open H made.txt write,create,exclusive F", "create"),
];

const ALL: [&str; 5] = ["read", "write", "create", "list", "remove"];

fn without(rights: &str) -> String {
    let missing: Vec<&str> = rights.split(',').collect();
    ALL.iter()
        .filter(|r| !missing.contains(r))
        .copied()
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn every_operation_works_with_exactly_its_rights() {
    for (op, rights) in OPS {
        let tree = Tree::new();
        let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
        p.expect(&[(&format!("attenuate data {rights} H"), "ok")])
            .await;
        let got = p.step(op).await;
        assert!(got.starts_with("ok"), "`{op}` with {rights}: {got}");
    }
}

#[tokio::test]
async fn every_operation_is_denied_without_its_rights_and_changes_nothing() {
    for (op, rights) in OPS {
        if op.starts_with("stat") {
            // Metadata needs `list` or `read`: the matrix in
            // tests/authority.rs covers either alone.
            continue;
        }
        for right in rights.split(',') {
            let tree = Tree::new();
            let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
            p.expect(&[(&format!("attenuate data {} H", without(right)), "ok")])
                .await;
            let got = p.step(op).await;
            assert_eq!(got, format!("err:denied:{right}"), "`{op}` without {right}");
            // Nothing on the host changed.
            assert_eq!(
                tree.read("root/hello.txt").as_deref(),
                Some("hello"),
                "{op}"
            );
            for made in [
                "root/new.txt",
                "root/newdir",
                "root/renamed.txt",
                "root/made.txt",
            ] {
                assert!(
                    !tree.path(made).exists(),
                    "`{op}` without {right} made {made}"
                );
            }
            assert!(tree.path("root/sub/deeper").is_dir(), "{op}");
        }
    }
}

#[tokio::test]
async fn operations_do_what_they_say() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("read data hello.txt", "ok:hello"),
        ("write data notes.txt first", "ok"),
        ("read data notes.txt", "ok:first"),
        ("write data notes.txt second", "ok"),
        ("read data notes.txt", "ok:second"),
        ("list data .", "ok:hello.txt=file,notes.txt=file,sub=dir"),
        ("stat data hello.txt", "ok:file:5"),
        ("stat data sub", "ok:dir:"),
        ("mkdir data made", "ok"),
        ("mkdir data made", "err:exists:made"),
        ("rename data notes.txt made/notes.txt", "ok"),
        ("read data made/notes.txt", "ok:second"),
        ("rmdir data made", "err:not-empty:made"),
        ("rm data made/notes.txt", "ok"),
        ("rmdir data made", "ok"),
        ("read data nope.txt", "err:not-found:nope.txt"),
        ("read data sub", "err:is-directory:sub"),
        ("list data hello.txt", "err:not-directory:hello.txt"),
        ("open data log.txt write,create F", "ok"),
        ("fwrite F one", "ok"),
        ("fdrop F", "ok"),
        ("open data log.txt append F", "ok"),
        ("fwrite F two", "ok"),
        ("fread F 10", "err:denied:read"),
        ("fdrop F", "ok"),
        ("open data log.txt read F", "ok"),
        ("fread F 4", "ok:onet"),
        ("fseek F 1", "ok"),
        ("fread F 100", "ok:netwo"),
        ("fread F 100", "ok"),
        ("fwrite F x", "err:denied:write"),
        ("fstat F", "ok:file:6"),
        ("open data hello.txt read,truncate F2", "err:invalid"),
        ("open data hello.txt exclusive,read F2", "err:invalid"),
        (
            "open data log.txt append,truncate F2",
            "err:invalid:append and truncate cannot go together",
        ),
        (
            "fseek F 9223372036854775808",
            "err:invalid:offset 9223372036854775808 is past the largest",
        ),
        (
            "read data hello\0.txt",
            "err:invalid:a path may not hold a NUL byte",
        ),
        (
            "open data hello.txt create,write,exclusive F2",
            "err:exists:hello.txt",
        ),
    ])
    .await;
    assert_eq!(tree.read("root/log.txt").as_deref(), Some("onetwo"));
}

#[tokio::test]
async fn a_drop_box_creates_but_never_reads_or_overwrites() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("attenuate data create B", "ok"),
        ("write B upload.bin payload", "ok"),
        ("write B upload.bin replaced", "err:denied:write"),
        ("write B hello.txt clobbered", "err:denied:write"),
        (
            "open B hello.txt write,create,truncate F",
            "err:denied:write",
        ),
        ("open B hello.txt write,create F", "err:denied:write"),
        ("read B upload.bin", "err:denied:read"),
        ("list B .", "err:denied:list"),
        ("open B other.bin write,create F", "ok"),
        ("fwrite F streamed", "ok"),
        ("rm B upload.bin", "err:denied:remove"),
        // A file it makes is still not one it may read back: once open,
        // whoever else writes in the folder could fill it.
        (
            "open B inbox.txt read,write,create,exclusive G",
            "err:denied:read",
        ),
        ("open B inbox.txt read,write,create G", "err:denied:read"),
        ("open B inbox.txt write,create,exclusive G", "ok"),
        ("write data inbox.txt secret", "ok"),
        ("fread G 6", "err:denied:read"),
        // Nor its metadata: watching its size would tell what others write.
        ("fstat G", "err:denied:read,list"),
        // The same for a write-only handle, on a file that was there.
        ("attenuate data write W", "ok"),
        ("open W hello.txt write H", "ok"),
        ("fstat H", "err:denied:read,list"),
        ("open data hello.txt write H2", "ok"),
        ("fstat H2", "ok:file:5"),
    ])
    .await;
    assert_eq!(tree.read("root/inbox.txt").as_deref(), Some("secret"));
    assert_eq!(tree.read("root/upload.bin").as_deref(), Some("payload"));
    assert_eq!(tree.read("root/other.bin").as_deref(), Some("streamed"));
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
}

#[tokio::test]
async fn read_only_grants_refuse_every_change() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("ro", &tree.root(), "ro")]).await;
    p.expect(&[
        ("rights ro", "ok:read,list"),
        ("read ro hello.txt", "ok:hello"),
        ("write ro hello.txt x", "err:denied:write,create"),
        ("write ro new.txt x", "err:denied:write,create"),
        ("mkdir ro d", "err:denied:create"),
        ("rm ro hello.txt", "err:denied:remove"),
        ("rmdir ro sub/deeper", "err:denied:remove"),
        ("rename ro hello.txt x", "err:denied:create,remove"),
        ("open ro hello.txt write,truncate F", "err:denied:write"),
        ("open ro hello.txt read,write F", "err:denied:write"),
        ("open ro hello.txt append F", "err:denied:write"),
        ("open ro new.txt write,create F", "err:denied:create"),
        ("attenuate ro read,write W", "err:denied:write"),
    ])
    .await;
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
    assert!(!tree.path("root/new.txt").exists() && !tree.path("root/d").exists());
}

#[tokio::test]
async fn attenuation_only_narrows() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("attenuate data read,list,create D", "ok"),
        ("rights D", "ok:read,create,list"),
        ("attenuate D read,list,create,write W", "err:denied:write"),
        ("attenuate D all W", "err:denied:write,remove"),
        ("open-dir D sub read,remove W", "err:denied:remove"),
        ("attenuate D read,list R", "ok"),
        ("rights R", "ok:read,list"),
        ("attenuate R read,list,create W", "err:denied:create"),
        ("open-dir R sub read,list S", "ok"),
        ("rights S", "ok:read,list"),
        ("read S inner.txt", "ok:inner"),
        ("open-dir S deeper read,create W", "err:denied:create"),
        ("attenuate S none N", "ok"),
        ("rights N", "ok:none"),
        ("list N .", "err:denied:list"),
        ("read N ../hello.txt", "err:denied:read"),
        ("attenuate N read W", "err:denied:read"),
    ])
    .await;
}

#[tokio::test]
async fn a_grant_is_narrowed_to_what_the_component_asks_for() {
    let tree = Tree::new();
    // The probe asks for `a` with read,list only; the operator grants more.
    let mut p = Probe::start(&[dir_at("a", &tree.root(), "rw")]).await;
    p.expect(&[
        ("rights a", "ok:read,list"),
        ("write a hello.txt x", "err:denied:write,create"),
        ("attenuate a read,write W", "err:denied:write"),
    ])
    .await;
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
}

#[tokio::test]
async fn a_dropped_handle_is_freed_and_cannot_be_regained() {
    let tree = Tree::new();
    let mut p = Probe::start(&[
        dir_at("data", &tree.root(), "rw"),
        dir_at("a", &tree.root(), "ro"),
    ])
    .await;
    let before = p.live_handles();
    p.expect(&[("open-dir data sub read,list S", "ok")]).await;
    assert_eq!(p.live_handles(), before + 1, "open-dir adds one handle");
    p.expect(&[("drop data", "ok"), ("drop a", "ok")]).await;
    assert_eq!(
        p.live_handles(),
        before - 1,
        "dropped handles leave the table"
    );
    // The sub-handle still works, but nothing leads back to the root.
    p.expect(&[
        ("read S inner.txt", "ok:inner"),
        ("read S ../hello.txt", "err:escape"),
        ("open-dir S .. read D", "err:escape"),
        ("list S ..", "err:escape"),
        ("attenuate S read,list,write W", "err:denied:write"),
        (
            &format!("read S {}", tree.root().join("hello.txt").display()),
            "err:escape",
        ),
        ("read data hello.txt", "err:invalid:probe holds no dir"),
        // Grants are handed over once: asking again brings nothing back.
        ("granted", "ok:0 more"),
    ])
    .await;
    p.expect(&[
        ("open S inner.txt read F", "ok"),
        ("fdrop F", "ok"),
        ("drop S", "ok"),
    ])
    .await;
    assert_eq!(p.live_handles(), before - 2, "every handle is gone");
}

#[tokio::test]
async fn files_stream_in_bounded_memory() {
    let tree = Tree::new();
    let limits = Limits {
        max_memory: 16 << 20,
        ..Limits::default()
    };
    let mut p = Probe::start_with(&[dir_at("data", &tree.root(), "rw")], &limits).await;
    let size: u64 = 256 << 20;
    let got = p
        .step(&format!("stream-write data big.bin {size} 1048576"))
        .await;
    let memory: u64 = got.rsplit(':').next().unwrap().parse().unwrap();
    assert!(got.starts_with(&format!("ok:{size}:")), "{got}");
    assert!(memory < 8 << 20, "guest memory grew to {memory} bytes");
    assert_eq!(
        std::fs::metadata(tree.path("root/big.bin")).unwrap().len(),
        size
    );

    // Ask for more than a chunk: the host returns at most 1 MiB per read.
    let got = p.step("stream-read data big.bin 4000000000").await;
    let parts: Vec<&str> = got.split(':').collect();
    assert_eq!(&parts[..3], ["ok", &size.to_string(), "pattern"], "{got}");
    let memory: u64 = parts[3].parse().unwrap();
    assert!(memory < 8 << 20, "guest memory grew to {memory} bytes");
    // A whole-file read of something this large is refused, not attempted.
    let got = p.step("read data big.bin").await;
    assert!(
        got.starts_with("err:invalid:`big.bin` is 268435456 bytes"),
        "{got}"
    );
}

#[tokio::test]
async fn the_handle_table_is_bounded() {
    let tree = Tree::new();
    let limits = Limits {
        max_handles: 64,
        ..Limits::default()
    };
    let mut p = Probe::start_with(&[dir_at("data", &tree.root(), "rw")], &limits).await;
    let before = p.live_handles();
    let got = p.step("exhaust data").await;
    let n: usize = got
        .strip_prefix("err:limit-exceeded:")
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected limit-exceeded, got {got}"));
    assert!(n > 0 && n < 64, "{n} handles before the limit");
    // The guest gave them back; the host and the guest go on.
    assert_eq!(p.live_handles(), before);
    p.expect(&[
        ("read data hello.txt", "ok:hello"),
        ("attenuate data read R", "ok"),
    ])
    .await;
}

#[tokio::test]
async fn special_files_are_refused_without_blocking() {
    let tree = Tree::new();
    let fifo = std::ffi::CString::new(tree.root().join("fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("read data fifo", "err:invalid:`fifo` is not a regular file"),
        (
            "open data fifo read F",
            "err:invalid:`fifo` is not a regular file",
        ),
        ("list data .", "ok:fifo=other,hello.txt=file,sub=dir"),
    ])
    .await;
}

/// Invariant 1: with no handles, the standard library reaches nothing — no
/// WASI preopens, no environment, no network — even with a host listener up.
#[tokio::test]
async fn the_standard_library_has_no_ambient_authority() {
    let tree = Tree::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    let got = p.step(&format!("ambient {addr}")).await;
    assert!(got.starts_with("ok:fs="), "{got}");
    assert!(
        !got.contains("fs=open") && got.contains("cwd=refused"),
        "{got}"
    );
    assert!(got.contains("env=0,"), "{got}");
    assert!(!got.contains("net=connected"), "{got}");
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the guest reached the host listener"
    );
}
