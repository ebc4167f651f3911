//! Checks that no grant of a run reaches what the broker reads or writes
//! for the operator (the manifest, the audit log, learning's output), and
//! that no grant is redirected through a link another grant could have
//! planted. A guest that could change the manifest would choose its own
//! grants from the next run on.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::{Config, Error, Refusal};
use crate::core::Rights;
use crate::grants::Grant;

/// The rights that change what is in a directory.
fn writing() -> Rights {
    Rights::WRITE | Rights::CREATE | Rights::REMOVE
}

impl Config {
    /// Refuses a manifest that a directory grant of this run could change
    /// (see [`lookup`] for what that covers). Children only ever get
    /// handles derived from the run's grants, so these are every grant of
    /// the run, a plain command's preopens included. Places are compared by
    /// identity (device and inode), so that `..`, symbolic links and bind
    /// mounts do not make one folder look like two.
    pub fn check_manifest_out_of_reach(&self) -> Result<(), Error> {
        match &self.manifest {
            Some(manifest) => self.check_out_of_reach(&manifest.path, "the manifest"),
            None => Ok(()),
        }
    }

    /// Refuses a directory grant whose host path goes through a symbolic
    /// link inside another grant that can write there: a guest of an
    /// earlier run could have put the link there, to point this grant at
    /// any folder of the host. A grant already opened must still be what
    /// its path names once the path is checked, so that a link put there
    /// and taken away again (by a guest of another run) between the open
    /// and the check is caught too; no guest of this run has run yet.
    pub fn check_grants_not_redirected(&self) -> Result<(), Error> {
        use std::os::unix::fs::MetadataExt;
        let dirs: Vec<(&str, &crate::fs::DirGrant)> = self
            .grants
            .iter()
            .filter_map(|g| match &g.grant {
                Grant::Dir(d) => Some((g.name.as_str(), d)),
                _ => None,
            })
            .collect();
        let writers: Vec<(&str, (u64, u64))> = dirs
            .iter()
            .filter(|(_, d)| {
                let paths = d.paths.iter().flatten().map(|(_, r)| *r);
                (paths.fold(d.rights, |a, r| a | r) & writing()) != Rights::empty()
            })
            .filter_map(|(n, d)| {
                let id = d.opened_id().or_else(|| {
                    let m = std::fs::metadata(d.resolved()?).ok()?;
                    Some((m.dev(), m.ino()))
                })?;
                Some((*n, id))
            })
            .collect();
        for (name, d) in &dirs {
            let cannot_follow = |why| Refusal::Path {
                grant: name.to_string(),
                why,
            };
            let Some(start) = d.resolved() else {
                return Err(
                    cannot_follow("a relative path, and the working folder is gone").into(),
                );
            };
            let mut links = 0;
            // What is missing fails the check below, or to open.
            let walked = walk(&start, |folder, link| {
                let chain = crate::fs::ancestry(folder);
                // The grant itself too: its own path may climb back out of
                // it with `..` after a link inside it.
                if let Some((writer, _)) = writers.iter().find(|(_, id)| chain.contains(id)) {
                    return Err(Error::from(Refusal::Redirected {
                        grant: name.to_string(),
                        path: d.host_path.clone(),
                        link: link.to_path_buf(),
                        writer: writer.to_string(),
                    }));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(cannot_follow("too many symbolic links in its path").into());
                }
                Ok(())
            })?;
            let at = walked.at;
            // What was opened is what the path names now that it is checked.
            if let Some(id) = d.opened_id() {
                let now = std::fs::metadata(&at).map(|m| (m.dev(), m.ino())).ok();
                if now != Some(id) {
                    return Err(Refusal::Changed {
                        grant: name.to_string(),
                        path: d.host_path.clone(),
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    /// Refuses a run in which a directory grant could change `path`, a file
    /// the broker reads or writes for the operator (`what`: the manifest,
    /// the `--audit` log, the `--learn` output), or put a link in its place
    /// that the broker would follow. The file need not exist yet, nor the
    /// folders it would be in.
    pub fn check_out_of_reach(&self, path: &Path, what: &'static str) -> Result<(), Error> {
        let cannot_tell = |error| Refusal::CannotTell {
            what,
            path: path.to_path_buf(),
            error,
        };
        let writable = self.writing_roots();
        let Some((first, root, rights, _)) = writable.first() else {
            return Ok(());
        };
        let (links, steps) = lookup(path).map_err(cannot_tell)?;
        if links > 1 {
            return Err(Refusal::HardLinks {
                what,
                path: path.to_path_buf(),
                links,
                grant: first.name.clone(),
                root: root.clone(),
                rights: *rights,
            }
            .into());
        }
        for (g, root, rights, narrowed) in writable {
            let id = match std::fs::metadata(&root) {
                Ok(m) => (m.dev(), m.ino()),
                // A narrowed path that is not there yet: the guest may make
                // it, so it must not be the file or a folder on its way.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && narrowed => {
                    let (r, t) = (
                        would_be(&root).map_err(cannot_tell)?,
                        would_be(path).map_err(cannot_tell)?,
                    );
                    if t.starts_with(&r) {
                        return Err(Refusal::InReach {
                            what,
                            path: path.to_path_buf(),
                            grant: g.name.clone(),
                            rights,
                            root,
                            step: r,
                            role: "a place on its path the guest could make",
                        }
                        .into());
                    }
                    continue;
                }
                Err(e) => return Err(cannot_tell(e).into()),
            };
            if let Some(step) = steps.iter().find(|s| s.id == id) {
                return Err(Refusal::InReach {
                    what,
                    path: path.to_path_buf(),
                    grant: g.name.clone(),
                    rights,
                    root,
                    step: step.path.clone(),
                    role: step.role,
                }
                .into());
            }
        }
        Ok(())
    }
}

impl Config {
    /// Refuses a run in which a directory grant that can write reaches
    /// anything inside `folder` (`what`), which need not exist yet: a
    /// grant scoped to one file in it is enough to change that file. With
    /// [`Config::check_out_of_reach`] on a file in it, which covers the
    /// folder itself and its path, nothing in or on the way to the folder
    /// is a guest's to write.
    pub fn check_folder_out_of_reach(
        &self,
        folder: &Path,
        what: &'static str,
    ) -> Result<(), Error> {
        let cannot_tell = |error| Refusal::CannotTell {
            what,
            path: folder.to_path_buf(),
            error,
        };
        let writable = self.writing_roots();
        if writable.is_empty() {
            return Ok(());
        }
        let f = would_be(folder).map_err(cannot_tell)?;
        for (g, root, rights, _) in writable {
            let r = would_be(&root).map_err(cannot_tell)?;
            if r.starts_with(&f) {
                return Err(Refusal::InReach {
                    what,
                    path: folder.to_path_buf(),
                    grant: g.name.clone(),
                    rights,
                    root,
                    step: r,
                    role: "a place inside it",
                }
                .into());
            }
        }
        Ok(())
    }

    /// Every place a directory grant can write: its folder, or each path
    /// it is narrowed to, with the writing part of its rights there, and
    /// whether it is narrowed.
    fn writing_roots(&self) -> Vec<(&crate::grants::NamedGrant, PathBuf, Rights, bool)> {
        let mut writable = Vec::new();
        for g in &self.grants {
            let Grant::Dir(d) = &g.grant else { continue };
            let base = d.resolved().unwrap_or_default();
            let roots = match &d.paths {
                None => vec![(base, d.rights)],
                Some(paths) => paths.iter().map(|(p, r)| (base.join(p), *r)).collect(),
            };
            for (root, rights) in roots {
                let rights = rights & writing();
                if rights != Rights::empty() {
                    writable.push((g, root, rights, d.paths.is_some()));
                }
            }
        }
        writable
    }
}

/// A place what a manifest's path names depends on, for
/// [`Config::check_manifest_out_of_reach`].
struct Step {
    role: &'static str,
    path: PathBuf,
    /// Device and inode.
    id: (u64, u64),
}

/// Every place the file at `path` depends on: the file itself and each
/// folder its lookup reads an entry of, from `/` (through the working
/// folder for a relative path), following symbolic links wherever they
/// lead, `..` included. A folder above one is among them, so a rename that
/// puts another folder in one's place is covered. Also the file's link
/// count: a hard link elsewhere is a way to it that no walk finds.
fn lookup(path: &Path) -> std::io::Result<(u64, Vec<Step>)> {
    let walked = walk_from_here(path)?;
    use std::io::ErrorKind::{NotADirectory, NotFound};
    match walked.missing {
        // Not made yet (it, or folders on its way; or a file stands where a
        // folder would): what it depends on is the folders walked, in which
        // a grant could make the rest.
        Some((e, _)) if matches!(e.kind(), NotFound | NotADirectory) => {
            steps_of(None, walked.folders)
        }
        Some((e, _)) => Err(e),
        None => steps_of(Some(walked.at), walked.folders),
    }
}

/// [`walk`] of `path` from the working folder, failing past
/// [`MAX_LINKS`] links as the kernel would.
fn walk_from_here(path: &Path) -> std::io::Result<Walked> {
    let mut links = 0;
    walk(&std::env::current_dir()?.join(path), |_, _| {
        links += 1;
        if links > MAX_LINKS {
            return Err(std::io::Error::other("too many symbolic links"));
        }
        Ok(())
    })
}

/// The most symbolic links a path may go through, as the kernel allows.
const MAX_LINKS: usize = 40;

/// Where following a path led.
struct Walked {
    /// A real file or folder, never a link; where it stopped if a part was
    /// missing.
    at: PathBuf,
    /// Every folder an entry was looked up in on the way.
    folders: BTreeSet<PathBuf>,
    /// Why a part could not be looked up, and whether it was the last.
    missing: Option<(std::io::Error, bool)>,
    /// The parts not looked up, the missing one first.
    rest: Vec<OsString>,
}

/// Follows the absolute `path` from `/` as the kernel does: every symbolic
/// link wherever it leads, `..` from the real folder reached. `on_link`
/// sees each link (the folder it is in, and the link) before it is
/// followed, and may stop the walk.
fn walk<E: From<std::io::Error>>(
    path: &Path,
    mut on_link: impl FnMut(&Path, &Path) -> Result<(), E>,
) -> Result<Walked, E> {
    fn push(todo: &mut Vec<OsString>, p: &Path) {
        todo.extend(p.components().rev().map(|c| c.as_os_str().to_owned()));
    }
    let mut todo = Vec::new();
    push(&mut todo, path);
    let mut at = PathBuf::from("/");
    let mut folders = BTreeSet::new();
    while let Some(part) = todo.pop() {
        // `at` is always a real folder, so `..` is its lexical parent.
        match part.to_str() {
            Some("/") => at = PathBuf::from("/"),
            Some(".") => {}
            Some("..") => {
                at.pop();
            }
            _ => {
                folders.insert(at.clone());
                let next = at.join(&part);
                let meta = match std::fs::symlink_metadata(&next) {
                    Ok(meta) => meta,
                    Err(e) => {
                        let last = todo.is_empty();
                        todo.push(part);
                        todo.reverse();
                        return Ok(Walked {
                            at,
                            folders,
                            missing: Some((e, last)),
                            rest: todo,
                        });
                    }
                };
                if meta.is_symlink() {
                    on_link(&at, &next)?;
                    push(&mut todo, &std::fs::read_link(&next)?);
                } else {
                    at = next;
                }
            }
        }
    }
    Ok(Walked {
        at,
        folders,
        missing: None,
        rest: Vec::new(),
    })
}

/// Where `path` is, or would be once made: the real file or folder its
/// lookup reaches (links followed, as [`walk`] does), then the parts not
/// there yet, `.` dropped and `..` taken lexically, as whoever makes them
/// would make them.
fn would_be(path: &Path) -> std::io::Result<PathBuf> {
    use std::io::ErrorKind::{NotADirectory, NotFound};
    let walked = walk_from_here(path)?;
    let mut at = walked.at;
    match walked.missing {
        Some((e, _)) if !matches!(e.kind(), NotFound | NotADirectory) => return Err(e),
        _ => {}
    }
    for part in walked.rest {
        match part.to_str() {
            Some(".") => {}
            Some("..") => {
                at.pop();
            }
            _ => at.push(part),
        }
    }
    Ok(at)
}

/// The steps of [`lookup`]: the file at `at` (if it exists) and `folders`,
/// with the file's link count.
fn steps_of(at: Option<PathBuf>, folders: BTreeSet<PathBuf>) -> std::io::Result<(u64, Vec<Step>)> {
    let mut steps = Vec::new();
    let mut nlink = 1;
    if let Some(at) = at {
        let file = std::fs::metadata(&at)?;
        nlink = file.nlink();
        steps.push(Step {
            role: "the file itself",
            id: (file.dev(), file.ino()),
            path: at,
        });
    }
    for path in folders {
        let m = std::fs::metadata(&path)?;
        steps.push(Step {
            role: "a folder its path is looked up in",
            id: (m.dev(), m.ino()),
            path,
        });
    }
    Ok((nlink, steps))
}
