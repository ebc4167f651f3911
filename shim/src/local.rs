//! A containerd of one's own, for the shim's tests and benchmark: its own
//! root, state, socket and config (never the system's service), with the
//! shim on its PATH, stopped when dropped. containerd, ctr and runc are
//! installed from Debian's packages when missing.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::image::Image;

/// The runtime name containerd maps to `containerd-shim-capbroker-v1`.
pub const RUNTIME: &str = "io.containerd.capbroker.v1";

/// The image of pods' sandbox containers: there is no registry to pull
/// Kubernetes' own from, so a test builds and imports one under this name.
pub const PAUSE_IMAGE: &str = "docker.io/capbroker/pause:1";

/// The containerd namespace CRI (and so the kubelet) works in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Installs containerd and runc from Debian's packages if they are missing.
fn ensure_installed() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let have = |bin: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if ["containerd", "ctr", "runc"].iter().all(|b| have(b)) {
            return Ok(());
        }
        for args in [
            &["update", "-qq"][..],
            &["install", "-y", "-qq", "containerd", "runc"],
        ] {
            let status = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map_err(|e| format!("cannot run apt-get to install containerd: {e}"))?;
            if !status.success() {
                return Err(format!("apt-get {args:?} failed"));
            }
        }
        Ok(())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A running containerd of our own.
pub struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Containerd {
    /// Starts containerd with `shim_dir` (the folder holding
    /// `containerd-shim-capbroker-v1`) first on its PATH, and waits until
    /// it answers.
    pub fn start(shim_dir: &Path) -> Result<Containerd> {
        ensure_installed()?;
        let dir = tempfile::Builder::new()
            .prefix("capbroker-containerd-")
            .tempdir()?;
        let d = dir.path().display();
        // The CRI plugin needs restrict_oom_score_adj where root lacks
        // CAP_SYS_RESOURCE, and a runtime for its default name, runc.
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "{PAUSE_IMAGE}"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.capbroker]
    runtime_type = "{RUNTIME}"
"#
        );
        std::fs::write(dir.path().join("config.toml"), config)?;
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(dir.path().join("containerd.log"))?;
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .env("PATH", path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start containerd")?;
        let c = Containerd { dir, daemon };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            if Instant::now() > deadline {
                bail!("containerd did not start:\n{}", c.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(c)
    }

    /// What containerd (and the shims it started) logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against this containerd, in the namespace `capbroker-test`.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        self.ctr_in("capbroker-test", args)
    }

    /// `ctr` against this containerd, in `namespace`.
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", namespace])
            .args(args);
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run ctr")
    }

    /// Writes `image` as a tarball and imports it.
    pub fn import(&self, image: &Image) -> Result<()> {
        self.import_into("capbroker-test", image)
    }

    /// Writes `image` as a tarball and imports it into `namespace`.
    pub fn import_into(&self, namespace: &str, image: &Image) -> Result<()> {
        let tarball = self.dir.path().join("image.tar");
        image.write(std::fs::File::create(&tarball)?)?;
        let out = self
            .ctr_in(namespace, &["image", "import", &tarball.to_string_lossy()])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.success(),
            "ctr image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// `ctr run --rm` of `image` with the shim, `args` replacing the
    /// image's entrypoint when given.
    pub fn run(&self, image: &str, id: &str, extra: &[&str], args: &[&str]) -> Output {
        let mut all = vec!["run", "--rm", "--runtime", RUNTIME];
        all.extend(extra);
        all.extend([image, id]);
        all.extend(args);
        self.ctr(&all)
    }

    /// containerd's socket, for a CRI client.
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// A scratch folder that goes when containerd does.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Snapshots of containers still running stay mounted.
        let root = self.dir.path().display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let mut ours: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(1))
                .filter(|m| m.starts_with(&root))
                .collect();
            ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in ours {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}

/// A static native program built from C `source` with the C compiler: a
/// Linux container needs nothing else in its image (a pod's pause
/// container, a native baseline).
pub fn static_program(dir: &Path, name: &str, source: &str) -> Result<Vec<u8>> {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source)?;
    let out = dir.join(name);
    let status = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&c)
        .status()
        .context("cannot run cc")?;
    ensure!(status.success(), "cc -static {name}.c failed");
    Ok(std::fs::read(out)?)
}

/// The guest component `name` of this repository's `components/`, built from source for
/// wasm32-wasip2; cargo makes later calls cheap.
pub fn guest_component(name: &str) -> Result<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the shim crate has no parent folder")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", name])
        .current_dir(root.join("components"))
        .status()
        .context("cannot run cargo to build the guest components")?;
    ensure!(status.success(), "building the guest `{name}` failed");
    let out = root.join("target/guests/wasm32-wasip2/release");
    // A library component's file is named as Rust names the crate.
    let mut wasm = out.join(format!("{name}.wasm"));
    if !wasm.exists() {
        wasm = out.join(format!("{}.wasm", name.replace('-', "_")));
    }
    std::fs::read(&wasm).with_context(|| format!("cannot read `{}`", wasm.display()))
}
