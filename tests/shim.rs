//! The containerd shim, end to end: each test starts its own containerd
//! (its own root, state, socket and config; never the system's), imports
//! images built here with `ctr image import`, runs them with
//! `ctr run --runtime io.containerd.capbroker.v1`, and stops containerd at
//! its end. containerd, runc and ctr are installed from Debian's packages
//! when missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use containerd_shim_capbroker::image::Image;
use containerd_shim_capbroker::local::{Containerd, RUNTIME};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The std-probe guest (a plain `wasi:cli` command), built once.
fn std_probe() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "-p", "std-probe"])
            .current_dir(root().join("components"))
            .status()
            .expect("cannot run cargo to build the guest components");
        assert!(status.success(), "building std-probe failed");
        std::fs::read(root().join("target/guests/wasm32-wasip2/release/std-probe.wasm")).unwrap()
    })
}

/// A containerd of the test's own that runs this build's shim.
fn start() -> Containerd {
    let shim = Path::new(env!("CARGO_BIN_EXE_containerd-shim-capbroker-v1"));
    Containerd::start(shim.parent().unwrap()).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The probe with a manifest granting `/data` read-only, a file inside the
/// grant and one outside it.
fn granted_image(name: &str) -> Image {
    let mut image = Image::new(name);
    image.add("/std-probe.wasm", std_probe().to_vec()).unwrap();
    image
        .add(
            "/capbroker.toml",
            b"[dir.\"/data\"]\npath = \"/data\"\nrights = \"ro\"\n".to_vec(),
        )
        .unwrap();
    image
        .add("/data/granted.txt", b"granted words".to_vec())
        .unwrap();
    image.add("/secret.txt", b"secret words".to_vec()).unwrap();
    image.entrypoint = vec!["/std-probe.wasm".into()];
    image
}

#[test]
fn ctr_runs_a_component_with_the_grants_of_its_image() {
    let ctd = start();
    ctd.import(&granted_image("docker.io/capbroker/granted:1"))
        .unwrap();

    let out = ctd.run(
        "docker.io/capbroker/granted:1",
        "granted",
        &["--env", "GREETING=hello"],
        &[
            "/std-probe.wasm",
            "read",
            "/data/granted.txt",
            "read",
            "/secret.txt",
            "write",
            "/data/new.txt",
            "x",
            "env",
            "GREETING",
            "stderr",
            "to the log",
            "exit",
            "3",
        ],
    );
    let stdout = text(&out.stdout);
    // WASI 0.2's `exit` carries success or failure, not a code: any
    // non-zero exit is 1, as under `wasmtime run` and `capbroker run`.
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {}\ncontainerd: {}",
        text(&out.stderr),
        ctd.log()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("ok read") && lines[0].contains("granted words"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("err ") && !stdout.contains("secret words"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("err "),
        "a read-only grant was written: {stdout}"
    );
    assert!(
        lines[3].starts_with("ok env") && lines[3].contains("hello"),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("to the log"),
        "{}",
        text(&out.stderr)
    );

    // The same image's entrypoint alone runs the probe with no steps.
    let out = ctd.run("docker.io/capbroker/granted:1", "plain", &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn without_a_manifest_an_image_is_granted_nothing() {
    let ctd = start();
    let mut image = granted_image("docker.io/capbroker/bare:1");
    image.remove("/capbroker.toml");
    ctd.import(&image).unwrap();
    let out = ctd.run(
        "docker.io/capbroker/bare:1",
        "bare",
        &[],
        &["/std-probe.wasm", "read", "/data/granted.txt", "list", "/"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.lines().all(|l| l.starts_with("err ")),
        "reached the image's files without a grant: {stdout}"
    );
    assert!(!stdout.contains("granted words"), "{stdout}");
}

#[test]
fn a_killed_container_ends_with_137() {
    let ctd = start();
    ctd.import(&granted_image("docker.io/capbroker/sleeper:1"))
        .unwrap();
    let running = ctd
        .ctr_command(&[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "docker.io/capbroker/sleeper:1",
            "sleeper",
            "/std-probe.wasm",
            "sleep",
            "600000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = text(&ctd.ctr(&["task", "ls"]).stdout);
        if tasks.contains("sleeper") && tasks.contains("RUNNING") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not start: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let kill = ctd.ctr(&["task", "kill", "--signal", "SIGKILL", "sleeper"]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn bad_images_end_with_a_clear_message_and_the_shim_carries_on() {
    let ctd = start();
    let mut bad = granted_image("docker.io/capbroker/bad:1");
    bad.add("/not-a-component.wasm", b"hello, I am text".to_vec())
        .unwrap();
    ctd.import(&bad).unwrap();

    let cases: [(&str, &[&str], &str); 2] = [
        ("missing", &["/nothing-here.wasm"], "/nothing-here.wasm"),
        ("text", &["/not-a-component.wasm"], "not-a-component"),
    ];
    for (id, args, says) in cases {
        let out = ctd.run("docker.io/capbroker/bad:1", id, &[], args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{id}: {stderr}");
        assert!(
            stderr.contains("capbroker: error:") && stderr.contains(says),
            "{id}: {stderr}"
        );
    }

    // A manifest the broker cannot read.
    let mut broken = granted_image("docker.io/capbroker/broken:1");
    broken
        .add(
            "/capbroker.toml",
            b"[dir.\"/data\"]\npath = \"/data\"\nrights = \"rwx\"\n".to_vec(),
        )
        .unwrap();
    ctd.import(&broken).unwrap();
    let out = ctd.run("docker.io/capbroker/broken:1", "broken", &[], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("capbroker.toml:3") && stderr.contains("rwx"),
        "{stderr}"
    );

    // And the next good container runs as usual.
    let out = ctd.run(
        "docker.io/capbroker/bad:1",
        "good",
        &[],
        &["/std-probe.wasm", "read", "/data/granted.txt"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("granted words"));
}
