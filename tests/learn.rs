//! Learning mode: `capbroker run --learn FILE` writes a manifest that grants
//! only what the run used. Re-running on the same input under it works;
//! anything the app did not do while learning is refused. Children's use
//! counts for the grants they were shared.

mod support;

use support::{capbroker, echo_server, guests, p1_reader, published_tool, text, Tree};

/// Runs `capbroker` with `args`; returns stdout, failing on a non-zero exit.
fn ok(args: &[&str]) -> String {
    let out = capbroker(args);
    assert!(
        out.status.success(),
        "capbroker {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn probe() -> String {
    guests().join("probe.wasm").display().to_string()
}

fn manifest(tree: &Tree) -> String {
    tree.path("learned.toml").display().to_string()
}

fn learned(tree: &Tree) -> String {
    std::fs::read_to_string(tree.path("learned.toml")).expect("the learned manifest")
}

/// Runs under the manifest `m`, with `args` for the component (none: the
/// manifest's own); returns stdout, failing on a non-zero exit.
fn rerun(m: &str, args: &[&str]) -> String {
    ok(&[&["run", "-m", m], args].concat())
}

/// Two listeners on ports the system picks, kept open by the caller, and
/// their ports: one for a run to use, one it did not.
fn two_ports() -> ([std::net::TcpListener; 2], u16, u16) {
    let listen = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let both = [listen(), listen()];
    let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
    let (a, b) = (port(&both[0]), port(&both[1]));
    (both, a, b)
}

/// Fails unless the learned manifest `toml` has each of `parts`.
fn assert_has(toml: &str, parts: &[&str]) {
    for part in parts {
        assert!(toml.contains(part), "missing `{part}` in:\n{toml}");
    }
}

#[test]
fn the_learned_manifest_grants_what_was_used_and_nothing_else() {
    let tree = Tree::new();
    let grant = format!("data={}:rw", tree.root().display());
    let steps = [
        "read data hello.txt",
        "write data out.txt x",
        "open-dir data sub read,list S",
        "list S .",
        "read S inner.txt",
    ];
    let (m, p) = (manifest(&tree), probe());
    let mut args = vec!["run", "--learn", &m, "--dir", &grant, &p];
    args.extend_from_slice(&steps);
    let first = ok(&args);
    let expected = "read data hello.txt => ok:hello\n\
                    write data out.txt x => ok\n\
                    open-dir data sub read,list S => ok\n\
                    list S . => ok:deeper=dir,inner.txt=file\n\
                    read S inner.txt => ok:inner\n";
    assert_eq!(first, expected);

    let toml = learned(&tree);
    assert_has(
        &toml,
        &[
            "[dir.data.paths]\n\"hello.txt\" = \"read\"\n\"out.txt\" = \"write,create\"\n\
             sub = \"list\"\n\"sub/inner.txt\" = \"read,list\"\n",
            &format!(
                "path = \"{}\"",
                std::fs::canonicalize(tree.root()).unwrap().display()
            ),
            "args = [\"read data hello.txt\",",
        ],
    );

    // The same run under the learned manifest: the same output (out.txt
    // now exists, and may be written again).
    assert_eq!(ok(&["run", "-m", &m]), expected);

    // Anything else is refused, and nothing changes on disk.
    let other = ok(&[
        "run",
        "-m",
        &m,
        "read data out.txt",
        "write data hello.txt y",
        "write data new.txt y",
        "list data .",
        "read data sub/deeper/../inner.txt",
        "rm data out.txt",
        "open-dir data sub read,list S",
        "read S ../hello.txt",
        "wasi-read data read hello.txt",
    ]);
    let refused = "read data out.txt => err:denied:read\n\
                   write data hello.txt y => err:denied:write\n\
                   write data new.txt y => err:denied:create\n\
                   list data . => err:denied:list\n\
                   read data sub/deeper/../inner.txt => ok:inner\n\
                   rm data out.txt => err:denied:remove\n\
                   open-dir data sub read,list S => ok\n\
                   read S ../hello.txt => err:escape:../hello.txt\n\
                   wasi-read data read hello.txt => err:refused:a handle narrowed to some paths cannot become a WASI descriptor\n";
    assert_eq!(other, refused);
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
    assert!(!tree.path("root/new.txt").exists());
    assert_eq!(tree.read("root/out.txt").as_deref(), Some("x"));
}

#[test]
fn a_link_cannot_reach_what_the_learned_paths_hide() {
    let tree = Tree::new();
    std::os::unix::fs::symlink("../hello.txt", tree.path("root/sub/link")).unwrap();
    let grant = format!("data={}:rw", tree.root().display());
    let (m, p) = (manifest(&tree), probe());
    ok(&[
        "run",
        "--learn",
        &m,
        "--dir",
        &grant,
        &p,
        "read data sub/inner.txt",
    ]);
    // `sub` is visible, `hello.txt` is not; the link in `sub` leads there.
    let out = ok(&["run", "-m", &m, "read data sub/link", "read data hello.txt"]);
    assert!(
        out.starts_with("read data sub/link => err:denied:read\n")
            || out.starts_with("read data sub/link => err:escape"),
        "{out}"
    );
    assert!(
        out.contains("read data hello.txt => err:denied:read\n"),
        "{out}"
    );

    // Written by hand: all of `sub` is visible, so only the link check
    // stands between the app and `hello.txt`.
    let hand = tree.path("hand.toml");
    std::fs::write(
        &hand,
        format!(
            "component = {:?}\n[dir.data]\npath = {:?}\n\n[dir.data.paths]\n\"sub\" = \"read,list\"\n",
            probe(),
            tree.root().display().to_string()
        ),
    )
    .unwrap();
    let hand = hand.display().to_string();
    let out = ok(&[
        "run",
        "-m",
        &hand,
        "read data sub/inner.txt",
        "read data sub/link",
    ]);
    assert_eq!(
        out,
        "read data sub/inner.txt => ok:inner\n\
         read data sub/link => err:escape:sub/link\n"
    );
    // A manifest error, with its place: `paths` is the `[dir.data.paths]`
    // table's body, under a directory with `rights`.
    let refused = |rights: &str, paths: &str, says: &str| {
        std::fs::write(
            tree.path("bad.toml"),
            format!(
                "[dir.data]\npath = {:?}\nrights = {rights:?}\n[dir.data.paths]\n{paths}\n",
                tree.root().display().to_string()
            ),
        )
        .unwrap();
        let bad = capbroker(&[
            "run",
            "-m",
            tree.path("bad.toml").to_str().unwrap(),
            &probe(),
        ]);
        assert_eq!(bad.status.code(), Some(2));
        assert!(text(&bad.stderr).contains(says), "{}", text(&bad.stderr));
    };
    // A path outside the directory…
    refused(
        "rw",
        "\"../x\" = \"read\"",
        "[dir.data.paths] `../x`: expected a path below the directory",
    );
    // …or one with `..`, even where it would stay inside…
    for inside in ["docs/..", "a/../b"] {
        refused(
            "rw",
            &format!("{inside:?} = \"read\""),
            &format!("[dir.data.paths] `{inside}`: expected a path below the directory"),
        );
    }
    // …or one path under two spellings, whose rights would depend on the
    // order of the table's keys…
    refused(
        "rw",
        "\"a\" = \"read,list\"\n\"a/\" = \"rw\"",
        "the same path as",
    );
    refused(
        "rw",
        "\"./a\" = \"rw\"\n\"a\" = \"read,list\"",
        "the same path as",
    );
    // …and rights for a path beyond the directory's own.
    refused(
        "read",
        "\"x\" = \"write\"",
        "[dir.data.paths] `x`: write is not in the directory's rights (read)",
    );
}

#[test]
fn learning_covers_children_and_their_budgets() {
    let tree = Tree::new();
    let grant = format!("data={}:rw", tree.root().display());
    let spawn = "sp=max-memory=32MiB,max-fuel=100M,timeout=5s,max-children=8";
    let worker = format!("worker={}", guests().join("worker.wasm").display());
    let (m, p) = (manifest(&tree), probe());
    let steps = ["spawn sp probe budget data P read data hello.txt", "wait P"];
    let mut args = vec![
        "run",
        "--learn",
        &m,
        "--dir",
        &grant,
        "--spawn",
        spawn,
        "--component",
        &worker,
        &p,
    ];
    args.extend_from_slice(&steps);
    let expected = "spawn sp probe budget data P read data hello.txt => ok\n\
                    wait P => ok:finished:ok:hello\n";
    assert_eq!(ok(&args), expected);

    let toml = learned(&tree);
    assert_has(
        &toml,
        &[
            "[dir.data.paths]\n\"hello.txt\" = \"read\"\n",
            "max-children = 2\ncomponents = [\"probe\"]",
            "# spawn.sp: 1 children, at most 1 at once",
        ],
    );
    assert!(
        !toml.contains("\"worker\""),
        "an unused component stays out:\n{toml}"
    );
    // The learned budget: twice the peaks, within what was granted.
    let memory: u64 = field(&toml, "[spawn.sp]", "max-memory");
    assert!(memory > 0 && memory <= 32 << 20, "{memory}");
    let fuel: u64 = field(&toml, "[spawn.sp]", "max-fuel");
    assert!(fuel > 0 && fuel < 100_000_000, "{fuel}");

    // Same input, same result; a child doing something else is refused.
    assert_eq!(ok(&["run", "-m", &m]), expected);
    let other = ok(&[
        "run",
        "-m",
        &m,
        "spawn sp probe budget data P read data sub/inner.txt",
        "wait P",
        "spawn sp worker budget - Q x",
    ]);
    assert!(
        other.contains("wait P => ok:finished:err:denied:read\n"),
        "{other}"
    );
    assert!(
        other
            .contains("spawn sp worker budget - Q x => err:invalid:there is no component `worker`"),
        "{other}"
    );
}

/// The number after `key = ` in the table that starts with `table`.
fn field(toml: &str, table: &str, key: &str) -> u64 {
    let at = toml.find(table).expect("the table");
    let line = toml[at..]
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .expect("the key");
    line[key.len() + 3..].trim().parse().expect("a number")
}

fn std_probe() -> String {
    guests().join("std-probe.wasm").display().to_string()
}

/// Each line of std-probe's output up to its first `:`: `ok step`, or `err
/// KIND step`, without the system's message.
fn outcomes(out: &str) -> Vec<&str> {
    out.lines().map(|l| l.split(':').next().unwrap()).collect()
}

/// `learned` with its component replaced by `component`: the same grants,
/// for another program.
fn for_component(learned: &str, component: &str) -> String {
    learned
        .lines()
        .map(|l| {
            if l.starts_with("component = ") {
                format!("component = \"{component}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn learning_what_ripgrep_needs_from_one_search() {
    let tree = Tree::new();
    std::fs::write(tree.path("root/sub/notes.txt"), "a plan\n").unwrap();
    std::fs::create_dir_all(tree.path("root/other")).unwrap();
    std::fs::write(tree.path("root/other/plans.txt"), "a secret plan\n").unwrap();
    let grant = format!("/data={}:ro", tree.root().display());
    let rg = published_tool("ripgrep", "15.2.0", "rg")
        .display()
        .to_string();
    let m = manifest(&tree);
    let first = ok(&[
        "run",
        "--learn",
        &m,
        "--dir",
        &grant,
        &rg,
        "--sort",
        "path",
        "plan",
        "/data/sub",
    ]);
    assert_eq!(first, "/data/sub/notes.txt:a plan\n");

    // The folder searched and the files read in it; nothing else under
    // `/data`, not even the preopen itself, and no right to write.
    let toml = learned(&tree);
    assert!(
        toml.contains(
            "[dir.\"/data\".paths]\nsub = \"list\"\n\"sub/deeper\" = \"list\"\n\
             \"sub/inner.txt\" = \"read,list\"\n\"sub/notes.txt\" = \"read,list\"\n"
        ),
        "{toml}"
    );
    assert!(toml.contains("rights = \"read,list\""), "{toml}");
    assert!(
        toml.contains("args = [\"--sort\", \"path\", \"plan\", \"/data/sub\"]"),
        "{toml}"
    );

    // The same search again, from the manifest alone.
    assert_eq!(rerun(&m, &[]), first);

    // A search anywhere else under `/data` is refused: the sibling folder,
    // a file in it named directly, and `/data` itself.
    for path in ["/data/other", "/data/other/plans.txt", "/data"] {
        let out = capbroker(&["run", "-m", &m, "plan", path]);
        assert_ne!(out.status.code(), Some(0), "{path}: {}", text(&out.stdout));
        assert!(!text(&out.stdout).contains("secret"), "{path}");
        assert!(text(&out.stderr).contains("rg: "), "{}", text(&out.stderr));
    }

    // The grants it learned write nothing, whichever program holds them.
    let probe_manifest = tree.path("probe.toml");
    std::fs::write(&probe_manifest, for_component(&toml, &std_probe())).unwrap();
    let out = rerun(
        probe_manifest.to_str().unwrap(),
        &[
            "write",
            "/data/sub/notes.txt",
            "x",
            "create",
            "/data/sub/new.txt",
        ],
    );
    assert_eq!(
        outcomes(&out),
        [
            "err permission-denied write",
            "err permission-denied create"
        ],
        "{out}"
    );
    assert_eq!(tree.read("root/sub/notes.txt").as_deref(), Some("a plan\n"));
    assert!(tree.read("root/sub/new.txt").is_none());
}

#[test]
fn learning_a_plain_program_narrows_its_files_and_addresses() {
    let tree = Tree::new();
    let (_listening, pa, pb) = two_ports();
    let (to_a, to_b) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let grant = format!("/data={}:rw", tree.root().display());
    let (m, p) = (manifest(&tree), std_probe());
    let args = [
        "run",
        "--learn",
        &m,
        "--dir",
        &grant,
        "--connect",
        "api=127.0.0.0/8:1-65535",
        "--env",
        "GREETING=hi",
        &p,
        "write",
        "/data/out.txt",
        "made",
        "connect",
        &to_a,
        "env",
        "GREETING",
    ];
    let first = ok(&args);
    assert_eq!(first.lines().count(), 3, "{first}");
    assert!(first.lines().all(|l| l.starts_with("ok ")), "{first}");

    let toml = learned(&tree);
    // It holds the variables granted: for its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&m).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert_has(
        &toml,
        &[
            "[dir.\"/data\".paths]\n\"out.txt\" = \"write,create\"\n",
            &format!("[connect]\napi = [\"{to_a}\"]"),
            "GREETING = \"hi\"",
            "# env: a WASI program reads its whole environment at once",
        ],
    );

    // The same steps again work; another file, a right not used on the
    // file written, and another address are refused.
    assert_eq!(rerun(&m, &[]), first);
    let out = rerun(
        &m,
        &[
            "write",
            "/data/sub/other.txt",
            "x",
            "read",
            "/data/out.txt",
            "read",
            "/data/hello.txt",
            "connect",
            &to_b,
        ],
    );
    assert_eq!(
        outcomes(&out),
        [
            "err permission-denied write",
            "err permission-denied read",
            "err permission-denied read",
            "err permission-denied connect",
        ],
        "{out}"
    );
    assert!(tree.read("root/sub/other.txt").is_none());
}

/// Opening a folder to list it uses `list` there, not the rights the
/// descriptor could hold: a listing learned under a read-write grant does
/// not let the next run write below it.
#[test]
fn a_listing_learns_list_and_nothing_more() {
    let tree = Tree::new();
    let (m, p) = (manifest(&tree), std_probe());
    let grant = format!("/data={}", tree.root().display());
    let first = ok(&[
        "run",
        "--learn",
        &m,
        "--dir",
        &grant,
        &p,
        "list",
        "/data/sub",
    ]);
    assert!(first.starts_with("ok list"), "{first}");
    let toml = learned(&tree);
    assert_has(&toml, &["sub = \"list\"\n"]);
    for right in ["write", "create", "remove"] {
        assert!(!toml.contains(right), "{toml}");
    }
    assert_eq!(rerun(&m, &[]), first);
    let out = rerun(
        &m,
        &[
            "write",
            "/data/sub/inner.txt",
            "x",
            "create",
            "/data/sub/new",
        ],
    );
    assert_eq!(
        outcomes(&out),
        [
            "err permission-denied write",
            "err permission-denied create"
        ],
        "{out}"
    );
    assert_eq!(tree.read("root/sub/inner.txt").as_deref(), Some("inner"));
}

/// A preview 1 program's adapter asks the type and flags of each preopen
/// and each file it opens: asking uses no right, so the learned manifest
/// holds only the read the program did, and it re-runs (the adapter's
/// questions about a scoped preopen are answered).
#[test]
fn learning_a_preview1_program_grants_only_what_it_read() {
    let tree = Tree::new();
    std::fs::write(tree.path("root/hello.txt"), "hello\n").unwrap();
    let p1 = tree.path("p1-reader.wasm");
    std::fs::write(&p1, p1_reader()).unwrap();
    let p1 = p1.display().to_string();
    let m = manifest(&tree);
    let grant = format!("/data={}", tree.root().display());
    let first = ok(&["run", "--learn", &m, "--dir", &grant, &p1]);
    assert_eq!(first, "hello\nrefused\n");

    let toml = learned(&tree);
    assert_has(
        &toml,
        &["[dir.\"/data\".paths]\n\"hello.txt\" = \"read\"\n"],
    );
    assert!(!toml.contains("\".\" ="), "{toml}");
    assert!(!toml.contains("write"), "{toml}");
    assert_eq!(rerun(&m, &[]), first);

    // What it did not read, the learned grants refuse: another program
    // under them reads the file but can neither change it nor list.
    let other = tree.path("probe.toml");
    std::fs::write(&other, for_component(&toml, &std_probe())).unwrap();
    let out = ok(&[
        "run",
        "-m",
        &other.display().to_string(),
        "read",
        "/data/hello.txt",
        "write",
        "/data/hello.txt",
        "x",
        "list",
        "/data",
    ]);
    assert_eq!(
        outcomes(&out),
        [
            "ok read hello",
            "",
            "err permission-denied write",
            "err permission-denied list"
        ],
        "{out}"
    );
}

/// A program that connects by name looks the name up first: the learned
/// grant keeps the name (so the lookup is answered again) with the port
/// connected to, and the address connected to, and nothing else.
#[test]
fn learning_a_plain_program_keeps_the_names_it_looked_up() {
    let tree = Tree::new();
    let port = echo_server(2);
    let named = format!("localhost:{port}");
    let (m, p) = (manifest(&tree), std_probe());
    let first = ok(&[
        "run",
        "--learn",
        &m,
        "--connect",
        "web=localhost:1024-65535,10.0.0.0/8:80",
        &p,
        "connect",
        &named,
        "send",
        "hi",
    ]);
    assert_eq!(outcomes(&first), ["ok connect localhost", "ok send hi"]);
    let toml = learned(&tree);
    assert_has(
        &toml,
        &[&format!("\"127.0.0.1:{port}\""), &format!("\"{named}\"")],
    );
    assert!(!toml.contains("10.0.0.0"), "{toml}");
    // The name's ports are the one the run connected to, not the range.
    assert!(!toml.contains("\"localhost:1024-65535\""), "{toml}");
    assert_eq!(rerun(&m, &[]), first);
}

#[test]
fn a_plain_program_that_traps_or_is_stopped_still_gets_its_manifest() {
    let tree = Tree::new();
    let grant = format!("/data={}:rw", tree.root().display());
    let (m, p) = (manifest(&tree), std_probe());

    // An output that cannot be written is said before the program runs,
    // whether or not a grant could write near it.
    let nowhere = tree.path("no/such/folder/learned.toml");
    for rights in ["ro", "rw"] {
        let grant = format!("/data={}:{rights}", tree.root().display());
        let out = capbroker(&[
            "run",
            "--learn",
            nowhere.to_str().unwrap(),
            "--dir",
            &grant,
            &p,
            "stderr",
            "RAN",
            "write",
            "/data/ran.txt",
            "x",
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--learn output") || stderr.contains("--learn: cannot write"));
        assert!(stderr.contains(nowhere.to_str().unwrap()), "{stderr}");
        assert!(!stderr.contains("RAN"), "{stderr}");
        assert!(tree.read("root/ran.txt").is_none());
    }

    // A trap: the status says so, and what it used before is learned.
    let out = capbroker(&[
        "run",
        "--learn",
        &m,
        "--dir",
        &grant,
        &p,
        "write",
        "/data/a.txt",
        "x",
        "panic",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let toml = learned(&tree);
    assert!(toml.contains("\"a.txt\" = \"write,create\""), "{toml}");

    // SIGTERM while it runs: the manifest is written, and the status is a
    // shell's for the signal.
    std::fs::remove_file(&m).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args([
            "run",
            "--learn",
            &m,
            "--dir",
            &grant,
            &p,
            "write",
            "/data/b.txt",
            "x",
            "sleep",
            "60000",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while tree.read("root/b.txt").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the program never wrote"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let toml = learned(&tree);
    assert!(toml.contains("\"b.txt\" = \"write,create\""), "{toml}");
    assert!(!toml.contains("a.txt"), "{toml}");
}

#[test]
fn learning_narrows_network_grants_to_the_addresses_used() {
    let tree = Tree::new();
    let (_listening, pa, pb) = two_ports();
    let (m, p) = (manifest(&tree), probe());
    let grant = format!("data={}:rw", tree.root().display());
    let step = format!("connect api 127.0.0.1:{pa} S");
    ok(&[
        "run",
        "--learn",
        &m,
        "--dir",
        &grant,
        "--connect",
        "api=127.0.0.0/8:1-65535",
        &p,
        &step,
    ]);
    let toml = learned(&tree);
    assert!(
        toml.contains(&format!("[connect]\napi = [\"127.0.0.1:{pa}\"]")),
        "{toml}"
    );
    let other = format!("connect api 127.0.0.1:{pb} T");
    let out = ok(&["run", "-m", &m, &step, &other]);
    assert!(
        out.contains(&format!("{step} => ok:127.0.0.1:{pa}\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{other} => err:refused:127.0.0.1:{pb} is outside the grant"
        )),
        "{out}"
    );
}
