//! Plain `wasi:cli` commands under `capbroker run`: programs no one here
//! wrote, and our own std-only probe, get exactly the operator's grants and
//! behave as under `wasmtime run` (args, exit codes, stdout and stderr).

mod support;

use support::{capbroker, guest, published_tool, text, Tree};

fn rg() -> String {
    published_tool("ripgrep", "15.2.0", "rg")
        .display()
        .to_string()
}

#[test]
fn ripgrep_works_inside_its_grant_and_is_refused_outside() {
    let tree = Tree::new();
    std::fs::write(tree.path("root/sub/notes.txt"), "a secret plan\n").unwrap();
    let grant = format!("/data={}:ro", tree.root().display());
    let rg = rg();

    // Inside the grant: a recursive search, with its arguments.
    let out = capbroker(&[
        "run", "--dir", &grant, &rg, "--sort", "path", "-n", "e", "/data",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        stdout,
        "/data/hello.txt:1:hello\n/data/sub/inner.txt:1:inner\n/data/sub/notes.txt:1:a secret plan\n"
    );

    // rg's own exit codes come through: 1 is "no match".
    let out = capbroker(&["run", "--dir", &grant, &rg, "nothing-like-this", "/data"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // Outside the grant: `..`, the host path itself, and no grant at all.
    for (grants, path) in [
        (vec!["--dir", grant.as_str()], "/data/../outside"),
        (
            vec!["--dir", grant.as_str()],
            tree.outside().to_str().unwrap(),
        ),
        (vec![], "/data"),
    ] {
        let mut args = vec!["run"];
        args.extend(grants);
        args.extend([rg.as_str(), "SECRET", path]);
        let out = capbroker(&args);
        // rg reports the error and finds nothing (exit 1 with its message).
        assert_eq!(out.status.code(), Some(1), "{path}: {}", text(&out.stdout));
        assert!(!text(&out.stdout).contains("SECRET"));
        assert!(text(&out.stderr).contains("rg:"), "{}", text(&out.stderr));
    }

    // `inspect` says what it could use: files, not the network.
    let out = capbroker(&["inspect", &rg]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("rg is a plain WASI command"), "{stdout}");
    assert!(
        stdout.contains("files: --dir GUEST=PATH[:RIGHTS]"),
        "{stdout}"
    );
    assert!(!stdout.contains("network"), "{stdout}");
    let probe = guest("std-probe");
    let out = capbroker(&["inspect", probe.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("network: --listen, --connect"), "{stdout}");
    assert!(stdout.contains("capbroker's pledge and unveil"), "{stdout}");

    // A read-only grant: rg can read, but nothing in the tree changes.
    let out = capbroker(&["run", "--dir", &grant, &rg, "--files", "/data/sub"]);
    assert_eq!(out.status.code(), Some(0));
    let mut files: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    files.sort();
    assert_eq!(files, ["/data/sub/inner.txt", "/data/sub/notes.txt"]);
}

#[test]
fn exit_codes_output_and_traps_are_those_of_wasmtime_run() {
    let probe = guest("std-probe");
    let probe = probe.to_str().unwrap();
    // WASI 0.2's `exit` carries success or failure, not a code: any
    // non-zero exit is 1, as under `wasmtime run`.
    let out = capbroker(&["run", probe, "stderr", "to-stderr", "exit", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "to-stderr\n");
    let out = capbroker(&["run", probe, "exit", "0"]);
    assert_eq!(out.status.code(), Some(0));
    // A panic is a trap: the message, and 1, as `wasmtime run` exits.
    let out = capbroker(&["run", probe, "panic"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("told to"), "{stderr}");
    assert!(stderr.contains("the program trapped"), "{stderr}");
}

#[test]
fn bad_grants_for_a_command_are_clear_errors() {
    let probe = guest("std-probe");
    let probe = probe.to_str().unwrap();
    let tree = Tree::new();
    let refused = |args: &[&str], needle: &str| {
        let out = capbroker(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    refused(
        &["run", "--spawn", "sp", probe],
        "spawners and --component are for capbroker apps",
    );
    refused(
        &["run", "--env", "CAPBROKER_TEST_SURELY_UNSET", probe],
        "is not set in the host's environment",
    );
    refused(&["run", "--env", "=x", probe], "has an empty name");
    refused(
        &[
            "run",
            "--dir",
            &format!("/data={}", tree.path("nosuch").display()),
            probe,
        ],
        "nosuch",
    );
    refused(
        &[
            "run",
            "--dir",
            &format!("/data={}:rwx", tree.root().display()),
            probe,
        ],
        "unknown right",
    );
    // And a capbroker app refuses the command-only flags.
    refused(
        &["run", "--stdin", guest("worker").to_str().unwrap()],
        "--env and --stdin are for WASI commands",
    );
}

#[test]
fn a_memory_bomb_under_the_default_limits_ends_within_its_cap() {
    let tree = Tree::new();
    let log = tree.path("audit.jsonl");
    let probe = guest("std-probe");
    // No limit flags: the documented defaults apply.
    let out = capbroker(&[
        "run",
        "--audit",
        log.to_str().unwrap(),
        probe.to_str().unwrap(),
        "bomb",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the program ran out of memory"), "{stderr}");
    let exit: serde_json::Value = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "exit")
        .expect("an exit event");
    assert_eq!(exit["status"], "out-of-memory");
    let peak = exit["peak_memory"].as_u64().unwrap();
    assert!(peak <= 256 << 20 && peak > 200 << 20, "peak {peak}");
}
