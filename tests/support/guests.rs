//! The repository's root and its guest components, built from source once
//! per test binary. Shared by `support` and by the fuzzer
//! (`fuzz/src/lib.rs` includes this file as its `guests` module).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root (every crate that includes this file is one
/// folder below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds every guest in components/ (once per process; cargo makes the
/// later binaries' calls no-ops) and returns the folder of the .wasm files.
pub fn guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet"])
            .current_dir(root().join("components"))
            .status()
            .expect("cannot run cargo to build the guest components");
        assert!(status.success(), "building the guest components failed");
        root().join("target/guests/wasm32-wasip2/release")
    })
}
