//! The `capbroker` binary as an operator uses it: the example end to end,
//! and a clear error, never a panic, for each kind of bad input.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{capbroker, guest, text, Tree};

/// Asserts a clean refusal: exit code 2, the message on stderr, no panic.
fn assert_refused(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "expected `{n}` in: {stderr}");
    }
}

/// Asserts a run that ended with status 1 for the reason `needle` names.
fn assert_ended(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
}

/// The worker example's folders: conf/worker.conf and data/reports/*.txt.
fn worker_tree() -> Tree {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("conf")).unwrap();
    std::fs::write(tree.path("conf/worker.conf"), "folder = reports\n").unwrap();
    std::fs::create_dir_all(tree.path("data/reports")).unwrap();
    std::fs::write(tree.path("data/reports/a.txt"), "one two\nthree\n").unwrap();
    std::fs::write(tree.path("data/keep.txt"), "not the worker's").unwrap();
    tree
}

fn arg(name: &str, p: &Path, rights: &str) -> String {
    format!("{name}={}{rights}", p.display())
}

#[test]
fn the_example_works_and_cannot_regain_what_it_dropped() {
    let tree = worker_tree();
    let worker = guest("worker");
    let out = capbroker(&[
        "run",
        "--dir",
        &arg("cfg", &tree.path("conf"), ":ro"),
        "--dir",
        &arg("data", &tree.path("data"), ""),
        worker.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("a.txt: 2 lines, 3 words"), "{stdout}");
    assert!(stdout.contains("wrote summary.txt"), "{stdout}");
    assert_eq!(stdout.matches("refused:").count(), 4, "{stdout}");
    assert!(!stdout.contains("UNEXPECTED"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(tree.path("data/reports/summary.txt")).unwrap(),
        "a.txt: 2 lines, 3 words\n"
    );
    // Denials are recorded with the component, the operation and the path.
    assert!(stderr.contains("denied"), "{stderr}");
    for needle in [
        "component=worker",
        "open-dir",
        "read-file",
        "/etc/passwd",
        "attenuate",
    ] {
        assert!(
            stderr.contains(needle),
            "no `{needle}` in the audit output: {stderr}"
        );
    }
}

#[test]
fn inspect_lists_what_a_component_asks_for() {
    let out = capbroker(&["inspect", guest("worker").to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("--dir cfg=PATH:read (reads worker.conf)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--dir data=PATH:read,write,create,list"),
        "{stdout}"
    );
}

#[test]
fn grants_must_match_the_components_requests() {
    let tree = worker_tree();
    let worker = guest("worker");
    let w = worker.to_str().unwrap();
    let cfg = arg("cfg", &tree.path("conf"), ":ro");
    let data = arg("data", &tree.path("data"), "");
    // A grant name the component does not know.
    let bogus = arg("bogus", &tree.path("data"), "");
    let out = capbroker(&["run", "--dir", &cfg, "--dir", &data, "--dir", &bogus, w]);
    assert_refused(
        &out,
        &["grant `bogus`", "does not ask for", "cfg (dir), data (dir)"],
    );
    // A request left ungranted.
    let out = capbroker(&["run", "--dir", &data, w]);
    assert_refused(&out, &["did not give", "--dir cfg=PATH:read"]);
    // A grant without the rights the component needs.
    let ro = arg("data", &tree.path("data"), ":ro");
    let out = capbroker(&["run", "--dir", &cfg, "--dir", &ro, w]);
    assert_refused(&out, &["grant `data`", "missing write,create"]);
    // The same name twice.
    let out = capbroker(&["run", "--dir", &cfg, "--dir", &cfg, "--dir", &data, w]);
    assert_refused(&out, &["grant `cfg` is given twice"]);
    // Nothing ran: the worker writes its summary first thing.
    assert!(!tree.path("data/reports/summary.txt").exists());
}

#[test]
fn bad_host_paths_are_clear_errors() {
    let tree = worker_tree();
    let w = guest("worker");
    let missing = tree.path("no/such/dir");
    let out = capbroker(&[
        "run",
        "--dir",
        &arg("cfg", &missing, ":ro"),
        w.to_str().unwrap(),
    ]);
    assert_refused(
        &out,
        &["--dir cfg", "cannot open host directory", "no/such/dir"],
    );
    let file = tree.path("conf/worker.conf");
    let out = capbroker(&[
        "run",
        "--dir",
        &arg("cfg", &file, ":ro"),
        w.to_str().unwrap(),
    ]);
    assert_refused(&out, &["cannot open host directory", "worker.conf"]);
}

#[test]
fn malformed_flags_are_clear_errors() {
    let w = guest("worker");
    let w = w.to_str().unwrap();
    let out = capbroker(&["run", "--dir", "non sense", w]);
    assert_refused(&out, &["expected NAME=PATH[:RIGHTS]"]);
    let out = capbroker(&["run", "--dir", "data=/tmp:read,fly", w]);
    assert_refused(&out, &["unknown right `fly`"]);
    let out = capbroker(&["run", "--dir", "da ta=/tmp", w]);
    assert_refused(&out, &["the name `da ta`"]);
    let out = capbroker(&["run", "--dir", "data=", w]);
    assert_refused(&out, &["host path is empty"]);
    let out = capbroker(&["run", "--max-memory", "12XB", w]);
    assert_refused(&out, &["unknown size unit `XB`"]);
    let out = capbroker(&["run", "--max-memory", "0", w]);
    assert_refused(&out, &["zero"]);
    let out = capbroker(&["run", "--max-handles", "3", w]);
    assert_refused(&out, &["--max-handles"]);
}

#[test]
fn files_that_are_not_capbroker_components_are_clear_errors() {
    let tree = Tree::new();
    let write = |name: &str, bytes: &[u8]| {
        let p = tree.path(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let out = capbroker(&["run", &write("text.wasm", b"hello, world")]);
    assert_refused(&out, &["is not a WebAssembly file"]);
    let out = capbroker(&["run", &write("module.wasm", b"\0asm\x01\0\0\0")]);
    assert_refused(
        &out,
        &["is a core WebAssembly module without a `_start` export"],
    );
    let out = capbroker(&["run", &write("broken.wasm", b"\0asm\x0d\0\x01\0\xff\xff")]);
    assert_refused(&out, &["is not a valid WebAssembly component"]);
    let out = capbroker(&["run", &tree.path("absent.wasm").display().to_string()]);
    assert_refused(&out, &["cannot read component", "absent.wasm"]);

    // A component with no exports at all: both kinds it could have been are named.
    let empty = wat::parse_str("(component)").unwrap();
    let out = capbroker(&["run", &write("empty.wasm", &empty)]);
    assert_refused(
        &out,
        &[
            "is neither a capbroker app",
            "nor a WASI command",
            "wasi:cli/run",
        ],
    );
    // A component importing what capbroker does not provide: the import is named.
    let foreign = wat::parse_str(
        r#"(component (import "acme:rockets/launch@1.0.0" (instance (export "go" (func)))))"#,
    )
    .unwrap();
    let out = capbroker(&["run", &write("foreign.wasm", &foreign)]);
    assert_refused(&out, &["acme:rockets/launch@1.0.0"]);
}

#[test]
// The child is reaped by `wait4`, which also reports its peak memory.
#[allow(clippy::zombie_processes)]
fn a_gigabyte_streams_through_in_bounded_memory() {
    let tree = Tree::new();
    let size = 1u64 << 30;
    let probe = guest("probe");
    let mut child = Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args([
            "run",
            "--max-memory",
            "16MiB",
            "--dir",
            &arg("data", &tree.root(), ""),
            probe.to_str().unwrap(),
            &format!("stream-write data big.bin {size} 1048576"),
            "stream-read data big.bin 1048576",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // wait4 reports the peak resident memory of exactly this process.
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("=> ok:{size}:pattern:")),
        "{stdout}"
    );
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(
        peak_mib < 200,
        "capbroker peaked at {peak_mib} MiB streaming 1 GiB"
    );
    std::fs::remove_file(tree.path("root/big.bin")).unwrap();
}

#[test]
fn a_trapping_or_oversized_guest_ends_with_a_clear_status() {
    let tree = Tree::new();
    let probe = guest("probe");
    let data = arg("data", &tree.root(), "");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--max-memory",
            "16MiB",
            "--dir",
            &data,
            probe.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        capbroker(&args)
    };
    let out = run(&["trap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the component trapped"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["alloc 64"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("the component ran out of memory"),
        "{}",
        text(&out.stderr)
    );
    // Within the limit the same command works.
    let out = run(&["alloc 4"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(&format!("alloc 4 => ok:{}", 4 << 20)));
}

#[test]
fn spawning_through_the_binary() {
    let probe = guest("probe");
    let worker = guest("worker");
    let component = format!("worker={}", worker.display());
    let out = capbroker(&[
        "run",
        "--component",
        &component,
        "--spawn",
        "sp=max-memory=16MiB,max-fuel=10M,timeout=2s,max-children=3,components=probe",
        probe.to_str().unwrap(),
        "budget sp",
        "spawn sp self budget - P memory",
        "wait P",
        "spawn sp self budget - Q loop",
        "wait Q",
        "spawn sp worker budget - W memory",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("budget sp => ok:16777216,10000000,2000,3,probe\n"),
        "{stdout}"
    );
    assert!(stdout.contains("wait P => ok:finished:ok:"), "{stdout}");
    assert!(stdout.contains("wait Q => ok:out-of-cpu"), "{stdout}");
    assert!(
        stdout.contains("=> err:refused:component `worker`"),
        "{stdout}"
    );
    // The audit trail names the child and how it ended.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("refused") && stderr.contains("spawn"),
        "{stderr}"
    );
}

#[test]
fn bad_spawn_flags_are_clear_errors() {
    let probe = guest("probe");
    let p = probe.to_str().unwrap();
    let out = capbroker(&["run", "--spawn", "sp=max-memory=0", p]);
    assert_refused(&out, &["below one page"]);
    let out = capbroker(&["run", "--spawn", "sp=max-memory=100000GiB", p]);
    assert_refused(&out, &["above 4GiB"]);
    let out = capbroker(&["run", "--spawn", "sp=max-fuel=99999999999G", p]);
    assert_refused(&out, &["not a count"]);
    let out = capbroker(&["run", "--spawn", "sp=bogus=1", p]);
    assert_refused(&out, &["unknown key `bogus`"]);
    let out = capbroker(&["run", "--spawn", "sp=timeout=2 weeks", p]);
    assert_refused(&out, &["not a duration"]);
    let out = capbroker(&["run", "--spawn", "sp=max-children=0", p]);
    assert_refused(&out, &["max-children of 0"]);
    let out = capbroker(&["run", "--spawn", "sp=components=nosuch", p]);
    assert_refused(&out, &["there is no component `nosuch`"]);
    let out = capbroker(&["run", "--component", "x=/no/such.wasm", p]);
    assert_refused(&out, &["--component x", "cannot read component"]);
    let tree = Tree::new();
    let bogus = tree.path("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0").unwrap();
    let out = capbroker(&["run", "--component", &format!("x={}", bogus.display()), p]);
    assert_refused(&out, &["core WebAssembly module"]);
    let out = capbroker(&[
        "run",
        "--component",
        &format!("self={}", probe.display()),
        p,
    ]);
    assert_refused(&out, &["`self` is reserved"]);
    let out = capbroker(&[
        "run",
        "--component",
        &format!("probe={}", probe.display()),
        p,
    ]);
    assert_refused(&out, &["two components are named `probe`"]);
    // The worker asks for no spawner.
    let w = guest("worker");
    let out = capbroker(&["run", "--spawn", "sp", w.to_str().unwrap()]);
    assert_refused(&out, &["grant `sp`: the component does not ask"]);
}

#[test]
fn the_fanout_example_isolates_a_runaway_child() {
    let tree = Tree::new();
    let dir = tree.path("texts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "one two three\n").unwrap();
    std::fs::write(dir.join("b.txt"), "four five\n").unwrap();
    std::fs::write(dir.join("spin.txt"), "x\n").unwrap();
    let fanout = guest("fanout");
    let out = capbroker(&[
        "run",
        "--dir",
        &arg("data", &dir, ":ro"),
        "--spawn",
        "workers=max-children=8",
        fanout.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("a.txt: 3 words (child said \"counting a.txt\")"),
        "{stdout}"
    );
    assert!(stdout.contains("b.txt: 2 words"), "{stdout}");
    assert!(
        stdout.contains("spin.txt: the child ran out of CPU"),
        "{stdout}"
    );
}

#[test]
fn the_root_component_has_limits_too() {
    let probe = guest("probe");
    let p = probe.to_str().unwrap();
    let out = capbroker(&["run", "--timeout", "300ms", p, "loop"]);
    assert_ended(&out, "ran past its timeout of 300ms");
    let out = capbroker(&["run", "--max-fuel", "1000000", p, "loop"]);
    assert_ended(&out, "ran out of fuel");
    let out = capbroker(&["run", "--timeout", "soon", p]);
    assert_refused(&out, &["not a duration"]);
}

#[test]
fn network_grants_through_the_binary() {
    let probe = guest("probe");
    let p = probe.to_str().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = capbroker(&[
        "run",
        "--listen",
        &format!("web=127.0.0.1:{port}"),
        "--connect",
        "api=10.0.0.0/8:443,[fd00::]/8:8000-8099",
        p,
        &format!("listen web 127.0.0.1:{port} L"),
        &format!("listen web 0.0.0.0:{port} L2"),
        "ranges api",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("=> ok:127.0.0.1:{port}")),
        "{stdout}"
    );
    assert!(stdout.contains("=> err:refused:0.0.0.0"), "{stdout}");
    assert!(
        stdout.contains("=> ok:10.0.0.0/8:443-443,fd00::/8:8000-8099"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("refused"),
        "the denial is not in the audit output"
    );

    let out = capbroker(&["run", "--listen", "web=nonsense", p]);
    assert_refused(&out, &["is not ADDRESS[/PREFIX]:PORT[-PORT]"]);
    let out = capbroker(&["run", "--connect", "api=10.0.0.0/33:80", p]);
    assert_refused(&out, &["is not ADDRESS"]);
    let out = capbroker(&["run", "--connect", "api=10.0.0.1:90-80", p]);
    assert_refused(&out, &["the port range is empty"]);
    let out = capbroker(&["run", "--listen", "web", p]);
    assert_refused(&out, &["expected NAME=ADDRESS"]);
}

/// Everything after the component is the component's: a word that looks
/// like capbroker's flag (`--dir`, `--env`, `-m`) is an argument, never a
/// grant, whoever supplied it.
#[test]
fn flags_after_the_component_are_its_arguments() {
    let tree = Tree::new();
    let probe = guest("std-probe");
    let out = capbroker(&[
        "run",
        "--dir",
        &format!("/d={}:ro", tree.root().display()),
        probe.to_str().unwrap(),
        "--dir",
        &format!("/d={}:rw", tree.root().display()),
        "write",
        "/d/new.txt",
        "pwned",
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("err unknown-step --dir"), "{stdout}");
    assert!(stdout.contains("err permission-denied write"), "{stdout}");
    assert!(!tree.path("root/new.txt").exists());
}

/// The component's arguments reach it as given: capbroker's flags, `-W`,
/// `--help` and `--` included, as under `wasmtime run`.
#[test]
fn everything_after_the_component_reaches_it() {
    let tree = Tree::new();
    let probe = guest("std-probe");
    let p = probe.to_str().unwrap();
    let grant = format!("/d={}:ro", tree.root().display());
    let words = ["--dir", "x", "-m", "y", "--help", "-W", "fuel=1", "--", "z"];
    let mut argv = vec!["run", "--dir", &grant, p, "args"];
    argv.extend(words);
    let out = capbroker(&argv);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("ok args {words:?}\n"));

    // A `--` before the component ends capbroker's flags.
    let out = capbroker(&["run", "--dir", &grant, "--", p, "args", "-q"]);
    assert_eq!(text(&out.stdout), "ok args [\"-q\"]\n");

    // With -m naming the component, the first plain word is the first
    // argument, and everything from there is the program's.
    std::fs::write(tree.path("m.toml"), format!("component = {p:?}\n")).unwrap();
    let m = tree.path("m.toml");
    let m = m.to_str().unwrap();
    let out = capbroker(&["run", "-q", "-m", m, "args", "--dir", "x", "-q"]);
    assert_eq!(text(&out.stdout), "ok args [\"--dir\", \"x\", \"-q\"]\n");
    let out = capbroker(&["run", "-q", "-m", m, "--", "args", "--env"]);
    assert_eq!(text(&out.stdout), "ok args [\"--env\"]\n");
}

/// wasmtime's `--dir HOST::GUEST[:RIGHTS]` and `--dir HOST` grant what
/// `--dir GUEST=HOST[:RIGHTS]` does, with the same rights by default.
#[test]
fn dir_in_wasmtimes_forms() {
    let tree = Tree::new();
    let root = tree.root().display().to_string();
    let probe = guest("std-probe");
    let p = probe.to_str().unwrap();
    for (grant, writes) in [
        (format!("{root}::/data:ro"), false),
        (format!("/data={root}:ro"), false),
        (format!("{root}::/data:read,list"), false),
        (format!("{root}::/data"), true),
        (format!("/data={root}"), true),
    ] {
        let _ = std::fs::remove_file(tree.path("root/new.txt"));
        let out = capbroker(&[
            "run",
            "--dir",
            &grant,
            p,
            "read",
            "/data/hello.txt",
            "write",
            "/data/new.txt",
            "x",
        ]);
        let stdout = text(&out.stdout);
        assert!(stdout.contains("ok read hello"), "{grant}: {stdout}");
        let write = match writes {
            true => "ok write /data/new.txt",
            false => "err permission-denied write",
        };
        assert!(stdout.contains(write), "{grant}: {stdout}");
        assert_eq!(tree.path("root/new.txt").exists(), writes, "{grant}");
    }

    // HOST alone is preopened at its own path, and nowhere else.
    let hello = format!("{root}/hello.txt");
    let out = capbroker(&[
        "run",
        "--dir",
        &root,
        p,
        "read",
        &hello,
        "read",
        "/data/hello.txt",
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ok read hello"), "{stdout}");
    assert!(stdout.contains("err not-found read"), "{stdout}");

    // An app's grants are named: HOST::NAME is NAME=HOST.
    let tree = worker_tree();
    let worker = guest("worker");
    let out = capbroker(&[
        "run",
        "--dir",
        &format!("{}::cfg:ro", tree.path("conf").display()),
        "--dir",
        &format!("{}::data", tree.path("data").display()),
        worker.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("wrote summary.txt"), "{stdout}");
}

#[test]
fn bad_dir_forms_are_clear_errors() {
    let probe = guest("std-probe");
    let p = probe.to_str().unwrap();
    for (value, needle) in [
        ("a=/tmp::b", "both `=` and `::`"),
        ("/tmp::", "the guest path is empty"),
        ("::/data", "the host path is empty"),
        ("/tmp::/data:fly", "unknown right `fly`"),
        ("/tmp::da ta", "`da ta` cannot be a guest path"),
        ("/tmp:ro", "`/tmp:ro` cannot be a guest path"),
        (
            "my dir",
            "expected NAME=PATH[:RIGHTS], HOST::GUEST[:RIGHTS] or HOST",
        ),
    ] {
        assert_refused(&capbroker(&["run", "--dir", value, p]), &[needle]);
    }
}

/// wasmtime's `-W` and `-S` options set capbroker's limits and grants; the
/// ones capbroker has no equivalent for are refused, naming what to use.
#[test]
fn wasmtimes_w_and_s_options() {
    let std_probe = guest("std-probe");
    let sp = std_probe.to_str().unwrap();
    let probe = guest("probe");
    let p = probe.to_str().unwrap();

    let out = capbroker(&["run", "-W", "max-memory-size=16777216", sp, "bomb"]);
    assert_ended(&out, "ran out of memory");
    // Several in one flag, as wasmtime takes them.
    let out = capbroker(&["run", "-W", "timeout=60,fuel=1_000_000", p, "loop"]);
    assert_ended(&out, "ran out of fuel");
    let out = capbroker(&["run", "--wasm=timeout=300ms", p, "loop"]);
    assert_ended(&out, "ran past its timeout of 300ms");

    // -S inherit-env: the host's variables; --env of the same name wins.
    let out = Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .env("CAPBROKER_TEST_HOST", "from-host")
        .env("CAPBROKER_TEST_BOTH", "from-host")
        .args([
            "run",
            "-S",
            "inherit-env",
            "--env",
            "CAPBROKER_TEST_BOTH=flag",
            sp,
        ])
        .args(["env", "CAPBROKER_TEST_HOST", "env", "CAPBROKER_TEST_BOTH"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "ok env from-host\nok env flag\n");
    let out = Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .env("CAPBROKER_TEST_HOST", "from-host")
        .args([
            "run",
            "-S",
            "inherit-env=n,cli",
            sp,
            "env",
            "CAPBROKER_TEST_HOST",
        ])
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("err not-found env"),
        "{}",
        text(&out.stdout)
    );

    for (args, needle) in [
        (&["-S", "inherit-network"][..], "-S inherit-network: capbroker grants no ambient network: grant addresses with --connect and --listen"),
        (&["-S", "tcp=y"], "-S tcp: capbroker grants no ambient network"),
        (&["-S", "udp"], "or --udp (UDP)"),
        (&["-S", "allow-ip-name-lookup"], "name them in --connect"),
        (&["-S", "http"], "`capbroker serve` runs wasi:http/proxy components"),
        (&["-S", "inherit-stdout=n"], "cannot take them away"),
        (&["-S", "max-resources=3"], "from 16 to 1000000"),
        (&["-W", "max-instances=2"], "--max-memory"),
        (&["-W", "simd=n"], "configures the engine"),
        (&["-W", "fuel=1,turbo=1"], "unknown -W option `turbo`"),
        (&["-S", "turbo"], "unknown -S option `turbo`"),
        (&["-W", "fuel=1", "--max-fuel", "2"], "-W fuel and --max-fuel are both given"),
    ] {
        let mut argv = vec!["run"];
        argv.extend(args);
        argv.push(sp);
        assert_refused(&capbroker(&argv), &[needle]);
    }
    assert_refused(
        &capbroker(&["serve", "-S", "cli,inherit-stdin", sp]),
        &["capbroker serve does not take -S inherit-stdin"],
    );
}

/// The same for a component whose path is not UTF-8.
#[test]
fn flags_after_a_non_utf8_component_are_its_arguments() {
    use std::os::unix::ffi::OsStrExt;
    let tree = Tree::new();
    let dir = tree
        .tmp
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("probe.wasm");
    std::fs::copy(guest("std-probe"), &wasm).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .arg("run")
        .arg(&wasm)
        .args([
            "--dir",
            &format!("/x={}", tree.root().display()),
            "read",
            "/x/hello.txt",
        ])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(stdout.contains("err unknown-step --dir"), "{stdout}");
    assert!(!stdout.contains("ok read hello"), "{stdout}");
}

/// A timeout too long for its end to be told is no deadline, not a host
/// panic; the files the broker writes are never the ones it reads; two
/// directories at one guest path are refused before the program starts.
#[test]
fn outputs_timeouts_and_guest_paths_the_broker_refuses_or_bounds() {
    let tree = Tree::new();
    let probe = guest("std-probe").display().to_string();
    for timeout in [
        vec!["--timeout", "18446744073709551615s"],
        vec!["-W", "timeout=9223372036854775807"],
    ] {
        let out = capbroker(&[&["run"], &timeout[..], &[&probe, "args", "x"]].concat());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "ok args [\"x\"]\n");
    }

    let component = tree.path("p.wasm");
    std::fs::copy(&probe, &component).unwrap();
    let component = component.display().to_string();
    let log = tree.path("audit.log").display().to_string();
    let link = tree.path("link.toml");
    std::os::unix::fs::symlink(&component, &link).unwrap();
    let link = link.display().to_string();
    for (args, says) in [
        (vec!["--learn", &component], "that is the component"),
        (vec!["--learn", &link], "that is the component"),
        (vec!["--audit", &component], "that is the component"),
        (
            vec!["--audit", &log, "--learn", &log],
            "that is the --audit log",
        ),
    ] {
        let out = capbroker(&[&["run"], &args[..], &[&component, "args"]].concat());
        assert_refused(&out, &[says]);
    }
    assert_eq!(
        std::fs::read(&component).unwrap(),
        std::fs::read(&probe).unwrap()
    );

    let root = tree.root().display().to_string();
    for (second, print) in [
        (format!("/data/={root}"), "--quiet"),
        (format!("{root}::/data"), "--print-config"),
    ] {
        let out = capbroker(&[
            "run",
            print,
            "--dir",
            &format!("/data={root}:ro"),
            "--dir",
            &second,
            &component,
            "args",
        ]);
        assert_refused(&out, &["/data"]);
        assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    }
    // The same for a network grant or a variable given twice, which
    // `--print-config` could show only once.
    for twice in [
        ["--connect", "a=127.0.0.1:1", "--connect", "a=127.0.0.1:2"],
        ["--env", "A=1", "--env", "A=2"],
    ] {
        let out = capbroker(&[&["run", "--print-config"], &twice[..], &[&component]].concat());
        assert_refused(&out, &["is given twice"]);
    }
}
