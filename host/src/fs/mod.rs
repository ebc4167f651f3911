//! The file system room: directory and file handles (capbroker's `fs`
//! interface), the guard in front of standard `wasi:filesystem`, and the
//! one place their rights are decided.
//!
//! - [`spec`]: what the operator grants ([`DirGrant`]);
//! - [`authority`]: the decision every file-system operation of either face
//!   asks for;
//! - [`handle`]: [`DirHandle`] and [`FileHandle`], over cap-std;
//! - [`host`]: the `fs` interface's host functions;
//! - [`wasi`]: the `wasi:filesystem` face, and `wasi-fs.to-descriptor`;
//! - [`wit`]: the generated bindings.
//!
//! [`Dirs`] is the kind's life cycle, from the operator's grant to the
//! guest's handle.

pub mod authority;
pub mod handle;
pub mod host;
pub mod spec;
pub mod wasi;
pub mod wit;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use wasmtime::error::Context as _;

pub use handle::{
    join_below, open_scope, rename_noreplace, DirHandle, FileHandle, Place, ScopeEntry, MAX_LABEL,
    MAX_READ_CHUNK, MAX_WHOLE_FILE,
};
pub use spec::{ancestry, beside, beside_one, location, DirGrant, DirTable};

use crate::core::kind::{FitError, Handle, Kind, Learned, Located, OpenEnv, Opened, ShareTo};
use crate::core::pledges::Pledges;
use crate::core::wit::capbroker::caps::types::Wants;
use crate::core::{Error, Rights, RightsList};

/// The fs room's per-store state: the WASI face's preopens and
/// descriptors.
pub type FsCtx = wasi::WasiFs;

/// Adds the `fs` and `wasi-fs` interfaces to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> crate::core::View<'_, FsCtx>,
) -> wasmtime::Result<()> {
    use crate::core::view::HasView;
    wit::fs::add_to_linker::<T, HasView<FsCtx>>(linker, get)?;
    wit::wasi_fs::add_to_linker::<T, HasView<FsCtx>>(linker, get)
}

/// Directory grants: `--dir NAME=PATH[:RIGHTS]`, `[dir.NAME]`.
pub struct Dirs;

impl Kind for Dirs {
    const NAME: &'static str = "dir";
    type Spec = DirGrant;
    type Handle = DirHandle;
    type Table = DirTable;

    fn from_table(t: &DirTable, name: &str, base: &Path) -> Result<DirGrant, Located> {
        DirGrant::from_table(t, name, base)
    }

    fn to_table(d: &DirGrant) -> DirTable {
        d.to_table()
    }

    fn fit(d: &DirGrant, name: &str, wants: &Wants) -> Result<DirGrant, FitError> {
        let wanted = match wants {
            Wants::Dir(w) => *w,
            _ => Rights::empty(),
        };
        let missing = wanted & !d.rights;
        if missing != Rights::empty() {
            return Err(FitError {
                name: name.into(),
                reason: format!(
                    "the component needs {} on it, but the operator granted only {} \
                     (missing {})",
                    RightsList(wanted),
                    RightsList(d.rights),
                    RightsList(missing)
                ),
            });
        }
        Ok(d.narrowed(d.rights & wanted, d.paths.clone()))
    }

    fn open(
        d: &DirGrant,
        name: &str,
        peers: &[&DirGrant],
        env: &OpenEnv<'_>,
    ) -> wasmtime::Result<Opened<DirHandle>> {
        // Other grants overlapping this one count in its ceiling.
        let beside = peers
            .iter()
            .position(|p| std::ptr::eq(*p, d))
            .map_or(Rights::empty(), |i| beside_one(peers, i));
        let dir = d.open().with_context(|| format!("grant `{name}`"))?;
        let handle = DirHandle::grant(
            dir,
            d.rights,
            beside,
            name,
            d.paths.as_deref(),
            env.learner.cloned(),
        )
        .with_context(|| format!("grant `{name}`"))?;
        Ok(Opened {
            handle,
            target: d.host_path.display().to_string(),
            detail: RightsList(d.rights).to_string(),
        })
    }

    fn check(d: &DirGrant) -> wasmtime::Result<()> {
        d.open().map(drop)
    }

    fn describe(name: &str, wants: &Wants) -> String {
        let rights = match wants {
            Wants::Dir(r) => *r,
            _ => Rights::empty(),
        };
        format!("--dir {name}=PATH:{}", RightsList(rights))
    }

    fn narrow(d: &DirGrant, name: &str, learned: &mut Learned<'_>) -> Option<DirGrant> {
        let u = learned.used;
        if u.too_many.contains(name) {
            learned.notes.push(format!(
                "# dir.{name}: more uses than learning keeps: kept as granted"
            ));
            return Some(d.clone());
        }
        let paths: Vec<(PathBuf, Rights)> = u
            .dirs
            .get(name)
            .map(|m| m.iter().map(|(p, r)| (p.clone(), *r & d.rights)).collect())
            .unwrap_or_default();
        let moves = u.moves.get(name).cloned().unwrap_or_default();
        let paths = consistent(paths, &moves);
        if paths.is_empty() && !learned.required {
            learned
                .notes
                .push(format!("# dir.{name}: not used, not granted"));
            return None;
        }
        let used = paths.iter().fold(Rights::empty(), |a, (_, r)| a | *r);
        let wanted = match learned.wants {
            Some(Wants::Dir(w)) => *w,
            _ => Rights::empty(),
        };
        learned.notes.push(format!(
            "# dir.{name}: {} path(s) used, rights used: {}",
            paths.len(),
            RightsList(used)
        ));
        Some(d.narrowed(d.rights & (used | wanted), Some(paths)))
    }
}

impl Handle for DirHandle {
    fn share(&self, to: &ShareTo<'_>) -> Result<Self, Error> {
        self.lineage().check()?;
        Ok(self.copy(to.name))
    }

    fn held_by(self, pledges: &Pledges) -> Self {
        DirHandle::held_by(self, pledges)
    }
}

/// Makes learned paths a scope the broker accepts and the same run can
/// use again: a path below another gets that one's rights too (a scope
/// refuses a narrower path below a wider one, which reaches it by other
/// names anyway; see [`open_scope`]), and the source of a rename
/// gets what the scope's paths give together (the ceiling the move needs).
fn consistent(
    mut paths: Vec<(PathBuf, Rights)>,
    moves: &BTreeSet<(PathBuf, PathBuf)>,
) -> Vec<(PathBuf, Rights)> {
    let at = |paths: &[(PathBuf, Rights)], p: &PathBuf| {
        paths
            .iter()
            .filter(|(q, _)| p.starts_with(q))
            .fold(Rights::empty(), |a, (_, r)| a | *r)
    };
    // Each pass only adds rights, from a finite set: it ends.
    loop {
        let before = paths.clone();
        // A move's destination may be any of the scope's paths (a renamed
        // directory or a link can put it there), so its source needs what
        // they all give together.
        let all = paths.iter().fold(Rights::empty(), |a, (_, r)| a | *r);
        for (from, _) in moves {
            if let Some((_, r)) = paths.iter_mut().find(|(p, _)| p == from) {
                *r |= all;
            }
        }
        let snapshot = paths.clone();
        for (p, r) in paths.iter_mut() {
            *r |= at(&snapshot, p);
        }
        if paths == before {
            return paths;
        }
    }
}
