//! What the integration tests share: the guest components, built from source
//! once per test binary, a compiled copy of each, and a driver for the probe.
#![allow(dead_code)]

pub mod guests;
pub mod openat2;
pub mod web;

pub use guests::{guests, root};

#[allow(unused_imports)] // each test binary uses some
pub use openat2::{assert_openat2_as_expected, deny_openat2, openat2_available, NO_OPENAT2};

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use std::sync::Arc;

use capbroker::grants::{Grant, NamedGrant};
use capbroker::Components;
use capbroker::{AppComponent, Limits, Outcome, Running, Runtime};

/// A published Rust command-line tool, fetched from crates.io and built for
/// wasm32-wasip2 by `cargo install` (once; later calls find it installed).
/// Returns the path of its `.wasm`.
pub fn published_tool(krate: &str, version: &str, bin: &str) -> PathBuf {
    let root_dir = root().join("target/tools/wasip2");
    let wasm = root_dir.join(format!("bin/{bin}.wasm"));
    if !wasm.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "install",
                "--locked",
                "--quiet",
                "--target",
                "wasm32-wasip2",
            ])
            .arg(format!("{krate}@{version}"))
            .arg("--root")
            .arg(&root_dir)
            .arg("--target-dir")
            .arg(root().join("target/tools/build"))
            .status()
            .expect("cannot run cargo install");
        assert!(status.success(), "cargo install {krate}@{version} failed");
    }
    wasm
}

/// Runs the `capbroker` binary with `args`.
pub fn capbroker(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_capbroker"))
        .args(args)
        .output()
        .expect("run capbroker")
}

/// The events of an audit log (`--audit FILE`), one JSON object a line.
pub fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("`{l}`: {e}")))
        .collect()
}

/// An echo server on loopback for `connections` connections.
pub fn echo_server(connections: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(connections) {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0; 256];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// The program's lines, after checking that it ran to its end.
pub fn lines(out: &std::process::Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Asserts each line starts with its expected prefix.
pub fn expect(lines: &[String], want: &[&str]) {
    assert_eq!(lines.len(), want.len(), "{lines:#?}");
    for (line, w) in lines.iter().zip(want) {
        assert!(
            line.starts_with(w),
            "expected `{w}…`, got `{line}`\nall: {lines:#?}"
        );
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a set-up command, failing the test with what it printed.
fn run_tool(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `install` unless `stamp` holds `wanted` and every one of `bins`
/// is there. The stamp is written only after `install` succeeded, so a
/// failed install is tried again.
fn install_unless_current(stamp: &Path, wanted: &[u8], bins: &[PathBuf], install: impl FnOnce()) {
    let current = std::fs::read(stamp).ok().as_deref() == Some(wanted);
    if !current || !bins.iter().all(|b| b.exists()) {
        install();
        std::fs::write(stamp, wanted).unwrap();
    }
}

/// The Python tools components/python/requirements.txt pins
/// (componentize-py, mypy), installed from PyPI into a virtualenv under
/// target/tools/python once per test binary, and again when the
/// requirements changed.
pub fn python_tools() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = root().join("target/tools/python");
        let requirements = root().join("components/python/requirements.txt");
        let wanted = std::fs::read(&requirements).unwrap();
        let bins = ["componentize-py", "mypy"].map(|b| venv.join("bin").join(b));
        install_unless_current(
            &venv.join("installed-requirements.txt"),
            &wanted,
            &bins,
            || {
                run_tool(
                    Command::new("python3").args(["-m", "venv"]).arg(&venv),
                    "python3 -m venv",
                );
                run_tool(
                    Command::new(venv.join("bin/pip"))
                        .args(["install", "--quiet", "-r"])
                        .arg(&requirements),
                    "pip install componentize-py mypy",
                );
            },
        );
        venv
    })
}

fn componentize_py() -> PathBuf {
    python_tools().join("bin/componentize-py")
}

/// components/python/app.py built with componentize-py (installed from
/// PyPI into a virtualenv under target/tools), once per test binary, with
/// the capbroker package (components/python-sdk) on its Python path. The
/// package is put on the path rather than pip-installed into the shared
/// virtualenv so that every build sees the package as it is in the tree.
pub fn python_guest() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let out = root().join("target/guests/python/app.wasm");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        run_tool(
            Command::new(componentize_py())
                .arg("-d")
                .arg(root().join("wit"))
                .args(["-w", "app", "componentize", "-p"])
                .arg(root().join("components/python"))
                .arg("-p")
                .arg(root().join("components/python-sdk"))
                .arg("app")
                .arg("-o")
                .arg(&out),
            "componentize-py",
        );
        out
    })
}

/// components/python-http/app.py, a plain `wasi:http/proxy` component (the
/// kind `wasmtime serve` and `capbroker serve` run), built with
/// componentize-py against the WASI 0.2.12 WIT vendored next to it, once per
/// test binary.
pub fn python_http_guest() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let src = root().join("components/python-http");
        let out = root().join("target/guests/python-http/app.wasm");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        run_tool(
            Command::new(componentize_py())
                .arg("-d")
                .arg(src.join("wit"))
                .args(["-w", "proxy", "componentize", "-p"])
                .arg(&src)
                .arg("app")
                .arg("-o")
                .arg(&out),
            "componentize-py (python-http)",
        );
        out
    })
}

/// components/js's npm tools (componentize-js, tsc), installed from the npm
/// registry with the committed lock file under target/tools/js, once per
/// test binary; installed again when the lock file changed.
pub fn js_tools() -> &'static Path {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let src = root().join("components/js");
        let tools = root().join("target/tools/js");
        let lock = std::fs::read(src.join("package-lock.json")).unwrap();
        let bins = ["componentize-js", "tsc"].map(|b| tools.join("node_modules/.bin").join(b));
        install_unless_current(&tools.join("installed-lock.json"), &lock, &bins, || {
            std::fs::create_dir_all(&tools).unwrap();
            for f in ["package.json", "package-lock.json"] {
                std::fs::copy(src.join(f), tools.join(f)).unwrap();
            }
            run_tool(
                Command::new("npm")
                    .args(["ci", "--silent", "--no-audit", "--no-fund"])
                    .current_dir(&tools),
                "npm ci (componentize-js, tsc)",
            );
        });
        tools
    })
}

/// components/js/app.js built with componentize-js, once per test binary.
/// It imports the SDK by relative path (components/js-sdk), which
/// componentize-js resolves only inside its workspace: the current folder
/// when that holds the source, hence the build runs from the repository's
/// root.
pub fn js_guest() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let bin = js_tools().join("node_modules/.bin/componentize-js");
        let out = root().join("target/guests/js/app.wasm");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        // No wasi:http: capbroker does not grant it.
        run_tool(
            Command::new(bin)
                .arg("components/js/app.js")
                .args(["--wit", "wit"])
                .args(["-n", "app", "-d", "http", "fetch-event", "-o"])
                .arg(&out)
                .current_dir(root()),
            "componentize-js",
        );
        out
    })
}

pub fn guest(name: &str) -> PathBuf {
    guests().join(format!("{name}.wasm"))
}

/// One runtime per test binary; compiling a component is the slow part.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new().expect("runtime"))
}

pub fn probe_component() -> &'static AppComponent {
    static C: OnceLock<AppComponent> = OnceLock::new();
    C.get_or_init(|| runtime().load(&guest("probe")).expect("load probe"))
}

/// What the probe may spawn: itself (as `probe` or `self`) and the worker
/// example, which has no child entry point.
pub fn components() -> Arc<Components> {
    static C: OnceLock<Arc<Components>> = OnceLock::new();
    C.get_or_init(|| {
        let mut c = Components::new();
        c.insert("probe", probe_component().instance_pre().clone())
            .unwrap();
        c.insert("worker", runtime().load_child(&guest("worker")).unwrap())
            .unwrap();
        Arc::new(c)
    })
    .clone()
}

/// `--spawn` as the operator would write it.
pub fn spawner(spec: &str) -> NamedGrant {
    Grant::parse_spawn(spec).expect("spawn spec")
}

/// `--dir` as the operator would write it.
pub fn dir(spec: &str) -> NamedGrant {
    Grant::parse_dir(spec).expect("grant spec")
}

pub fn dir_at(name: &str, path: &Path, rights: &str) -> NamedGrant {
    dir(&format!("{name}={}:{rights}", path.display()))
}

/// The probe, started with some grants, taking one command at a time.
pub struct Probe {
    running: Running,
}

impl Probe {
    pub async fn start(grants: &[NamedGrant]) -> Probe {
        Self::start_with(grants, &Limits::default()).await
    }

    pub async fn start_with(grants: &[NamedGrant], limits: &Limits) -> Probe {
        Self::start_in(grants, limits, components()).await
    }

    /// As [`Probe::start_with`], able to spawn `components`.
    pub async fn start_in(
        grants: &[NamedGrant],
        limits: &Limits,
        components: Arc<Components>,
    ) -> Probe {
        Self::start_app(probe_component(), grants, limits, components).await
    }

    /// As [`Probe::start_in`], from the probe as loaded in a runtime of the
    /// test's own.
    pub async fn start_app(
        probe: &AppComponent,
        grants: &[NamedGrant],
        limits: &Limits,
        components: Arc<Components>,
    ) -> Probe {
        let mut running = probe
            .start(grants, limits, components)
            .await
            .expect("start probe");
        assert_eq!(running.run(&[]).await.expect("run"), Outcome::Ok);
        Probe { running }
    }

    /// Runs one probe command: `ok`, `ok:VALUE` or `err:CODE:DETAIL`.
    pub async fn step(&mut self, command: &str) -> String {
        let instance = self.running.instance();
        let store = self.running.store();
        let func = instance
            .get_typed_func::<(String,), (String,)>(&mut *store, "step")
            .expect("probe exports step");
        let (out,) = func
            .call_async(&mut *store, (command.to_string(),))
            .await
            .unwrap_or_else(|e| panic!("`{command}` trapped: {e:?}"));
        out
    }

    /// Runs each command and asserts it printed the expected result prefix.
    pub async fn expect(&mut self, cases: &[(&str, &str)]) {
        for (command, want) in cases {
            let got = self.step(command).await;
            assert!(
                got.starts_with(want),
                "`{command}`: expected `{want}…`, got `{got}`"
            );
        }
    }

    pub fn live_handles(&mut self) -> usize {
        self.running.store().data_mut().live_handles()
    }
}

/// A scratch tree: `root/` with files in it, and `outside/secret` next to it
/// that no grant should ever reach.
pub struct Tree {
    pub tmp: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("root/sub/deeper")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        std::fs::write(tmp.path().join("root/hello.txt"), "hello").unwrap();
        std::fs::write(tmp.path().join("root/sub/inner.txt"), "inner").unwrap();
        std::fs::write(tmp.path().join("outside/secret"), "SECRET").unwrap();
        Tree { tmp }
    }

    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    pub fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }
}

/// Runs the calling test binary's tests again in a child process where
/// `openat2` fails with ENOSYS (skipping `skip`), after building the guests
/// here rather than in the child; see [`openat2::rerun`].
pub fn rerun_without_openat2(skip: &str) {
    if std::env::var_os(NO_OPENAT2).is_none() {
        guests();
    }
    openat2::rerun(skip);
}

/// A Rust command-line tool for the host, installed from crates.io into
/// target/tools/bin by `cargo install --locked` (once; later calls find
/// it). Returns the path of the binary.
pub fn host_tool(krate: &str, version: &str, bin: &str, features: &[&str]) -> PathBuf {
    // Tests in one binary run on several threads: install one at a time.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let tools = root().join("target/tools");
    let exe = tools.join("bin").join(bin);
    if !exe.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["install", "--locked", "--quiet"])
            .arg(format!("{krate}@{version}"))
            .arg("--root")
            .arg(&tools)
            .arg("--target-dir")
            .arg(tools.join("build"));
        if !features.is_empty() {
            cmd.args(["--no-default-features", "--features", &features.join(",")]);
        }
        run_tool(&mut cmd, &format!("cargo install {krate}@{version}"));
    }
    exe
}

/// `wac`, the component composition tool.
pub fn wac() -> PathBuf {
    // Without the registry client: compositions here use local files only.
    host_tool("wac-cli", "0.12.0", "wac", &["wit"])
}

/// `wasm-tools`, with what the tests use of it.
pub fn wasm_tools() -> PathBuf {
    host_tool(
        "wasm-tools",
        "1.263.0",
        "wasm-tools",
        &["component", "validate", "print", "parse"],
    )
}

/// A WASI preview 1 program (a `wasm32-wasip1` core module, as `wasmtime
/// run` takes them): it opens `hello.txt`, then `../secret.txt`, below its
/// first preopen, and prints each one's text or `refused`.
const P1_READER: &str = r#"
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "hello.txt")
  (data (i32.const 220) "../secret.txt")
  (data (i32.const 240) "refused\n")
  ;; Writes LEN bytes at PTR to stdout.
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 16) (local.get $ptr))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))))
  ;; Opens PATH below fd 3 (the first preopen) for reading, prints it.
  (func $show (param $path i32) (param $len i32)
    (if (call $path_open (i32.const 3) (i32.const 0) (local.get $path) (local.get $len)
          (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12))
      (then (call $print (i32.const 240) (i32.const 8)) (return)))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 64))
    (if (call $fd_read (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8))
      (then (call $print (i32.const 240) (i32.const 8)) (return)))
    (call $print (i32.const 100) (i32.load (i32.const 8))))
  (func (export "_start")
    (call $show (i32.const 200) (i32.const 9))
    (call $show (i32.const 220) (i32.const 13))))
"#;

/// [`P1_READER`], assembled.
pub fn p1_reader() -> Vec<u8> {
    wat::parse_str(P1_READER).expect("the preview 1 reader assembles")
}
