//! `capbroker.toml`: grants, limits and the component in a file, merged
//! with the flags; a bad manifest is refused with its file, line, column
//! and key, and nothing runs.

mod support;

use std::path::Path;

use support::{capbroker, guest, text, Tree};

/// A folder with the worker example, its folders and `manifest`.
fn worker_folder(manifest: &str) -> Tree {
    let tree = Tree::new();
    let dir = tree.path("app");
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    std::fs::create_dir_all(dir.join("data/reports")).unwrap();
    std::fs::write(dir.join("conf/worker.conf"), "folder = reports\n").unwrap();
    std::fs::write(dir.join("data/reports/a.txt"), "one two\nthree\n").unwrap();
    std::fs::copy(guest("worker"), dir.join("worker.wasm")).unwrap();
    std::fs::write(dir.join("capbroker.toml"), manifest).unwrap();
    tree
}

const WORKER: &str = r#"
component = "worker.wasm"

[limits]
max-memory = "32MiB"
timeout = "20s"

[dir.cfg]
path = "conf"
rights = "ro"

[dir.data]
path = "data"
rights = ["read", "write", "create", "list"]
"#;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn the_manifest_grants_and_the_flags_add_or_override() {
    let tree = worker_folder(WORKER);
    let manifest = tree.path("app/capbroker.toml");

    // From the manifest alone, named with -m: the worker does its job.
    let out = capbroker(&["run", "-m", s(&manifest)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("a.txt: 2 lines, 3 words"),
        "{}",
        text(&out.stdout)
    );
    assert!(tree.read("app/data/reports/summary.txt").is_some());

    // Said so on stderr.
    assert!(
        text(&out.stderr).contains(&format!(
            "capbroker: grants and limits from the manifest {}",
            manifest.canonicalize().unwrap().display()
        )),
        "{}",
        text(&out.stderr)
    );

    // Next to the component but not named: not used, and said so.
    std::fs::remove_file(tree.path("app/data/reports/summary.txt")).unwrap();
    let out = capbroker(&["run", s(&tree.path("app/worker.wasm"))]);
    assert!(!out.status.success(), "it ran with the manifest's grants");
    assert!(
        text(&out.stderr).contains(&format!("not using {}", manifest.display())),
        "{}",
        text(&out.stderr)
    );
    assert!(tree.read("app/data/reports/summary.txt").is_none());

    // Flags replace what has the same name and add the rest.
    let out = capbroker(&[
        "run",
        "-m",
        s(&manifest),
        "--print-config",
        "--dir",
        &format!("cfg={}:read", tree.root().display()),
        "--max-fuel",
        "5000000",
        "--listen",
        "web=127.0.0.1:8080",
        "an-arg",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    let app = tree.path("app").canonicalize().unwrap();
    for want in [
        format!("component = \"{}/worker.wasm\"", app.display()),
        "args = [\"an-arg\"]".to_string(),
        "[listen]\n# from the command line\nweb = [\"127.0.0.1:8080\"]".to_string(),
        "max-memory = 33554432".to_string(),
        "max-fuel = 5000000".to_string(),
        "timeout = \"20000ms\"".to_string(),
        format!(
            "[dir.cfg]\npath = \"{}\"\nrights = \"read\"",
            tree.root().display()
        ),
        format!(
            "[dir.data]\npath = \"{}/data\"\nrights = \"read,write,create,list\"",
            app.display()
        ),
        // Where each came from.
        format!("# manifest: {}", manifest.display()),
        format!("# from {}\n[dir.data]", manifest.display()),
        "# from the command line\n[dir.cfg]".to_string(),
        format!("# from {}\nmax-memory = 33554432", manifest.display()),
        "# from the command line\nmax-fuel = 5000000".to_string(),
        "# from the default\nmax-handles = 1024".to_string(),
    ] {
        assert!(printed.contains(&want), "no `{want}` in:\n{printed}");
    }
    // What it prints is a manifest that reads back the same, but for where
    // each part came from.
    let again = tree.path("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = capbroker(&["run", "-m", s(&again), "--print-config"]);
    let origins = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("# from ") && !l.starts_with("# manifest: "))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert_eq!(
        origins(&text(&out.stdout)),
        origins(&printed),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_bad_manifest_names_the_place_and_nothing_runs() {
    let cases: &[(&str, &str)] = &[
        (
            "component = \"worker.wasm\"\n[dirs.cfg]\npath = \"conf\"\n",
            "capbroker.toml:2:2: unknown field `dirs`, expected one of",
        ),
        (
            "[dir.cfg]\npath = \"conf\"\nrights = \"rwx\"\n",
            "capbroker.toml:3:10: [dir.cfg] rights: unknown right `rwx`",
        ),
        (
            "[dir.cfg]\npath = \"nowhere\"\n",
            "capbroker.toml:2:8: [dir.cfg] path: cannot open",
        ),
        (
            "[dir.cfg]\nrights = \"ro\"\n",
            "capbroker.toml:1:1: missing field `path`",
        ),
        (
            "[limits]\nmax-memory = \"lots\"\n",
            "capbroker.toml:2:14: [limits] max-memory: `lots` is not a size",
        ),
        (
            "[limits]\nmax-handles = 0\n",
            "capbroker.toml:2:15: [limits] max-handles: 0 is not in 16..=1000000",
        ),
        (
            "[spawn.w]\nmax-children = 0\n",
            "capbroker.toml:1:1: [spawn.w]: max-children of 0",
        ),
        (
            "listen.web = \"localhost:80\"\n",
            "capbroker.toml:1:14: [listen] web: `localhost:80` is not ADDRESS",
        ),
        (
            "[components]\nx = \"missing.wasm\"\n",
            "capbroker.toml:2:5: [components] x: no file at",
        ),
        (
            "component = 5\n",
            "capbroker.toml:1:13: invalid type: integer `5`, expected a string",
        ),
        ("[dir.cfg\n", "capbroker.toml:1:9:"),
        // Well-formed, but the component cannot take this grant.
        (
            "component = \"worker.wasm\"\n[dir.extra]\npath = \"conf\"\n",
            "grant `extra`: the component does not ask for a handle by that name",
        ),
    ];
    for (manifest, want) in cases {
        let tree = worker_folder(manifest);
        let out = capbroker(&["run", "-m", s(&tree.path("app/capbroker.toml"))]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{manifest}: {stderr}");
        assert!(
            stderr.contains(want),
            "{manifest}: expected `{want}` in: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            tree.read("app/data/reports/summary.txt").is_none(),
            "it ran: {manifest}"
        );
    }
    let out = capbroker(&["run", "-m", "/nonexistent/capbroker.toml"]);
    assert!(
        text(&out.stderr).contains("cannot read the manifest"),
        "{}",
        text(&out.stderr)
    );
    let out = capbroker(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no component to run"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_wasi_command_from_a_manifest() {
    let tree = Tree::new();
    std::fs::copy(guest("std-probe"), tree.path("probe.wasm")).unwrap();
    let manifest = tree.path("capbroker.toml");
    std::fs::write(
        &manifest,
        "component = \"probe.wasm\"\nargs = [\"read\", \"/data/hello.txt\", \"env\", \"GREETING\"]\n\
         [env]\nGREETING = \"hi\"\n[dir.\"/data\"]\npath = \"root\"\nrights = \"ro\"\n",
    )
    .unwrap();
    let out = capbroker(&["run", "-m", s(&manifest)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok read hello\nok env hi\n");
}

/// `capbroker args…` with the log filter set to hide everything.
fn capbroker_log_off(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args(args)
        .env("CAPBROKER_LOG", "off")
        .output()
        .expect("run capbroker")
}

/// Runs `guest` from the tree's root folder, granted that folder
/// read-write as `grant`, with `flags` and `steps`; its first run writes
/// the next run's manifest there (its output says `first`). Then the next
/// runs: the same command line ignores the manifest, says so in a line no
/// log filter hides, and reaches nothing outside (the lines
/// `outside_lines` of its output are errors); the same with `-m` naming it
/// is refused, naming the manifest and `grant`, and runs nothing.
fn own_folder_twice(
    guest_name: &str,
    grant: &str,
    flags: &[&str],
    steps: &[&str],
    first: &str,
    outside_lines: &[usize],
) {
    let tree = Tree::new();
    let component = tree.root().join(format!("{guest_name}.wasm"));
    std::fs::copy(guest(guest_name), &component).unwrap();
    let dir = format!("{grant}={}:rw", tree.root().display());
    let mut args = vec!["run", "--dir", &dir];
    args.extend(flags);
    args.push(s(&component));
    args.extend(steps);
    let out = capbroker(&args);
    assert!(text(&out.stdout).contains(first), "{}", text(&out.stdout));
    let written = tree.root().join("capbroker.toml");
    assert!(
        std::fs::read_to_string(&written).is_ok_and(|t| t.contains("outside")),
        "the first run did not write its manifest"
    );

    let out = capbroker_log_off(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    for &n in outside_lines {
        assert!(
            stdout.lines().nth(n).is_some_and(|l| l.contains("err")),
            "reached outside: {stdout}"
        );
    }
    assert!(!stdout.contains("SECRET"), "{stdout}");
    assert_eq!(tree.read("outside/secret").as_deref(), Some("SECRET"));
    assert!(
        stderr.contains(&format!(
            "capbroker: not using {}: a manifest is read only when named with -m",
            written.display()
        )),
        "{stderr}"
    );

    // What the same command line grants: the flags alone, default limits.
    let mut print = vec!["run", "--print-config"];
    print.extend(&args[1..]);
    let out = capbroker(&print);
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(printed.contains("# manifest: none"), "{printed}");
    let outside = tree.outside().canonicalize().unwrap();
    assert!(
        !printed.contains(&format!("path = \"{}\"", outside.display())),
        "{printed}"
    );
    assert!(printed.contains("max-memory = 268435456"), "{printed}");

    // --quiet alone hides the notice.
    let mut quiet = vec!["run", "--quiet"];
    quiet.extend(&args[1..]);
    assert!(!text(&capbroker(&quiet).stderr).contains("not using"));

    // Named by the operator, it is refused: the guest could have written it.
    let mut named = vec!["run", "-m", written.to_str().unwrap()];
    named.extend(&args[1..]);
    let out = capbroker(&named);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("the manifest `{}`", written.display()))
            && stderr.contains(&format!("within reach of grant `{grant}`")),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).is_empty(),
        "it ran: {}",
        text(&out.stdout)
    );
    assert_eq!(tree.read("outside/secret").as_deref(), Some("SECRET"));
}

#[test]
fn a_plain_program_granted_its_folder_cannot_choose_its_next_grants() {
    let manifest = "[dir.\"/out\"]\npath = \"../outside\"\nrights = \"rw\"\n\
                    [limits]\nmax-memory = \"4GiB\"\n";
    own_folder_twice(
        "std-probe",
        "/app",
        &[],
        &[
            "write",
            "/app/capbroker.toml",
            manifest,
            "read",
            "/out/secret",
            "write",
            "/out/secret",
            "PWNED",
        ],
        "ok write /app/capbroker.toml",
        &[1, 2],
    );
}

#[test]
fn an_app_granted_its_folder_cannot_choose_its_next_grants() {
    // The probe's words cannot hold spaces: the manifest is one dotted key.
    own_folder_twice(
        "probe",
        "data",
        &[],
        &[
            "write data capbroker.toml dir.b.path=\"../outside\"",
            "read b secret",
            "write b secret PWNED",
        ],
        "capbroker.toml dir.b.path=\"../outside\" => ok",
        &[1, 2],
    );
}

#[test]
fn a_spawned_child_granted_the_folder_cannot_choose_the_next_grants() {
    own_folder_twice(
        "probe",
        "data",
        &["--spawn", "sp"],
        &[
            "spawn sp self budget data c write data capbroker.toml dir.b.path=\"../outside\"",
            "wait c",
            "read b secret",
        ],
        "wait c => ok:finished:ok",
        &[2],
    );
}

/// `--dir NAME=PATH:RIGHTS`, as (NAME, PATH, RIGHTS).
type DirFlag = (&'static str, &'static str, &'static str);

/// Whether a named manifest is within reach of a writable grant is decided
/// on the folders themselves: `..`, symbolic links (in the grant's path or
/// the manifest's) and hard links do not hide it, read-only grants and
/// grants elsewhere do not count.
#[test]
fn a_manifest_any_writable_grant_reaches_is_refused() {
    let tree = Tree::new();
    let root = tree.root();
    let app = root.join("probe.wasm");
    std::fs::copy(guest("probe"), &app).unwrap();
    for d in ["conf/sub", "data"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let write = |p: &str, t: &str| std::fs::write(root.join(p), t).unwrap();
    write("conf/capbroker.toml", "");
    write("data/real.toml", "");
    write("conf/own.toml", "[dir.b]\npath = \".\"\n");
    write(
        "conf/narrow.toml",
        "[dir.b]\npath = \".\"\n[dir.b.paths]\n\"narrow.toml\" = \"write\"\n",
    );
    write(
        "conf/narrow-sub.toml",
        "[dir.b]\npath = \".\"\n[dir.b.paths]\n\"sub\" = \"read,write,create\"\n",
    );
    std::os::unix::fs::symlink("conf", root.join("conf-link")).unwrap();
    std::os::unix::fs::symlink("data", root.join("via")).unwrap();
    std::os::unix::fs::symlink("../data/real.toml", root.join("conf/link.toml")).unwrap();
    std::fs::write(tree.outside().join("other.toml"), "").unwrap();
    std::fs::hard_link(
        tree.outside().join("other.toml"),
        root.join("conf/hard.toml"),
    )
    .unwrap();

    let r = |p: &str| root.join(p).display().to_string();
    // (manifest, --dir NAME=PATH:RIGHTS, what the refusal says)
    let looked_up = Some("a folder its path is looked up in");
    let reach = Some("within reach");
    let cases: &[(&str, Option<DirFlag>, Option<&str>)] = &[
        (
            "conf/capbroker.toml",
            Some(("data", "conf", "rw")),
            looked_up,
        ),
        ("conf/capbroker.toml", Some(("data", "", "create")), reach),
        (
            "conf/capbroker.toml",
            Some(("data", "conf-link", "remove")),
            reach,
        ),
        (
            "conf/capbroker.toml",
            Some(("data", "data/../conf", "write")),
            reach,
        ),
        ("via/real.toml", Some(("data", "data", "rw")), reach),
        ("conf/link.toml", Some(("data", "data", "rw")), reach),
        (
            "conf/hard.toml",
            Some(("data", "data", "rw")),
            Some("2 hard links"),
        ),
        ("conf/own.toml", None, Some("grant `b`")),
        ("conf/narrow.toml", None, Some("the file itself")),
        ("conf/narrow-sub.toml", None, None),
        ("conf/capbroker.toml", Some(("ro", "conf", "ro")), None),
        ("conf/capbroker.toml", Some(("data", "data", "rw")), None),
        (
            "conf-link/capbroker.toml",
            Some(("ro", "", "read,list")),
            None,
        ),
    ];
    for (manifest, grant, refusal) in cases {
        let manifest = r(manifest);
        let grant = grant.map(|(name, path, rights)| format!("{name}={}:{rights}", r(path)));
        let mut args = vec!["run", "-m", &manifest];
        if let Some(g) = &grant {
            args.extend(["--dir", g]);
        }
        args.push(s(&app));
        let out = capbroker(&args);
        let stderr = text(&out.stderr);
        match refusal {
            Some(says) => {
                assert_eq!(out.status.code(), Some(2), "{args:?} ran: {stderr}");
                assert!(
                    stderr.contains(&format!("the manifest `{manifest}`")) && stderr.contains(says),
                    "{args:?}: expected `{says}` in: {stderr}"
                );
            }
            None => assert!(out.status.success(), "{args:?}: {stderr}"),
        }
    }
}

/// The files the broker writes for the operator follow the manifest's
/// rule: an `--audit` log or `--learn` output a grant could reach (and so
/// forge, or replace with a link the broker would follow) is refused
/// before anything runs.
#[test]
fn operator_files_within_a_grants_reach_are_refused() {
    let tree = Tree::new();
    std::fs::write(tree.path("outside/prod.toml"), "KEEP").unwrap();
    std::os::unix::fs::symlink("../outside/prod.toml", tree.path("root/learned.toml")).unwrap();
    let probe = guest("probe");
    let grant = format!("data={}:rw", tree.root().display());
    for (flag, file) in [
        ("--learn", "root/learned.toml"),
        ("--audit", "root/audit.jsonl"),
    ] {
        let path = tree.path(file);
        let out = capbroker(&[
            "run",
            flag,
            s(&path),
            "--dir",
            &grant,
            s(&probe),
            "write data x.txt ran",
        ]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{flag}: {stderr}");
        assert!(
            stderr.contains("within reach of grant `data`"),
            "{flag}: {stderr}"
        );
        assert!(!tree.path("root/x.txt").exists(), "{flag}: the guest ran");
    }
    assert_eq!(tree.read("outside/prod.toml").as_deref(), Some("KEEP"));
    assert!(!tree.path("root/audit.jsonl").exists());
    // Out of reach, they work.
    let learned = tree.path("learned.toml");
    let out = capbroker(&[
        "run",
        "--learn",
        s(&learned),
        "--dir",
        &grant,
        s(&probe),
        "write data x.txt ran",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(learned.exists());
}

/// `-m` with a bare file name reads it from the working folder.
#[test]
fn a_manifest_named_without_a_folder() {
    let tree = Tree::new();
    std::fs::write(
        tree.path("m.toml"),
        format!(
            "component = {:?}\n",
            guest("std-probe").display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args(["run", "-q", "-m", "m.toml", "env", "X"])
        .current_dir(tree.tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("err not-found env"),
        "{}",
        text(&out.stdout)
    );
}

/// The other files a run names, as bare file names in the working folder:
/// the audit log, the learned manifest, and that manifest run again.
#[test]
fn bare_file_names_for_the_audit_log_and_learning() {
    let tree = Tree::new();
    std::fs::copy(guest("probe"), tree.path("probe.wasm")).unwrap();
    std::fs::write(tree.path("m.toml"), "component = \"probe.wasm\"\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_capbroker"))
            .arg("run")
            .args(args)
            .current_dir(tree.tmp.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    run(&[
        "-q", "-m", "m.toml", "--audit", "a.jsonl", "--learn", "l.toml",
    ]);
    assert!(tree
        .read("a.jsonl")
        .is_some_and(|log| log.contains("\"exit\"")));
    let learned = tree.read("l.toml").unwrap();
    assert!(learned.contains("probe.wasm"), "{learned}");
    run(&["-q", "-m", "l.toml"]);
}

/// A grant whose path goes through a link inside another grant that can
/// write there is refused: a guest of an earlier run could have put the
/// link there to point the grant at any folder of the host.
#[test]
fn a_grant_redirected_by_a_link_inside_a_writable_grant_is_refused() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/pub")).unwrap();
    let probe = guest("probe");
    let data = format!("data={}", tree.root().display());
    let ro = format!("ro={}:ro", tree.path("root/pub").display());
    let args = |steps: &[&str]| {
        let mut a = vec!["run", "--dir", &data, "--dir", &ro, s(&probe)];
        a.extend_from_slice(steps);
        capbroker(&a)
    };
    // The first run turns the nested folder into a link to the outside.
    let out = args(&[
        "rmdir data pub",
        "wasi-hold data all d",
        "wasi-symlink d ../outside pub",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(tree.path("root/pub").is_symlink());
    // The next, with the same flags, is refused before anything runs.
    let out = args(&["read ro secret"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("goes through the link"), "{stderr}");
    assert!(!text(&out.stdout).contains("SECRET"));
}

/// A grant's path climbing back with `..` after a link the guest made
/// inside the grant: `..` is taken by its text, so the grant stays where
/// the operator named it.
#[test]
fn a_grant_climbing_out_through_its_own_link_is_refused() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/sub")).unwrap();
    let probe = guest("probe");
    let data = format!("data={}/sub/..", tree.root().display());
    let out = capbroker(&[
        "run",
        "--dir",
        &data,
        s(&probe),
        "rmdir data sub",
        "wasi-hold data all d",
        "wasi-symlink d ../outside/inner sub",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::create_dir_all(tree.path("outside/inner")).unwrap();
    std::fs::write(tree.path("outside/inner/key"), "KEY").unwrap();
    let out = capbroker(&[
        "run",
        "--dir",
        &data,
        s(&probe),
        "read data key",
        "read data hello.txt",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("read data key => err:not-found"),
        "{stdout}"
    );
    assert!(
        stdout.contains("read data hello.txt => ok:hello"),
        "{stdout}"
    );
}

/// A learned manifest names grants by the paths the run opened, never by
/// where a link made during the run leads: the next run's check then sees
/// the link and refuses it.
#[test]
fn learning_writes_the_paths_the_run_opened() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/sub")).unwrap();
    let probe = guest("probe");
    let learned = tree.path("learned.toml");
    let out = capbroker(&[
        "run",
        "--learn",
        s(&learned),
        "--dir",
        &format!("data={}", tree.root().display()),
        "--dir",
        &format!("ro={}:ro", tree.path("root/sub").display()),
        s(&probe),
        "rmdir data sub",
        "wasi-hold data all d",
        "wasi-symlink d ../outside sub",
        "read ro secret",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = std::fs::read_to_string(&learned).unwrap();
    assert!(
        !toml.contains(&tree.outside().display().to_string()),
        "{toml}"
    );
    let out = capbroker(&["run", "-m", s(&learned), "--", "read ro secret"]);
    assert!(
        !text(&out.stdout).contains("SECRET"),
        "{}",
        text(&out.stdout)
    );
}

/// A grant is opened once, when the run reads it; if its folder is not the
/// same one when its path is checked (a link on the path changed, or the
/// folder was moved and another put in its place, by a guest of another
/// run), the run is refused rather than given either folder.
#[test]
fn a_grant_whose_folder_changed_after_it_was_opened_is_refused() {
    use capbroker::core::Rights;
    use capbroker::fs::DirGrant;
    use capbroker::grants::{Grant, NamedGrant};
    use capbroker::policy::Config;

    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("a")).unwrap();
    let grant = DirGrant::new(tree.path("a"), Rights::READ | Rights::LIST, None);
    grant.open().unwrap();
    let config = |grant: &DirGrant| Config {
        grants: vec![NamedGrant {
            name: "data".into(),
            grant: Grant::Dir(grant.clone()),
        }],
        ..Config::default()
    };
    config(&grant).check_grants_not_redirected().unwrap();

    std::fs::rename(tree.path("a"), tree.path("moved")).unwrap();
    std::fs::create_dir_all(tree.path("a")).unwrap();
    let err = config(&grant).check_grants_not_redirected().unwrap_err();
    assert!(
        format!("{err:#}").contains("no longer the folder the broker opened"),
        "{err:#}"
    );
    // Opened again from its path, the grant is the new folder, and fine.
    let fresh = DirGrant::new(tree.path("a"), Rights::READ | Rights::LIST, None);
    fresh.open().unwrap();
    config(&fresh).check_grants_not_redirected().unwrap();
}

/// `--print-config` says where each grant came from, a grant whose name
/// TOML quotes (a plain program's `/data`) too.
#[test]
fn print_config_names_the_origin_of_quoted_grants() {
    let tree = Tree::new();
    let manifest = tree.path("capbroker.toml");
    std::fs::write(
        &manifest,
        "[dir.\"/data\"]\npath = \".\"\nrights = \"ro\"\n[limits]\nmax-handles = 64\n",
    )
    .unwrap();
    let out = capbroker(&["run", "-m", manifest.to_str().unwrap(), "--print-config"]);
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        printed.contains(&format!("# from {}\n[dir.\"/data\"]", manifest.display())),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("# from {}\nmax-handles = 64", manifest.display())),
        "{printed}"
    );
}
