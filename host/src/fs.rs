//! The `fs` interface: directory and file handles, backed by cap-std.
//!
//! Every path a guest passes is resolved by cap-std relative to the handle's
//! open directory, so `..`, absolute paths and symbolic links can never lead
//! outside it; the rights checks here decide what may be done inside.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use cap_std::fs::{Dir, File, Metadata, OpenOptions, OpenOptionsExt};
use wasmtime::component::Resource;
use wasmtime::error::Context;

use crate::bindings::capbroker::caps::fs::{
    Entry, EntryKind, Host, HostDir, HostFile, OpenFlags, Stat,
};
use crate::ctx::BrokerCtxView;
use crate::learn::Learner;
use crate::revoke::{Lineage, RevokerHandle};
use crate::types::{require, Error, HostError, HostResult, Rights};

/// `read-file` refuses files larger than this; larger ones are streamed.
pub const MAX_WHOLE_FILE: u64 = 64 << 20;
/// `file.read` returns at most this many bytes per call.
pub const MAX_READ_CHUNK: u32 = 1 << 20;

/// The operator's grant of a host directory.
#[derive(Clone, Debug)]
pub struct DirGrant {
    pub host_path: PathBuf,
    pub rights: Rights,
    /// `[dir.NAME.paths]`: the paths below the directory the handle may
    /// reach, each with the most rights it may use there (and below it).
    /// `None`: the whole directory.
    pub paths: Option<Vec<(PathBuf, Rights)>>,
}

impl DirGrant {
    /// Opens the host directory. This is the one place the broker uses
    /// ambient authority for the file system, on the operator's behalf.
    pub fn open(&self) -> wasmtime::Result<Dir> {
        Dir::open_ambient_dir(&self.host_path, cap_std::ambient_authority())
            .with_context(|| format!("cannot open host directory `{}`", self.host_path.display()))
    }
}

/// Where a handle is below its grant's root, which paths there the
/// operator let it reach, and who records what it is used for.
#[derive(Clone, Default)]
pub struct Place {
    /// The handle's directory, relative to the grant's root.
    base: PathBuf,
    /// See [`DirGrant::paths`]; relative to the grant's root.
    scope: Option<Arc<[(PathBuf, Rights)]>>,
    /// `capbroker learn`'s recorder and the grant's name.
    learn: Option<(Arc<Learner>, Arc<str>)>,
}

impl Place {
    /// The root of grant `name`, reaching `paths` (all when `None`).
    pub fn root(
        name: &str,
        paths: Option<&[(PathBuf, Rights)]>,
        learn: Option<Arc<Learner>>,
    ) -> Place {
        Place {
            base: PathBuf::new(),
            scope: paths.map(Into::into),
            learn: learn.map(|l| (l, name.into())),
        }
    }

    /// `path` relative to the grant's root, if it stays below it.
    fn below(&self, path: &str) -> Option<PathBuf> {
        join_below(&self.base, path)
    }

    /// Whether `need` may be used on `path`. Within a scope, the path must
    /// lie at or below an entry whose rights hold `need`, and no link may
    /// stand on the way (a link could lead to a path the scope hides).
    fn check(&self, dir: &Dir, path: &str, need: Rights) -> Result<(), Error> {
        let Some(scope) = &self.scope else {
            return Ok(());
        };
        let p = self.below(path).ok_or_else(|| Error::Escape(path.into()))?;
        let have = scope
            .iter()
            .filter(|(e, _)| p.starts_with(e))
            .fold(Rights::empty(), |have, (_, r)| have | *r);
        if !have.contains(need) {
            return Err(Error::Denied(need & !have));
        }
        no_links(dir, path)
    }

    /// As [`Place::check`] for opening `path` to write: within a scope, an
    /// existing file needs `write` where creating one needs `create`. (Both
    /// are learned, so that a run that finds the file it made last time
    /// still may write it.)
    fn check_write(&self, dir: &Dir, path: &str, need: Rights) -> Result<(), Error> {
        if self.scope.is_none() {
            return Ok(());
        }
        let need = if dir.symlink_metadata(path).is_ok() {
            need & !Rights::CREATE
        } else {
            need & !Rights::WRITE
        };
        self.check(dir, path, need)
    }

    /// Whether a handle on the directory `path` may be made: it must lead
    /// towards or into what the scope shows.
    fn check_dir(&self, dir: &Dir, path: &str) -> Result<(), Error> {
        let Some(scope) = &self.scope else {
            return Ok(());
        };
        let p = self.below(path).ok_or_else(|| Error::Escape(path.into()))?;
        if !scope
            .iter()
            .any(|(e, _)| p.starts_with(e) || e.starts_with(&p))
        {
            return Err(Error::Denied(Rights::all()));
        }
        no_links(dir, path)
    }

    /// Notes, for `capbroker learn`, that `rights` were used on `path`.
    fn used(&self, path: &str, rights: Rights) {
        if let (Some((learner, grant)), Some(p)) = (&self.learn, self.below(path)) {
            learner.dir(grant, p, rights);
        }
    }

    fn at(&self, path: &str) -> Place {
        if self.scope.is_none() && self.learn.is_none() {
            // Nobody asks where the handle is: spare the path.
            return self.clone();
        }
        Place {
            base: self.below(path).unwrap_or_else(|| self.base.clone()),
            ..self.clone()
        }
    }
}

/// `base` joined with a guest's relative `path`, `.` and `..` resolved
/// lexically; `None` if the path is absolute or climbs above `base`'s root.
pub(crate) fn join_below(base: &Path, path: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Refuses a path with a symbolic link in it, checked component by
/// component from the handle's directory.
fn no_links(dir: &Dir, path: &str) -> Result<(), Error> {
    let mut prefix = PathBuf::new();
    for c in Path::new(path).components() {
        prefix.push(c);
        if let Component::Normal(_) = c {
            match dir.symlink_metadata(&prefix) {
                Ok(m) if m.is_symlink() => {
                    return Err(Error::Escape(format!(
                        "{path} (a link, on a handle narrowed to some paths)"
                    )))
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    Ok(())
}

/// A directory handle: an open directory and the rights over it.
pub struct DirHandle {
    dir: Arc<Dir>,
    rights: Rights,
    place: Place,
    /// The grant name and the path below it (e.g. `data/uploads`), for the
    /// audit trail. Never used to resolve anything.
    label: Arc<str>,
    lineage: Lineage,
}

impl DirHandle {
    pub fn new(dir: Dir, rights: Rights, label: &str) -> Self {
        DirHandle {
            dir: Arc::new(dir),
            rights,
            place: Place::default(),
            label: label.into(),
            lineage: Lineage::default(),
        }
    }

    /// The same handle, at `place` below its grant's root.
    pub fn at(mut self, place: Place) -> Self {
        self.place = place;
        self
    }

    /// Whether the handle reaches only some paths below its directory.
    pub fn is_scoped(&self) -> bool {
        self.place.scope.is_some()
    }

    /// A copy with the same rights, for another process (same lineage, so a
    /// revocation reaches it too).
    pub fn copy(&self, label: &str) -> DirHandle {
        DirHandle {
            dir: self.dir.clone(),
            rights: self.rights,
            place: self.place.clone(),
            label: label.into(),
            lineage: self.lineage.clone(),
        }
    }

    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    pub fn rights(&self) -> Rights {
        self.rights
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The directory itself, for bridging to standard WASI.
    pub(crate) fn dir(&self) -> &Dir {
        &self.dir
    }

    fn child_label(&self, path: &str) -> String {
        if path == "." {
            self.label.to_string()
        } else {
            format!("{}/{}", self.label, path.trim_end_matches('/'))
        }
    }

    /// A handle on the sub-directory `path` with `rights`, which must be a
    /// subset of this handle's.
    fn derive(&self, path: &str, rights: Rights) -> Result<DirHandle, Error> {
        require(self.rights, rights)?;
        self.place.check_dir(&self.dir, path)?;
        if path != "." {
            // A sub-directory opened and left unused must open next time.
            self.place.used(path, Rights::empty());
        }
        let dir = if path == "." {
            self.dir.clone()
        } else {
            Arc::new(
                self.dir
                    .open_dir(path)
                    .map_err(|e| Error::from_io(&e, path))?,
            )
        };
        Ok(DirHandle {
            dir,
            rights,
            place: self.place.at(path),
            label: self.child_label(path).into(),
            lineage: self.lineage.clone(),
        })
    }

    /// Opens `path` as a regular file. `O_NONBLOCK` keeps a FIFO or device
    /// planted in the directory from blocking the host; anything but a
    /// regular file is then refused.
    fn open_regular(&self, path: &str, opts: &mut OpenOptions) -> Result<File, Error> {
        opts.custom_flags(libc::O_NONBLOCK);
        let file = self
            .dir
            .open_with(path, opts)
            .map_err(|e| Error::from_io(&e, path))?;
        let meta = file.metadata().map_err(|e| Error::from_io(&e, path))?;
        if meta.is_dir() {
            return Err(Error::IsDirectory(path.into()));
        }
        if !meta.is_file() {
            return Err(Error::Invalid(format!("`{path}` is not a regular file")));
        }
        Ok(file)
    }

    fn read_file(&self, path: &str) -> Result<Vec<u8>, Error> {
        require(self.rights, Rights::READ)?;
        self.place.check(&self.dir, path, Rights::READ)?;
        let file = self.open_regular(path, OpenOptions::new().read(true))?;
        let len = file.metadata().map_err(|e| Error::from_io(&e, path))?.len();
        if len > MAX_WHOLE_FILE {
            return Err(Error::Invalid(format!(
                "`{path}` is {len} bytes; read-file takes files up to {MAX_WHOLE_FILE} bytes, \
                 stream larger ones with open-file"
            )));
        }
        let mut data = Vec::with_capacity(len as usize);
        // The file may grow after the size check; never read past the limit.
        file.take(MAX_WHOLE_FILE + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::from_io(&e, path))?;
        if data.len() as u64 > MAX_WHOLE_FILE {
            return Err(Error::Invalid(format!(
                "`{path}` grew past {MAX_WHOLE_FILE} bytes"
            )));
        }
        self.place.used(path, Rights::READ);
        Ok(data)
    }

    /// Opens `path` for writing as `write-file` and `open-file` need it. With
    /// `create` but not `write`, only a new file may be opened: an existing
    /// one is refused as needing `write`, without touching it.
    fn open_for_write(&self, path: &str, flags: OpenFlags) -> Result<File, Error> {
        let create = flags.contains(OpenFlags::CREATE);
        let mut need = Rights::empty();
        if flags.intersects(OpenFlags::APPEND | OpenFlags::TRUNCATE)
            || (flags.contains(OpenFlags::WRITE) && !create)
        {
            need |= Rights::WRITE;
        }
        if create {
            need |= Rights::CREATE;
        }
        if flags.contains(OpenFlags::READ) {
            need |= Rights::READ;
        }
        require(self.rights, need)?;
        self.place.check_write(&self.dir, path, need)?;
        let new_only = create
            && (flags.contains(OpenFlags::EXCLUSIVE) || !self.rights.contains(Rights::WRITE));
        let mut opts = OpenOptions::new();
        opts.read(flags.contains(OpenFlags::READ))
            .write(flags.contains(OpenFlags::WRITE))
            .append(flags.contains(OpenFlags::APPEND))
            .truncate(flags.contains(OpenFlags::TRUNCATE));
        if new_only {
            opts.create_new(true);
        } else {
            opts.create(create);
        }
        let opened = match self.open_regular(path, &mut opts) {
            Err(Error::Exists(_)) if new_only && !flags.contains(OpenFlags::EXCLUSIVE) => {
                Err(Error::Denied(Rights::WRITE))
            }
            other => other,
        };
        if opened.is_ok() {
            let learned = if create {
                need | (self.rights & Rights::WRITE)
            } else {
                need
            };
            self.place.used(path, learned);
        }
        opened
    }

    fn write_file(&self, path: &str, contents: &[u8]) -> Result<(), Error> {
        if !self.rights.intersects(Rights::WRITE | Rights::CREATE) {
            return Err(Error::Denied(Rights::WRITE | Rights::CREATE));
        }
        let mut flags = OpenFlags::WRITE;
        if self.rights.contains(Rights::WRITE) {
            flags |= OpenFlags::TRUNCATE;
        }
        if self.rights.contains(Rights::CREATE) {
            flags |= OpenFlags::CREATE;
        }
        let mut file = match self.open_for_write(path, flags) {
            // Without `create`, a file that does not exist is one this
            // handle may not make.
            Err(Error::NotFound(_)) if !self.rights.contains(Rights::CREATE) => {
                return Err(Error::Denied(Rights::CREATE));
            }
            other => other?,
        };
        file.write_all(contents)
            .map_err(|e| Error::from_io(&e, path))
    }

    fn open_file(&self, path: &str, flags: OpenFlags) -> Result<FileHandle, Error> {
        let writes = flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND);
        if !writes && !flags.contains(OpenFlags::READ) {
            return Err(Error::Invalid(
                "open-file needs read, write or append".into(),
            ));
        }
        if flags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE) && !writes {
            return Err(Error::Invalid(
                "create and truncate need write or append".into(),
            ));
        }
        if flags.contains(OpenFlags::EXCLUSIVE) && !flags.contains(OpenFlags::CREATE) {
            return Err(Error::Invalid("exclusive needs create".into()));
        }
        let file = if writes {
            self.open_for_write(path, flags)?
        } else {
            require(self.rights, Rights::READ)?;
            self.place.check(&self.dir, path, Rights::READ)?;
            let file = self.open_regular(path, OpenOptions::new().read(true))?;
            self.place.used(path, Rights::READ);
            file
        };
        Ok(FileHandle {
            file,
            readable: flags.contains(OpenFlags::READ),
            writable: writes,
            label: self.child_label(path).into(),
            lineage: self.lineage.clone(),
        })
    }

    fn list(&self, path: &str) -> Result<Vec<Entry>, Error> {
        require(self.rights, Rights::LIST)?;
        self.place.check(&self.dir, path, Rights::LIST)?;
        let io = |e: std::io::Error| Error::from_io(&e, path);
        let entries = if path == "." {
            self.dir.entries()
        } else {
            self.dir.read_dir(path)
        };
        let mut out = Vec::new();
        for entry in entries.map_err(io)? {
            let entry = entry.map_err(io)?;
            let kind = entry.file_type().map_err(io)?;
            out.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind: entry_kind(kind),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        self.place.used(path, Rights::LIST);
        Ok(out)
    }

    fn stat(&self, path: &str) -> Result<Stat, Error> {
        require(self.rights, Rights::LIST)?;
        self.place.check(&self.dir, path, Rights::LIST)?;
        let meta = if path == "." {
            self.dir.dir_metadata()
        } else {
            self.dir.metadata(path)
        };
        let stat = stat_of(&meta.map_err(|e| Error::from_io(&e, path))?);
        self.place.used(path, Rights::LIST);
        Ok(stat)
    }

    /// Checks `need` on `path`, runs `op`, and notes the use when it worked.
    fn simple(
        &self,
        path: &str,
        need: Rights,
        op: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<(), Error> {
        require(self.rights, need)?;
        self.place.check(&self.dir, path, need)?;
        op().map_err(|e| Error::from_io(&e, path))?;
        self.place.used(path, need);
        Ok(())
    }

    fn create_dir(&self, path: &str) -> Result<(), Error> {
        self.simple(path, Rights::CREATE, || self.dir.create_dir(path))
    }

    fn remove_file(&self, path: &str) -> Result<(), Error> {
        self.simple(path, Rights::REMOVE, || self.dir.remove_file(path))
    }

    fn remove_dir(&self, path: &str) -> Result<(), Error> {
        self.simple(path, Rights::REMOVE, || self.dir.remove_dir(path))
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        let need = Rights::REMOVE | Rights::CREATE;
        require(self.rights, need)?;
        self.place.check(&self.dir, from, Rights::REMOVE)?;
        self.place.check(&self.dir, to, Rights::CREATE)?;
        self.dir
            .rename(from, &self.dir, to)
            .map_err(|e| Error::from_io(&e, &format!("{from} -> {to}")))?;
        self.place.used(from, Rights::REMOVE);
        self.place.used(to, Rights::CREATE);
        Ok(())
    }
}

/// An open file and whether it may be read or written.
pub struct FileHandle {
    file: File,
    readable: bool,
    writable: bool,
    label: Arc<str>,
    lineage: Lineage,
}

impl FileHandle {
    fn read(&mut self, len: u32) -> Result<Vec<u8>, Error> {
        if !self.readable {
            return Err(Error::Denied(Rights::READ));
        }
        let mut buf = vec![0; len.min(MAX_READ_CHUNK) as usize];
        let n = self
            .file
            .read(&mut buf)
            .map_err(|e| Error::from_io(&e, &self.label))?;
        buf.truncate(n);
        Ok(buf)
    }

    fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        if !self.writable {
            return Err(Error::Denied(Rights::WRITE));
        }
        self.file
            .write_all(data)
            .map_err(|e| Error::from_io(&e, &self.label))
    }

    fn seek(&mut self, offset: u64) -> Result<(), Error> {
        self.file
            .seek(SeekFrom::Start(offset))
            .map(drop)
            .map_err(|e| Error::from_io(&e, &self.label))
    }

    fn stat(&self) -> Result<Stat, Error> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Error::from_io(&e, &self.label))?;
        Ok(stat_of(&meta))
    }
}

fn entry_kind(t: cap_std::fs::FileType) -> EntryKind {
    if t.is_symlink() {
        EntryKind::Symlink
    } else if t.is_dir() {
        EntryKind::Directory
    } else if t.is_file() {
        EntryKind::File
    } else {
        EntryKind::Other
    }
}

fn stat_of(meta: &Metadata) -> Stat {
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64);
    Stat {
        kind: entry_kind(meta.file_type()),
        size: meta.len(),
        modified_ns,
    }
}

impl BrokerCtxView<'_> {
    /// Runs `f` on the directory behind `handle`; a failure becomes an error
    /// for the guest and a line in the audit trail.
    fn on_dir<T>(
        &mut self,
        handle: &Resource<DirHandle>,
        op: &str,
        path: &str,
        f: impl FnOnce(&DirHandle) -> Result<T, Error>,
    ) -> HostResult<T> {
        let dir = self.table.get(handle)?;
        dir.lineage.check().and_then(|()| f(dir)).map_err(|e| {
            self.ctx.audit.refused(op, &dir.label, path, dir.rights, &e);
            HostError::Guest(e)
        })
    }

    fn on_file<T>(
        &mut self,
        handle: &Resource<FileHandle>,
        op: &str,
        f: impl FnOnce(&mut FileHandle) -> Result<T, Error>,
    ) -> HostResult<T> {
        let file = self.table.get_mut(handle)?;
        file.lineage.check().and_then(|()| f(file)).map_err(|e| {
            let held = rights_of_file(file);
            self.ctx.audit.refused(op, &file.label, "", held, &e);
            HostError::Guest(e)
        })
    }

    /// Puts a handle derived by `op` from `parent` into the table, or reports
    /// why it cannot (a full table is the guest's `limit-exceeded`).
    fn push_derived<T: Send + 'static>(
        &mut self,
        parent: &Resource<DirHandle>,
        op: &str,
        path: &str,
        derived: T,
        describe: impl Fn(&T) -> (String, Rights),
    ) -> HostResult<Resource<T>> {
        let (to, rights) = describe(&derived);
        match self.table.push(derived) {
            Ok(r) => {
                let from = self.table.get(parent)?.label.clone();
                self.ctx.audit.derived(op, &from, &to, rights);
                Ok(r)
            }
            Err(e) => {
                let err = HostError::from(e);
                if let HostError::Guest(g) = &err {
                    let dir = self.table.get(parent)?;
                    self.ctx.audit.refused(op, &dir.label, path, dir.rights, g);
                }
                Err(err)
            }
        }
    }
}

fn rights_of_file(f: &FileHandle) -> Rights {
    let mut r = Rights::empty();
    if f.readable {
        r |= Rights::READ;
    }
    if f.writable {
        r |= Rights::WRITE;
    }
    r
}

impl Host for BrokerCtxView<'_> {}

impl HostDir for BrokerCtxView<'_> {
    fn rights(&mut self, dir: Resource<DirHandle>) -> wasmtime::Result<Rights> {
        Ok(self.table.get(&dir)?.rights)
    }

    fn open_dir(
        &mut self,
        dir: Resource<DirHandle>,
        path: String,
        rights: Rights,
    ) -> HostResult<Resource<DirHandle>> {
        let derived = self.on_dir(&dir, "open-dir", &path, |d| d.derive(&path, rights))?;
        self.push_derived(&dir, "open-dir", &path, derived, |d| {
            (d.label.to_string(), d.rights)
        })
    }

    fn attenuate(
        &mut self,
        dir: Resource<DirHandle>,
        rights: Rights,
    ) -> HostResult<Resource<DirHandle>> {
        let derived = self.on_dir(&dir, "attenuate", ".", |d| d.derive(".", rights))?;
        self.push_derived(&dir, "attenuate", ".", derived, |d| {
            (d.label.to_string(), d.rights)
        })
    }

    fn revocable(
        &mut self,
        dir: Resource<DirHandle>,
    ) -> HostResult<(Resource<DirHandle>, Resource<RevokerHandle>)> {
        let (copy, revoker) = self.on_dir(&dir, "revocable", ".", |d| {
            let (lineage, revoker) = d.lineage.revocable();
            Ok((
                DirHandle {
                    lineage,
                    ..d.copy(&d.label)
                },
                revoker,
            ))
        })?;
        let copy = self.push_derived(&dir, "revocable", ".", copy, |d| {
            (d.label.to_string(), d.rights)
        })?;
        match self.table.push(revoker) {
            Ok(r) => Ok((copy, r)),
            Err(e) => {
                self.table.delete(copy)?;
                Err(e.into())
            }
        }
    }

    fn read_file(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<Vec<u8>> {
        self.on_dir(&dir, "read-file", &path, |d| d.read_file(&path))
    }

    fn write_file(
        &mut self,
        dir: Resource<DirHandle>,
        path: String,
        contents: Vec<u8>,
    ) -> HostResult<()> {
        self.on_dir(&dir, "write-file", &path, |d| {
            d.write_file(&path, &contents)
        })
    }

    fn open_file(
        &mut self,
        dir: Resource<DirHandle>,
        path: String,
        flags: OpenFlags,
    ) -> HostResult<Resource<FileHandle>> {
        let file = self.on_dir(&dir, "open-file", &path, |d| d.open_file(&path, flags))?;
        self.push_derived(&dir, "open-file", &path, file, |f| {
            (f.label.to_string(), rights_of_file(f))
        })
    }

    fn list(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<Vec<Entry>> {
        self.on_dir(&dir, "list", &path, |d| d.list(&path))
    }

    fn stat(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<Stat> {
        self.on_dir(&dir, "stat", &path, |d| d.stat(&path))
    }

    fn create_dir(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<()> {
        self.on_dir(&dir, "create-dir", &path, |d| d.create_dir(&path))
    }

    fn remove_file(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<()> {
        self.on_dir(&dir, "remove-file", &path, |d| d.remove_file(&path))
    }

    fn remove_dir(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<()> {
        self.on_dir(&dir, "remove-dir", &path, |d| d.remove_dir(&path))
    }

    fn rename(&mut self, dir: Resource<DirHandle>, from: String, to: String) -> HostResult<()> {
        let path = format!("{from} -> {to}");
        self.on_dir(&dir, "rename", &path, |d| d.rename(&from, &to))
    }

    fn drop(&mut self, dir: Resource<DirHandle>) -> wasmtime::Result<()> {
        let dir = self.table.delete(dir)?;
        self.ctx.audit.dropped(&dir.label);
        Ok(())
    }
}

impl HostFile for BrokerCtxView<'_> {
    fn read(&mut self, file: Resource<FileHandle>, len: u32) -> HostResult<Vec<u8>> {
        self.on_file(&file, "file.read", |f| f.read(len))
    }

    fn write(&mut self, file: Resource<FileHandle>, data: Vec<u8>) -> HostResult<()> {
        self.on_file(&file, "file.write", |f| f.write(&data))
    }

    fn seek(&mut self, file: Resource<FileHandle>, offset: u64) -> HostResult<()> {
        self.on_file(&file, "file.seek", |f| f.seek(offset))
    }

    fn stat(&mut self, file: Resource<FileHandle>) -> HostResult<Stat> {
        self.on_file(&file, "file.stat", |f| f.stat())
    }

    fn drop(&mut self, file: Resource<FileHandle>) -> wasmtime::Result<()> {
        let file = self.table.delete(file)?;
        self.ctx.audit.dropped(&file.label);
        Ok(())
    }
}
