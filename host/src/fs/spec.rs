//! What an operator grants of the file system: a host directory, with
//! rights, and optionally only some paths below it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use toml::Spanned;
use wasmtime::error::Context;

use crate::core::kind::{Located, Words};
use crate::core::rights::parse_rights;
use crate::core::{Rights, RightsList};

/// The operator's grant of a host directory.
#[derive(Clone, Debug)]
pub struct DirGrant {
    pub host_path: PathBuf,
    pub rights: Rights,
    /// `[dir.NAME.paths]`: the paths below the directory the handle may
    /// reach, each with the most rights it may use there (and below it).
    /// `None`: the whole directory.
    pub paths: Option<Vec<(PathBuf, Rights)>>,
    /// The directory, once opened. The grant's copies share it, so the
    /// path is looked up once: what was checked is what is granted, and a
    /// grant is opened once however many times it is used.
    opened: Arc<OnceLock<Dir>>,
    /// Where the opened directory is, worked out once: every other grant
    /// is compared with it.
    whereabouts: Arc<OnceLock<Whereabouts>>,
}

/// Where a directory is: its ancestry (see [`ancestry`]) and its place in
/// its file system (see [`location`]).
#[derive(Debug, Default, Clone)]
struct Whereabouts {
    chain: Vec<(u64, u64)>,
    place: Option<(u64, PathBuf)>,
}

/// A directory grant as `capbroker.toml` writes it: `[dir.NAME]`.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct DirTable {
    pub path: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights: Option<Spanned<Words>>,
    /// The paths below `path` the handle reaches, each with its rights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<BTreeMap<String, Spanned<Words>>>,
}

impl DirGrant {
    /// A grant of the directory at `host_path`, not opened yet.
    pub fn new(host_path: PathBuf, rights: Rights, paths: Option<Vec<(PathBuf, Rights)>>) -> Self {
        DirGrant {
            host_path,
            rights,
            paths,
            opened: Arc::default(),
            whereabouts: Arc::default(),
        }
    }

    /// The same directory with other rights and paths.
    pub fn narrowed(&self, rights: Rights, paths: Option<Vec<(PathBuf, Rights)>>) -> Self {
        DirGrant {
            host_path: self.host_path.clone(),
            rights,
            paths,
            opened: self.opened.clone(),
            whereabouts: self.whereabouts.clone(),
        }
    }

    /// The host directory: opened by its path the first time, the same
    /// directory from then on. This is the one place the broker uses
    /// ambient authority for the file system, on the operator's behalf.
    pub fn open(&self) -> wasmtime::Result<Dir> {
        let named = || format!("cannot open host directory `{}`", self.host_path.display());
        if let Some(dir) = self.opened.get() {
            return dir.try_clone().with_context(named);
        }
        let Some(path) = self.resolved() else {
            wasmtime::bail!(
                "cannot open host directory `{}`: it is relative, and the working folder \
                 is gone",
                self.host_path.display()
            );
        };
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority()).with_context(named)?;
        self.opened
            .get_or_init(|| dir)
            .try_clone()
            .with_context(named)
    }

    /// The device and inode of the directory, if it was opened.
    pub fn opened_id(&self) -> Option<(u64, u64)> {
        use cap_std::fs::MetadataExt;
        let meta = self.opened.get()?.dir_metadata().ok()?;
        Some((meta.dev(), meta.ino()))
    }

    /// Where the granted directory is: of the directory opened, once it is
    /// (then worked out once for all the grant's copies).
    fn whereabouts(&self) -> Cow<'_, Whereabouts> {
        if let Some(dir) = self.opened.get() {
            return Cow::Borrowed(self.whereabouts.get_or_init(|| Whereabouts {
                chain: ancestry(Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd()))),
                place: location(dir),
            }));
        }
        let path = self.resolved();
        Cow::Owned(Whereabouts {
            chain: path.as_deref().map(ancestry).unwrap_or_default(),
            place: path
                .and_then(|p| Dir::open_ambient_dir(p, cap_std::ambient_authority()).ok())
                .and_then(|d| location(&d)),
        })
    }

    /// The grant a manifest's `[dir.NAME]` makes; host paths are relative
    /// to `base`. The directory must open.
    pub fn from_table(t: &DirTable, name: &str, base: &Path) -> Result<DirGrant, Located> {
        let rights = match &t.rights {
            None => Rights::all(),
            Some(r) => parse_rights(&r.get_ref().joined())
                .map_err(|e| Located::at(r.span(), format!("[dir.{name}] rights: {e}")))?,
        };
        let paths = match &t.paths {
            None => None,
            Some(map) => {
                let mut paths = Vec::new();
                let mut spelt = std::collections::HashMap::new();
                for (p, r) in map {
                    // `..` is refused even where it stays inside (`docs/..`):
                    // the text would name one place and the lookup another
                    // when `docs` is a link, and manifest.md says so.
                    let climbs = Path::new(p)
                        .components()
                        .any(|c| c == std::path::Component::ParentDir);
                    let below = if climbs {
                        None
                    } else {
                        super::join_below(Path::new(""), p)
                    };
                    let below = below.ok_or_else(|| {
                        Located::at(
                            r.span(),
                            format!(
                                "[dir.{name}.paths] `{p}`: expected a path below the \
                                 directory (relative, without `..`)"
                            ),
                        )
                    })?;
                    let path_rights = parse_rights(&r.get_ref().joined()).map_err(|e| {
                        Located::at(r.span(), format!("[dir.{name}.paths] `{p}`: {e}"))
                    })?;
                    let beyond = path_rights & !rights;
                    if beyond != Rights::empty() {
                        return Err(Located::at(
                            r.span(),
                            format!(
                                "[dir.{name}.paths] `{p}`: {} is not in the directory's \
                                 rights ({})",
                                RightsList(beyond),
                                RightsList(rights)
                            ),
                        ));
                    }
                    // Two spellings of one path (`a`, `a/`, `./a`) would
                    // leave its rights to the table's key order.
                    if let Some(first) = spelt.insert(below.clone(), p) {
                        return Err(Located::at(
                            r.span(),
                            format!("[dir.{name}.paths] `{p}`: the same path as `{first}`"),
                        ));
                    }
                    paths.push((below, path_rights));
                }
                Some(paths)
            }
        };
        let grant = DirGrant::new(base.join(t.path.get_ref()), rights, paths);
        grant
            .open()
            .map_err(|e| Located::at(t.path.span(), format!("[dir.{name}] path: {e:#}")))?;
        Ok(grant)
    }

    /// The `[dir.NAME]` entry that makes this grant again.
    pub fn to_table(&self) -> DirTable {
        let words = |r: Rights| Spanned::new(0..0, Words::One(RightsList(r).to_string()));
        DirTable {
            path: Spanned::new(0..0, self.host_path.display().to_string()),
            rights: Some(words(self.rights)),
            paths: self.paths.as_ref().map(|paths| {
                paths
                    .iter()
                    .map(|(p, r)| {
                        let p = if p.as_os_str().is_empty() {
                            ".".to_string()
                        } else {
                            p.display().to_string()
                        };
                        (p, words(*r))
                    })
                    .collect()
            }),
        }
    }

    /// The grant's path, absolute, with `.` and `..` taken by their text: a
    /// `..` after a symbolic link then never climbs out of where the link
    /// leads (a guest could have made that link, inside the grant itself).
    /// `None` for a relative path when the working folder is gone (never
    /// `/` in its place).
    pub fn resolved(&self) -> Option<PathBuf> {
        let mut out = if self.host_path.is_absolute() {
            PathBuf::from("/")
        } else {
            std::env::current_dir().ok()?
        };
        for c in self.host_path.components() {
            match c {
                Component::RootDir => out = PathBuf::from("/"),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(s) => out.push(s),
            }
        }
        Some(out)
    }
}

/// For each grant, the rights of the other grants whose directory lies in
/// it, holds it or is it (see [`beside_one`]).
pub fn beside(grants: &[&DirGrant]) -> Vec<Rights> {
    (0..grants.len()).map(|i| beside_one(grants, i)).collect()
}

/// The rights of the grants other than `grants[i]` whose directory lies in
/// its, holds it or is it: a file linked or renamed into the overlap can be
/// used through those too, so they count in the grant's ceiling.
/// Directories are compared by identity up their real ancestry (see
/// [`ancestry`]) and by their place in the file system (see [`location`]),
/// so links, `..` and bind mounts do not hide an overlap; one that cannot
/// be resolved overlaps nothing.
pub fn beside_one(grants: &[&DirGrant], i: usize) -> Rights {
    let here = grants[i].whereabouts();
    grants
        .iter()
        .enumerate()
        .filter(|&(j, g)| j != i && overlap(&here, &g.whereabouts()))
        .fold(Rights::empty(), |r, (_, g)| r | g.rights)
}

fn overlap(a: &Whereabouts, b: &Whereabouts) -> bool {
    let walked = match (a.chain.first(), b.chain.first()) {
        (Some(x), Some(y)) => b.chain.contains(x) || a.chain.contains(y),
        _ => false,
    };
    // `..` from the root of a bind mount leads to the mount point's parent,
    // not to the parent of the folder it shows: the walk up misses a grant
    // that is a bind mount of a folder inside another. Their places in the
    // file system do not.
    let placed = match (&a.place, &b.place) {
        (Some((da, pa)), Some((db, pb))) => da == db && (pa.starts_with(pb) || pb.starts_with(pa)),
        _ => false,
    };
    walked || placed
}

/// Where the directory `dir` is in its file system: its device, and its
/// path from the file system's own root, whichever mount (a bind mount of
/// a folder inside it, say) it was reached through. `None` when the host
/// does not say (no `/proc`).
pub fn location(dir: &Dir) -> Option<(u64, PathBuf)> {
    use cap_std::fs::MetadataExt as _;
    let fd = dir.as_raw_fd();
    let dev = dir.dir_metadata().ok()?.dev();
    let here = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let mnt_id = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))?
        .trim()
        .to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (root, point) = mounts.lines().find_map(|line| {
        let mut fields = line.split(' ');
        (fields.next()? == mnt_id).then_some(())?;
        let root = fields.nth(2)?;
        let point = fields.next()?;
        Some((unescape(root), unescape(point)))
    })?;
    let below = here.strip_prefix(&point).ok()?;
    Some((dev, root.join(below)))
}

/// A `/proc/self/mountinfo` field, whose spaces, tabs, newlines and
/// backslashes are written as octal escapes (`\040`).
fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (b[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The device and inode of the directory at `path` and of each directory
/// above it, as the kernel walks `..` (through bind mounts, which share
/// their source's inodes, and from `/proc/self/fd/N` from an open
/// directory itself). Empty if `path` cannot be resolved.
pub fn ancestry(path: &Path) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut at = path.to_path_buf();
    while out.len() < 4096 {
        let Ok(meta) = std::fs::metadata(&at) else {
            break;
        };
        let id = (meta.dev(), meta.ino());
        if out.last() == Some(&id) {
            break; // `/..` is `/`
        }
        out.push(id);
        at.push("..");
    }
    out
}
