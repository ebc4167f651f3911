//! Learning mode's recorder: what a run actually used.
//!
//! Handles carry the [`Learner`] of their run (a directory handle with its
//! grant's name and its place below the grant's root; a network right with
//! its grant's name), and note each use that passed its checks. Children
//! inherit the learner from their parent, so what they use is learned for
//! the grant it came from. Each kind then narrows its grants to what was
//! used (see [`crate::core::kind::Kind::narrow`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::audit::ExitRecord;
use super::Rights;

/// How much more than the peak a learned budget allows.
pub const HEADROOM: u64 = 2;

/// The recorder of one run.
#[derive(Default, Debug)]
pub struct Learner {
    used: Mutex<Used>,
}

/// What the children started through one spawner grant used.
#[derive(Default, Debug, Clone)]
pub struct Spawns {
    /// The components started, by the name they were spawned by.
    pub spawned: BTreeSet<String>,
    pub children: u64,
    pub running: u64,
    pub peak_running: u64,
    pub peak_memory: u64,
    pub peak_fuel: u64,
    pub peak_wall_us: u64,
}

/// The most uses learned per grant, and the most bytes of what they name:
/// the guest chooses how many paths it touches, and the host keeps each
/// one (and reconciles them all at the end). A grant used more than that is
/// written back as it was granted, and says so.
pub const MAX_USES: usize = 1024;
pub const MAX_USE_BYTES: usize = 256 << 10;

#[derive(Default, Debug)]
pub struct Used {
    /// Per directory grant: each path below its root, and the rights used on it.
    pub dirs: BTreeMap<String, BTreeMap<PathBuf, Rights>>,
    /// Per directory grant: renames and links made, from and to; a source
    /// needs what its destination is granted.
    pub moves: BTreeMap<String, BTreeSet<(PathBuf, PathBuf)>>,
    /// Per network grant: the addresses listened on or connected to.
    pub net: BTreeMap<String, BTreeSet<String>>,
    /// Per spawner grant: the children started through it (or through a
    /// copy or an attenuation of it).
    pub spawns: BTreeMap<String, Spawns>,
    /// Children still running, through every spawner.
    pub running: u64,
    /// Per grant: how many uses, and how many bytes, were learned.
    pub counted: BTreeMap<String, (usize, usize)>,
    /// The grants used past [`MAX_USES`] or [`MAX_USE_BYTES`]: no longer
    /// learned, and kept as granted.
    pub too_many: BTreeSet<String>,
}

impl Used {
    /// Counts one more use of `grant`, of `bytes`, if it stays within the
    /// bounds; past them, forgets what `grant` used and marks it.
    fn within(&mut self, grant: &str, bytes: usize) -> bool {
        if self.too_many.contains(grant) {
            return false;
        }
        let (uses, total) = self.counted.entry(grant.to_string()).or_default();
        *uses += 1;
        *total += bytes;
        if *uses <= MAX_USES && *total <= MAX_USE_BYTES {
            return true;
        }
        self.dirs.remove(grant);
        self.moves.remove(grant);
        self.net.remove(grant);
        self.too_many.insert(grant.to_string());
        false
    }
}

impl Learner {
    pub fn new() -> Arc<Learner> {
        Arc::new(Learner::default())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Used) -> T) -> T {
        f(&mut self.used.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Something at `from` was renamed or linked to `to`, both relative to
    /// the root of grant `grant`.
    pub fn moved(&self, grant: &str, from: PathBuf, to: PathBuf) {
        self.with(|u| {
            if u.within(grant, from.as_os_str().len() + to.as_os_str().len()) {
                u.moves
                    .entry(grant.to_string())
                    .or_default()
                    .insert((from, to));
            }
        })
    }

    /// `rights` were used on `path`, relative to the root of grant `grant`.
    pub fn dir(&self, grant: &str, path: PathBuf, rights: Rights) {
        self.with(|u| {
            let seen = u.dirs.get(grant).is_some_and(|d| d.contains_key(&path));
            if seen || u.within(grant, path.as_os_str().len()) {
                *u.dirs
                    .entry(grant.to_string())
                    .or_default()
                    .entry(path)
                    .or_insert(Rights::empty()) |= rights;
            }
        })
    }

    /// The network grant `grant` was used for `addr` (`IP:PORT`).
    pub fn net(&self, grant: &str, addr: String) {
        self.with(|u| {
            let seen = u.net.get(grant).is_some_and(|n| n.contains(&addr));
            if seen || u.within(grant, addr.len()) {
                u.net.entry(grant.to_string()).or_default().insert(addr);
            }
        })
    }

    /// A child was started as `component` (the name given to `spawn`)
    /// through the spawner grant `grant`.
    pub fn spawned(&self, grant: &str, component: &str) {
        self.with(|u| {
            u.running += 1;
            let s = u.spawns.entry(grant.to_string()).or_default();
            s.spawned.insert(component.to_string());
            s.children += 1;
            s.running += 1;
            s.peak_running = s.peak_running.max(s.running);
        })
    }

    /// A child started through `grant` ended, having used what `exit` says.
    pub fn exited(&self, grant: &str, exit: &ExitRecord) {
        self.with(|u| {
            u.running = u.running.saturating_sub(1);
            let s = u.spawns.entry(grant.to_string()).or_default();
            s.running = s.running.saturating_sub(1);
            s.peak_memory = s.peak_memory.max(exit.peak_memory);
            s.peak_fuel = s.peak_fuel.max(exit.fuel_used);
            s.peak_wall_us = s.peak_wall_us.max(exit.wall_us);
        })
    }

    /// Reconciles the paths learned for directory grant `grant` with what
    /// is below `root` at the end of the run. A path nothing names is
    /// forgotten: an operation the checks allowed but the system refused
    /// (a file in a folder that is not there) made nothing, and a grant of
    /// it would name what cannot be opened. A directory loses `read`:
    /// reading one (its metadata, or as a link) reads no file, and a
    /// scope's `read` on a directory reaches every file below it (one
    /// left with no right at all is forgotten).
    pub fn reconcile(&self, grant: &str, root: &std::path::Path) {
        self.with(|u| {
            if let Some(paths) = u.dirs.get_mut(grant) {
                paths.retain(|p, rights| match std::fs::symlink_metadata(root.join(p)) {
                    Ok(m) if m.is_dir() => {
                        *rights &= !Rights::READ;
                        *rights != Rights::empty()
                    }
                    Ok(_) => true,
                    Err(_) => false,
                });
            }
        })
    }

    /// Reads what was used so far.
    pub fn seen<T>(&self, f: impl FnOnce(&Used) -> T) -> T {
        f(&self.used.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Waits (a little) for children that are still ending, so that what
    /// they used is counted.
    pub async fn settle(&self) {
        for _ in 0..200 {
            if self.with(|u| u.running) == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
