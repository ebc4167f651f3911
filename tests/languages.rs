//! capbroker's worlds implemented in other languages: the same app written
//! in Python (componentize-py) and in JavaScript (componentize-js), built
//! from source and run through the binary. Both read through a handle,
//! attenuate it, drop what they no longer need, and see each refusal as an
//! exception of their language carrying capbroker's error. The `wasi:http`
//! guests for `capbroker serve` (Rust and Python) are checked to be proxy
//! components.

mod support;

use support::{capbroker, js_guest, python_guest, python_http_guest, text, Tree};

/// What both apps print: the same steps, the same refusals.
const EXPECTED: &str = "\
read: hello
write through read-only: denied(write,create)
sub lists: deeper,inner.txt
read ../hello.txt: escape(../hello.txt)
read /etc/passwd: escape(/etc/passwd)
regain write: denied(write)
";

fn run_app(wasm: &std::path::Path) {
    let tree = Tree::new();
    let grant = format!("data={}", tree.root().display());
    let out = capbroker(&["run", "--dir", &grant, wasm.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), EXPECTED, "stderr: {stderr}");
    // The refusals changed nothing, and the broker recorded them.
    assert_eq!(tree.read("root/hello.txt").as_deref(), Some("hello"));
    assert_eq!(stderr.matches("refused:").count(), 4, "{stderr}");

    // Its requests are enforced as for a Rust app: a read-only grant is
    // not enough for what it asks.
    let grant = format!("data={}:ro", tree.root().display());
    let out = capbroker(&["run", "--dir", &grant, wasm.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing write"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_python_app_uses_attenuates_and_drops_its_handles() {
    run_app(python_guest());
}

#[test]
fn a_javascript_app_uses_attenuates_and_drops_its_handles() {
    run_app(js_guest());
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
