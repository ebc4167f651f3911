//! Plain `wasi:cli` commands under `capbroker run`: programs no one here
//! wrote, and our own std-only probe, get exactly the operator's grants and
//! behave as under `wasmtime run` (args, exit codes, stdout and stderr).

mod support;

use support::{
    capbroker, echo_server, events, expect, guest, lines, p1_reader, published_tool, text, Tree,
};

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

/// The addresses of an `ok lookup …` line: loopback only, 127.0.0.1 among
/// them (what the host's resolver gives for `localhost`).
fn loopback_only(line: &str) {
    let addrs = line.strip_prefix("ok lookup ").expect(line);
    let addrs: Vec<std::net::IpAddr> = addrs.split(' ').map(|a| a.parse().unwrap()).collect();
    assert!(addrs.iter().all(|a| a.is_loopback()), "{line}");
    assert!(addrs.contains(&[127, 0, 0, 1].into()), "{line}");
}

/// `wasi:sockets/ip-name-lookup` (here through wasi-libc's `getaddrinfo`)
/// answers a plain program only for a name its grants name, with what that
/// name resolved to when the run started; any other name, a short numeric
/// form and an address outside the grants are refused with
/// `access-denied`, and each refusal is audited with the name.
#[test]
fn name_lookup_answers_only_the_names_a_grant_names() {
    let port = echo_server(1);
    let tree = Tree::new();
    let log = tree.path("audit.jsonl");
    let named = format!("localhost:{port}");
    let refused = ["example.com", "127.1", "0x7f.1", "2130706433", "[::2]"];
    let mut args = vec!["run", "--audit", log.to_str().unwrap(), "--connect"];
    let grant = format!("web={named}");
    let probe = guest("std-probe");
    args.extend([grant.as_str(), probe.to_str().unwrap()]);
    args.extend(["lookup", "localhost", "lookup", "LocalHost."]);
    args.extend(["connect", &named, "send", "hi"]);
    for name in refused {
        args.extend(["lookup", name]);
    }
    args.extend(["lookup-hold", "localhost", "lookup-ready"]);
    args.extend(["lookup-next"; 3]);
    let got = lines(&capbroker(&args));
    loopback_only(&got[0]);
    loopback_only(&got[1]);
    let denied = "err permission-denied lookup";
    expect(
        &got[2..got.len() - 3],
        &[
            "ok connect",
            "ok send hi",
            denied,
            denied,
            denied,
            denied,
            denied,
            "ok lookup-hold localhost",
            "ok lookup-ready true",
        ],
    );
    // The raw stream gives the same addresses, then says it is done.
    let mut next: Vec<String> = got[0]["ok lookup ".len()..]
        .split(' ')
        .map(|a| format!("ok lookup-next {a}"))
        .collect();
    next.resize(3, "ok lookup-next none".into());
    assert_eq!(got[got.len() - 3..], next[..], "{got:#?}");
    let all = events(&log);
    let denials: Vec<&str> = all
        .iter()
        .filter(|e| e["event"] == "deny" && e["op"] == "lookup")
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(denials, refused, "{all:#?}");
}

/// An IP address written in full is answered as itself only inside a
/// granted range (a listen grant's too); a listen grant names no host.
#[test]
fn name_lookup_of_an_address_needs_a_range_that_holds_it() {
    let probe = guest("std-probe");
    let out = capbroker(&[
        "run",
        "--listen",
        "web=[::1]:8000",
        probe.to_str().unwrap(),
        "lookup",
        "[::1]",
        "lookup",
        "[::2]",
        "lookup",
        "[::ffff:127.0.0.1]",
        "lookup",
        "localhost",
    ]);
    expect(
        &lines(&out),
        &[
            "ok lookup ::1",
            "err permission-denied lookup",
            "err permission-denied lookup",
            "err permission-denied lookup",
        ],
    );
}

/// After `pledge net` every lookup is refused, the next address of a
/// stream taken before the pledge too; with no network grant at all, every
/// lookup is refused.
#[test]
fn name_lookup_ends_with_a_pledge_and_needs_a_grant() {
    let probe = guest("std-probe");
    let probe = probe.to_str().unwrap();
    let out = capbroker(&[
        "run",
        "--connect",
        "web=localhost:80",
        probe,
        "lookup-hold",
        "localhost",
        "lookup-ready",
        "pledge",
        "net",
        "lookup-next",
        "lookup",
        "localhost",
        "lookup-hold",
        "localhost",
    ]);
    expect(
        &lines(&out),
        &[
            "ok lookup-hold localhost",
            "ok lookup-ready true",
            "ok pledge net",
            "err access-denied lookup-next",
            "err permission-denied lookup",
            "err access-denied lookup-hold",
        ],
    );
    let out = capbroker(&[
        "run",
        probe,
        "lookup",
        "localhost",
        "lookup-hold",
        "localhost",
        "connect",
        "localhost:80",
    ]);
    expect(
        &lines(&out),
        &[
            "err permission-denied lookup",
            "err access-denied lookup-hold",
            "err permission-denied connect",
        ],
    );
}

/// Lookup streams are held in the instance's handle table: past its limit
/// a lookup is refused (`out-of-memory`, what wasi-libc's `getaddrinfo`
/// reports as `EAI_MEMORY`), and the program goes on.
#[test]
fn name_lookup_streams_count_against_the_handle_limit() {
    let probe = guest("std-probe");
    let mut args = vec![
        "run",
        "--max-handles",
        "32",
        "--connect",
        "web=localhost:80",
        probe.to_str().unwrap(),
    ];
    args.extend(["lookup-hold", "localhost"].repeat(40));
    let got = lines(&capbroker(&args));
    let held = got
        .iter()
        .filter(|l| l.starts_with("ok lookup-hold"))
        .count();
    assert!((1..32).contains(&held), "{got:#?}");
    assert!(
        got[held..]
            .iter()
            .all(|l| l == "err out-of-memory lookup-hold localhost"),
        "{got:#?}"
    );
}

#[test]
fn a_wasi_preview1_module_runs_behind_the_same_guards() {
    let tree = Tree::new();
    std::fs::write(tree.path("root/hello.txt"), "hello\n").unwrap();
    std::fs::write(tree.path("secret.txt"), "a secret\n").unwrap();
    let p1 = tree.path("p1-reader.wasm");
    std::fs::write(&p1, p1_reader()).unwrap();
    let p1 = p1.display().to_string();
    let ro = format!("/data={}:ro", tree.root().display());

    // Inside the grant it reads; `..` out of it is refused, as for a
    // component.
    let out = capbroker(&["run", "--dir", &ro, &p1]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\nrefused\n");

    // With no grant there is no preopen at all.
    let out = capbroker(&["run", &p1]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "refused\nrefused\n");

    // With a grant without `read`, the file does not open.
    let list = format!("/data={}:list", tree.root().display());
    let out = capbroker(&["run", "--dir", &list, &p1]);
    assert_eq!(
        text(&out.stdout),
        "refused\nrefused\n",
        "{}",
        text(&out.stderr)
    );

    // A core module that is not a preview 1 command is a clear error.
    let other = tree.path("env-import.wasm");
    let wat = r#"(module (import "env" "f" (func)) (func (export "_start")))"#;
    std::fs::write(&other, wat::parse_str(wat).unwrap()).unwrap();
    let out = capbroker(&["run", &other.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("imports `env`"),
        "{}",
        text(&out.stderr)
    );
}

/// A UDP grant's names and ranges answer lookups as a connect grant's do.
#[test]
fn name_lookup_answers_a_udp_grants_names_too() {
    let probe = guest("std-probe");
    let got = lines(&capbroker(&[
        "run",
        "--udp",
        "dns=localhost:53,10.0.0.53:53",
        probe.to_str().unwrap(),
        "lookup",
        "localhost",
        "lookup-hold",
        "10.0.0.53",
        "lookup-next",
        "lookup-hold",
        "10.0.0.54",
        "lookup",
        "example.com",
    ]));
    loopback_only(&got[0]);
    expect(
        &got[1..],
        &[
            "ok lookup-hold 10.0.0.53",
            "ok lookup-next 10.0.0.53",
            "err access-denied lookup-hold 10.0.0.54",
            "err permission-denied lookup",
        ],
    );
}

/// A link out of the grant is stopped by the host's resolution, after
/// capbroker's check of the path's text: the refusal is in the audit trail
/// as every other is, for the link to a file and through a linked folder.
#[test]
fn a_link_out_of_a_grant_is_refused_and_recorded() {
    let tree = Tree::new();
    let secret = tree.outside().join("secret");
    std::os::unix::fs::symlink(&secret, tree.path("root/abslink")).unwrap();
    std::os::unix::fs::symlink("../outside", tree.path("root/dirlink")).unwrap();
    let log = tree.path("audit.log");
    let out = capbroker(&[
        "run",
        "--audit",
        &log.display().to_string(),
        "--dir",
        &format!("/data={}:read,list", tree.root().display()),
        &guest("std-probe").display().to_string(),
        "read",
        "/data/abslink",
        "read",
        "/data/dirlink/secret",
    ]);
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("SECRET"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("err ")).count(),
        2,
        "{stdout}"
    );
    let refused: Vec<_> = events(&log)
        .into_iter()
        .filter(|e| e["event"] == "deny")
        .map(|e| e["path"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(refused, ["abslink", "dirlink/secret"], "{refused:?}");
}
