//! Invariant 4, confinement: no path leaves a directory handle. `..`,
//! absolute paths, symbolic links (old ones, new ones, ones swapped in during
//! use, ones whose target ends in `/`), a directory moved out from under a
//! sub-handle, and renames out of the handle are all refused.
//!
//! Every test here runs twice: as is (Linux resolves with `openat2` where it
//! can) and in a child process where `openat2` fails with ENOSYS, so that
//! cap-std's own resolver is exercised as well.

mod support;

use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::{dir_at, Probe, Tree};

#[tokio::test]
async fn dot_dot_never_leaves_the_handle() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("read data sub/../hello.txt", "ok:hello"),
        ("read data ../outside/secret", "err:escape"),
        ("read data sub/../../outside/secret", "err:escape"),
        (
            "read data ./sub/deeper/../../../outside/secret",
            "err:escape",
        ),
        ("list data ..", "err:escape"),
        ("stat data ../outside", "err:escape"),
        ("open-dir data .. read D", "err:escape"),
        ("open-dir data sub all S", "ok"),
        ("read S ../hello.txt", "err:escape"),
        ("write data ../outside/new x", "err:escape"),
        ("mkdir data ../outside/made", "err:escape"),
        ("rm data ../outside/secret", "err:escape"),
        ("rename data hello.txt ../outside/stolen", "err:escape"),
        ("rename data ../outside/secret stolen", "err:escape"),
    ])
    .await;
    assert_eq!(tree.read("outside/secret").as_deref(), Some("SECRET"));
    assert!(!tree.path("outside/new").exists() && !tree.path("outside/stolen").exists());
    assert!(!tree.path("outside/made").exists() && !tree.path("root/stolen").exists());
}

#[tokio::test]
async fn absolute_paths_are_refused() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    let secret = tree.path("outside/secret");
    let inside = tree.root().join("hello.txt");
    p.expect(&[
        (&format!("read data {}", secret.display()), "err:escape"),
        (&format!("read data {}", inside.display()), "err:escape"),
        ("read data /etc/passwd", "err:escape"),
        ("list data /", "err:escape"),
        ("open-dir data / read D", "err:escape"),
        (&format!("write data {} x", secret.display()), "err:escape"),
    ])
    .await;
    assert_eq!(tree.read("outside/secret").as_deref(), Some("SECRET"));
}

#[tokio::test]
async fn symlinks_pointing_outside_are_refused() {
    let tree = Tree::new();
    symlink("../outside/secret", tree.path("root/rel")).unwrap();
    symlink(tree.path("outside/secret"), tree.path("root/abs")).unwrap();
    symlink("../outside", tree.path("root/dirlink")).unwrap();
    // GHSA-hp8f-xmx4-4qrg: a target ending in `/` once defeated O_NOFOLLOW
    // in cap-std's fallback resolver.
    symlink("../outside/", tree.path("root/slash")).unwrap();
    symlink(
        format!("{}/", tree.outside().display()),
        tree.path("root/absslash"),
    )
    .unwrap();
    symlink("sub/inner.txt", tree.path("root/fine")).unwrap();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("read data fine", "ok:inner"),
        ("read data rel", "err:escape"),
        ("read data abs", "err:escape"),
        ("read data dirlink/secret", "err:escape"),
        ("read data slash/secret", "err:escape"),
        ("read data absslash/secret", "err:escape"),
        ("stat data slash", "err:escape"),
        ("stat data absslash", "err:escape"),
        ("list data slash", "err:escape"),
        ("list data slash/", "err:escape"),
        ("open-dir data slash read D", "err:escape"),
        ("open-dir data absslash/ read D", "err:escape"),
        ("open-dir data dirlink read D", "err:escape"),
        ("write data rel overwritten", "err:escape"),
        ("write data dirlink/new x", "err:escape"),
        ("open data slash/secret read F", "err:escape"),
        ("mkdir data slash/made", "err:escape"),
        (
            "list data .",
            "ok:abs=symlink,absslash=symlink,dirlink=symlink,fine=symlink,",
        ),
    ])
    .await;
    assert_eq!(tree.read("outside/secret").as_deref(), Some("SECRET"));
    assert!(!tree.path("outside/new").exists() && !tree.path("outside/made").exists());
}

#[tokio::test]
async fn symlinks_made_after_the_handle_are_refused() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("open-dir data sub all S", "ok"),
        ("read data late", "err:not-found"),
    ])
    .await;
    symlink("../outside/secret", tree.path("root/late")).unwrap();
    symlink("../../outside", tree.path("root/sub/up")).unwrap();
    p.expect(&[
        ("read data late", "err:escape"),
        ("read S up/secret", "err:escape"),
        ("open-dir S up read D", "err:escape"),
    ])
    .await;
}

#[tokio::test]
async fn a_symlink_swapped_in_during_use_never_reaches_outside() {
    let tree = Tree::new();
    std::fs::write(tree.path("outside/f"), "SECRET").unwrap();
    std::fs::create_dir(tree.path("root/flip")).unwrap();
    std::fs::write(tree.path("root/flip/f"), "inside").unwrap();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;

    // A host thread swaps `flip` between a real directory and a link to
    // outside, as fast as it can, while the guest reads `flip/f`.
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let flipper = {
        let (stop, swaps) = (stop.clone(), swaps.clone());
        let root = tree.root();
        let outside = tree.outside();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(root.join("flip"), root.join("flip.real")).unwrap();
                symlink(&outside, root.join("flip")).unwrap();
                std::fs::remove_file(root.join("flip")).unwrap();
                std::fs::rename(root.join("flip.real"), root.join("flip")).unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // On a busy machine the thread may start late: read until it has
    // swapped often enough for the race to mean something.
    let mut got = String::new();
    for _ in 0..50 {
        got += &p.step("read-loop data flip/f 3000").await;
        got += ",";
        if swaps.load(Ordering::Relaxed) > 10 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    let swaps = swaps.load(Ordering::Relaxed);
    assert!(swaps > 10, "the race barely ran ({swaps} swaps)");
    assert!(!got.contains("SECRET"), "a read reached outside: {got}");
    assert!(got.contains("ok=inside"), "no read succeeded at all: {got}");
    assert!(got.contains("escape#"), "no read ever met the link: {got}");
}

#[tokio::test]
async fn a_directory_moved_out_from_under_a_sub_handle_stays_confined() {
    let tree = Tree::new();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[("open-dir data sub all S", "ok"), ("drop data", "ok")])
        .await;
    // `sub` now sits next to `secret`: its `..` is `outside`.
    std::fs::rename(tree.path("root/sub"), tree.path("outside/sub")).unwrap();
    p.expect(&[
        ("read S inner.txt", "ok:inner"),
        ("read S ../secret", "err:escape"),
        ("list S ..", "err:escape"),
        ("open-dir S .. read D", "err:escape"),
        ("rename S inner.txt ../moved", "err:escape"),
        ("read S deeper/../../secret", "err:escape"),
    ])
    .await;
    assert!(tree.path("outside/sub/inner.txt").exists() && !tree.path("outside/moved").exists());
}

/// Trailing slashes (the class of GHSA-vqjp-4c8c-hfgg, which wasmtime
/// fixed in its own copy of cap-primitives): a path or a link target that
/// ends in `/` never leads a rename, a removal, a creation or an open
/// outside the handle, on capbroker's `fs` face and through a WASI
/// descriptor made from it.
#[tokio::test]
async fn trailing_slashes_never_lead_outside() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("outside/d")).unwrap();
    symlink("../outside/", tree.path("root/slash")).unwrap();
    symlink("../outside/d", tree.path("root/dlink")).unwrap();
    symlink("../outside/secret", tree.path("root/flink")).unwrap();
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("rename data hello.txt slash/", "err"),
        ("rename data hello.txt dlink/", "err"),
        ("rename data sub/ slash/sub", "err"),
        ("rmdir data dlink/", "err"),
        ("rmdir data slash/d/", "err"),
        ("rm data flink/", "err"),
        ("rm data slash/secret", "err"),
        ("mkdir data dlink/made/", "err"),
        ("mkdir data slash/made/", "err"),
        ("read data flink/", "err"),
        ("write data slash/secret x", "err"),
        ("write data flink/ x", "err"),
        ("open-dir data dlink/ read D", "err"),
        ("list data dlink/", "err"),
        ("wasi-hold data all W", "ok"),
        ("wasi-rename W hello.txt W dlink/", "err"),
        ("wasi-open W slash/secret read F", "err"),
        ("wasi-open W dlink/ read,directory F", "err"),
        // Renaming a link by a name with a trailing slash moves (or
        // refuses to move) the link, never what it points to.
        ("rename data dlink/ moved", ""),
        ("rename data slash/ moved2", ""),
        ("rename data flink/ moved3", ""),
        ("wasi-rename W dlink/ W moved4", ""),
        ("read data hello.txt", "ok:hello"),
    ])
    .await;
    assert_eq!(tree.read("outside/secret").as_deref(), Some("SECRET"));
    assert!(tree.path("outside/d").is_dir());
    for gone in [
        "outside/hello.txt",
        "outside/d/hello.txt",
        "outside/made",
        "outside/d/made",
        "outside/sub",
    ] {
        assert!(!tree.path(gone).exists(), "{gone}");
    }
    // The links themselves may be renamed or removed (never what they
    // point to), so only what is outside is checked.
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
