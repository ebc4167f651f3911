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
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::{dir_at, Probe, Tree};

const NO_OPENAT2: &str = "CAPBROKER_TEST_NO_OPENAT2";

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
    let flipper = {
        let stop = stop.clone();
        let root = tree.root();
        let outside = tree.outside();
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(root.join("flip"), root.join("flip.real")).unwrap();
                symlink(&outside, root.join("flip")).unwrap();
                std::fs::remove_file(root.join("flip")).unwrap();
                std::fs::rename(root.join("flip.real"), root.join("flip")).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let got = p.step("read-loop data flip/f 3000").await;
    stop.store(true, Ordering::Relaxed);
    let swaps = flipper.join().unwrap();
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

/// The same tests, in a child process where `openat2` is unavailable.
#[test]
fn the_same_without_openat2() {
    if std::env::var_os(NO_OPENAT2).is_some() {
        return;
    }
    support::guests(); // build once here rather than in the child
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--skip", "the_same_without_openat2", "--test-threads", "2"])
        .env(NO_OPENAT2, "1");
    unsafe { cmd.pre_exec(|| support::deny_openat2()) };
    let out = cmd.output().expect("run the tests again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "without openat2:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("openat2_is_as_expected ... ok"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

/// In the child above, `openat2` really is gone.
#[test]
fn openat2_is_as_expected() {
    if std::env::var_os(NO_OPENAT2).is_some() {
        assert!(
            !support::openat2_available(),
            "the seccomp filter did not take"
        );
    }
}
