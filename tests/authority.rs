//! The authority core (`host/src/authority.rs`): one decision for every
//! file-system operation, on both faces — capbroker's `fs` interface (the
//! probe app), `wasi:filesystem` from a plain command (std-probe through the
//! binary), and `to-descriptor` descriptors in an app. Each numbered case of
//! the issue that brought the core has a test here; then a rights matrix,
//! written by hand, walks every path operation with each right removed.
//!
//! Every test runs twice: as is, and in a child process where `openat2`
//! fails with ENOSYS, so that cap-std's own resolver is exercised too.

mod support;

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Command, Output};

use capbroker::core::Rights;
use capbroker::fs::DirGrant;
use capbroker::grants::{Grant, NamedGrant};
use support::{dir_at, guest, Probe, Tree};

/// A grant of `root` narrowed to `paths`, as `[dir.NAME.paths]` makes it.
fn scoped(name: &str, root: PathBuf, paths: &[(&str, Rights)]) -> NamedGrant {
    NamedGrant {
        name: name.into(),
        grant: Grant::Dir(DirGrant::new(
            root,
            Rights::all(),
            Some(paths.iter().map(|(p, r)| (p.into(), *r)).collect()),
        )),
    }
}

fn std_probe(grants: &[String], steps: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .arg("run")
        .args(grants)
        .arg(guest("std-probe"))
        .args(steps)
        .output()
        .expect("run capbroker")
}

/// std-probe run with `steps` under a manifest that preopens `root` at
/// `/data`, narrowed to `paths` (the `[dir."/data".paths]` table's body).
fn std_probe_scoped(tree: &Tree, paths: &str, steps: &[&str]) -> Output {
    let manifest = tree.path("m.toml");
    std::fs::write(
        &manifest,
        format!(
            "component = {:?}\n[dir.\"/data\"]\npath = {:?}\n\n[dir.\"/data\".paths]\n{paths}",
            guest("std-probe").display().to_string(),
            tree.root().display().to_string()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args(["run", "-m"])
        .arg(&manifest)
        .args(steps)
        .output()
        .unwrap()
}

/// The command's lines, each checked against its expected prefix.
fn expect_lines(out: &Output, want: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), want.len(), "{lines:#?}");
    for (line, w) in lines.iter().zip(want) {
        assert!(
            line.starts_with(w),
            "expected `{w}…`, got `{line}`\nall: {lines:#?}"
        );
    }
}

fn dir_flag(guest_path: &str, host: PathBuf, rights: &str) -> [String; 2] {
    [
        "--dir".into(),
        format!("{guest_path}={}:{rights}", host.display()),
    ]
}

/// Case 1: A scoped handle reaches its paths with their rights and nothing else:
/// no write through `create` to an existing file, no write on a read-only
/// path, no rename that replaces a file in a create-only path.
#[tokio::test]
async fn case1_scoped_handles_keep_to_their_paths() {
    let tree = Tree::new();
    for d in ["reports", "uploads", "secret", "tmp"] {
        std::fs::create_dir_all(tree.path(&format!("root/{d}"))).unwrap();
    }
    std::fs::write(tree.path("root/secret/keys.txt"), "KEYS").unwrap();
    std::fs::write(tree.path("root/reports/r.txt"), "REPORT").unwrap();
    std::fs::write(tree.path("root/uploads/old.txt"), "OLD").unwrap();
    std::fs::write(tree.path("root/tmp/a.txt"), "A").unwrap();
    let grant = scoped(
        "data",
        tree.root(),
        &[
            ("reports", Rights::READ | Rights::LIST),
            ("uploads", Rights::CREATE),
            ("tmp", Rights::all()),
        ],
    );
    let mut p = Probe::start(&[grant]).await;
    p.expect(&[
        ("open data secret/keys.txt write,create F", "err:denied"),
        ("open data secret/keys.txt read F", "err:denied"),
        (
            "open data reports/r.txt read,write,create F",
            "err:denied:create",
        ),
        ("open data reports/r.txt write,create F", "err:denied"),
        ("write data reports/r.txt x", "err:denied"),
        ("read data reports/r.txt", "ok:REPORT"),
        ("rename data tmp/a.txt uploads/old.txt", "err:denied"),
        (
            "open data uploads/old.txt write,create F",
            "err:denied:write",
        ),
        ("write data uploads/old.txt x", "err:denied:write"),
        ("stat data uploads/old.txt", "err:denied"),
        // The drop box still takes new files.
        ("open data uploads/new.txt write,create N", "ok"),
        ("fwrite N fresh", "ok"),
        ("write data uploads/new2.txt fresh", "ok"),
        // Ancestors of the scope are not the scope.
        ("list data .", "err:denied"),
        ("open-dir data reports all R", "err:denied"),
        ("open-dir data reports read,list R", "ok"),
        ("read R r.txt", "ok:REPORT"),
        ("read R ../secret/keys.txt", "err:"),
    ])
    .await;
    assert_eq!(tree.read("root/secret/keys.txt").as_deref(), Some("KEYS"));
    assert_eq!(tree.read("root/reports/r.txt").as_deref(), Some("REPORT"));
    assert_eq!(tree.read("root/uploads/old.txt").as_deref(), Some("OLD"));
    assert_eq!(tree.read("root/tmp/a.txt").as_deref(), Some("A"));
    assert_eq!(tree.read("root/uploads/new.txt").as_deref(), Some("fresh"));
}

/// Case 1, through a link planted inside a scope entry: it leads nowhere the
/// entry's own directory does not contain.
#[tokio::test]
async fn case1_a_link_in_a_scope_entry_stays_in_the_entry() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/pub")).unwrap();
    std::fs::write(tree.path("root/secret.txt"), "SECRET").unwrap();
    symlink("../secret.txt", tree.path("root/pub/s")).unwrap();
    symlink("../secret.txt", tree.path("root/file-link")).unwrap();
    let grant = scoped(
        "data",
        tree.root(),
        &[("pub", Rights::all()), ("file-link", Rights::all())],
    );
    let mut p = Probe::start(&[grant]).await;
    p.expect(&[
        ("read data pub/s", "err:escape"),
        ("write data pub/s x", "err:escape"),
        ("read data file-link", "err:"),
        ("write data file-link x", "err:"),
        ("stat data file-link", "err:"),
    ])
    .await;
    assert_eq!(tree.read("root/secret.txt").as_deref(), Some("SECRET"));
}

/// Case 2: a plain command's `[dir."/data".paths]` holds as it does for an
/// app: only the listed paths, each with its rights, through descriptors
/// of their own (a link inside leads nowhere else; a listed file that is a
/// link is not followed); nothing above them is listed or stat'ed.
#[test]
fn case2_a_plain_command_keeps_to_its_scoped_paths() {
    let tree = Tree::new();
    for d in ["reports", "uploads", "secret"] {
        std::fs::create_dir_all(tree.path(&format!("root/{d}"))).unwrap();
    }
    std::fs::write(tree.path("root/secret/keys.txt"), "KEYS").unwrap();
    std::fs::write(tree.path("root/reports/r.txt"), "REPORT").unwrap();
    std::fs::write(tree.path("root/uploads/old.txt"), "OLD").unwrap();
    symlink("../secret/keys.txt", tree.path("root/reports/k")).unwrap();
    symlink("secret/keys.txt", tree.path("root/note")).unwrap();
    let out = std_probe_scoped(
        &tree,
        "\"reports\" = \"read,list\"\n\"uploads\" = \"create\"\n\"note\" = \"read,write\"\n",
        &[
            "read",
            "/data/reports/r.txt",
            "list",
            "/data/reports",
            "read",
            "/data/secret/keys.txt",
            "write",
            "/data/secret/keys.txt",
            "x",
            "write",
            "/data/reports/r.txt",
            "x",
            "read",
            "/data/reports/k",
            "read",
            "/data/reports/../secret/keys.txt",
            "create",
            "/data/uploads/new.txt",
            "write",
            "/data/uploads/old.txt",
            "x",
            "stat",
            "/data/uploads/old.txt",
            "rename",
            "/data/reports/r.txt",
            "/data/uploads/r.txt",
            "link",
            "/data/reports/r.txt",
            "/data/uploads/l.txt",
            "list",
            "/data",
            "stat",
            "/data",
            "read",
            "/data/note",
            "write",
            "/data/note",
            "x",
            "unveil",
            "/data",
            "reports",
            "read",
        ],
    );
    expect_lines(
        &out,
        &[
            "ok read REPORT",
            "ok list k,r.txt",
            "err permission-denied read",
            "err permission-denied write",
            "err permission-denied write",
            "err permission-denied read",
            "err permission-denied read",
            "ok create",
            "err permission-denied write",
            "err permission-denied stat",
            "err permission-denied rename",
            "err permission-denied link",
            "err permission-denied list",
            "err permission-denied stat",
            "err",
            "err",
            "err refused unveil",
        ],
    );
    assert_eq!(tree.read("root/secret/keys.txt").as_deref(), Some("KEYS"));
    assert_eq!(tree.read("root/reports/r.txt").as_deref(), Some("REPORT"));
    assert_eq!(tree.read("root/uploads/old.txt").as_deref(), Some("OLD"));
    assert!(tree.path("root/uploads/new.txt").exists());
    assert!(!tree.path("root/uploads/r.txt").exists() && !tree.path("root/uploads/l.txt").exists());
}

/// Case 3: A second `unveil` is taken inside the first: a link in the unveiled
/// part cannot lead the new view back out.
#[test]
fn case3_a_second_unveil_cannot_climb_out_through_a_link() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/pub")).unwrap();
    std::fs::create_dir_all(tree.path("root/secret")).unwrap();
    std::fs::write(tree.path("root/secret/s.txt"), "SECRET").unwrap();
    symlink("../secret", tree.path("root/pub/shortcut")).unwrap();
    let out = std_probe(
        &dir_flag("/data", tree.root(), "rw"),
        &[
            "unveil",
            "/data",
            "pub",
            "read,list",
            "unveil",
            "/data",
            "shortcut",
            "read,list",
            "read",
            "/data/pub/shortcut/s.txt",
            "read",
            "/data/secret/s.txt",
        ],
    );
    expect_lines(
        &out,
        &[
            "ok unveil /data pub",
            "err escape unveil",
            "err permission-denied read",
            "err permission-denied read",
        ],
    );
}

/// Case 4: A hard link or a rename never turns read access into write access,
/// on the command face and through two `to-descriptor` results.
#[test]
fn case4_links_and_renames_need_the_destinations_rights_at_the_source() {
    let tree = Tree::new();
    for d in ["in", "out", "box"] {
        std::fs::create_dir_all(tree.path(d)).unwrap();
    }
    std::fs::write(tree.path("in/secret.txt"), "IN").unwrap();
    std::fs::write(tree.path("out/f.txt"), "F").unwrap();
    std::fs::write(tree.path("box/old.txt"), "OLD").unwrap();
    let mut grants = Vec::new();
    grants.extend(dir_flag("/in", tree.path("in"), "read,list,create"));
    grants.extend(dir_flag("/out", tree.path("out"), "rw"));
    grants.extend(dir_flag("/box", tree.path("box"), "create"));
    let out = std_probe(
        &grants,
        &[
            "link",
            "/in/secret.txt",
            "/out/x",
            "append",
            "/out/x",
            "pwned",
            "rename",
            "/in/secret.txt",
            "/out/y",
            "rename",
            "/out/f.txt",
            "/box/old.txt",
            "link",
            "/out/f.txt",
            "/box/old.txt",
            "link",
            "/box/old.txt",
            "/out/z",
            "rename",
            "/out/f.txt",
            "/box/new.txt",
        ],
    );
    expect_lines(
        &out,
        &[
            "err permission-denied link",
            "err not-found append",
            "err permission-denied rename",
            "err permission-denied rename",
            "err",
            "err permission-denied link",
            "ok rename",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(tree.path("in/secret.txt")).unwrap(),
        "IN"
    );
    assert_eq!(
        std::fs::read_to_string(tree.path("box/old.txt")).unwrap(),
        "OLD"
    );
    assert!(!tree.path("out/x").exists() && !tree.path("out/z").exists());
}

#[tokio::test]
async fn case4_through_two_descriptors_in_an_app() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("out")).unwrap();
    let mut p = Probe::start(&[
        dir_at("a", &tree.root(), "ro"),
        dir_at("data", &tree.outside(), "rw"),
    ])
    .await;
    p.expect(&[
        ("wasi-hold a read,list IN", "ok"),
        ("wasi-hold data all OUT", "ok"),
        ("wasi-link IN hello.txt OUT x", "err:io:wasi not-permitted"),
        (
            "wasi-rename IN hello.txt OUT y",
            "err:io:wasi not-permitted",
        ),
        ("wasi-link OUT secret IN x", "err:io:wasi not-permitted"),
        // A weaker descriptor of the same grant is no way around it: the
        // guest still holds the strong handle.
        ("wasi-hold data create WEAK", "ok"),
        ("wasi-link IN hello.txt WEAK x", "err:io:wasi not-permitted"),
        (
            "wasi-rename IN hello.txt WEAK y",
            "err:io:wasi not-permitted",
        ),
        ("attenuate data create,remove DATA2", "ok"),
        ("wasi-hold DATA2 create,remove D2", "ok"),
        ("wasi-rename D2 secret WEAK z", "err:io:wasi not-permitted"),
        ("rename DATA2 secret z", "err:denied"),
    ])
    .await;
    assert!(!tree.path("outside/x").exists() && !tree.path("outside/y").exists());
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
}

/// Case 4, with a drop box: nothing in it is linked or renamed to where
/// it could be read.
#[tokio::test]
async fn case4_a_drop_box_lends_nothing_to_a_weaker_descriptor() {
    let tree = Tree::new();
    std::fs::write(tree.path("outside/alice.txt"), "ALICE").unwrap();
    let mut p = Probe::start(&[
        dir_at("box", &tree.outside(), "create"),
        dir_at("data", &tree.root(), "rw"),
    ])
    .await;
    p.expect(&[
        ("read box alice.txt", "err:denied"),
        ("wasi-hold box create BOX", "ok"),
        ("wasi-hold data create WEAK", "ok"),
        (
            "wasi-link BOX alice.txt WEAK stolen.txt",
            "err:io:wasi not-permitted",
        ),
        ("wasi-open BOX alice.txt none F", "err:io:wasi access"),
        ("read data stolen.txt", "err:not-found"),
    ])
    .await;
    assert_eq!(tree.read("outside/alice.txt").as_deref(), Some("ALICE"));
}

/// A scoped handle on the way to its paths cannot climb above itself,
/// and a child it is shared with neither.
#[tokio::test]
async fn a_scoped_handle_never_climbs_above_itself() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/x/y")).unwrap();
    std::fs::create_dir_all(tree.path("root/z")).unwrap();
    std::fs::write(tree.path("root/z/secret.txt"), "Z").unwrap();
    let grant = scoped(
        "data",
        tree.root(),
        &[("x/y", Rights::READ | Rights::LIST), ("z", Rights::all())],
    );
    let mut p = Probe::start(&[grant, support::spawner("sp")]).await;
    p.expect(&[
        ("open-dir data x read,list X", "ok"),
        ("read X ../z/secret.txt", "err:escape"),
        ("open-dir X .. read,list UP", "err:escape"),
        ("open-dir X ../z read,list UP", "err:escape"),
        (
            "spawn sp self budget X c1 open-dir X .. read,list UP;read X ../z/secret.txt",
            "ok",
        ),
        ("wait c1", "ok:finished:err:escape"),
    ])
    .await;
}

/// Case 3 of the attack on pledges: a process that pledged the file system
/// away cannot have a child use it, whether it spawns the child after the
/// pledge or before.
#[tokio::test]
async fn a_pledge_reaches_the_handles_given_to_children() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw"), support::spawner("sp")]).await;
    p.expect(&[
        (
            "spawn sp self budget data early recv;read data hello.txt",
            "ok",
        ),
        ("pledge-fs", "ok"),
        ("read data hello.txt", "err:refused"),
        (
            "spawn sp self budget data late read data hello.txt;write data pwn.txt x",
            "ok",
        ),
        ("wait late", "ok:finished:err:refused"),
        ("psend early go", "ok"),
        ("wait early", "ok:finished:ok:go\nerr:refused"),
    ])
    .await;
    assert!(!tree.path("root/pwn.txt").exists());
}

/// Nested paths: a narrower path below a wider one that could move it
/// cannot hold fewer rights (the wider one could move it out from under
/// its own name), so such a grant is refused at start rather than widened.
#[tokio::test]
async fn a_narrower_path_below_a_wider_one_is_refused_at_start() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/a/b/c")).unwrap();
    let grant = scoped(
        "data",
        tree.root(),
        &[("a", Rights::all()), ("a/b/c", Rights::READ | Rights::LIST)],
    );
    let err = support::probe_component()
        .start(
            &[grant],
            &capbroker::Limits::default(),
            support::components(),
        )
        .await
        .err()
        .expect("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("a/b/c") && msg.contains("fewer rights"),
        "{msg}"
    );
    // Even one that moves nothing: a link inside it already made could
    // reach the narrower path by another name.
    let grant = scoped(
        "data",
        tree.root(),
        &[("a", Rights::LIST), ("a/b/c", Rights::READ)],
    );
    assert!(support::probe_component()
        .start(
            &[grant],
            &capbroker::Limits::default(),
            support::components()
        )
        .await
        .is_err());
    // A narrower path may add rights.
    let grant = scoped(
        "data",
        tree.root(),
        &[("a", Rights::LIST), ("a/b/c", Rights::READ | Rights::LIST)],
    );
    let mut p = Probe::start(&[grant]).await;
    p.expect(&[
        ("list data a/b", "ok:c=dir"),
        ("read data a/x", "err:denied:read"),
    ])
    .await;
}

/// Case 4, across two grants over the same files: a link inside the
/// weaker, outer one into the part a stronger grant also reaches needs the
/// stronger one's rights, on both faces.
#[test]
fn case4_overlapping_grants_lend_nothing() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("x/sub")).unwrap();
    std::fs::write(tree.path("x/secret.txt"), "SECRET").unwrap();
    let mut grants = Vec::new();
    grants.extend(dir_flag("/x", tree.path("x"), "read,list,create"));
    grants.extend(dir_flag("/s", tree.path("x/sub"), "rw"));
    let out = std_probe(
        &grants,
        &[
            "link",
            "/x/secret.txt",
            "/x/sub/alias.txt",
            "write",
            "/s/alias.txt",
            "PWNED",
        ],
    );
    expect_lines(&out, &["err permission-denied link", "ok write"]);
    assert_eq!(
        std::fs::read_to_string(tree.path("x/secret.txt")).unwrap(),
        "SECRET"
    );
}

/// Case 4, the other way round: a link into a weak grant that lies inside
/// a strong one hands the file to the strong one, so it needs its rights.
#[test]
fn case4_a_grant_inside_a_stronger_one_lends_nothing() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("x/sub")).unwrap();
    std::fs::create_dir_all(tree.path("y")).unwrap();
    std::fs::write(tree.path("y/secret.txt"), "SECRET").unwrap();
    let mut grants = Vec::new();
    grants.extend(dir_flag("/big", tree.path("x"), "rw"));
    grants.extend(dir_flag("/in", tree.path("x/sub"), "create,remove"));
    grants.extend(dir_flag("/box", tree.path("y"), "create,remove"));
    let out = std_probe(
        &grants,
        &[
            "link",
            "/box/secret.txt",
            "/in/alias.txt",
            "rename",
            "/box/secret.txt",
            "/in/moved.txt",
            "read",
            "/big/sub/alias.txt",
            "read",
            "/big/sub/moved.txt",
        ],
    );
    expect_lines(
        &out,
        &[
            "err permission-denied link",
            "err permission-denied rename",
            "err not-found read",
            "err not-found read",
        ],
    );
    assert_eq!(tree.read("y/secret.txt").as_deref(), Some("SECRET"));
}

#[tokio::test]
async fn case4_overlapping_grants_lend_nothing_in_an_app() {
    let tree = Tree::new();
    let mut p = Probe::start(&[
        dir_at("box", &tree.root(), "create"),
        dir_at("b", &tree.path("root/sub"), "rw"),
    ])
    .await;
    p.expect(&[
        ("wasi-hold box create D", "ok"),
        (
            "wasi-link D hello.txt D sub/alias.txt",
            "err:io:wasi not-permitted",
        ),
        ("read b alias.txt", "err:not-found"),
    ])
    .await;
}

/// Case 2: a `.` path in a plain program's scope holds for the preopen's
/// own descriptor too.
#[test]
fn case2_a_scoped_preopen_holds_its_dot_entry() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/reports")).unwrap();
    let out = std_probe_scoped(
        &tree,
        "\".\" = \"read\"\n\"reports\" = \"read,list\"\n",
        &[
            "list",
            "/data",
            "preopen-list",
            "/data",
            "read",
            "/data/hello.txt",
            "list",
            "/data/reports",
        ],
    );
    expect_lines(
        &out,
        &[
            "err permission-denied list",
            "err permission-denied preopen-list",
            "ok read hello",
            "ok list",
        ],
    );
}

/// Learning a rename grants its source what the move needs, not what the
/// grant could give: the next run cannot read or write it.
#[test]
fn learning_a_rename_grants_no_more_than_it_needs() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/inbox")).unwrap();
    std::fs::create_dir_all(tree.path("root/out")).unwrap();
    std::fs::write(tree.path("root/inbox/a.txt"), "A").unwrap();
    let learned = tree.path("learned.toml");
    let probe = guest("probe");
    let out = support::capbroker(&[
        "run",
        "--learn",
        learned.to_str().unwrap(),
        "--dir",
        &format!("data={}", tree.root().display()),
        probe.to_str().unwrap(),
        "rename data inbox/a.txt out/a.txt",
    ]);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    std::fs::rename(tree.path("root/out/a.txt"), tree.path("root/inbox/a.txt")).unwrap();
    let out = support::capbroker(&[
        "run",
        "-m",
        learned.to_str().unwrap(),
        "read data inbox/a.txt",
        "write data inbox/a.txt overwritten",
        "rename data inbox/a.txt out/a.txt",
    ]);
    let stdout = support::text(&out.stdout);
    assert!(out.status.success(), "{}", support::text(&out.stderr));
    assert!(
        stdout.contains("read data inbox/a.txt => err:denied"),
        "{stdout}"
    );
    assert!(
        stdout.contains("write data inbox/a.txt overwritten => err:denied"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rename data inbox/a.txt out/a.txt => ok"),
        "{stdout}"
    );
    assert_eq!(tree.read("root/out/a.txt").as_deref(), Some("A"));
}

/// `get-directories` honours drops: a preopen the program dropped every
/// descriptor of is not handed out again.
#[test]
fn a_dropped_preopen_is_not_handed_out_again() {
    let tree = Tree::new();
    let out = std_probe(&dir_flag("/data", tree.root(), "ro"), &["regain"]);
    expect_lines(&out, &["ok regain first=1 again="]);
}

/// A full handle table is a limit the guest reached: opening one more
/// descriptor is an error value (`insufficient-memory`), not a trap.
#[tokio::test]
async fn a_full_table_refuses_a_descriptor_and_the_guest_goes_on() {
    let tree = Tree::new();
    let limits = capbroker::Limits {
        max_handles: 64,
        ..capbroker::Limits::default()
    };
    let mut p = Probe::start_with(&[dir_at("data", &tree.root(), "rw")], &limits).await;
    p.expect(&[
        ("wasi-hold data read D", "ok"),
        (
            "wasi-fill D hello.txt",
            "err:io:wasi insufficient-memory after",
        ),
        ("wasi-read data read hello.txt", "ok:hello"),
    ])
    .await;
}

/// Case 3, with preopens nested under the unveiled one: they lead to its
/// files too, so they are narrowed with it (inside the view) or closed.
#[test]
fn case3_unveil_reaches_nested_preopens() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/secret")).unwrap();
    std::fs::create_dir_all(tree.path("root/up")).unwrap();
    std::fs::write(tree.path("root/secret/s.txt"), "S").unwrap();
    std::fs::write(tree.path("root/up/u.txt"), "U").unwrap();
    let mut grants = Vec::new();
    grants.extend(dir_flag("/data", tree.root(), "rw"));
    grants.extend(dir_flag("/data/secret", tree.path("root/secret"), "rw"));
    grants.extend(dir_flag("/data/up", tree.path("root/up"), "rw"));
    let out = std_probe(
        &grants,
        &[
            "unveil",
            "/data",
            "up",
            "read,list",
            "read",
            "/data/secret/s.txt",
            "write",
            "/data/secret/n.txt",
            "x",
            "read",
            "/data/up/u.txt",
            "write",
            "/data/up/n.txt",
            "x",
        ],
    );
    expect_lines(
        &out,
        &[
            "ok unveil /data up",
            "err permission-denied read",
            "err permission-denied write",
            "ok read U",
            "err permission-denied write",
        ],
    );
    assert!(!tree.path("root/secret/n.txt").exists() && !tree.path("root/up/n.txt").exists());
}

/// Case 3, nested preopens found by what they are now, not where they
/// were: one moved out of the way before the unveil is closed with it.
#[test]
fn case3_unveil_finds_nested_preopens_by_identity() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/secret")).unwrap();
    std::fs::write(tree.path("root/secret/s.txt"), "S").unwrap();
    let mut grants = Vec::new();
    grants.extend(dir_flag("/data", tree.root(), "rw"));
    grants.extend(dir_flag("/data/secret", tree.path("root/secret"), "rw"));
    let out = std_probe(
        &grants,
        &[
            "rename",
            "/data/./secret",
            "/data/moved",
            "mkdir",
            "/data/./secret",
            "unveil",
            "/data",
            "secret",
            "read,write,create,list",
            "write",
            "/data/secret/n.txt",
            "x",
            "read",
            "/data/secret/s.txt",
        ],
    );
    expect_lines(
        &out,
        &[
            "ok rename",
            "ok mkdir",
            "ok unveil /data secret",
            "err permission-denied write",
            "err permission-denied read",
        ],
    );
    assert!(!tree.path("root/moved/n.txt").exists());
}

/// Case 3, a preopen named under the unveiled one but elsewhere on the
/// host: its paths are the unveiled preopen's paths too, so it closes; and
/// two preopens by one name are refused at start.
#[test]
fn case3_unveil_reaches_preopens_named_under_it() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/uploads")).unwrap();
    std::fs::write(tree.path("outside/token"), "T").unwrap();
    let mut grants = Vec::new();
    grants.extend(dir_flag("/data", tree.root(), "rw"));
    grants.extend(dir_flag("/data/cache", tree.outside(), "rw"));
    let out = std_probe(
        &grants,
        &[
            "unveil",
            "/data",
            "uploads",
            "read,list",
            "read",
            "/data/cache/token",
            "write",
            "/data/cache/new",
            "x",
        ],
    );
    expect_lines(
        &out,
        &[
            "ok unveil /data uploads",
            "err permission-denied read",
            "err permission-denied write",
        ],
    );
    assert!(!tree.path("outside/new").exists());
    let mut twice = Vec::new();
    twice.extend(dir_flag("/data", tree.root(), "ro"));
    twice.extend(dir_flag("/data/", tree.outside(), "ro"));
    let out = std_probe(&twice, &["read", "/data/hello.txt"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("two directories granted at one guest path"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Case 1, moving a file between scoped paths by way of a renamed
/// directory or a link: a path's text may name one entry while it lands in
/// another's directory, so a move needs at its source what every path of
/// the scope gives (here: `write`, which the source lacks).
#[tokio::test]
async fn case1_no_move_into_a_richer_scoped_path() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/a/b/c")).unwrap();
    std::fs::write(tree.path("root/a/secret"), "SECRET").unwrap();
    symlink("b/c", tree.path("root/a/l")).unwrap();
    let outer = Rights::READ | Rights::LIST | Rights::CREATE | Rights::REMOVE;
    let grant = scoped(
        "data",
        tree.root(),
        &[("a", outer), ("a/b/c", outer | Rights::WRITE)],
    );
    let mut p = Probe::start(&[grant]).await;
    p.expect(&[
        ("write data a/secret PWNED", "err:denied:write"),
        ("rename data a/b a/z", "err:denied:write"),
        ("rename data a/secret a/l/secret", "err:denied:write"),
        ("rename data a/secret a/b/c/secret", "err:denied:write"),
    ])
    .await;
    assert_eq!(tree.read("root/a/secret").as_deref(), Some("SECRET"));
    assert!(tree.path("root/a/b/c").is_dir());
}

/// The same on a plain program's scoped preopen.
#[test]
fn case2_no_move_into_a_richer_scoped_path() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/a/b/c")).unwrap();
    std::fs::write(tree.path("root/a/secret"), "SECRET").unwrap();
    let out = std_probe_scoped(
        &tree,
        "\"a\" = \"read,list,create,remove\"\n\"a/b/c\" = \"read,list,create,remove,write\"\n",
        &[
            "rename",
            "/data/a/b",
            "/data/a/z",
            "rename",
            "/data/a/secret",
            "/data/a/b/c/secret",
            "write",
            "/data/a/b/c/secret",
            "PWNED",
        ],
    );
    expect_lines(
        &out,
        &[
            "err permission-denied rename",
            "err permission-denied rename",
            "ok write",
        ],
    );
    assert_eq!(tree.read("root/a/secret").as_deref(), Some("SECRET"));
}

/// A file is never made reachable beyond a revocation: a link or rename
/// from a revocable handle into one that answers to no such revocation is
/// refused.
#[tokio::test]
async fn a_link_does_not_outlive_a_revocation() {
    let tree = Tree::new();
    let mut p = Probe::start(&[
        dir_at("data", &tree.root(), "rw"),
        dir_at("b", &tree.outside(), "rw"),
    ])
    .await;
    p.expect(&[
        ("revocable data rdata rev", "ok"),
        ("wasi-hold rdata all D", "ok"),
        ("wasi-hold b all E", "ok"),
        ("wasi-link D hello.txt E kept", "err:io:wasi not-permitted"),
        (
            "wasi-rename D hello.txt E kept",
            "err:io:wasi not-permitted",
        ),
        // Within the revocable handle too: another handle may reach the
        // new name (here `data` itself).
        (
            "wasi-link D hello.txt D sub/kept",
            "err:io:wasi not-permitted",
        ),
        (
            "wasi-rename D hello.txt D sub/kept",
            "err:io:wasi not-permitted",
        ),
        ("rename rdata hello.txt sub/kept", "err:refused"),
        ("wasi-hold data all F", "ok"),
        ("wasi-link F hello.txt E kept", "ok"),
    ])
    .await;
}

/// Case 5: Streams answer to the pledge, whatever became of their descriptor.
#[tokio::test]
async fn case5_streams_outlive_neither_their_descriptor_nor_a_pledge() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("open data hello.txt read F0", "ok"),
        ("wasi-hold data all D", "ok"),
        ("wasi-open D hello.txt read,write F", "ok"),
        ("wasi-instream F IN", "ok"),
        ("wasi-outstream F OUT", "ok"),
        ("wasi-drop F", "ok"),
        ("wasi-sread IN", "ok:hello"),
        ("pledge-fs", "ok"),
        ("wasi-sread IN", "err"),
        ("wasi-swrite OUT pwned", "err"),
        ("read data hello.txt", "err:refused"),
        ("fread F0 5", "err:refused"),
    ])
    .await;
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
}

/// Case 5, on the command face: a stream kept after its descriptor was
/// dropped answers to `unveil` and to the pledge.
#[test]
fn case5_an_orphaned_stream_answers_to_unveil_and_pledge() {
    let tree = Tree::new();
    let grant = dir_flag("/data", tree.root(), "rw");
    let out = std_probe(
        &grant,
        &[
            "orphan",
            "/data",
            "hello.txt",
            "unveil",
            "/data",
            "sub",
            "read,list",
            "orphan-read",
        ],
    );
    expect_lines(
        &out,
        &[
            "ok orphan",
            "ok unveil /data sub",
            "err permission-denied orphan-read",
        ],
    );
    let out = std_probe(
        &grant,
        &[
            "orphan",
            "/data",
            "sub/inner.txt",
            "unveil",
            "/data",
            "sub",
            "read",
            "orphan-read",
        ],
    );
    expect_lines(
        &out,
        &["ok orphan", "ok unveil /data sub", "ok orphan-read inner"],
    );
    let log = tree.path("audit.jsonl");
    let mut with_log = vec!["--audit".to_string(), log.display().to_string()];
    with_log.extend(grant.iter().cloned());
    let out = std_probe(
        &with_log,
        &[
            "orphan",
            "/data",
            "sub/inner.txt",
            "pledge",
            "fs",
            "orphan-read",
        ],
    );
    expect_lines(
        &out,
        &[
            "ok orphan",
            "ok pledge fs",
            "err permission-denied orphan-read",
        ],
    );
    // The refusal of the stream is recorded like any other.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"deny\"") && l.contains("stream read")),
        "{log}"
    );
}

/// Case 6: `to-descriptor` answers to the pledge, and gives its host file back
/// when the guest drops the descriptor.
#[tokio::test]
async fn case6_to_descriptor_after_a_pledge_and_without_leaking() {
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[("wasi-churn data 10", "ok")]).await;
    let before = open_fds();
    p.expect(&[("wasi-churn data 3000", "ok")]).await;
    let after = open_fds();
    // Other tests in this process open files too; a leak would be 3000.
    assert!(after < before + 200, "{before} -> {after} open files");
    p.expect(&[
        ("pledge-fs", "ok"),
        ("wasi-hold data read D", "err:refused"),
        ("wasi-read data read hello.txt", "err:refused"),
    ])
    .await;
}

/// Case 7: After `unveil`, what lies above the unveiled part cannot be listed
/// or stat'ed; a create-only drop box cannot stat what is in it.
#[test]
fn case7_nothing_above_an_unveil_and_no_metadata_in_a_drop_box() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("box")).unwrap();
    std::fs::write(tree.path("box/old.txt"), "OLD").unwrap();
    let log = tree.path("audit.jsonl");
    let mut grants = vec!["--audit".to_string(), log.display().to_string()];
    grants.extend(dir_flag("/data", tree.root(), "rw"));
    grants.extend(dir_flag("/box", tree.path("box"), "create"));
    // The same folder for someone who may write in it.
    grants.extend(dir_flag("/inbox", tree.path("box"), "rw"));
    let out = std_probe(
        &grants,
        &[
            "stat",
            "/box/old.txt",
            "list",
            "/box",
            "create",
            "/box/new.txt",
            // std makes a new file for reading and writing; what the drop
            // box made, it may fill, but not read what others write there.
            "hold-new",
            "/box/held.txt",
            "write",
            "/inbox/held.txt",
            "SECRET",
            "hold-read",
            "hold-write",
            "mine",
            "unveil",
            "/data",
            "sub",
            "read,list",
            "stat",
            "/data",
            "list",
            "/data",
            "stat",
            "/data/hello.txt",
            "stat",
            "/data/sub/inner.txt",
        ],
    );
    expect_lines(
        &out,
        &[
            "err permission-denied stat",
            "err permission-denied list",
            "ok create",
            "ok hold-new",
            "ok write",
            "err permission-denied hold-read",
            "ok hold-write",
            "ok unveil /data sub",
            "err permission-denied stat",
            "err permission-denied list",
            "err permission-denied stat",
            "ok stat 5",
        ],
    );
    // The WASI face's refusals are audited with the path and what was
    // missing, like capbroker's own.
    let log = std::fs::read_to_string(&log).unwrap();
    let denial = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "deny" && e["path"] == "old.txt")
        .unwrap_or_else(|| panic!("no denial of old.txt in:\n{log}"));
    assert_eq!(denial["handle"], "/box", "{denial}");
    assert_eq!(denial["missing"], "read,list", "{denial}");
    assert_eq!(
        std::fs::read_to_string(tree.path("box/held.txt")).unwrap(),
        "mineET"
    );
}

/// The rights each `fs` and `wasi:filesystem` path operation needs, as
/// refused cases with one right removed at a time. Written by hand, not
/// read from the core's table.
#[tokio::test]
async fn rights_matrix() {
    // (command, rights whose loss alone refuses it, expected refusal)
    #[rustfmt::skip]
    let fs: &[(&str, &[&str], &str)] = &[
        ("read H hello.txt", &["read"], "err:denied:read"),
        ("write H hello.txt x", &["write"], "err:denied:write"),
        ("write H made.txt x", &["create"], "err:denied:create"),
        ("open H hello.txt read F", &["read"], "err:denied:read"),
        ("open H hello.txt write F", &["write"], "err:denied:write"),
        ("open H hello.txt append F", &["write"], "err:denied:write"),
        ("open H new.txt write,create,exclusive F", &["create"], "err:denied:create"),
        ("open H hello.txt read,write,create F", &["read", "write", "create"], "err:denied"),
        ("list H .", &["list"], "err:denied:list"),
        ("stat H hello.txt", &[], ""),
        ("mkdir H made", &["create"], "err:denied:create"),
        ("rm H gone.txt", &["remove"], "err:denied:remove"),
        ("rmdir H empty", &["remove"], "err:denied:remove"),
        // A rename needs at its source every right of the destination's
        // grant: here all of them.
        ("rename H moved.txt moved2.txt", &["read", "write", "create", "list", "remove"], "err:denied"),
        ("open-dir H sub all S", &["read", "write", "create", "list", "remove"], "err:denied"),
    ];
    #[rustfmt::skip]
    let wasi: &[(&str, &[&str], &str)] = &[
        ("wasi-open D hello.txt read F", &["read"], "err:io:wasi access"),
        ("wasi-open D hello.txt write F", &["write"], "err:io:wasi not-permitted"),
        ("wasi-open D hello.txt truncate,write F", &["write"], "err:io:wasi not-permitted"),
        ("wasi-open D wnew.txt create,write F", &["create"], "err:io:wasi not-permitted"),
        ("wasi-stat D hello.txt", &[], ""),
        ("wasi-list D", &["list"], "err:io:wasi access"),
        ("wasi-link D hello.txt D linked.txt", &["read", "write", "create", "list", "remove"], "err:io:wasi not-permitted"),
        ("wasi-rename D wmoved.txt D wmoved2.txt", &["read", "write", "create", "list", "remove"], "err:io:wasi not-permitted"),
        ("wasi-open D hello.txt none NF", &["read"], "err:io:wasi access"),
        ("wasi-mkdir D wmade", &["create"], "err:io:wasi not-permitted"),
        ("wasi-symlink D hello.txt wlink", &["create"], "err:io:wasi not-permitted"),
        ("wasi-readlink D link", &["read"], "err:io:wasi access"),
        ("wasi-unlink D wgone.txt", &["remove"], "err:io:wasi not-permitted"),
        ("wasi-rmdir D wempty", &["remove"], "err:io:wasi not-permitted"),
        ("wasi-settimes D hello.txt", &["write"], "err:io:wasi not-permitted"),
        ("wasi-open D hello.txt read,write WF", &["read", "write"], "err:io:wasi"),
        ("wasi-setsize WF 2", &["read", "write"], "err"),
        ("wasi-open D sub read,directory SUB", &[], ""),
        ("wasi-stat SUB .", &[], ""),
    ];
    for (_, name) in capbroker::core::rights::RIGHT_NAMES {
        let tree = Tree::new();
        std::fs::write(tree.path("root/gone.txt"), "").unwrap();
        std::fs::write(tree.path("root/moved.txt"), "").unwrap();
        std::fs::write(tree.path("root/wmoved.txt"), "").unwrap();
        std::fs::write(tree.path("root/wgone.txt"), "").unwrap();
        std::fs::create_dir_all(tree.path("root/wempty")).unwrap();
        symlink("hello.txt", tree.path("root/link")).unwrap();
        std::fs::create_dir_all(tree.path("root/empty")).unwrap();
        let rights: Vec<&str> = capbroker::core::rights::RIGHT_NAMES
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| *n != name)
            .collect();
        let rights = rights.join(",");
        let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
        p.expect(&[
            (&format!("attenuate data {rights} H"), "ok"),
            (&format!("wasi-hold data {rights} D"), "ok"),
        ])
        .await;
        for (command, refused_by, refusal) in fs.iter().chain(wasi) {
            let got = p.step(command).await;
            if refused_by.contains(&name) {
                assert!(
                    got.starts_with(refusal),
                    "without {name}: `{command}` gave `{got}`, expected `{refusal}`"
                );
            } else {
                assert!(
                    got.starts_with("ok"),
                    "without {name}: `{command}` gave `{got}`, expected ok"
                );
            }
        }
    }
}

/// The same tests, in a child process where `openat2` is unavailable.
#[test]
fn the_same_without_openat2() {
    support::rerun_without_openat2("the_same_without_openat2");
}

/// In the child above, `openat2` really is gone.
#[test]
fn openat2_is_as_expected() {
    support::assert_openat2_as_expected();
}

/// A FIFO in a granted folder is refused on the WASI face as on
/// capbroker's own: opening it would block a host thread for good.
#[test]
fn a_fifo_is_refused_not_opened() {
    let tree = Tree::new();
    let fifo = std::ffi::CString::new(tree.path("root/fifo").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .arg("run")
        .args(dir_flag("/d", tree.root(), "ro"))
        .arg(guest("std-probe"))
        .args(["read", "/d/fifo", "read", "/d/hello.txt"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A regression would hang: give it 30 s, then fail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("opening a FIFO blocked the broker");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    expect_lines(&out, &["err other read", "ok read hello"]);
}
