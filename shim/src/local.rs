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
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", "capbroker-test"])
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
        let tarball = self.dir.path().join("image.tar");
        image.write(std::fs::File::create(&tarball)?)?;
        let out = self.ctr(&["image", "import", &tarball.to_string_lossy()]);
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
