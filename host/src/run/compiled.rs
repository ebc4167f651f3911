//! Ahead-of-time artifacts: `capbroker compile` writes a component's
//! machine code to a file that `run`, `serve`, `--component`, manifest
//! `[components]` and the containerd shim take in place of the `.wasm`.
//!
//! An artifact is machine code the broker runs outside any sandbox, as
//! trusted as the broker's own binary. So it is taken only from a file the
//! operator names, whose name ends in `.cwasm` ([`check_named`]: a `.wasm`
//! a guest could rewrite must not turn into machine code), never from
//! bytes an embedder's caller or a guest hands over
//! ([`crate::run::app::Runtime::load_bytes`] refuses them); and a run whose
//! grants could write the file is refused before any guest runs
//! ([`crate::run::launch::before_any_guest`]), as one that could write its
//! manifest is: a guest must not leave code for the next run.
//!
//! The file is wasmtime's own serialization of the component (what
//! `Component::serialize` writes; an ELF object), then a SHA-256 of it
//! ([`seal`]), checked before wasmtime sees a byte: a damaged file is
//! refused, not run. wasmtime checks its version and every engine setting
//! that changes the code when it is loaded; a mismatch is an error that
//! says how to make a fresh one.

use std::path::Path;

use wasmtime::component::Component;
use wasmtime::error::Context;
use wasmtime::{bail, Engine, Precompiled};

/// The file name extension `capbroker compile` suggests, as wasmtime's.
pub const EXTENSION: &str = "cwasm";

/// What ends every artifact: this marker, then a SHA-256 of everything
/// before it. wasmtime checks an artifact's header and settings, not its
/// code, so a damaged byte would run as changed machine code (or crash the
/// host); the digest refuses it first.
const TRAILER: &[u8] = b"capbroker-cwasm-1";
const DIGEST_LEN: usize = 32;

/// `artifact` (wasmtime's serialization of a component) with its trailer.
pub fn seal(mut artifact: Vec<u8>) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, &artifact);
    artifact.extend_from_slice(TRAILER);
    artifact.extend_from_slice(digest.as_ref());
    artifact
}

/// The serialization in the sealed artifact `bytes` (the operator's file
/// `name`), if its trailer is there and its digest matches.
pub fn unseal<'a>(name: &str, bytes: &'a [u8]) -> wasmtime::Result<&'a [u8]> {
    let Some(body_len) = bytes.len().checked_sub(TRAILER.len() + DIGEST_LEN) else {
        bail!("{}", not_ours(name));
    };
    let (body, tail) = bytes.split_at(body_len);
    let (marker, digest) = tail.split_at(TRAILER.len());
    if marker != TRAILER {
        bail!("{}", not_ours(name));
    }
    if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != digest {
        bail!(
            "`{name}` is damaged: its contents do not match the digest `capbroker compile` \
             wrote at its end; compile it again"
        );
    }
    Ok(body)
}

fn not_ours(name: &str) -> String {
    format!(
        "`{name}` is not a compiled component made by `capbroker compile` (or it is \
         truncated): compile the `.wasm` with `capbroker compile` (`wasmtime compile`'s \
         artifacts are for wasmtime's own engine settings)"
    )
}

/// Whether `bytes` are meant as a compiled artifact (an ELF object, as
/// wasmtime writes them) rather than WebAssembly: [`load`] then says
/// whether it is one.
pub fn is_artifact(bytes: &[u8]) -> bool {
    bytes.starts_with(ELF)
}

const ELF: &[u8] = b"\x7fELF";

/// Whether the file at `path` is a compiled artifact; `false` when it
/// cannot be read (whoever loads it then says why).
pub fn is_artifact_file(path: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // Never blocks: the path may name a FIFO.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    match opened {
        Ok(mut f) => {
            let mut magic = [0; 4];
            f.read_exact(&mut magic).is_ok() && is_artifact(&magic)
        }
        Err(_) => false,
    }
}

/// Refuses machine code from a file whose name does not say it holds
/// some (`.cwasm`). A guest granted the folder of a `.wasm` another run
/// runs may rewrite it: that changes only what runs inside the sandbox,
/// and must never become code that runs outside it. Naming a `.cwasm` is
/// the operator saying "run this machine code", as naming a binary is.
pub fn check_named(name: &str) -> wasmtime::Result<()> {
    if Path::new(name).extension().is_some_and(|e| e == EXTENSION) {
        return Ok(());
    }
    bail!(
        "`{name}` holds compiled machine code, but its name does not end in `.{EXTENSION}`: \
         capbroker runs machine code only from a file named as such (rename it if you \
         compiled it with `capbroker compile`; if not, whoever could write it chose code \
         to run outside the sandbox)"
    )
}

/// The component in the artifact `bytes`, read from the operator's file
/// `name`, for `engine`; a clear error when it is not a component's
/// artifact or was made for another wasmtime or engine configuration.
pub fn load(engine: &Engine, name: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
    let bytes = unseal(name, bytes)?;
    match Engine::detect_precompiled(bytes) {
        Some(Precompiled::Component) => {}
        Some(Precompiled::Module) => bail!(
            "`{name}` is a compiled core module (`wasmtime compile` of a module): capbroker \
             runs compiled components; compile the `.wasm` with `capbroker compile`"
        ),
        None => bail!(
            "`{name}` is not a compiled component wasmtime can read: damaged, truncated, or \
             not made by `capbroker compile`"
        ),
    }
    // SAFETY: the operator named this file as the component to run, as
    // they name the broker's own binary (see the module's comment: no
    // grant may write it). wasmtime checks its version and configuration
    // against the engine's before using it.
    unsafe { Component::deserialize(engine, bytes) }.with_context(|| {
        format!(
            "`{name}` was compiled for another capbroker or engine configuration: compile it \
             again with this capbroker (`capbroker compile COMPONENT.wasm -o {name}`, with \
             the run's `-m` manifest when its budgets allow more than about 2,000 instances \
             at once; docs/cache.md#ahead-of-time-artifacts)"
        )
    })
}

/// The artifact of `config`'s component, compiled for the engine a run of
/// `config` gets (its budgets size the instance pool, which changes the
/// code of a run that allows more than about 2,000 instances at once).
pub fn compile(config: &crate::policy::Config) -> wasmtime::Result<Vec<u8>> {
    let Some(component) = &config.component else {
        bail!(
            "no component to compile: name one, or give a manifest (-m) with `component = \"...\"`"
        );
    };
    let pool = crate::run::launch::Launch::pool(config)?;
    crate::run::app::Runtime::with_pool(&pool)?.compile_artifact(component)
}

/// Writes `artifact` to `out` whole or not at all: into a file of its own
/// beside it, renamed into place, so a run never loads half an artifact.
pub fn write(out: &Path, artifact: &[u8]) -> wasmtime::Result<()> {
    use std::io::Write;
    let name = out
        .file_name()
        .with_context(|| format!("`{}` names no file", out.display()))?;
    // The rename would put the artifact in place of a device, a link or a
    // folder's entry the operator did not mean to lose.
    if let Ok(m) = std::fs::symlink_metadata(out) {
        if !m.is_file() {
            bail!(
                "-o `{}` is not a regular file (a device, a link or a folder): name a file",
                out.display()
            );
        }
    }
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(artifact)?;
        f.sync_data()?;
        std::fs::rename(&tmp, out)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write `{}`", out.display()))
}
