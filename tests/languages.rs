//! capbroker's worlds implemented in other languages, built from source and
//! run through the binary. The Python app (componentize-py) is written on
//! the capbroker package (components/python-sdk): a `with` block drops its
//! configuration handle, each refusal is an exception that prints as the
//! Rust SDK's error does, and one `pledge("filesystem")` ends its file
//! access. The JavaScript app (componentize-js) is written on the capbroker
//! module (components/js-sdk) in the same shape: `using` drops a handle at
//! its block's end, each refusal is an `Error` subclass carrying
//! capbroker's code, and `pledge('filesystem')` is one line; `tsc` checks
//! it against the module's declarations, as mypy checks the Python app
//! against the package's type hints. The `wasi:http` guests for
//! `capbroker serve` (Rust and Python) are checked to be proxy components.

mod support;

use support::{capbroker, js_guest, python_guest, python_http_guest, text, Tree};

/// What the audit log shows of an app's handles (`drop cfg`, `derive
/// data/sub`, `pledge filesystem`): each scoped drop reached the host when
/// its block ended, not at exit. The apps take `cfg` in a block, then
/// `data`, give up the rest (`spare`) with `grants.close()`, use `sub` in a
/// block, then open a file and pledge.
fn handles_went_when_the_app_said(log: &std::path::Path) {
    let seq: Vec<String> = support::events(log)
        .iter()
        .filter_map(|e| {
            let what = match e["event"].as_str()? {
                "drop" => &e["handle"],
                "derive" => &e["to"],
                "pledge" => &e["authority"],
                _ => return None,
            };
            Some(format!("{} {}", e["event"].as_str()?, what.as_str()?))
        })
        .collect();
    let at = |what: &str| {
        seq.iter()
            .position(|s| s == what)
            .unwrap_or_else(|| panic!("no `{what}` in {seq:?}"))
    };
    let first_derive = seq.iter().position(|s| s.starts_with("derive")).unwrap();
    assert!(at("drop cfg") < first_derive, "{seq:?}");
    assert!(at("drop spare") < first_derive, "{seq:?}");
    assert!(at("derive data/sub") < at("drop data/sub"), "{seq:?}");
    // The file held over the pledge is the last one opened (the Python
    // app opens and closes another before).
    let held = seq
        .iter()
        .rposition(|s| s == "derive data/hello.txt")
        .unwrap();
    assert!(at("drop data/sub") < held, "{seq:?}");
    assert!(held < at("pledge filesystem"), "{seq:?}");
}

/// What each app prints for arguments the bindings cannot take (run with
/// `bad-args`): the exception the language raises for each (a lone
/// surrogate in a path would otherwise name another file in JavaScript and
/// trap in Python; a wrapper of a dropped resource would trap), then proof
/// the file is still usable.
const BAD_ARGUMENTS_PYTHON: &str = "\
seek(-1): ValueError: negative seek position -1
read(1.5): TypeError: 'float' object cannot be interpreted as an integer
write_file('x.txt', 5): TypeError: data must be bytes-like or str, not int
read_text(b'hello.txt'): TypeError: a capbroker path is text (str or a str PathLike), not bytes
open('hello.txt', 'rw'): ValueError: invalid mode: 'rw'
attenuate('read'): TypeError: rights must be capbroker.Rights, not str
read_file('\\udcff.txt'): ValueError: a capbroker path is UTF-8 text; '\\udcff.txt' is not
copy.copy(data): TypeError: a capbroker Dir cannot be copied; derive one with attenuate()
Dir(a dropped raw).list(): Dropped: dropped: the directory was given up
read(2**32): hello
";

const BAD_ARGUMENTS_JS: &str = "\
seek(-1): RangeError: a seek offset must be between 0 and 18446744073709551615, not -1
read(1.5): RangeError: a read length must be a whole number, not 1.5
seek(2 ** 53): RangeError: a seek offset of 9007199254740992 is past 2 ** 53 - 1, where numbers stop being exact: pass a bigint
read(-1): RangeError: a read length must be between 0 and 4294967295, not -1
read('3'): TypeError: a read length must be a number, not string
writeFile('x.txt', 5): TypeError: data must be a string, a Uint8Array or an ArrayBuffer
readFile(5): TypeError: a capbroker path is a string, not number
open('hello.txt', 'rw'): TypeError: unknown open flags `rw`: a Node flag string (r, r+, w, wx, w+, wx+, a, ax, a+, ax+) or open-flag names (read,write,append,create,exclusive,truncate)
attenuate('reed'): TypeError: unknown right `reed`: one of read, write, create, list, remove
readFile('\\uD800.txt'): TypeError: a capbroker path is well-formed Unicode; \"\\ud800.txt\" has a lone surrogate
pledge(['filesystem']): TypeError: each authority is a name (a string), not an array
Dir.fromRaw(a dropped raw).list(): DroppedError: dropped: the directory was given up
the file still reads: hello
";

/// A refusal the app does not catch becomes `run`'s error, as `?` makes it
/// in Rust: the run fails with the sentence, not a trap. And arguments the
/// bindings cannot take (which would trap the component inside the
/// bindings, or read nothing and look like the end of a file) are the
/// language's own exceptions, raised before anything reaches the host.
fn uncaught_errors_and_bad_arguments(tree: &Tree, app: &str, cfg: &str, data: &str, bad: &str) {
    let out = capbroker(&["run", "--dir", cfg, "--dir", data, app, "uncaught"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(": error: refused: the file system was pledged away"),
        "{stderr}"
    );
    assert!(!stderr.contains("trap"), "{stderr}");
    assert!(!text(&out.stdout).contains("after pledge"));

    let out = capbroker(&["run", "--dir", cfg, "--dir", data, app, "bad-args"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = text(&out.stdout);
    let (_, printed) = stdout.split_once("read: hello\n").expect(&stdout);
    assert_eq!(printed, bad, "stderr: {stderr}");
    assert!(!stderr.contains("refused:"), "{stderr}");
    assert!(tree.read("root/x.txt").is_none());
}

/// What the Python app prints: each refusal as `type(e).__name__: e`, as
/// the last line of a traceback shows it (there as `capbroker.Denied: …`),
/// the sentence being the Rust SDK's `Display` for the same error.
const EXPECTED_PYTHON: &str = "\
config: mode = demo
cfg lookup after its block: NotGranted: no directory granted as `cfg`
cfg use after its block: Dropped: dropped: the directory was given up
data as a spawner: NotGranted: no spawner granted as `data`
grants left: spare
after grants.close(): none
read: hello
tail: llo at 5
write through read-only: Denied: denied: the handle lacks write,create
sub lists: deeper,inner.txt
read ../hello.txt: Escape: escape: `../hello.txt` leads outside the handle
read missing.txt: NotFound: not found: `missing.txt`
held file, first bytes: he
pledge('filesytem',): ValueError: unknown authority `filesytem`: one of filesystem, network, environment, spawn
pledge(): TypeError: pledge() missing 1 required positional argument: 'authority'
renounced: nothing
renounced: filesystem
after pledge, read: Refused: refused: the file system was pledged away
after pledge, held file: Refused: refused: the file system was pledged away
";

#[test]
fn a_python_app_drops_a_scoped_handle_and_pledges_in_one_line() {
    // The host refuses four: the missing grant and the dropped handle never
    // reach it (the package refuses them itself), nor does a missing file.
    the_seeds_contract_holds(python_guest(), EXPECTED_PYTHON, 4, BAD_ARGUMENTS_PYTHON);
}

/// What the JavaScript app prints: each refusal as `String(e)` shows it
/// (`DeniedError: …`, the sentence being the Rust SDK's `Display`), then
/// the capbroker code the error carries.
const EXPECTED_JS: &str = "\
config: mode = demo
cfg lookup after its block: NotGrantedError: no directory granted as `cfg` [not-granted]
cfg use after its block: DroppedError: dropped: the directory was given up [dropped]
grants left: spare
after grants.close(): none
read: hello
write through read-only: DeniedError: denied: the handle lacks write,create [denied]
lines: alpha|beta|gamma; 18 with a newline
sub lists: deeper,inner.txt
read ../hello.txt: EscapeError: escape: `../hello.txt` leads outside the handle [escape]
read /etc/passwd: EscapeError: escape: `/etc/passwd` leads outside the handle [escape]
read missing.txt: NotFoundError: not found: `missing.txt` [not-found]
regain write: DeniedError: denied: the handle lacks write [denied]
held file, first bytes: he
misspelt pledge: TypeError: unknown authority `filesytem`: one of filesystem, network, environment, spawn
empty pledge: TypeError: pledge needs what to give up: one or more of filesystem, network, environment, spawn
renounced: nothing
renounced: filesystem
after pledge, read: RefusedError: refused: the file system was pledged away [refused]
after pledge, held file: RefusedError: refused: the file system was pledged away [refused]
";

#[test]
fn a_javascript_app_drops_a_scoped_handle_and_pledges_in_one_line() {
    // The host refuses six (the Python app's four, `/etc/passwd` and the
    // regained write); the missing grant, the dropped handle and the bad
    // pledges never reach it.
    the_seeds_contract_holds(js_guest(), EXPECTED_JS, 6, BAD_ARGUMENTS_JS);
}

/// componentize-js traps, printing nothing of it, on an exception out of
/// `run` without a string `payload` of its own; the app's `run` is the
/// SDK's `entry(main)`, which gives one to whatever `main` throws, so the
/// app's own uncaught error (here a `throw new Error(...)`) ends the run
/// with its message, as a Rust panic prints its own.
#[test]
fn a_javascript_apps_own_uncaught_error_ends_the_run_with_its_message() {
    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("conf")).unwrap();
    std::fs::write(tree.path("conf/app.conf"), "mode = demo\n").unwrap();
    let cfg = format!("cfg={}:ro", tree.path("conf").display());
    let data = format!("data={}", tree.root().display());
    let app = js_guest().to_str().unwrap();
    let out = capbroker(&["run", "--dir", &cfg, "--dir", &data, app, "bug"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(": error: Error: config key `port` missing"),
        "{stderr}"
    );
    assert!(!stderr.contains("trap"), "{stderr}");
}

/// Runs an app on its SDK through the binary and checks what it prints
/// (`expected`), the audit log's drop order, the host's refusals, an
/// uncaught error, bad arguments (`bad`), and its requests enforced.
fn the_seeds_contract_holds(app: &std::path::Path, expected: &str, refused: usize, bad: &str) {
    let tree = Tree::new();
    std::fs::write(tree.path("root/lines.txt"), "alpha\r\nbeta\ngamma").unwrap();
    std::fs::create_dir_all(tree.path("conf")).unwrap();
    std::fs::write(tree.path("conf/app.conf"), "mode = demo\n").unwrap();
    let cfg = format!("cfg={}:ro", tree.path("conf").display());
    let app = app.to_str().unwrap();
    let data = format!("data={}", tree.root().display());
    let spare = format!("spare={}:ro", tree.path("conf").display());
    let log = tree.path("audit.jsonl");
    let audit = log.to_str().unwrap();
    let out = capbroker(&[
        "run", "--audit", audit, "--dir", &cfg, "--dir", &data, "--dir", &spare, app,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), expected, "stderr: {stderr}");
    handles_went_when_the_app_said(&log);
    // The refusals changed nothing, and the broker recorded the host's.
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
    let refusals = stderr.lines().filter(|l| l.contains("audit: refused:"));
    assert_eq!(refusals.count(), refused, "{stderr}");
    assert!(stderr.contains("op=file.read"), "{stderr}");
    assert_eq!(stderr.matches("pledged away").count(), 2, "{stderr}");

    uncaught_errors_and_bad_arguments(&tree, app, &cfg, &data, bad);

    // Its requests are enforced as for a Rust app: a read-only grant is
    // not enough for what it asks.
    let data = format!("data={}:ro", tree.root().display());
    let out = capbroker(&["run", "--dir", &cfg, "--dir", &data, app]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing write"),
        "{}",
        text(&out.stderr)
    );
}

/// The SDK's TypeScript declarations describe what the app uses: `tsc`
/// checks components/js/app.js against them (its tsconfig is strict), and
/// the bad pledges the app makes on purpose (a misspelt authority, none),
/// which it marks `@ts-expect-error`, are errors once the marks are gone.
#[test]
fn the_javascript_app_type_checks_against_the_sdk() {
    let tsc = support::js_tools().join("node_modules/.bin/tsc");
    let check = |project: &std::path::Path| {
        std::process::Command::new(&tsc)
            .arg("-p")
            .arg(project)
            .output()
            .unwrap()
    };
    let app = support::root().join("components/js");
    let out = check(&app);
    assert!(out.status.success(), "{}", text(&out.stdout));

    // The same app without the mark, in a copy beside the original (the
    // SDK is imported by relative path).
    let copy = support::root().join("target/guests/js-typecheck/js");
    std::fs::create_dir_all(&copy).unwrap();
    let sdk = support::root().join("target/guests/js-typecheck/js-sdk");
    std::fs::create_dir_all(&sdk).unwrap();
    for f in ["capbroker.js", "capbroker.d.ts"] {
        std::fs::copy(
            support::root().join("components/js-sdk").join(f),
            sdk.join(f),
        )
        .unwrap();
    }
    std::fs::copy(app.join("tsconfig.json"), copy.join("tsconfig.json")).unwrap();
    let source = std::fs::read_to_string(app.join("app.js")).unwrap();
    let unmarked: String = source
        .lines()
        .filter(|l| !l.contains("@ts-expect-error"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        unmarked, source,
        "the app no longer marks the misspelt pledge"
    );
    std::fs::write(copy.join("app.js"), unmarked).unwrap();
    let out = check(&copy);
    let report = text(&out.stdout);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("'\"filesytem\"' is not assignable to parameter of type 'Authority'"),
        "{report}"
    );
    assert!(
        report.contains("Expected at least 1 arguments, but got 0"),
        "{report}"
    );
}

/// The package's type hints describe what the Python app uses: mypy checks
/// components/python/app.py and the package against the bindings
/// componentize-py generates for the app's world, and the bad arguments the
/// app passes on purpose (for `bad-args`), which it marks `type: ignore`,
/// are errors once the marks are gone.
#[test]
fn the_python_app_type_checks_against_the_package() {
    let venv = support::python_tools();
    let root = support::root();
    let bindings = root.join("target/guests/python-typecheck/bindings");
    let _ = std::fs::remove_dir_all(&bindings);
    let made = std::process::Command::new(venv.join("bin/componentize-py"))
        .arg("-d")
        .arg(root.join("wit"))
        .args(["-w", "app", "bindings"])
        .arg(&bindings)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let check = |app: &std::path::Path| {
        std::process::Command::new(venv.join("bin/mypy"))
            .args(["--python-version", "3.12", "--no-incremental"])
            .arg(root.join("components/python-sdk/capbroker"))
            .arg(app)
            .env(
                "MYPYPATH",
                format!(
                    "{}:{}",
                    bindings.display(),
                    root.join("components/python-sdk").display()
                ),
            )
            .output()
            .unwrap()
    };
    let app = root.join("components/python/app.py");
    let out = check(&app);
    assert!(out.status.success(), "{}", text(&out.stdout));

    let source = std::fs::read_to_string(&app).unwrap();
    let unmarked = source.replace("  # type: ignore[arg-type]", "");
    assert_ne!(
        unmarked, source,
        "the app no longer marks its bad arguments"
    );
    let copy = root.join("target/guests/python-typecheck/app.py");
    std::fs::write(&copy, unmarked).unwrap();
    let out = check(&copy);
    let report = text(&out.stdout);
    assert!(!out.status.success(), "{report}");
    for expected in [
        "Argument 2 to \"write_file\" of \"Dir\" has incompatible type \"int\"",
        "Argument 1 to \"attenuate\" of \"Dir\" has incompatible type \"str\"; expected \"Rights\"",
    ] {
        assert!(report.contains(expected), "{report}");
    }
}

/// The `wasi:http` guests that `capbroker serve` runs, as `wasmtime serve`
/// would: components/http-probe (Rust, built with the other guests) and
/// components/python-http (componentize-py). Both are plain
/// `wasi:http/proxy` components that, like real handlers, also import the
/// filesystem, the environment and sockets.
#[test]
fn the_http_guests_are_proxy_components() {
    for wasm in [support::guest("http_probe"), python_http_guest().into()] {
        let out = std::process::Command::new(support::wasm_tools())
            .args(["component", "wit"])
            .arg(&wasm)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let wit = text(&out.stdout);
        let world = wit
            .split_once("world root {")
            .and_then(|(_, w)| w.split_once("\n}"))
            .map(|(w, _)| w)
            .unwrap_or_else(|| panic!("{}: no world in\n{wit}", wasm.display()));
        for want in [
            "export wasi:http/incoming-handler@0.2.",
            "import wasi:http/outgoing-handler@0.2.",
            "import wasi:filesystem/preopens@0.2.",
            "import wasi:cli/environment@0.2.",
            "import wasi:sockets/tcp@0.2.",
        ] {
            assert!(
                world.contains(want),
                "{}: no `{want}` in{world}",
                wasm.display()
            );
        }
    }
}
