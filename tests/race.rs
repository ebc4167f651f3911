//! Issue 18, the race harness: host threads swap symbolic links, move a
//! directory out of the grant and back, and replace files with links,
//! while guests loop over reads, writes, opens, listings, stats, links,
//! renames and removals on those paths, on both faces (capbroker's `fs`
//! handles and `wasi:filesystem` descriptors made from them, in the probe;
//! a plain `wasi:cli` program through `capbroker run`, in std-probe).
//!
//! The oracle: no guest ever gets back anything of what lies outside the
//! grant (every file there holds `SECRET`, some are named so, and each is
//! `SECRET_SIZE` bytes), nothing outside is changed, made or removed
//! (compared byte for byte once the host has moved its directory back),
//! and no file from outside turns up inside (renamed or linked in).
//!
//! Every test here runs twice: as is (Linux resolves with `openat2` where it
//! can) and in a child process where `openat2` fails with ENOSYS, so that
//! cap-std's own resolver is exercised as well.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{dir_at, guest, Probe, Tree};

/// How long each race runs, in each of the two passes.
const RUN: Duration = Duration::from_secs(10);

/// The size of every file outside the grant (as in the guests' loops):
/// a `stat` that gives it has reached one.
const SECRET_SIZE: usize = 777_777;

/// A file outside the grant: `SECRET-NAME-`, padded to `SECRET_SIZE`.
fn secret(name: &str) -> Vec<u8> {
    let mut s = format!("SECRET-{name}-").into_bytes();
    s.resize(SECRET_SIZE, b'#');
    s
}

/// The scratch tree of a race. Inside the grant (`root/`): `x` and `file`,
/// which the host keeps replacing, `sub/`, which it keeps moving out, and
/// `hello.txt`. Outside (`outside/`): files named as those inside (`x`,
/// `file`, `hello.txt`), so that a path that resolves one level too high
/// lands on a secret, `SECRET-a`, `secret` and `dir/`. `staging/`, beside
/// both, is where the host makes what it renames into place.
fn race_tree() -> Tree {
    let tree = Tree::new();
    std::fs::write(tree.path("root/x"), "inside-x").unwrap();
    std::fs::write(tree.path("root/file"), "inside-file").unwrap();
    std::fs::create_dir(tree.path("outside/dir")).unwrap();
    std::fs::create_dir(tree.path("staging")).unwrap();
    for name in [
        "secret",
        "SECRET-a",
        "x",
        "file",
        "hello.txt",
        "dir/SECRET-b",
    ] {
        std::fs::write(tree.path(&format!("outside/{name}")), secret(name)).unwrap();
    }
    tree
}

/// What is at each path below `dir`, links not followed.
#[derive(Debug, PartialEq)]
enum Node {
    File(Vec<u8>),
    Dir,
    Link(PathBuf),
    Other,
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let node = if meta.is_symlink() {
                Node::Link(std::fs::read_link(&p).unwrap())
            } else if meta.is_dir() {
                todo.push(p.clone());
                Node::Dir
            } else if meta.is_file() {
                Node::File(std::fs::read(&p).unwrap())
            } else {
                Node::Other
            };
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), node);
        }
    }
    out
}

/// Fails unless `outside/` is as it was, and nothing inside holds a secret.
fn assert_nothing_crossed(tree: &Tree, before: &BTreeMap<PathBuf, Node>) {
    let after = snapshot(&tree.outside());
    let mut changed = Vec::new();
    for (p, node) in before {
        match after.get(p) {
            None => changed.push(format!("{} removed", p.display())),
            Some(n) if n != node => changed.push(format!("{} changed", p.display())),
            Some(_) => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        changed.push(format!("{} made", p.display()));
    }
    assert!(
        changed.is_empty(),
        "outside the grant, a guest changed: {changed:?}"
    );
    let within: Vec<String> = snapshot(&tree.root())
        .into_iter()
        .filter(|(_, n)| {
            matches!(n, Node::File(b) if b.len() == SECRET_SIZE || b.windows(6).any(|w| w == b"SECRET"))
        })
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(
        within.is_empty(),
        "a file from outside is inside: {within:?}"
    );
}

/// Host threads mutating the tree until stopped, each counting its changes.
struct Mutators {
    stop: Arc<AtomicBool>,
    threads: Vec<(&'static str, JoinHandle<u64>)>,
    root: PathBuf,
    outside: PathBuf,
}

/// Puts what `make` makes at `staging/NAME` in place of `at`, in one
/// rename (so the guest sees the old or the new, never nothing).
fn swap_in(staging: &Path, name: &str, at: &Path, make: impl FnOnce(&Path)) -> bool {
    let tmp = staging.join(name);
    let _ = std::fs::remove_file(&tmp);
    make(&tmp);
    std::fs::rename(&tmp, at).is_ok()
}

impl Mutators {
    fn start(tree: &Tree) -> Mutators {
        let stop = Arc::new(AtomicBool::new(false));
        let (root, outside, staging) = (tree.root(), tree.outside(), tree.path("staging"));
        let spawn = |f: Box<dyn Fn(u64) -> bool + Send>| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if f(n) {
                        n += 1;
                    }
                }
                n
            })
        };
        // `x`: a file; links out (to a file, to a directory with and
        // without a trailing `/`, absolute, through `sub/..`); links in.
        let x = {
            let (root, staging) = (root.clone(), staging.clone());
            let abs = outside.join("SECRET-a");
            spawn(Box::new(move |n| {
                let at = root.join("x");
                swap_in(&staging, "x", &at, |tmp| match n % 8 {
                    0 => std::fs::write(tmp, "inside-x").unwrap(),
                    1 => symlink("../outside/SECRET-a", tmp).unwrap(),
                    2 => symlink("../outside/", tmp).unwrap(),
                    3 => symlink("hello.txt", tmp).unwrap(),
                    4 => symlink(&abs, tmp).unwrap(),
                    5 => symlink("../outside/dir", tmp).unwrap(),
                    6 => symlink("sub/../../outside/secret", tmp).unwrap(),
                    _ => symlink(".", tmp).unwrap(),
                })
            }))
        };
        // `sub`: moved out next to the secrets, a link to where it went
        // put in its place, then moved back.
        let sub = {
            let (root, outside, staging) = (root.clone(), outside.clone(), staging.clone());
            spawn(Box::new(move |_| {
                let (at, away) = (root.join("sub"), outside.join("moved"));
                if std::fs::rename(&at, &away).is_err() {
                    return false;
                }
                swap_in(&staging, "sub", &at, |tmp| {
                    symlink("../outside/moved", tmp).unwrap()
                });
                std::thread::yield_now();
                let _ = std::fs::remove_file(&at);
                std::fs::rename(&away, &at).is_ok()
            }))
        };
        // `file`: a file; a hard link to another file inside; links out
        // (relative, absolute, through `sub/..`); a link to `x`.
        let file = {
            let (root, staging) = (root.clone(), staging.clone());
            let abs = outside.join("file");
            spawn(Box::new(move |n| {
                let at = root.join("file");
                swap_in(&staging, "file", &at, |tmp| match n % 6 {
                    0 => std::fs::write(tmp, "inside-file").unwrap(),
                    1 => {
                        let _ = std::fs::hard_link(root.join("hello.txt"), tmp);
                    }
                    2 => symlink("../outside/file", tmp).unwrap(),
                    3 => symlink(&abs, tmp).unwrap(),
                    4 => symlink("sub/../../outside/file", tmp).unwrap(),
                    _ => symlink("x", tmp).unwrap(),
                })
            }))
        };
        Mutators {
            stop,
            threads: vec![("x", x), ("sub", sub), ("file", file)],
            root,
            outside,
        }
    }

    /// Stops the threads, puts `sub` back, and gives each thread's count.
    fn finish(self) -> Vec<(&'static str, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let counts = self
            .threads
            .into_iter()
            .map(|(name, t)| (name, t.join().unwrap()))
            .collect();
        let (at, away) = (self.root.join("sub"), self.outside.join("moved"));
        if away.exists() {
            let _ = std::fs::remove_file(&at);
            std::fs::rename(&away, &at).unwrap();
        }
        counts
    }
}

/// `KEY#N,…` into counts, added to `into`.
fn add_tally(into: &mut HashMap<String, u64>, tally: &str) {
    for (k, n) in tally.split(',').filter_map(|kv| kv.rsplit_once('#')) {
        *into.entry(k.to_string()).or_default() += n.parse::<u64>().unwrap();
    }
}

fn assert_raced(counts: &[(&str, u64)]) {
    for (name, n) in counts {
        assert!(*n > 20, "the host barely changed `{name}` ({n} times)");
    }
}

/// The probe, on both of its faces: capbroker's handles (the grant's and
/// one on `sub`) and `wasi:filesystem` descriptors made from them.
#[tokio::test]
async fn handles_and_descriptors_never_reach_outside_under_a_race() {
    let tree = race_tree();
    let before = snapshot(&tree.outside());
    let mut p = Probe::start(&[dir_at("data", &tree.root(), "rw")]).await;
    p.expect(&[
        ("open-dir data sub all S", "ok"),
        ("wasi-hold data all W", "ok"),
        ("wasi-open W sub read,directory WS", "ok"),
    ])
    .await;
    let mutators = Mutators::start(&tree);
    let started = Instant::now();
    let (mut ops, mut ok, mut err, mut leaks) = (0u64, HashMap::new(), HashMap::new(), Vec::new());
    while started.elapsed() < RUN {
        let out = p.step("race-loop data S W WS 20").await;
        let fields: HashMap<&str, &str> = out
            .strip_prefix("ok:")
            .unwrap_or_else(|| panic!("race-loop: {out}"))
            .split(';')
            .filter_map(|f| f.split_once('='))
            .collect();
        ops += fields["ops"].parse::<u64>().unwrap();
        add_tally(&mut ok, fields["ok"]);
        add_tally(&mut err, fields["err"]);
        if !fields["leaks"].is_empty() {
            leaks.push(fields["leaks"].to_string());
        }
    }
    let counts = mutators.finish();
    println!(
        "probe race, openat2 {}: {ops} guest operations in {:.1?}; host changes {counts:?}\n\
         succeeded: {ok:?}\nfailed: {err:?}",
        support::openat2_available(),
        started.elapsed(),
    );
    assert!(leaks.is_empty(), "a guest saw outside the grant: {leaks:?}");
    assert_nothing_crossed(&tree, &before);
    assert_raced(&counts);
    assert!(ops > 1000, "the guest barely ran ({ops} operations)");
    // The race meant something: the swapped paths were reached inside and
    // refused outside, on both faces.
    for op in ["read-x", "wasi-read-x", "read-sub/inner", "read-file"] {
        assert!(ok.get(op).is_some_and(|n| *n > 0), "`{op}` never succeeded");
    }
    assert!(err.get("escape").is_some_and(|n| *n > 0), "{err:?}");
}

/// A plain `wasi:cli` program (std-probe, Rust's `std`) with `/data`
/// preopened, through the `capbroker` binary.
#[test]
fn a_plain_program_never_reaches_outside_under_a_race() {
    let tree = race_tree();
    let before = snapshot(&tree.outside());
    let probe = guest("std-probe");
    let mutators = Mutators::start(&tree);
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .arg("run")
        .arg("--dir")
        .arg(format!("/data={}:rw", tree.root().display()))
        .arg(&probe)
        .args(["race", &RUN.as_millis().to_string()])
        .output()
        .expect("run capbroker");
    let counts = mutators.finish();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "std-probe race, openat2 {}: {} in {:.1?}; host changes {counts:?}",
        support::openat2_available(),
        stdout.trim(),
        started.elapsed(),
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ok race "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let fields: HashMap<&str, &str> = line.split(' ').filter_map(|f| f.split_once('=')).collect();
    assert!(
        fields["leaks"].is_empty(),
        "a guest saw outside the grant: {}",
        fields["leaks"]
    );
    assert_nothing_crossed(&tree, &before);
    assert_raced(&counts);
    let (ops, ok): (u64, u64) = (
        fields["ops"].parse().unwrap(),
        fields["ok"].parse().unwrap(),
    );
    assert!(ops > 1000 && ok > 0, "the program barely ran: {line}");
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
