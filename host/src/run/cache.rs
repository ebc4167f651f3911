//! The cache of compiled components: compiling a component is most of the
//! time a short run takes, so its machine code is kept on disk and loaded
//! the next time the same bytes run on the same engine.
//!
//! Loading machine code is running it: wasmtime's `Component::deserialize`
//! is `unsafe` because a crafted file is arbitrary code. So the cache only
//! loads what it wrote itself:
//!
//! - its folder is created `0700` and used only while it is a real folder
//!   (not a link) owned by the user, that nobody else can write or read;
//! - it holds a random 32-byte key (`key`, `0600`, made once per folder);
//!   every entry starts with an HMAC-SHA256 under that key of the entry's
//!   name and contents, checked before anything is handed to wasmtime. A
//!   truncated, altered or foreign entry (one copied from another folder
//!   or written by anything without the key) fails the check and is
//!   compiled again, with a warning;
//! - wasmtime's own checks come after: the artifact must be a component
//!   (`Engine::detect_precompiled`), and `deserialize` refuses one made
//!   by another version or engine configuration.
//!
//! What this does not defend against: anything running as the same user
//! can read the key and forge an entry, but it can already run code as
//! that user.
//!
//! An entry's name is a SHA-256 of the component's bytes (a preview 1
//! module's own, before capbroker's adapter makes it a component) and of
//! everything that changes the machine code:
//! wasmtime's hash of the engine's compilation settings
//! (`Engine::precompile_compatibility_hash`: target, Cranelift flags,
//! tunables such as the memory reservation, wasm features, wasmtime's
//! version) and capbroker's version.
//!
//! Entries are written to a temporary file and renamed into place, so two
//! processes filling the cache at once both succeed and a reader never
//! sees half an entry. Beyond [`MAX_BYTES`] the entries used least
//! recently are removed. Any failure of the cache is a warning: the
//! component is compiled as if there were none.

use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use ring::{digest, hmac, rand::SecureRandom};
use wasmtime::component::Component;
use wasmtime::error::Context;
use wasmtime::{bail, Engine, Precompiled};

/// The most the cache's entries may take together: 1 GiB. A small Rust
/// component compiles to a few hundred KiB, a Python one to tens of MiB.
pub const MAX_BYTES: u64 = 1 << 30;

/// Names the cache folder, for tests and operators who want it elsewhere.
pub const DIR_VAR: &str = "CAPBROKER_CACHE_DIR";

/// The key's file name, and its length.
const KEY_FILE: &str = "key";
const KEY_LEN: usize = 32;

/// An entry's tag (HMAC-SHA256) before its contents.
const TAG_LEN: usize = 32;

/// What an entry's file name ends with.
const ENTRY_EXT: &str = "cwasm";

/// What temporary files start with; one left by a process that died is
/// removed once it is older than [`STALE`].
const TMP_PREFIX: &str = ".tmp-";
const STALE: Duration = Duration::from_secs(3600);

/// Bumped when the entries' format changes, so old ones are never read.
const FORMAT: &[u8] = b"capbroker-cache-v1";

/// A folder of compiled components for one engine.
pub struct Cache {
    dir: PathBuf,
    key: hmac::Key,
    /// The engine's compilation settings, hashed.
    engine: [u8; 32],
    limit: u64,
}

/// Where the cache lives: [`DIR_VAR`] if set, else
/// `$XDG_CACHE_HOME/capbroker`, else `$HOME/.cache/capbroker`.
pub fn default_dir() -> Option<PathBuf> {
    if off_in_this_process() {
        return None;
    }
    candidates().into_iter().next()
}

/// Every folder a run of this user may keep its cache in, the one this
/// process uses first: [`DIR_VAR`], `$XDG_CACHE_HOME/capbroker` and
/// `$HOME/.cache/capbroker`, each if set, and `.cache/capbroker` in the
/// home folder the user database names. A later run with another
/// environment (or with the cache on where this one has it off) uses
/// another of them, so a guest must be able to write none of them.
pub fn candidates() -> Vec<PathBuf> {
    if off_in_this_process() {
        return Vec::new();
    }
    let set = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    let mut dirs = Vec::new();
    // Only a folder that is the same for every run: a relative one (or one
    // through /proc/self) names another folder from each working folder,
    // and the guard below would look at this run's only.
    dirs.extend(set(DIR_VAR).filter(|p| same_for_every_run(p)));
    // The XDG spec says a relative path is to be ignored; a relative HOME
    // is as meaningless.
    let xdg = set("XDG_CACHE_HOME").filter(|p| p.is_absolute());
    dirs.extend(xdg.map(|x| x.join("capbroker")));
    let home = set("HOME").filter(|p| p.is_absolute());
    dirs.extend(home.map(|h| h.join(".cache").join("capbroker")));
    // A run without HOME (a service, `env -i`) must not write where the
    // user's ordinary runs keep it: their home as the system knows it.
    if let Some(home) = system_home() {
        let dir = home.join(".cache").join("capbroker");
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// The user's home folder in the system's user database.
fn system_home() -> Option<PathBuf> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live value of the right type, and
    // `buf` outlives the use of the strings getpwuid_r points into it.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || pwd.pw_dir.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded, so pw_dir is a NUL-terminated string
    // in `buf`.
    let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
    let dir = PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes()));
    dir.is_absolute().then_some(dir)
}

fn same_for_every_run(dir: &Path) -> bool {
    dir.is_absolute() && !dir.starts_with("/proc") && !dir.starts_with("/dev/fd")
}

/// Why [`DIR_VAR`] is not used, if it is set but names no folder that is
/// the same for every run: a warning, the cache going to its default.
pub fn dir_var_ignored() -> Option<String> {
    let dir = std::env::var_os(DIR_VAR).filter(|s| !s.is_empty())?;
    let dir = PathBuf::from(dir);
    (!same_for_every_run(&dir)).then(|| {
        format!(
            "{DIR_VAR}=`{}` is not used: it must be an absolute path that names the same \
             folder from every working folder (not under /proc or /dev/fd)",
            dir.display()
        )
    })
}

/// The key's path in the cache folder `dir`: what no grant may reach.
pub fn key_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE)
}

static OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turns the cache off for the whole process, and with it the guard of its
/// folders: the containerd shim's containers, whose root filesystem (and
/// any cache in it) goes with them, so no later run could load from it.
pub fn off_for_this_process() {
    OFF.store(true, Ordering::Relaxed);
}

fn off_in_this_process() -> bool {
    OFF.load(Ordering::Relaxed)
}

/// Makes the cache folder `dir` (`0700`) if it is not there.
fn make_dir(dir: &Path) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Warns about the cache on stderr: its failures never fail a run.
fn warn(what: impl std::fmt::Display) {
    eprintln!("capbroker: warning: compiled-component cache: {what}");
}

impl Cache {
    /// The cache in [`default_dir`] for `engine`, or `None` (with a
    /// warning) when there is none or it cannot be used.
    pub fn open_default(engine: &Engine) -> Option<Cache> {
        if let Some(why) = dir_var_ignored() {
            warn(why);
        }
        let Some(dir) = default_dir() else {
            warn(format_args!(
                "neither {DIR_VAR}, XDG_CACHE_HOME nor HOME is set: compiling without it"
            ));
            return None;
        };
        match Cache::open(&dir, engine) {
            Ok(c) => Some(c),
            Err(e) => {
                warn(format_args!("{e:#}: compiling without it"));
                None
            }
        }
    }

    /// The cache in `dir` for `engine`: the folder is made (`0700`) if it
    /// is missing and must be private to the user; its key is made if it is
    /// missing.
    pub fn open(dir: &Path, engine: &Engine) -> wasmtime::Result<Cache> {
        make_dir(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        let meta = fs::symlink_metadata(dir)
            .with_context(|| format!("cannot read `{}`", dir.display()))?;
        if !meta.is_dir() {
            bail!(
                "`{}` is not a folder (a link is not followed)",
                dir.display()
            );
        }
        private(dir, &meta)?;
        let key = key(dir)?;
        let mut hasher = Sha256(digest::Context::new(&digest::SHA256));
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let mut engine_hash = [0; 32];
        engine_hash.copy_from_slice(hasher.0.finish().as_ref());
        Ok(Cache {
            dir: dir.to_path_buf(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            engine: engine_hash,
            limit: MAX_BYTES,
        })
    }

    /// Keeps the entries within `bytes` together instead of [`MAX_BYTES`].
    pub fn set_limit(&mut self, bytes: u64) {
        self.limit = bytes;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component of `bytes` from the cache, or compiled by `compile`
    /// and stored. `name` is how warnings refer to the component; `engine`
    /// is the one the cache was opened for (wasmtime refuses an entry
    /// compiled for an incompatible one anyway).
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        name: &str,
        bytes: &[u8],
        compile: impl FnOnce() -> wasmtime::Result<Component>,
    ) -> wasmtime::Result<Component> {
        let entry = self.entry_name(bytes);
        let path = self.dir.join(&entry);
        match self.load(engine, &entry, &path) {
            Ok(Some(c)) => {
                tracing::debug!(
                    "compiled-component cache: hit for `{name}`: {}",
                    path.display()
                );
                return Ok(c);
            }
            Ok(None) => {
                tracing::debug!(
                    "compiled-component cache: miss for `{name}`: {}",
                    path.display()
                )
            }
            Err(e) => {
                warn(format_args!(
                    "entry `{}` for `{name}` is not usable ({e:#}): compiling again",
                    path.display()
                ));
                // Best effort: the entry is replaced just below anyway.
                let _ = fs::remove_file(&path);
            }
        }
        let component = compile()?;
        if let Err(e) = self.store(&entry, &path, &component) {
            warn(format_args!("cannot store `{name}` ({e:#})"));
        } else if let Err(e) = self.evict() {
            warn(format_args!(
                "cannot keep the cache within its bound ({e:#})"
            ));
        }
        Ok(component)
    }

    /// The entry's file name: a hash of everything that decides its code.
    fn entry_name(&self, bytes: &[u8]) -> String {
        let mut d = digest::Context::new(&digest::SHA256);
        d.update(FORMAT);
        d.update(&self.engine);
        d.update(env!("CARGO_PKG_VERSION").as_bytes());
        d.update(&(bytes.len() as u64).to_le_bytes());
        d.update(bytes);
        let hex: String = d
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{hex}.{ENTRY_EXT}")
    }

    /// The tag of an entry's contents under the cache's key: its name is
    /// in it, so an entry moved to another name does not pass either.
    fn tag(&self, entry: &str, artifact: &[u8]) -> hmac::Tag {
        let mut m = hmac::Context::with_key(&self.key);
        m.update(FORMAT);
        m.update(entry.as_bytes());
        m.update(artifact);
        m.sign()
    }

    /// The entry at `path`, `None` if there is none, an error if it is
    /// there but not one this cache wrote for this engine.
    fn load(
        &self,
        engine: &Engine,
        entry: &str,
        path: &Path,
    ) -> wasmtime::Result<Option<Component>> {
        let file = match open_no_link(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("cannot open it"),
        };
        // Only a file of this user's that nothing else links to: a second
        // link could be in a folder a guest may write, and a write there
        // would change this entry.
        let meta = file.metadata().context("cannot read it")?;
        if !meta.is_file() {
            bail!("it is not a regular file");
        }
        // Nothing the cache wrote is larger than all of it may be.
        if meta.len() > self.limit.max(MAX_BYTES) {
            bail!("it is larger than the cache's bound");
        }
        if meta.nlink() != 1 {
            bail!(
                "it has {} links, so it can be changed from elsewhere",
                meta.nlink()
            );
        }
        private(path, &meta)?;
        let bytes = read_all(file).context("cannot read it")?;
        if bytes.len() < TAG_LEN {
            bail!("it is too short to hold its tag");
        }
        let (tag, artifact) = bytes.split_at(TAG_LEN);
        let want = self.tag(entry, artifact);
        // Compared in constant time, though there is little to learn here.
        let diff = want
            .as_ref()
            .iter()
            .zip(tag)
            .fold(0, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            bail!("its tag does not match its contents (truncated, altered, or not written here)");
        }
        if Engine::detect_precompiled(artifact) != Some(Precompiled::Component) {
            bail!("it is not a compiled component");
        }
        // SAFETY: the bytes carry a valid tag under this cache's private
        // key, so they are exactly what `store` wrote: the serialization
        // of a component this engine's wasmtime compiled. wasmtime checks
        // its version and configuration against the engine's.
        let component =
            unsafe { Component::deserialize(engine, artifact) }.context("wasmtime refused it")?;
        // Most recently used: eviction removes the oldest first. A cache
        // that cannot be touched still works.
        let _ = File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Ok(Some(component))
    }

    /// Writes `component` as `entry`: into a temporary file of its own,
    /// renamed into place.
    fn store(&self, entry: &str, path: &Path, component: &Component) -> wasmtime::Result<()> {
        let artifact = component.serialize()?;
        let tag = self.tag(entry, &artifact);
        let tmp = self.dir.join(tmp_name());
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(tag.as_ref())?;
            f.write_all(&artifact)?;
            f.sync_data()?;
            fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.with_context(|| format!("cannot write `{}`", path.display()))
    }

    /// Removes the least recently used entries while they take more than
    /// the limit, and temporary files a dead process left.
    fn evict(&self) -> wasmtime::Result<()> {
        let mut entries = Vec::new();
        let mut total = 0;
        let now = SystemTime::now();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = e.metadata() else { continue };
            let modified = meta.modified().unwrap_or(now);
            if name.starts_with(TMP_PREFIX) {
                if now.duration_since(modified).unwrap_or_default() > STALE {
                    let _ = fs::remove_file(e.path());
                }
            } else if name.ends_with(ENTRY_EXT) && meta.is_file() {
                total += meta.len();
                entries.push((modified, meta.len(), e.path()));
            }
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.limit {
                break;
            }
            match fs::remove_file(&path) {
                // Another process may have removed it first.
                Ok(()) => total -= len,
                Err(e) if e.kind() == ErrorKind::NotFound => total -= len,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove `{}`", path.display()))
                }
            }
        }
        Ok(())
    }
}

/// Opens `path` for reading, never through a link in its place, and
/// without waiting (a FIFO there would block the run; its type is checked
/// after).
fn open_no_link(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

fn read_all(mut f: File) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut v)?;
    Ok(v)
}

/// A temporary file name no other process or thread uses at once.
fn tmp_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{TMP_PREFIX}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Refuses a file or folder someone else owns or may read or write: the
/// key and the entries are only as safe as the folder that holds them.
fn private(path: &Path, meta: &fs::Metadata) -> wasmtime::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "`{}` belongs to uid {}, not to this user (uid {me})",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "`{}` is open to other users (mode {:o}; it must be {})",
            path.display(),
            meta.mode() & 0o777,
            if meta.is_dir() { "0700" } else { "0600" }
        );
    }
    Ok(())
}

/// The cache's key, made (random, `0600`) if the folder has none. Two
/// processes making it at once agree: each writes its own file and links
/// it into place, and the loser reads the winner's.
fn key(dir: &Path) -> wasmtime::Result<[u8; KEY_LEN]> {
    let path = dir.join(KEY_FILE);
    let read = |path: &Path| -> wasmtime::Result<Option<[u8; KEY_LEN]>> {
        let f = match open_no_link(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot open `{}`", path.display())),
        };
        let meta = f.metadata()?;
        if !meta.is_file() {
            bail!("`{}` is not a file", path.display());
        }
        private(path, &meta)?;
        let bytes = read_all(f).with_context(|| format!("cannot read `{}`", path.display()))?;
        let key = <[u8; KEY_LEN]>::try_from(&bytes[..])
            .ok()
            .with_context(|| format!("`{}` is not a {KEY_LEN}-byte key", path.display()))?;
        Ok(Some(key))
    };
    if let Some(key) = read(&path)? {
        return Ok(key);
    }
    let mut key = [0; KEY_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .ok()
        .context("the system's random number generator failed")?;
    let tmp = dir.join(tmp_name());
    let made = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&key)?;
        f.sync_data()?;
        // A link, unlike a rename, never replaces a key another process
        // made meanwhile (whose entries would then all fail their check).
        match fs::hard_link(&tmp, &path) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    })();
    let _ = fs::remove_file(&tmp);
    made.with_context(|| format!("cannot write `{}`", path.display()))?;
    read(&path)?.with_context(|| format!("`{}` vanished", path.display()))
}

/// A `Hasher` over SHA-256, so that wasmtime's `Hash` of the engine's
/// settings gives the same bytes in every process (std's hashers are
/// seeded per process).
struct Sha256(digest::Context);

impl Hasher for Sha256 {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // The digest is taken from the context, not from here; this keeps
        // the trait's contract with the first 8 bytes of it anyway.
        let d = self.0.clone().finish();
        u64::from_le_bytes(d.as_ref()[..8].try_into().unwrap_or_default())
    }
}
