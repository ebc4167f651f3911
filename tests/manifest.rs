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

    // Found next to the component, and said so.
    let out = capbroker(&["run", s(&tree.path("app/worker.wasm"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("using"), "{}", text(&out.stderr));

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
        "listen.\"web\" = [\"127.0.0.1:8080\"]".to_string(),
        "max-memory = 33554432".to_string(),
        "max-fuel = 5000000".to_string(),
        "timeout = \"20000ms\"".to_string(),
        format!(
            "[dir.\"cfg\"]\npath = \"{}\"\nrights = \"read\"",
            tree.root().display()
        ),
        format!(
            "[dir.\"data\"]\npath = \"{}/data\"\nrights = \"read,write,create,list\"",
            app.display()
        ),
    ] {
        assert!(printed.contains(&want), "no `{want}` in:\n{printed}");
    }
    // What it prints is a manifest that reads back the same.
    let again = tree.path("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = capbroker(&["run", "-m", s(&again), "--print-config"]);
    assert_eq!(text(&out.stdout), printed, "{}", text(&out.stderr));
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
