//! Regression tests from the two attack rounds on the restructured
//! broker. Each failed before its fix; each says what should happen.

mod support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{capbroker, guest, guests, text, Tree};

fn probe() -> String {
    guests().join("probe.wasm").display().to_string()
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_capbroker"))
}

/// Runs `cmd`, killing it (and failing) if it is still running after
/// `limit`.
fn run_with_watchdog(mut cmd: Command, limit: Duration, what: &str) -> Output {
    // Output goes to files: a pipe nobody reads until the end would fill
    // and hold the broker up itself.
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut child = cmd
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(err.try_clone().unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("{what}: the broker did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let read = |mut f: std::fs::File| {
        use std::io::{Read, Seek};
        let mut v = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    Output {
        status,
        stdout: read(out),
        stderr: read(err),
    }
}

/// F1. The WASI face checks that a path is a regular file (`stat-at`)
/// and then opens it (`open-at`) in a second step. A child sharing the
/// directory swaps a planted FIFO in between; the open blocks a host
/// thread for good, the run's `--timeout` fires, and the broker never
/// exits (the runtime waits for the blocked thread).
#[test]
fn a_fifo_swapped_in_between_check_and_open_does_not_hang_the_host() {
    let tree = Tree::new();
    let fifo = std::ffi::CString::new(tree.path("root/f").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::fs::write(tree.path("root/r"), "regular").unwrap();
    std::fs::write(tree.path("root/x"), "regular").unwrap();
    // The child flips `x` between the FIFO and a regular file, by hard
    // links and renames over it, so that `x` always exists.
    let flips = std::iter::once("wasi-hold data all W".to_string())
        .chain(std::iter::repeat_n(
            "wasi-link W f W t1;wasi-rename W t1 W x;wasi-link W r W t2;wasi-rename W t2 W x"
                .to_string(),
            1400,
        ))
        .collect::<Vec<_>>()
        .join(";");
    let mut cmd = bin();
    cmd.args(["run", "--timeout", "5s", "--dir"])
        .arg(format!("data={}", tree.root().display()))
        .args(["--spawn", "sp=max-memory=64MiB,max-fuel=100G,timeout=3s"])
        .arg(probe())
        .arg("wasi-hold data all W")
        .arg(format!("spawn sp self budget data C {flips}"));
    for _ in 0..40 {
        cmd.arg("wasi-fill W x");
    }
    let out = run_with_watchdog(cmd, Duration::from_secs(60), "FIFO race");
    let stdout = text(&out.stdout);
    // Every open ends: a regular file opened, or the FIFO refused.
    assert_eq!(
        stdout.matches("wasi-fill W x => ").count(),
        40,
        "{stdout}{}",
        text(&out.stderr)
    );
    assert!(!stdout.contains("no limit"), "{stdout}");
}

/// F2. wasi-libc strips `/` and `./` from preopen names, so `d/cache`
/// (or `d`, `./d`) answers for `/d/...` paths; `unveil("/d", ...)` closes
/// only preopens whose name starts with `/d` as written, so the program
/// keeps writing under `/d` after unveiling it.
#[test]
fn unveil_closes_preopens_named_under_it_however_they_are_spelled() {
    for (alias, path) in [("d/cache", "/d/cache/secret"), ("d", "/d/secret")] {
        let tree = Tree::new();
        let out = bin()
            .arg("run")
            .arg("--dir")
            .arg(format!("/d={}", tree.root().display()))
            .arg("--dir")
            .arg(format!("{alias}={}", tree.outside().display()))
            .arg(guest("std-probe"))
            .args(["unveil", "/d", "sub", "read", "write", path, "pwned"])
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        if alias == "d" {
            // One name as wasi-libc reads it: two grants there are refused.
            assert!(
                text(&out.stderr).contains("two directories granted at one guest path"),
                "{}",
                text(&out.stderr)
            );
        } else {
            assert!(stdout.contains("ok unveil /d sub"), "{stdout}");
        }
        assert_eq!(
            tree.read("outside/secret").as_deref(),
            Some("SECRET"),
            "after unveil(/d, sub, read), `{path}` was written through the preopen `{alias}`:\n{stdout}"
        );
    }
}

/// F4. Learning records a derived handle's place by the text of the
/// path it was opened at, `..` resolved lexically: `open-dir link/..`
/// (link -> sub/deeper) is really `sub`, but is learned as the grant's
/// root, so the learned manifest grants listing the root, which the run
/// never did.
#[test]
fn learning_through_a_link_and_dotdot_grants_nothing_the_run_did_not_use() {
    let tree = Tree::new();
    std::os::unix::fs::symlink("sub/deeper", tree.path("root/link")).unwrap();
    let learned = tree.path("learned.toml");
    let out = capbroker(&[
        "run",
        "--learn",
        learned.to_str().unwrap(),
        "--dir",
        &format!("data={}", tree.root().display()),
        &probe(),
        "open-dir data link/.. read,list h",
        "list h .",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("list h . => ok:deeper=dir,inner.txt=file"),
        "{}",
        text(&out.stdout)
    );
    let again = capbroker(&["run", "-m", learned.to_str().unwrap(), "--", "list data ."]);
    assert!(
        !text(&again.stdout).contains("list data . => ok"),
        "the learned manifest lets the next run list the root, which the learning run \
         never listed:\n{}\n{}",
        std::fs::read_to_string(&learned).unwrap(),
        text(&again.stdout)
    );
}

/// F6. A required network grant that the run did not use is kept as
/// granted, its whole range, where the README promises it is "kept with
/// nothing to reach" (as dirs and spawners are).
#[test]
fn a_required_unused_network_grant_is_learned_with_nothing_to_reach() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("cfg")).unwrap(); // no server.conf
    std::fs::create_dir_all(tree.path("up")).unwrap();
    let learned = tree.path("learned.toml");
    let _ = capbroker(&[
        "run",
        "--learn",
        learned.to_str().unwrap(),
        "--dir",
        &format!("cfg={}:read", tree.path("cfg").display()),
        "--dir",
        &format!("uploads={}:create", tree.path("up").display()),
        "--listen",
        "web=0.0.0.0/0:1-65535",
        "--spawn",
        "workers",
        &guests().join("web_server.wasm").display().to_string(),
    ]);
    let toml = std::fs::read_to_string(&learned).unwrap();
    assert!(
        !toml.contains("0.0.0.0/0:1-65535"),
        "an unused listen grant kept its whole range:\n{toml}"
    );
}

/// F3. What learning records is kept in host memory, outside the guest's
/// budget, and written out whole: a 16 MiB guest that stats 100 missing
/// paths of 1 MB makes the host hold ~0.5 GB and write a 100 MB manifest.
#[test]
fn learning_keeps_what_it_records_within_bounds() {
    let tree = Tree::new();
    let learned = tree.path("learned.toml");
    let out = capbroker(&[
        "run",
        "--learn",
        learned.to_str().unwrap(),
        "--max-memory",
        "16MiB",
        "--dir",
        &format!("data={}", tree.root().display()),
        &probe(),
        "stat-many data 100 1000000",
    ]);
    let size = std::fs::metadata(&learned).map(|m| m.len()).unwrap_or(0);
    assert!(
        size < 16 << 20,
        "a guest with 16 MiB had the broker write a {size}-byte manifest ({})",
        text(&out.stderr).lines().last().unwrap_or("")
    );
}

/// F7. `--print-config` adds "# from …" comments by scanning the TOML it
/// wrote line by line; inside a multi-line string (an argument, a path
/// or a variable with a newline) the comment becomes part of the value.
#[test]
fn print_config_reads_back_the_same_arguments() {
    let tree = Tree::new();
    let arg = "x\n[dir.data]\nk = v";
    let out = capbroker(&[
        "run",
        "--print-config",
        "--dir",
        &format!("data={}", tree.root().display()),
        &probe(),
        arg,
    ]);
    assert!(out.status.success());
    let m = tree.path("printed.toml");
    std::fs::write(&m, &out.stdout).unwrap();
    let run = capbroker(&["run", "-m", m.to_str().unwrap()]);
    assert!(
        text(&run.stdout).starts_with(&format!("{arg} => ")),
        "the argument read back differs:\n{}",
        text(&run.stdout)
    );
}

/// F5. `--print-config` and `--learn` write host paths with
/// `Path::display`, which replaces bytes that are not UTF-8 by U+FFFD:
/// the manifest written for `app\xff/data` grants `app\u{FFFD}/data`, a
/// folder anyone who can make one next to it chooses.
#[test]
fn manifests_written_back_name_the_same_non_utf8_folders() {
    let tree = Tree::new();
    let real = tree.path("").join(OsStr::from_bytes(b"app\xff"));
    let planted = tree.path("app\u{FFFD}");
    for (dir, content) in [(&real, "REAL"), (&planted, "PLANTED")] {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/f"), content).unwrap();
    }
    std::fs::write(
        real.join("capbroker.toml"),
        format!(
            "component = {:?}\n[dir.ro]\npath = \"data\"\nrights = \"ro\"\n",
            probe()
        ),
    )
    .unwrap();
    let printed = bin()
        .args(["run", "--print-config", "-m"])
        .arg(real.join("capbroker.toml"))
        .output()
        .unwrap();
    if !printed.status.success() {
        // Refused, rather than written with another path in its place.
        assert!(
            text(&printed.stderr).contains("is not UTF-8"),
            "{}",
            text(&printed.stderr)
        );
        return;
    }
    let m = tree.path("printed.toml");
    std::fs::write(&m, &printed.stdout).unwrap();
    let out = capbroker(&["run", "-m", m.to_str().unwrap(), "--", "read ro f"]);
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("PLANTED"),
        "the printed manifest grants another folder:\n{}\n{stdout}",
        text(&printed.stdout)
    );
}

/// F8. The classifier asks "was the memory limit ever hit?" before
/// looking at the trap: a child that handled a refused allocation and
/// then ran out of fuel (or trapped) is reported as out of memory.
#[test]
fn a_handled_memory_refusal_does_not_make_every_later_end_out_of_memory() {
    let out = capbroker(&[
        "run",
        "--spawn",
        "sp=max-memory=16MiB,max-fuel=100G,timeout=60s",
        &probe(),
        "spawn sp self 16777216,50000000,60000 - C try-alloc 100;loop",
        "wait C",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("wait C => ok:out-of-cpu"),
        "expected out-of-cpu:\n{stdout}"
    );
}

/// A1. Learning records what a `stat` used as `read,list` (every right of
/// "list or read" the handle held), and a path learned with `read` reaches
/// every file below it. An app that only stats its root (as `std::fs::
/// metadata` or an `exists` check does) is written back a manifest that
/// lets the next run read every file of the grant.
#[test]
fn learning_a_stat_grants_no_reading() {
    let tree = Tree::new();
    let learned = tree.path("learned.toml");
    let out = capbroker(&[
        "run",
        "--learn",
        learned.to_str().unwrap(),
        "--dir",
        &format!("data={}", tree.root().display()),
        &probe(),
        "stat data .",
        "stat data sub",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = capbroker(&[
        "run",
        "-q",
        "-m",
        learned.to_str().unwrap(),
        "--",
        "read data hello.txt",
        "read data sub/inner.txt",
    ]);
    let stdout = text(&again.stdout);
    assert!(
        !stdout.contains("=> ok:hello") && !stdout.contains("=> ok:inner"),
        "the learning run only stat'ed `.` and `sub`; the learned manifest lets the next \
         run read the files below them:\n{}\n{stdout}",
        std::fs::read_to_string(&learned).unwrap()
    );
}

/// A2. `--print-config` writes the manifest's path unescaped into comments
/// (`# manifest: PATH`, `# from PATH`). A manifest in a folder whose name
/// holds a newline adds TOML of that name's choosing to what is printed:
/// read back with `-m`, the printed configuration grants a folder the
/// original never named.
#[test]
fn print_config_comments_cannot_add_grants() {
    let tree = Tree::new();
    let planted = tree.outside();
    // Nested folders: the name goes on past each `/` of the planted path.
    let folder = tree.path("").join(format!(
        "app\ndir.a.path = \"{}\"\ndir.a.rights = \"ro\"\n#",
        planted.display()
    ));
    std::fs::create_dir_all(&folder).unwrap();
    let manifest = folder.join("capbroker.toml");
    std::fs::write(&manifest, format!("component = {:?}\n", probe())).unwrap();
    let printed = bin()
        .args(["run", "--print-config", "-m"])
        .arg(&manifest)
        .arg("--dir")
        .arg(format!("ro={}:ro", tree.root().display()))
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", text(&printed.stderr));
    let saved = tree.path("printed.toml");
    std::fs::write(&saved, &printed.stdout).unwrap();
    let run = capbroker(&[
        "run",
        "-q",
        "-m",
        saved.to_str().unwrap(),
        "--",
        "read a secret",
    ]);
    assert!(
        !text(&run.stdout).contains("SECRET"),
        "the printed configuration grants `a` = {}, which the original did not:\n{}\n{}",
        planted.display(),
        text(&printed.stdout),
        text(&run.stdout)
    );
}

/// A5. The fix for multi-line strings in `--print-config` counts `'''`
/// and `"""` on each line to know whether it is inside a string. A
/// one-line string that holds `'''` (an argument, say) flips the count, so
/// that a comment is put inside the next multi-line string, and the
/// arguments read back differ again.
#[test]
fn print_config_reads_back_arguments_with_quotes() {
    let tree = Tree::new();
    let args = ["a'''b", "x\n[dir.data]\nk = v"];
    let out = capbroker(&[
        "run",
        "--print-config",
        "--dir",
        &format!("data={}", tree.root().display()),
        &probe(),
        args[0],
        args[1],
    ]);
    assert!(out.status.success());
    let m = tree.path("printed.toml");
    std::fs::write(&m, &out.stdout).unwrap();
    let run = capbroker(&["run", "-q", "-m", m.to_str().unwrap()]);
    let stdout = text(&run.stdout);
    assert!(
        stdout.contains(&format!("{} => ", args[1])),
        "the second argument read back differs:\n{}\n{stdout}",
        text(&out.stdout)
    );
}

/// A6. A learned network grant is rebuilt by parsing the addresses used as
/// a grant; an IPv6 address with a scope id (`[::1%1]:8081`, which the
/// right admits and the system binds) does not parse, and the learned
/// manifest then keeps the operator's whole range.
#[test]
fn learning_a_scoped_ipv6_address_does_not_keep_the_whole_range() {
    let tree = Tree::new();
    let learned = tree.path("learned.toml");
    let out = capbroker(&[
        "run",
        "--learn",
        learned.to_str().unwrap(),
        "--listen",
        "web=[::1]:8000-8100",
        &probe(),
        "listen web [::1%1]:8081 l",
    ]);
    let stdout = text(&out.stdout);
    if !stdout.contains("=> ok:") {
        // No IPv6 loopback here: nothing to learn from.
        eprintln!("skipped: {stdout}");
        return;
    }
    let toml = std::fs::read_to_string(&learned).unwrap();
    assert!(
        !toml.contains("8000-8100"),
        "one address was used, the learned grant keeps the whole range:\n{toml}"
    );
}

/// A3. What spawners were used for is learned per spawner: one the run
/// never used is left out, not written back with the components and
/// budget another spawner's children used.
#[test]
fn learning_leaves_out_a_spawner_that_was_never_used() {
    let tree = Tree::new();
    let learned = tree.path("learned.toml");
    let out = capbroker(&[
        "run",
        "--learn",
        learned.to_str().unwrap(),
        "--spawn",
        "sp=max-children=10",
        "--spawn",
        "sp2",
        &probe(),
        "spawn sp2 self budget - C memory",
        "wait C",
    ]);
    assert!(
        text(&out.stdout).contains("wait C => ok:finished"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let toml = std::fs::read_to_string(&learned).unwrap();
    assert!(
        !toml.contains("[spawn.sp]"),
        "sp was never used, yet the learned manifest grants it:\n{toml}"
    );
    assert!(toml.contains("[spawn.sp2]"), "{toml}");
}

/// The round after those: the file-system face, grants opened once, and
/// scoped preopens.
mod fs_face {
    use std::path::Path;
    use std::process::{Command, Output};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::support::{guests, text, Tree};

    use super::probe;

    fn std_probe() -> String {
        guests().join("std-probe.wasm").display().to_string()
    }

    fn bin() -> String {
        env!("CARGO_BIN_EXE_capbroker").to_string()
    }

    fn run(args: &[&str], cwd: &Path) -> Output {
        Command::new(bin())
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("run capbroker")
    }

    /// Whether this process may make a private mount namespace and bind mounts
    /// in it (root, or unprivileged user namespaces).
    fn can_bind_mount() -> bool {
        Command::new("unshare")
            .args(["-m", "true"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Finding 1. `beside` compares grants by device and inode up each
    /// directory's `..` chain, and the docs promise that "bind mounts do not
    /// hide an overlap". They do: `..` of a bind mount's root is the mount
    /// point's parent, so a grant reached through a bind mount of a folder
    /// *inside* another grant never meets that grant's inode on its way up.
    ///
    /// `/t` is a bind mount of `srv/data/sub` (read-write), `/w` is
    /// `srv/data` (read,list,create) and `/in` is `srv/in` (read,list,create,
    /// holding a file the program may only read). Linking `/in/secret.txt` to
    /// `/w/sub/x` needs at its source only `/w`'s ceiling (read,list,create):
    /// the overlap with `/t` is not seen. The link is on the same mount as its
    /// source, so the kernel allows it, and `/t/x` is the same file, with
    /// write: the read-only secret is rewritten.
    #[test]
    fn a_bind_mount_does_not_hide_an_overlap_from_the_link_ceiling() {
        if !can_bind_mount() {
            eprintln!("skipped: cannot make a mount namespace here");
            return;
        }
        let t = Tree::new();
        let base = t.path("b");
        for d in ["srv/data/sub", "srv/in", "mnt/b"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("srv/in/secret.txt"), "secret").unwrap();
        let script = format!(
            "mount --bind srv/data/sub mnt/b && exec '{}' run --quiet \
             --dir /t=mnt/b --dir /w=srv/data:read,list,create \
             --dir /in=srv/in:read,list,create '{}' \
             link /in/secret.txt /w/sub/x append /t/x PWNED",
            bin(),
            std_probe()
        );
        let out = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .current_dir(&base)
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert_eq!(
            std::fs::read_to_string(base.join("srv/in/secret.txt")).unwrap(),
            "secret",
            "a file granted read-only was written through another grant:\n{stdout}\n{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("err") && stdout.contains("link"),
            "the link into a folder another grant reaches with write should be \
             refused (not-permitted):\n{stdout}"
        );
    }

    /// Finding 2. The `fs` face opens a FIFO (or a device) that is already
    /// there before it refuses it: `open_regular` opens with `O_NONBLOCK`,
    /// then looks. The docs (confinement.md, Paths) say one known beforehand
    /// "is not opened at all", on both faces — the WASI face stats first and
    /// does not open it. Opening acts: a writer blocked in `open` on the FIFO
    /// (another program the operator runs) is released and then sees its
    /// reader vanish; opening a device node can act on the device.
    #[test]
    fn the_fs_face_does_not_open_a_fifo_it_knows_of() {
        let t = Tree::new();
        let fifo = t.root().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);

        // A writer that blocks in open() until some reader opens the FIFO.
        let writer = |fifo: std::path::PathBuf| {
            let (tx, rx) = mpsc::channel();
            let h = std::thread::spawn(move || {
                let f = std::fs::OpenOptions::new().write(true).open(&fifo);
                let _ = tx.send(());
                drop(f);
            });
            (rx, h)
        };
        // Releases a writer still blocked, so that the test ends.
        let release = |fifo: &Path| {
            use std::os::unix::fs::OpenOptionsExt;
            let _r = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(fifo);
            std::thread::sleep(Duration::from_millis(100));
        };

        // The WASI face: refused without being opened (this holds).
        let (rx, h) = writer(fifo.clone());
        std::thread::sleep(Duration::from_millis(200));
        let out = run(
            &[
                "run",
                "--quiet",
                "--dir",
                "/d=root",
                &std_probe(),
                "read",
                "/d/fifo",
            ],
            t.tmp.path(),
        );
        assert!(text(&out.stdout).contains("err"), "{}", text(&out.stdout));
        let wasi_opened = rx.recv_timeout(Duration::from_millis(500)).is_ok();
        release(&fifo);
        h.join().unwrap();
        assert!(!wasi_opened, "the WASI face opened the FIFO");

        // The fs face: refused too, but only after opening it.
        let (rx, h) = writer(fifo.clone());
        std::thread::sleep(Duration::from_millis(200));
        let out = run(
            &[
                "run",
                "--quiet",
                "--dir",
                "data=root",
                &probe(),
                "read data fifo",
                "open data fifo read f",
            ],
            t.tmp.path(),
        );
        let stdout = text(&out.stdout);
        assert!(stdout.contains("read data fifo => err:invalid"), "{stdout}");
        let fs_opened = rx.recv_timeout(Duration::from_millis(500)).is_ok();
        release(&fifo);
        h.join().unwrap();
        assert!(
            !fs_opened,
            "the fs face opened a FIFO that was there before the call (a blocked \
             writer was released): it should stat first and refuse it unopened, \
             as the WASI face does"
        );
    }

    /// Finding 3. A preopen narrowed with `[dir."/data".paths]` hides what is
    /// not listed: "the preopen and the directories on the way to the listed
    /// paths only lead into them (they cannot be listed or stat'ed)". But a
    /// path that reads, once `..` is taken by its text, as a directory on the
    /// way (`secret/../a`) is opened as a way in with the guest's own text,
    /// relative to the preopen's directory: whether `secret` exists, and
    /// whether it is a directory or a file, shows in the error. Any name in
    /// the hidden part can be probed this way.
    #[test]
    fn a_scoped_preopen_does_not_tell_hidden_names_by_their_errors() {
        let t = Tree::new();
        let g = t.path("g");
        std::fs::create_dir_all(g.join("a/pub")).unwrap();
        std::fs::create_dir_all(g.join("secret/inner")).unwrap();
        std::fs::write(g.join("a/pub/p.txt"), "p").unwrap();
        std::fs::write(g.join("secret/s.txt"), "s").unwrap();
        std::fs::write(
            t.path("m.toml"),
            "[dir.\"/data\"]\npath = \"g\"\nrights = \"read,list\"\n\
             [dir.\"/data\".paths]\n\"a/pub\" = \"read,list\"\n",
        )
        .unwrap();
        let out = run(
            &[
                "run",
                "--quiet",
                "-m",
                "m.toml",
                &std_probe(),
                "list",
                "/data/secret/../a",
                "list",
                "/data/nosuch/../a",
                "list",
                "/data/secret/s.txt/../../a",
            ],
            t.tmp.path(),
        );
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{stdout}\n{}", text(&out.stderr));
        assert!(
            lines[0] == lines[1] && lines[1] == lines[2],
            "a hidden name's existence and kind show in the error of a path \
             through it (all three should be refused alike):\n{stdout}"
        );
    }

    /// The same blind spot for `unveil`: a preopen that is a bind mount of
    /// a folder inside the unveiled one lies inside it, and closes when it
    /// is not in the new view.
    #[test]
    fn unveil_closes_a_bind_mount_of_a_folder_inside() {
        if !can_bind_mount() {
            eprintln!("skipped: cannot make a mount namespace here");
            return;
        }
        let t = Tree::new();
        let base = t.path("u");
        for d in ["srv/data/sub", "srv/data/pub", "mnt/b"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("srv/data/sub/f.txt"), "kept").unwrap();
        let script = format!(
            "mount --bind srv/data/sub mnt/b && exec '{}' run --quiet \
             --dir /d=srv/data --dir /t=mnt/b '{}' \
             unveil /d pub read append /t/f.txt PWNED",
            bin(),
            std_probe()
        );
        let out = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .current_dir(&base)
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("ok unveil /d pub"),
            "{stdout}{}",
            text(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(base.join("srv/data/sub/f.txt")).unwrap(),
            "kept",
            "after unveil(/d, pub), /t (a bind mount of /d/sub) still wrote:\n{stdout}"
        );
    }

    /// Every test above again, with `openat2` disabled so that cap-std's own
    /// resolver is used.
    #[test]
    fn the_same_without_openat2() {
        super::support::rerun_without_openat2("the_same_without_openat2");
    }

    /// In the child above, `openat2` really is gone.
    #[test]
    fn openat2_is_as_expected() {
        super::support::assert_openat2_as_expected();
    }
}

/// The round on the network, processes, the audit trail and what a guest
/// can make the host hold.
mod audit_trail {
    use std::time::{Duration, Instant};

    use super::support::{capbroker, events, guest, text, Tree};
    use serde_json::Value;

    /// True if `s` holds a character that moves a terminal's cursor or starts an
    /// escape sequence: what the broker promises never to print of a guest's.
    fn has_terminal_control(s: &str) -> bool {
        s.chars()
            .any(|c| c == '\u{1b}' || c == '\r' || c == '\u{9b}' || c == '\u{202e}')
    }

    /// F1. A guest's `requests` (names and `about` texts it chooses) are printed
    /// raw by `capbroker inspect` and in the error `capbroker run` gives when a
    /// request is not granted: escape sequences (clear screen, colours, `\r`
    /// overwrites, bidi overrides) and newlines that forge whole lines, such as a
    /// fake audit warning.
    #[test]
    fn request_texts_are_cleaned_before_they_are_printed() {
        let hostile = guest("hostile");
        let inspect = capbroker(&["inspect", hostile.to_str().unwrap()]);
        let printed = text(&inspect.stdout) + &text(&inspect.stderr);
        assert!(
            !has_terminal_control(&printed),
            "`capbroker inspect` printed the guest's escapes raw:\n{printed:?}"
        );
        assert!(
            !printed
                .lines()
                .any(|l| l.starts_with("2026-12-01T00:00:00.000000Z  WARN capbroker::audit")),
            "`capbroker inspect` let the guest forge a line:\n{printed}"
        );

        // Not granted what it requires: the error lists the requests.
        let run = capbroker(&["run", hostile.to_str().unwrap()]);
        let err = text(&run.stderr);
        assert!(!run.status.success());
        assert!(
            !has_terminal_control(&err),
            "the missing-grant error printed the guest's escapes raw:\n{err:?}"
        );
        assert!(
            !err.lines()
                .any(|l| l.trim_start().starts_with("2026-12-01T00:00:00.000000Z")),
            "the missing-grant error let the guest forge an audit line:\n{err}"
        );

        // Granted something it did not ask for: the error lists what it asks.
        let tree = Tree::new();
        let run = capbroker(&[
            "run",
            "--dir",
            &format!("x={}:read", tree.root().display()),
            hostile.to_str().unwrap(),
        ]);
        let err = text(&run.stderr);
        assert!(
            !has_terminal_control(&err),
            "the unasked-grant error printed the guest's escapes raw:\n{err:?}"
        );
    }

    /// F2. A trap in `requests` (or in instantiation) reaches `capbroker: error:`
    /// with wasmtime's backtrace, which names the guest's functions as its name
    /// section spells them: a name with a newline and escapes forges a line.
    #[test]
    fn a_trap_before_run_is_cleaned_before_it_is_printed() {
        let hostile = guest("hostile_trap");
        for args in [
            vec!["run", hostile.to_str().unwrap()],
            vec!["inspect", hostile.to_str().unwrap()],
        ] {
            let out = capbroker(&args);
            let err = text(&out.stderr);
            assert!(!out.status.success(), "{args:?}: {err}");
            assert!(
                !has_terminal_control(&err),
                "{args:?}: the trap's backtrace printed the guest's escapes raw:\n{err:?}"
            );
            assert!(
                !err.lines()
                    .any(|l| l.starts_with("2026-12-01T00:00:00.000000Z  WARN capbroker::audit")),
                "{args:?}: the trap's backtrace let the guest forge an audit line:\n{err}"
            );
        }
    }

    /// F3. `--audit -` writes the JSON log to stderr, which is also the guest's
    /// own stderr (unfiltered) and the broker's `tracing` warnings: a guest
    /// forges events that `capbroker audit` then reports as the broker's, and
    /// the broker's own warning lines make the log unreadable by the summary.
    #[test]
    fn a_guest_cannot_forge_events_in_the_audit_log_on_stderr() {
        let tree = Tree::new();
        let forged = r#"{"component":"std-probe","event":"grant","parent":null,"pid":1,"grant":"FORGED","target":"/","detail":"read,write,create,list,remove"}"#;
        let out = capbroker(&[
            "run",
            "--audit",
            "-",
            "--dir",
            &format!("/d={}:read", tree.root().display()),
            guest("std-probe").to_str().unwrap(),
            "read",
            "/d/../outside/secret",
            "stderr",
            forged,
        ]);
        if out.status.code() == Some(2) {
            // Refusing `--audit -` (or a guest stderr beside it) is a fix too.
            return;
        }
        let log = tree.path("stderr.jsonl");
        std::fs::write(&log, &out.stderr).unwrap();
        let summary = capbroker(&["audit", log.to_str().unwrap()]);
        let said = text(&summary.stdout) + &text(&summary.stderr);
        assert!(
            summary.status.success(),
            "`capbroker audit` cannot read what `--audit -` wrote:\n{said}"
        );
        assert!(
            !said.contains("FORGED"),
            "the guest's stderr line became an audit event:\n{said}"
        );
    }

    /// F4. A plain WASI command's grants (preopens, listen and connect ranges)
    /// are never written to the audit log: the log and its summary say the
    /// command was granted nothing.
    #[test]
    fn a_commands_grants_are_in_the_audit_log() {
        let tree = Tree::new();
        let log = tree.path("audit.jsonl");
        let out = capbroker(&[
            "run",
            "--audit",
            log.to_str().unwrap(),
            "--dir",
            &format!("/d={}:read", tree.root().display()),
            "--listen",
            "web=127.0.0.1:18080",
            guest("std-probe").to_str().unwrap(),
            "read",
            "/d/hello.txt",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let evs = events(&log);
        let grants: Vec<&Value> = evs.iter().filter(|e| e["event"] == "grant").collect();
        assert!(
            grants.iter().any(|g| g["grant"] == "/d") && grants.iter().any(|g| g["grant"] == "web"),
            "the command's grants are missing from the log: {evs:?}"
        );
    }

    /// F5. A spawn refused for its input (or for anything checked after the
    /// child's pid is chosen) still writes a `spawn` event for a child that never
    /// ran: the summary shows a process with "exit: not recorded". The refusal
    /// also writes a `limit` event naming `handles`, which was not the limit.
    #[test]
    fn a_refused_spawn_logs_no_child_and_names_the_right_limit() {
        let tree = Tree::new();
        let log = tree.path("audit.jsonl");
        let input = "x".repeat(70_000);
        let out = capbroker(&[
            "run",
            "--audit",
            log.to_str().unwrap(),
            "--spawn",
            "sp=max-children=4",
            guest("probe").to_str().unwrap(),
            &format!("spawn sp self 65536,1000000,1000 - c {input}"),
        ]);
        let stdout = text(&out.stdout);
        assert!(stdout.contains("err:limit-exceeded"), "{stdout}");
        let evs = events(&log);
        let spawns: Vec<&Value> = evs.iter().filter(|e| e["event"] == "spawn").collect();
        assert!(
            spawns.is_empty(),
            "a spawn that was refused is logged as a child: {spawns:?}"
        );
        let limits: Vec<&Value> = evs.iter().filter(|e| e["event"] == "limit").collect();
        assert!(
            limits.iter().all(|l| l["limit"] != "handles"),
            "a refusal for memory is logged as a `handles` limit: {limits:?}"
        );
    }

    /// F6. docs/audit.md: "each line at most about 1.3 KB"; a `spawn` event
    /// lists every share's name, up to 64 of 256 bytes: about 16.7 KB a line,
    /// so the log grows about 10 times faster than the documented bound.
    #[test]
    fn spawn_events_stay_within_the_documented_line_size() {
        let tree = Tree::new();
        let log = tree.path("audit.jsonl");
        let out = capbroker(&[
            "run",
            "--audit",
            log.to_str().unwrap(),
            "--spawn",
            "sp=max-children=4",
            guest("probe").to_str().unwrap(),
            "spawn-flood sp 300 64 256",
        ]);
        assert!(
            text(&out.stdout).contains("spawned=300"),
            "{}",
            text(&out.stdout)
        );
        let written = std::fs::read_to_string(&log).unwrap();
        let longest = written.lines().map(str::len).max().unwrap_or(0);
        assert!(
            longest <= 2048,
            "an audit line of {longest} bytes (the documented bound is about 1.3 KB); \
             the log is {} bytes",
            written.len()
        );
    }

    /// F7. `capbroker audit` walks the process tree by scanning every process
    /// for the children of each (quadratic), recursively (one stack frame per
    /// generation): 20,000 processes, a few minutes of a server's per-request
    /// children at the rate limit, take seconds, and grow as the square; a deep
    /// chain (which a forged log has, see F3) overflows the stack and aborts.
    #[test]
    fn the_summary_is_linear_and_does_not_recurse_without_bound() {
        let tree = Tree::new();
        let log = tree.path("many.jsonl");
        let mut text_log = String::new();
        text_log.push_str(
            r#"{"component":"web","event":"grant","parent":null,"pid":1,"grant":"sp","target":"spawner","detail":"x"}"#,
        );
        text_log.push('\n');
        for pid in 2..20_002u64 {
            text_log.push_str(&format!(
                "{{\"component\":\"web\",\"event\":\"spawn\",\"parent\":null,\"pid\":1,\"child\":{pid},\"child_component\":\"h\",\"handles\":[]}}\n\
                 {{\"component\":\"h\",\"event\":\"exit\",\"parent\":1,\"pid\":{pid},\"status\":\"finished\",\"fuel_used\":1,\"peak_memory\":0,\"wall_us\":1}}\n"
            ));
        }
        std::fs::write(&log, text_log).unwrap();
        let start = Instant::now();
        let out = capbroker(&["audit", log.to_str().unwrap()]);
        let took = start.elapsed();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            took < Duration::from_secs(3),
            "summarising 20,000 processes took {took:?}"
        );

        let deep = tree.path("deep.jsonl");
        let mut chain = String::new();
        for pid in 1..=20_000u64 {
            let parent = if pid == 1 {
                "null".to_string()
            } else {
                (pid - 1).to_string()
            };
            chain.push_str(&format!(
                "{{\"component\":\"p\",\"event\":\"exit\",\"parent\":{parent},\"pid\":{pid},\"status\":\"finished\"}}\n"
            ));
        }
        std::fs::write(&deep, chain).unwrap();
        let out = capbroker(&["audit", deep.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "`capbroker audit` crashed on a deep process chain: {:?} {}",
            out.status,
            text(&out.stderr)
        );
    }

    /// F8. Deriving network rights and spawners (`attenuate`, `revocable`) writes
    /// no `derive` event, unlike directories: the log does not show that a
    /// revocable copy (which may go to a child) or a narrower right exists.
    #[test]
    fn network_and_spawner_derivations_are_logged() {
        let tree = Tree::new();
        let log = tree.path("audit.jsonl");
        let out = capbroker(&[
            "run",
            "--audit",
            log.to_str().unwrap(),
            "--connect",
            "api=127.0.0.0/8:1-65535",
            "--spawn",
            "sp=max-children=4",
            guest("probe").to_str().unwrap(),
            "net-attenuate api 127.0.0.1:80-80 a2",
            "revocable api a3 r1",
            "revocable sp sp2 r2",
            "attenuate-spawner sp 1048576,1000,1000 2 probe sp4",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let evs = events(&log);
        let derives = evs.iter().filter(|e| e["event"] == "derive").count();
        assert!(
            derives >= 4,
            "{derives} derive events for 4 derivations: {evs:?}"
        );
    }
}

/// The last round (network, pledge, learning, scoped preopens) found no
/// hole; these pin down what was tried and held.
mod sockets {
    use std::io::Read;
    use std::net::TcpListener;

    use super::support::{capbroker, guests};

    fn wasm(name: &str) -> String {
        guests().join(name).display().to_string()
    }

    fn stdout(out: &std::process::Output) -> String {
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A plain WASI command binds the unspecified address to port 0 (a listen
    /// range that holds port 0, or any connect grant, allows that bind) and
    /// then listens: the system picked a port outside every listen range, and
    /// the listen must be refused.
    #[test]
    fn a_wasi_listen_on_a_port_the_system_picked_is_refused() {
        let np = wasm("net-probe.wasm");
        for grant in ["--listen=web=0.0.0.0:0-1024", "--connect=api=127.0.0.1:80"] {
            let out = capbroker(&["run", grant, &np, "bind-listen", "v4", "0"]);
            let got = stdout(&out);
            assert!(got.contains("bind Ok"), "{grant}: {got}");
            assert!(got.contains("listen Err"), "{grant}: listened: {got}");
        }
        // Without a bind first, WASI 0.2 refuses the listen outright.
        let out = capbroker(&[
            "run",
            "--listen=web=0.0.0.0:0-1024",
            &np,
            "listen-unbound",
            "v4",
        ]);
        assert!(!stdout(&out).contains("listening on"), "{}", stdout(&out));
    }

    /// A WASI listen on `[::]` granted alone does not also take IPv4 (the
    /// socket is IPv6-only), as capbroker's own face promises.
    #[test]
    fn a_wasi_listen_on_the_ipv6_unspecified_address_does_not_take_ipv4() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let np = wasm("net-probe.wasm");
        let grant = format!("--listen=web=[::]:{port}");
        let port_s = port.to_string();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_capbroker"))
            .args(["run", &grant, &np, "bind-listen", "v6", &port_s, "1500"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(700));
        let v4 = std::net::TcpStream::connect_timeout(
            &format!("127.0.0.1:{port}").parse().unwrap(),
            std::time::Duration::from_millis(300),
        );
        let status = child.wait().unwrap();
        let mut got = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut got)
            .unwrap();
        assert!(status.success(), "{got}");
        assert!(got.contains("listen Ok"), "{got}");
        assert!(
            v4.is_err(),
            "the guest's [::] listener took an IPv4 connection"
        );
    }

    /// A TCP stream shared with a child stops for the child too when the
    /// parent pledges the network after the spawn.
    #[test]
    fn a_pledge_of_the_network_reaches_a_stream_shared_with_a_child() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let got_bytes = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all);
            all
        });
        let out = capbroker(&[
            "run",
            &format!("--connect=api={addr}"),
            "--spawn=sp",
            &wasm("probe.wasm"),
            &format!("connect api {addr} s"),
            "spawn sp self budget s C recv;swrite s child-after-pledge",
            "pledge-network",
            "psend C go",
            "wait C",
            "swrite s parent-after-pledge",
            "sdrop s",
        ]);
        let got = stdout(&out);
        assert!(
            got.contains("wait C => ok:finished:ok:go\nerr:refused:the network was pledged away"),
            "{got}"
        );
        assert!(
            got.contains("swrite s parent-after-pledge => err:refused"),
            "{got}"
        );
        let bytes = got_bytes.join().unwrap();
        assert!(
            bytes.is_empty(),
            "sent after the pledge: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}
