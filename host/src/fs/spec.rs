//! What an operator grants of the file system: a host directory, with
//! rights, and optionally only some paths below it.

use std::path::{Component, Path, PathBuf};

use cap_std::fs::Dir;
use wasmtime::error::Context;

use crate::core::Rights;

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
        let Some(path) = self.resolved() else {
            wasmtime::bail!(
                "cannot open host directory `{}`: it is relative, and the working folder \
                 is gone",
                self.host_path.display()
            );
        };
        Dir::open_ambient_dir(path, cap_std::ambient_authority())
            .with_context(|| format!("cannot open host directory `{}`", self.host_path.display()))
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
/// it, holds it or is it: a file linked or renamed into the overlap can be
/// used through those too, so they count in the grant's ceiling.
/// Directories are compared by identity up their real ancestry (see
/// [`ancestry`]), so links, `..` and bind mounts do not hide an overlap;
/// one that cannot be resolved overlaps nothing.
pub fn beside(grants: &[&DirGrant]) -> Vec<Rights> {
    let chains: Vec<Vec<(u64, u64)>> = grants
        .iter()
        .map(|g| g.resolved().map(|p| ancestry(&p)).unwrap_or_default())
        .collect();
    let overlap = |i: usize, j: usize| match (chains[i].first(), chains[j].first()) {
        (Some(a), Some(b)) => chains[j].contains(a) || chains[i].contains(b),
        _ => false,
    };
    (0..grants.len())
        .map(|i| {
            (0..grants.len())
                .filter(|&j| j != i && overlap(i, j))
                .fold(Rights::empty(), |r, j| r | grants[j].rights)
        })
        .collect()
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
