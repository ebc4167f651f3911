//! Directory and file handles, backed by cap-std.
//!
//! Every path a guest passes is resolved by cap-std relative to a directory
//! the handle may reach (its own, or for a `[dir.NAME.paths]` grant the
//! descriptor of one of those paths), so `..`, absolute paths and symbolic
//! links can never lead outside it. Whether an operation is allowed is
//! asked of [`super::authority::decide`]; nothing here decides on its own.
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use cap_std::fs::{Dir, File, Metadata, OpenOptions, OpenOptionsExt};
use wasmtime::error::Context;

use cap_primitives::fs::FollowSymlinks;

use crate::core::audit::Audit;
use crate::core::learn::Learner;
use crate::core::lineage::Lineage;
use crate::core::pledges::{Holders, Pledges};
use crate::core::{Error, Rights, RightsList};
use crate::fs::authority::{decide, Allowed, Op, OpenIntent, Subject};
use crate::fs::wit::fs::{Entry, EntryKind, OpenFlags, Stat};

/// The longest label a handle keeps for the audit trail.
pub const MAX_LABEL: usize = 512;

/// `read-file` refuses files larger than this; larger ones are streamed.
pub const MAX_WHOLE_FILE: u64 = 64 << 20;
/// `file.read` returns at most this many bytes per call.
pub const MAX_READ_CHUNK: u32 = 1 << 20;

/// Where a handle is below its grant's root, and who records what it is
/// used for.
#[derive(Clone, Default)]
pub struct Place {
    /// The handle's directory, relative to the grant's root.
    pub(crate) base: PathBuf,
    /// `capbroker learn`'s recorder and the grant's name.
    pub(crate) learn: Option<(Arc<Learner>, Arc<str>)>,
}

/// Whether `path` has a `..`. The broker resolves it by its text, the host
/// through any link before it: what it names may not be what was used, so
/// it is not learned (the next run then refuses it, rather than grant
/// another file).
fn climbs(path: &str) -> bool {
    Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
}

impl Place {
    /// The root of grant `name`.
    pub fn root(name: &str, learn: Option<Arc<Learner>>) -> Place {
        Place {
            base: PathBuf::new(),
            learn: learn.map(|l| (l, name.into())),
        }
    }

    /// `path` relative to the grant's root, if it stays below it.
    pub(crate) fn below(&self, path: &str) -> Option<PathBuf> {
        join_below(&self.base, path)
    }

    /// Notes, for `capbroker learn`, that `rights` were used on `path`.
    pub(crate) fn used(&self, path: &str, rights: Rights) {
        if climbs(path) {
            return;
        }
        if let (Some((learner, grant)), Some(p)) = (&self.learn, self.below(path)) {
            learner.dir(grant, p, rights);
        }
    }

    /// Notes, for `capbroker learn`, that `from` was moved to `to`.
    pub(crate) fn moved(&self, from: &str, to: &str) {
        if climbs(from) || climbs(to) {
            return;
        }
        if let (Some((learner, grant)), Some(f), Some(t)) =
            (&self.learn, self.below(from), self.below(to))
        {
            learner.moved(grant, f, t);
        }
    }

    /// The place of a handle derived at `path`. One derived through a `..`
    /// is not learned from at all: where it really is cannot be told from
    /// the text.
    pub(crate) fn at(&self, path: &str) -> Place {
        if climbs(path) {
            return Place {
                base: self.base.clone(),
                learn: None,
            };
        }
        Place {
            base: self.below(path).unwrap_or_else(|| self.base.clone()),
            ..self.clone()
        }
    }
}

/// `base` joined with a guest's relative `path`, `.` and `..` resolved
/// lexically; `None` if the path is absolute or climbs above `base`'s root.
pub fn join_below(base: &Path, path: &str) -> Option<PathBuf> {
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

/// Renames `from` (below `from_dir`) to `to` (below `to_dir`) unless
/// something is at `to` already: the kernel checks and renames in one step
/// (`renameat2` with `RENAME_NOREPLACE`), so a file that appears there in
/// between is never replaced. The parents resolve through cap-std; the
/// last components are single names, which `renameat2` does not follow.
pub fn rename_noreplace(
    from_dir: &Dir,
    from: &Path,
    to_dir: &Dir,
    to: &Path,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    fn parent_and_name(dir: &Dir, path: &Path) -> std::io::Result<(Dir, std::ffi::CString)> {
        let mut parts: Vec<Component> = path.components().collect();
        let Some(Component::Normal(name)) = parts.pop() else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        let parent: PathBuf = parts.iter().collect();
        let parent = if parent.as_os_str().is_empty() {
            dir.try_clone()?
        } else {
            dir.open_dir(&parent)?
        };
        let name = std::ffi::CString::new(name.as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok((parent, name))
    }
    let (from_parent, from_name) = parent_and_name(from_dir, from)?;
    let (to_parent, to_name) = parent_and_name(to_dir, to)?;
    // SAFETY: both descriptors are open for the call and both names are
    // NUL-terminated strings that outlive it.
    let done = unsafe {
        libc::renameat2(
            from_parent.as_raw_fd(),
            from_name.as_ptr(),
            to_parent.as_raw_fd(),
            to_name.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Opens the directory `name` in `dir` without following a symbolic link
/// there (links on the way are still resolved inside `dir`).
pub(crate) fn open_dir_nofollow(dir: &Dir, name: &Path) -> std::io::Result<Dir> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        ._cap_fs_ext_maybe_dir(true)
        ._cap_fs_ext_follow(FollowSymlinks::No)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW);
    Ok(Dir::from_std_file(dir.open_with(name, &opts)?.into_std()))
}

/// One path of a `[dir.NAME.paths]` scope: the directory that holds its
/// last component, opened at grant time one component at a time without
/// following links, so nothing inside can lead to what the scope hides.
pub struct ScopeEntry {
    /// Below the grant's root.
    pub(crate) path: PathBuf,
    /// The entry's directory itself when it was one at grant time;
    /// otherwise its parent, with `name` the entry's last component
    /// (a file, or something not made yet), never followed if a link.
    pub(crate) dir: Arc<Dir>,
    pub(crate) name: Option<std::ffi::OsString>,
    pub(crate) rights: Rights,
}

/// What a directory handle may reach.
#[derive(Clone)]
pub(crate) enum Reach {
    /// Its directory and everything below it.
    Whole(Arc<Dir>),
    /// Only the scope's paths (a `[dir.NAME.paths]` grant), seen from the
    /// handle's place. Every operation goes through one entry's descriptor.
    Scoped(Arc<[ScopeEntry]>),
}

/// Where one operation goes: a directory and a path in it. `exact` marks
/// a scope entry's own name, whose last component is never followed.
pub(crate) struct Target {
    pub(crate) dir: Arc<Dir>,
    pub(crate) path: PathBuf,
    pub(crate) exact: bool,
}

impl Target {
    pub(crate) fn whole(dir: &Arc<Dir>, path: &str) -> Target {
        Target {
            dir: dir.clone(),
            path: PathBuf::from(path),
            exact: false,
        }
    }

    pub(crate) fn is_self(&self) -> bool {
        self.path.as_os_str().is_empty() || self.path == Path::new(".")
    }

    pub(crate) fn metadata(&self) -> std::io::Result<Metadata> {
        if self.is_self() {
            self.dir.dir_metadata()
        } else if self.exact {
            let meta = self.dir.symlink_metadata(&self.path)?;
            if meta.is_symlink() {
                return Err(link_in_scope());
            }
            Ok(meta)
        } else {
            self.dir.metadata(&self.path)
        }
    }

    pub(crate) fn open(&self, opts: &mut OpenOptions) -> std::io::Result<File> {
        if self.exact {
            opts._cap_fs_ext_follow(FollowSymlinks::No);
        }
        self.dir.open_with(&self.path, opts)
    }

    pub(crate) fn open_dir(&self) -> std::io::Result<Dir> {
        if self.is_self() {
            self.dir.try_clone()
        } else if self.exact {
            open_dir_nofollow(&self.dir, &self.path)
        } else {
            self.dir.open_dir(&self.path)
        }
    }
}

pub(crate) fn link_in_scope() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        "a path reaches outside of the filesystem: a link, on a handle narrowed to some paths",
    )
}

/// Builds a scope's entries below `root`: see [`ScopeEntry`]. A path below
/// another must hold every right of that one: through the wider entry the
/// narrower one's files can be reached by other names (a link inside, or
/// one made by renaming), so fewer rights could not be enforced, and the
/// grant is refused rather than widened.
pub fn open_scope(root: &Dir, paths: &[(PathBuf, Rights)]) -> wasmtime::Result<Arc<[ScopeEntry]>> {
    for (inner, inner_rights) in paths {
        for (outer, outer_rights) in paths {
            if inner != outer && inner.starts_with(outer) && !inner_rights.contains(*outer_rights) {
                wasmtime::bail!(
                    "[paths] `{}` ({}) has fewer rights than `{}` ({}) above it, which \
                     reaches it by other names too: give `{}` at least the rights of `{}`",
                    inner.display(),
                    RightsList(*inner_rights),
                    outer.display(),
                    RightsList(*outer_rights),
                    inner.display(),
                    outer.display()
                );
            }
        }
    }
    let mut entries = Vec::with_capacity(paths.len());
    for (path, rights) in paths {
        let parts: Vec<_> = path
            .components()
            .map(|c| match c {
                Component::Normal(s) => Ok(s.to_os_string()),
                _ => Err(wasmtime::format_err!(
                    "[paths] `{}`: expected a plain path below the directory",
                    path.display()
                )),
            })
            .collect::<Result<_, _>>()?;
        let mut dir = root
            .try_clone()
            .with_context(|| format!("[paths] `{}`", path.display()))?;
        let Some((last, parents)) = parts.split_last() else {
            entries.push(ScopeEntry {
                path: PathBuf::new(),
                dir: Arc::new(dir),
                name: None,
                rights: *rights,
            });
            continue;
        };
        for part in parents {
            dir = open_dir_nofollow(&dir, Path::new(part)).with_context(|| {
                format!(
                    "[paths] `{}`: cannot open `{}` below the directory without following links",
                    path.display(),
                    part.to_string_lossy()
                )
            })?;
        }
        let entry = match open_dir_nofollow(&dir, Path::new(last)) {
            Ok(d) => ScopeEntry {
                path: path.clone(),
                dir: Arc::new(d),
                name: None,
                rights: *rights,
            },
            // A file, a link or nothing yet: reached by name, never followed.
            Err(_) => ScopeEntry {
                path: path.clone(),
                dir: Arc::new(dir),
                name: Some(last.clone()),
                rights: *rights,
            },
        };
        entries.push(entry);
    }
    Ok(entries.into())
}

impl Reach {
    /// Where `path` (from a handle at `place`) goes, and the rights the
    /// handle may use there: the deepest scope entry containing it decides,
    /// and is the descriptor it goes through. (A narrower entry below one
    /// that could move it is refused at grant time: see [`open_scope`].)
    pub(crate) fn target(&self, place: &Place, path: &str) -> Result<(Target, Rights), Error> {
        let entries = match self {
            Reach::Whole(dir) => return Ok((Target::whole(dir, path), Rights::all())),
            Reach::Scoped(entries) => entries,
        };
        let full = place
            .below(path)
            .filter(|full| full.starts_with(&place.base))
            .ok_or_else(|| Error::Escape(path.into()))?;
        let entry = entries
            .iter()
            .filter(|e| full.starts_with(&e.path))
            .max_by_key(|e| e.path.components().count())
            .ok_or_else(|| Error::Denied(Rights::all()))?;
        let rest = full.strip_prefix(&entry.path).expect("a prefix");
        let target = match &entry.name {
            None => Target {
                dir: entry.dir.clone(),
                path: rest.to_path_buf(),
                exact: false,
            },
            Some(name) if rest.as_os_str().is_empty() => Target {
                dir: entry.dir.clone(),
                path: PathBuf::from(name),
                exact: true,
            },
            Some(name) => {
                let dir = open_dir_nofollow(&entry.dir, Path::new(name))
                    .map_err(|e| Error::from_io(&e, path))?;
                Target {
                    dir: Arc::new(dir),
                    path: rest.to_path_buf(),
                    exact: false,
                }
            }
        };
        Ok((target, entry.rights))
    }

    /// Whether some scope entry lies strictly below `full`.
    pub(crate) fn narrower_below(&self, full: &Path) -> bool {
        match self {
            Reach::Whole(_) => false,
            Reach::Scoped(entries) => entries
                .iter()
                .any(|e| e.path.starts_with(full) && e.path != full),
        }
    }
}

/// The calling instance, as the authority core needs it.
pub(crate) struct Caller<'a> {
    pub pledges: &'a Pledges,
    pub audit: &'a Audit,
    /// Bytes of its memory budget the instance has left: what the host may
    /// hold for one call's result (a file's contents, a listing), which
    /// must fit into the guest's memory anyway.
    pub room: usize,
}

impl Caller<'_> {
    /// Refuses a result of `bytes` that could not fit the budget.
    pub(crate) fn fits(&self, bytes: u64, what: &str) -> Result<(), Error> {
        if bytes > self.room as u64 {
            return Err(Error::LimitExceeded(format!(
                "max-memory: {what} of {bytes} bytes does not fit the {} bytes left of the \
                 memory budget",
                self.room
            )));
        }
        Ok(())
    }
}

/// A directory handle: what it may reach and the rights over it.
pub struct DirHandle {
    pub(crate) reach: Reach,
    pub(crate) rights: Rights,
    /// The most any handle from the same grant may hold: what a file made
    /// reachable in this handle's directory could be used with.
    pub(crate) ceiling: Rights,
    /// The rights of other grants whose directories overlap this one's.
    pub(crate) beside: Rights,
    /// Whose pledges end this handle.
    pub(crate) holders: Holders,
    pub(crate) place: Place,
    /// The grant name and the path below it (e.g. `data/uploads`), for the
    /// audit trail. Never used to resolve anything.
    pub(crate) label: Arc<str>,
    pub(crate) lineage: Lineage,
}

/// An error from a handle's operation, and whether the authority core has
/// already recorded it (its refusals are audited where they are decided).
pub(crate) struct Fail {
    pub(crate) err: Error,
    pub(crate) audited: bool,
}

impl Fail {
    pub(crate) fn audited(err: Error) -> Fail {
        Fail { err, audited: true }
    }
}

impl From<Error> for Fail {
    fn from(err: Error) -> Fail {
        Fail {
            err,
            audited: false,
        }
    }
}

/// An empty path names nothing, as POSIX has it, rather than the handle's
/// own directory on some calls and nothing on others; `.` is the directory.
fn named(path: &str) -> Result<(), Fail> {
    if path.is_empty() {
        return Err(Error::Invalid(
            "an empty path names nothing (`.` is the directory itself)".into(),
        )
        .into());
    }
    Ok(())
}

impl DirHandle {
    pub fn new(dir: Dir, rights: Rights, label: &str) -> Self {
        DirHandle {
            reach: Reach::Whole(Arc::new(dir)),
            rights,
            ceiling: rights,
            beside: Rights::empty(),
            holders: Holders::default(),
            place: Place::default(),
            label: label.into(),
            lineage: Lineage::default(),
        }
    }

    /// The root of a grant: the whole directory, or only `paths` below it
    /// (each with the most rights it may use there), opened now; `beside`
    /// are the rights of other grants that overlap it (see [`beside`]).
    pub fn grant(
        dir: Dir,
        rights: Rights,
        beside: Rights,
        name: &str,
        paths: Option<&[(PathBuf, Rights)]>,
        learn: Option<Arc<Learner>>,
    ) -> wasmtime::Result<Self> {
        let reach = match paths {
            None => Reach::Whole(Arc::new(dir)),
            Some(paths) => Reach::Scoped(open_scope(&dir, paths)?),
        };
        Ok(DirHandle {
            reach,
            rights,
            ceiling: rights,
            beside,
            holders: Holders::default(),
            place: Place::root(name, learn),
            label: name.into(),
            lineage: Lineage::default(),
        })
    }

    /// Whether the handle reaches only some paths below its directory.
    pub fn is_scoped(&self) -> bool {
        matches!(self.reach, Reach::Scoped(_))
    }

    /// A copy with the same rights, for another process (same lineage, so a
    /// revocation reaches it too).
    pub fn copy(&self, label: &str) -> DirHandle {
        DirHandle {
            reach: self.reach.clone(),
            rights: self.rights,
            ceiling: self.ceiling,
            beside: self.beside,
            holders: self.holders.clone(),
            place: self.place.clone(),
            label: label.into(),
            lineage: self.lineage.clone(),
        }
    }

    /// The same handle, also ended when the instance whose pledges these
    /// are pledges the file system away; see `grants.granted`.
    pub fn held_by(mut self, pledges: &Pledges) -> DirHandle {
        self.holders = self.holders.with(pledges);
        self
    }

    pub(crate) fn holders(&self) -> &Holders {
        &self.holders
    }

    /// The most any handle of this grant may hold at `path`: for a scoped
    /// grant, what the scope gives there.
    ///
    /// For a scoped grant that is what any of its paths gives, not what the
    /// path's text names: a directory renamed, or a link, can make a path
    /// that reads as one entry's land in another's directory.
    pub(crate) fn ceiling_at(&self, _path: &str) -> Rights {
        let own = match &self.reach {
            Reach::Scoped(entries) => {
                entries.iter().fold(Rights::empty(), |r, e| r | e.rights) & self.ceiling
            }
            Reach::Whole(_) => self.ceiling,
        };
        own | self.beside
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

    /// The directory itself, for bridging to standard WASI; `None` for a
    /// scoped handle, which no single descriptor can stand for.
    pub(crate) fn whole_dir(&self) -> Option<&Dir> {
        match &self.reach {
            Reach::Whole(dir) => Some(dir),
            Reach::Scoped(_) => None,
        }
    }

    /// The label of a handle derived at `path`: for the audit trail only,
    /// and so cut to [`MAX_LABEL`] bytes, however long the guest's path.
    pub(crate) fn child_label(&self, path: &str) -> String {
        if path == "." {
            return self.label.to_string();
        }
        let label = format!("{}/{}", self.label, path.trim_end_matches('/'));
        crate::core::error::shortened(label, MAX_LABEL)
    }

    /// Who asks, for the authority core: this handle, by `caller`.
    pub(crate) fn subject<'a>(&'a self, caller: &Caller<'a>) -> Subject<'a> {
        Subject {
            label: &self.label,
            lineage: &self.lineage,
            held: self.rights,
            pledges: caller.pledges,
            holders: &self.holders,
            audit: caller.audit,
        }
    }

    /// Asks the authority core whether `op` on `path` is allowed, and
    /// where it goes.
    pub(crate) fn decide(
        &self,
        caller: &Caller<'_>,
        name: &str,
        op: Op,
        path: &str,
    ) -> Result<(Target, Allowed), Fail> {
        named(path)?;
        let who = self.subject(caller);
        decide(
            &who,
            name,
            op,
            path,
            || match self.reach.target(&self.place, path) {
                // Outside every scoped path: nothing held there.
                Err(Error::Denied(_)) => Ok((None, Rights::empty())),
                other => other.map(|(t, r)| (Some(t), r)),
            },
            |used| self.place.used(path, used),
        )
        .map_err(Fail::audited)
        .and_then(|(target, allowed)| match target {
            Some(t) => Ok((t, allowed)),
            None => Err(Fail::audited(Error::Denied(Rights::all()))),
        })
    }

    /// Decides `op` on the handle as a whole (its own rights, no scope).
    pub(crate) fn decide_here(
        &self,
        caller: &Caller<'_>,
        name: &str,
        op: Op,
        path: &str,
    ) -> Result<(), Fail> {
        named(path)?;
        let who = self.subject(caller);
        decide(&who, name, op, path, || Ok(((), self.rights)), |_| {})
            .map(drop)
            .map_err(Fail::audited)
    }

    /// The rights this handle has at `path`, without deciding anything
    /// (to choose how to ask).
    pub(crate) fn rights_at(&self, path: &str) -> Rights {
        match self.reach.target(&self.place, path) {
            Ok((_, there)) => there & self.rights,
            Err(_) => Rights::empty(),
        }
    }

    /// A handle on the sub-directory `path` with `rights`, which must be a
    /// subset of this handle's (and of the scope's there).
    pub(crate) fn derive(
        &self,
        caller: &Caller<'_>,
        name: &str,
        path: &str,
        rights: Rights,
    ) -> Result<DirHandle, Fail> {
        let op = Op::Derive { rights };
        let full = self.place.below(path);
        // A scoped handle may move down (never above itself), and stays
        // scoped while a narrower path lies below; otherwise it becomes a
        // handle on that directory, with what the scope gives there.
        if let (Reach::Scoped(_), Some(full)) = (&self.reach, &full) {
            if full.starts_with(&self.place.base) && self.reach.narrower_below(full) {
                self.decide_here(caller, name, op, path)?;
                return Ok(self.below(self.reach.clone(), rights, path));
            }
        }
        let (target, _) = self.decide(caller, name, op, path)?;
        let dir = match (&self.reach, target.is_self()) {
            (Reach::Whole(dir), true) => dir.clone(),
            _ => Arc::new(target.open_dir().map_err(|e| Error::from_io(&e, path))?),
        };
        Ok(self.below(Reach::Whole(dir), rights, path))
    }

    /// A handle at `path` below this one, reaching `reach` with `rights`;
    /// the rest (ceiling, lineage, pledges) it inherits.
    pub(crate) fn below(&self, reach: Reach, rights: Rights, path: &str) -> DirHandle {
        DirHandle {
            reach,
            rights,
            place: self.place.at(path),
            label: self.child_label(path).into(),
            ..self.copy(&self.label)
        }
    }

    /// Opens `target` as a regular file. `O_NONBLOCK` keeps a FIFO or
    /// device planted in the directory from blocking the host; anything but
    /// a regular file is then refused.
    pub(crate) fn open_regular(
        target: &Target,
        path: &str,
        opts: &mut OpenOptions,
    ) -> Result<File, Fail> {
        // One already there is not even opened: opening a device can act
        // on it, and opening a FIFO wakes whoever waits at its other end.
        if let Ok(meta) = target.metadata() {
            if !meta.is_file() && !meta.is_dir() {
                return Err(Error::Invalid(format!("`{path}` is not a regular file")).into());
            }
        }
        opts.custom_flags(libc::O_NONBLOCK);
        let file = target.open(opts).map_err(|e| Error::from_io(&e, path))?;
        let meta = file.metadata().map_err(|e| Error::from_io(&e, path))?;
        if meta.is_dir() {
            return Err(Error::IsDirectory(path.into()).into());
        }
        if !meta.is_file() {
            return Err(Error::Invalid(format!("`{path}` is not a regular file")).into());
        }
        Ok(file)
    }

    pub(crate) fn read_file(&self, caller: &Caller<'_>, path: &str) -> Result<Vec<u8>, Fail> {
        let (target, _) = self.decide(caller, "read-file", Op::Read, path)?;
        let file = Self::open_regular(&target, path, OpenOptions::new().read(true))?;
        let len = file.metadata().map_err(|e| Error::from_io(&e, path))?.len();
        if len > MAX_WHOLE_FILE {
            return Err(Error::Invalid(format!(
                "`{path}` is {len} bytes; read-file takes files up to {MAX_WHOLE_FILE} bytes, \
                 stream larger ones with open-file"
            ))
            .into());
        }
        caller.fits(len, "the file")?;
        let mut data = Vec::with_capacity(len as usize);
        // The file may grow after the size check; never read past the limit.
        file.take(MAX_WHOLE_FILE.min(caller.room as u64) + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::from_io(&e, path))?;
        caller.fits(data.len() as u64, "the file")?;
        if data.len() as u64 > MAX_WHOLE_FILE {
            return Err(
                Error::Invalid(format!("`{path}` grew past {MAX_WHOLE_FILE} bytes")).into(),
            );
        }
        Ok(data)
    }

    /// Opens `path` as `flags` ask, after the core decided: an open that
    /// may reach only a new file (`create` without `write` held, or
    /// `exclusive`) is made with `O_EXCL`, and an existing file is then
    /// refused as needing `write`, without touching it.
    pub(crate) fn open_with_flags(
        &self,
        caller: &Caller<'_>,
        name: &str,
        path: &str,
        flags: OpenFlags,
    ) -> Result<(File, Rights), Fail> {
        let writes = flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::TRUNCATE);
        let intent = OpenIntent {
            read: flags.contains(OpenFlags::READ),
            write: writes,
            create: flags.contains(OpenFlags::CREATE),
            exclusive: flags.contains(OpenFlags::EXCLUSIVE),
        };
        let (target, allowed) = self.decide(caller, name, Op::Open(intent), path)?;
        if intent.read && !allowed.held.contains(Rights::READ) {
            // Only a new-only open gets here without `read`: the file is
            // new, but whoever else writes in the folder could fill it, and
            // a drop box is no way to read what they write.
            let e = Error::Denied(Rights::READ);
            caller
                .audit
                .refused(name, &self.label, path, allowed.held, &e);
            return Err(Fail::audited(e));
        }
        let mut opts = OpenOptions::new();
        opts.read(intent.read)
            .write(flags.contains(OpenFlags::WRITE))
            .append(flags.contains(OpenFlags::APPEND))
            .truncate(flags.contains(OpenFlags::TRUNCATE) && !allowed.new_only);
        if allowed.new_only {
            opts.create_new(true);
        } else {
            opts.create(intent.create);
        }
        let file = match Self::open_regular(&target, path, &mut opts) {
            Err(Fail {
                err: Error::Exists(_),
                ..
            }) if allowed.new_only && !intent.exclusive => {
                let e = Error::Denied(Rights::WRITE);
                caller
                    .audit
                    .refused(name, &self.label, path, allowed.held, &e);
                return Err(Fail::audited(e));
            }
            other => other?,
        };
        if intent.create && allowed.held.contains(Rights::WRITE) {
            // A file made this time may be found already made next time.
            self.place.used(path, Rights::WRITE);
        }
        Ok((file, allowed.held))
    }

    /// Replaces an existing file (`write`) or makes a new one (`create`).
    pub(crate) fn write_file(
        &self,
        caller: &Caller<'_>,
        path: &str,
        contents: &[u8],
    ) -> Result<(), Fail> {
        self.decide_here(caller, "write-file", Op::WriteFile, path)?;
        let exists = match self.reach.target(&self.place, path) {
            Ok((t, _)) => t.dir.symlink_metadata(&t.path).is_ok(),
            Err(_) => false,
        };
        let flags = if exists {
            OpenFlags::WRITE | OpenFlags::TRUNCATE
        } else if self.rights_at(path).contains(Rights::WRITE) {
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE
        } else {
            OpenFlags::WRITE | OpenFlags::CREATE
        };
        let (mut file, _) = match self.open_with_flags(caller, "write-file", path, flags) {
            // Gone since it was seen: making it anew needs `create`.
            Err(Fail {
                err: Error::NotFound(_),
                ..
            }) if exists => return Err(Error::Denied(Rights::CREATE).into()),
            other => other?,
        };
        file.write_all(contents)
            .map_err(|e| Error::from_io(&e, path).into())
    }

    pub(crate) fn open_file(
        &self,
        caller: &Caller<'_>,
        path: &str,
        flags: OpenFlags,
    ) -> Result<FileHandle, Fail> {
        let writes = flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND);
        if !writes && !flags.contains(OpenFlags::READ) {
            return Err(Error::Invalid("open-file needs read, write or append".into()).into());
        }
        if flags.intersects(OpenFlags::CREATE | OpenFlags::TRUNCATE) && !writes {
            return Err(Error::Invalid("create and truncate need write or append".into()).into());
        }
        if flags.contains(OpenFlags::EXCLUSIVE) && !flags.contains(OpenFlags::CREATE) {
            return Err(Error::Invalid("exclusive needs create".into()).into());
        }
        if flags.contains(OpenFlags::APPEND | OpenFlags::TRUNCATE) {
            // As std and POSIX have it; the OS's own refusal says only
            // "Invalid argument".
            return Err(Error::Invalid("append and truncate cannot go together".into()).into());
        }
        let (file, held) = self.open_with_flags(caller, "open-file", path, flags)?;
        // What it was opened for, and `list` where the directory had it:
        // its metadata is what a listing shows, so `stat` needs `list` or
        // `read`, as it does by path (a drop box's file has neither).
        let mut rights = held & Rights::LIST;
        if flags.contains(OpenFlags::READ) {
            rights |= Rights::READ;
        }
        if writes {
            rights |= Rights::WRITE;
        }
        Ok(FileHandle {
            file,
            rights,
            label: self.child_label(path).into(),
            lineage: self.lineage.clone(),
            holders: self.holders.clone(),
        })
    }

    pub(crate) fn list(&self, caller: &Caller<'_>, path: &str) -> Result<Vec<Entry>, Fail> {
        let (target, _) = self.decide(caller, "list", Op::List, path)?;
        let io = |e: std::io::Error| Error::from_io(&e, path);
        let entries = if target.is_self() {
            target.dir.entries()
        } else if target.exact {
            open_dir_nofollow(&target.dir, &target.path).and_then(|d| d.entries())
        } else {
            target.dir.read_dir(&target.path)
        };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for entry in entries.map_err(io)? {
            let entry = entry.map_err(io)?;
            let kind = entry.file_type().map_err(io)?;
            // What the guest gets for an entry: its name and a few words.
            bytes += entry.file_name().len() as u64 + 16;
            caller.fits(bytes, "the listing")?;
            out.push(Entry {
                name: entry.file_name().to_string_lossy().into_owned(),
                kind: entry_kind(kind),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(crate) fn stat(&self, caller: &Caller<'_>, path: &str) -> Result<Stat, Fail> {
        let (target, _) = self.decide(caller, "stat", Op::Stat, path)?;
        let meta = target.metadata().map_err(|e| Error::from_io(&e, path))?;
        Ok(stat_of(&meta))
    }

    /// Decides `op` on `path`, then runs `f` where it goes.
    pub(crate) fn simple(
        &self,
        caller: &Caller<'_>,
        name: &str,
        op: Op,
        path: &str,
        f: impl FnOnce(&Dir, &Path) -> std::io::Result<()>,
    ) -> Result<(), Fail> {
        let (target, _) = self.decide(caller, name, op, path)?;
        if target.is_self() {
            return Err(Error::Invalid(format!("`{path}` is the handle's own directory")).into());
        }
        f(&target.dir, &target.path).map_err(|e| Error::from_io(&e, path).into())
    }

    pub(crate) fn create_dir(&self, caller: &Caller<'_>, path: &str) -> Result<(), Fail> {
        self.simple(caller, "create-dir", Op::Create, path, |d, p| {
            d.create_dir(p)
        })
    }

    pub(crate) fn remove_file(&self, caller: &Caller<'_>, path: &str) -> Result<(), Fail> {
        self.simple(caller, "remove-file", Op::Remove, path, |d, p| {
            d.remove_file(p)
        })
    }

    pub(crate) fn remove_dir(&self, caller: &Caller<'_>, path: &str) -> Result<(), Fail> {
        self.simple(caller, "remove-dir", Op::Remove, path, |d, p| {
            d.remove_dir(p)
        })
    }

    /// Moves `from` to `to`: `create` (and `write`, to replace a file) at
    /// `to`; at `from`, `remove` and every right any handle of this grant
    /// may hold at `to` (another handle the guest keeps, or a child, could
    /// reach the file there).
    pub(crate) fn rename(&self, caller: &Caller<'_>, from: &str, to: &str) -> Result<(), Fail> {
        self.decide_here(caller, "rename", Op::Rename, from)?;
        if !self.lineage.is_empty() {
            // The file itself would stay reachable by other handles after
            // the revoke, wherever it went.
            let e = Error::Refused(
                "a revocable handle cannot rename: the file would outlive the revoke".into(),
            );
            caller
                .audit
                .refused("rename", &self.label, from, self.rights, &e);
            return Err(Fail::audited(e));
        }
        let replaces = match self.reach.target(&self.place, to) {
            Ok((t, _)) => !t.is_self() && t.dir.symlink_metadata(&t.path).is_ok(),
            Err(_) => false,
        };
        let (dest, at_dest) = self.decide(caller, "rename", Op::RenameTo { replaces }, to)?;
        let op = Op::RenameFrom {
            dest: self.ceiling_at(to),
        };
        let (source, _) = self.decide(caller, "rename", op, from)?;
        if source.is_self() || dest.is_self() {
            return Err(Error::Invalid("cannot rename the handle's own directory".into()).into());
        }
        // A trailing `/` on either name asks for a directory (cap-std drops
        // it from the new name, and would replace a link named so; wasmtime
        // fixed the same in its own copy of cap-primitives).
        if (from.ends_with('/') || to.ends_with('/'))
            && !source
                .dir
                .symlink_metadata(source.path.as_path())
                .is_ok_and(|m| m.is_dir())
        {
            return Err(Error::NotDirectory(from.into()).into());
        }
        let moved = if at_dest.held.contains(Rights::WRITE) {
            source.dir.rename(&source.path, &dest.dir, &dest.path)
        } else {
            // Without `write` there, nothing may be replaced, not even what
            // appeared since the check above.
            rename_noreplace(&source.dir, &source.path, &dest.dir, &dest.path)
        };
        match moved {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let e = Error::Denied(Rights::WRITE);
                caller
                    .audit
                    .refused("rename", &self.label, to, at_dest.held, &e);
                return Err(Fail::audited(e));
            }
            other => {
                other.map_err(|e| Fail::from(Error::from_io(&e, &format!("{from} -> {to}"))))?
            }
        }
        self.place.moved(from, to);
        Ok(())
    }
}

/// An open file and its rights: `read` and `write` as it was opened,
/// `list` (its metadata) where its directory had it.
pub struct FileHandle {
    pub(crate) file: File,
    pub(crate) rights: Rights,
    pub(crate) label: Arc<str>,
    pub(crate) lineage: Lineage,
    pub(crate) holders: Holders,
}

impl FileHandle {
    pub(crate) fn read(&mut self, len: u32) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0; len.min(MAX_READ_CHUNK) as usize];
        let n = self
            .file
            .read(&mut buf)
            .map_err(|e| Error::from_io(&e, &self.label))?;
        buf.truncate(n);
        Ok(buf)
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.file
            .write_all(data)
            .map_err(|e| Error::from_io(&e, &self.label))
    }

    pub(crate) fn seek(&mut self, offset: u64) -> Result<(), Error> {
        if offset > i64::MAX as u64 {
            return Err(Error::Invalid(format!(
                "offset {offset} is past the largest a file can have"
            )));
        }
        self.file
            .seek(SeekFrom::Start(offset))
            .map(drop)
            .map_err(|e| Error::from_io(&e, &self.label))
    }

    pub(crate) fn stat(&self) -> Result<Stat, Error> {
        let meta = self
            .file
            .metadata()
            .map_err(|e| Error::from_io(&e, &self.label))?;
        Ok(stat_of(&meta))
    }
}

pub(crate) fn entry_kind(t: cap_std::fs::FileType) -> EntryKind {
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

pub(crate) fn stat_of(meta: &Metadata) -> Stat {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_noreplace_never_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a")).unwrap();
        std::fs::create_dir_all(tmp.path().join("b")).unwrap();
        std::fs::write(tmp.path().join("a/x"), "mine").unwrap();
        std::fs::write(tmp.path().join("b/y"), "theirs").unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let err = rename_noreplace(&dir, Path::new("a/x"), &dir, Path::new("b/y")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("b/y")).unwrap(),
            "theirs"
        );
        rename_noreplace(&dir, Path::new("a/x"), &dir, Path::new("b/z")).unwrap();
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("b/z")).unwrap(),
            "mine"
        );
        // Names that are not names, and parents outside, are refused.
        for bad in ["..", ".", "b/..", "../b/w"] {
            assert!(rename_noreplace(&dir, Path::new("b/z"), &dir, Path::new(bad)).is_err());
        }
        assert!(tmp.path().join("b/z").exists());
    }
}
