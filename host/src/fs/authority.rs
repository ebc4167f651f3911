//! The authority core: whether a file-system operation is allowed is decided
//! here, by [`decide`], for both faces — capbroker's `fs` interface and the
//! `wasi:filesystem` guard (with `to-descriptor` between them).
//!
//! Every decision runs the same steps in the same order:
//!
//! 1. **revoked?** — any revocable ancestor of the handle revoked: `revoked`;
//! 2. **pledged?** — the calling instance renounced the file system: `refused`;
//! 3. **rights** — the rights the operation needs, from the one table
//!    [`needs`], against what the handle holds: `denied` with what is missing;
//! 4. **scope** — where the path lands, asked of the face (a scoped or
//!    unveiled view answers with the rights it has *there*, or refuses);
//! 5. **audit** — a refusal at any step is recorded, with the path;
//! 6. **learn** — an allowed operation is reported to the caller's learner.
//!
//! Host methods ask [`decide`]; they never compare rights themselves. The
//! same table also says which error each face returns for a refusal
//! ([`wasi_code`]), so that a WASI program sees what wasmtime would give it.

use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

use crate::core::audit::Audit;
use crate::core::lineage::Lineage;
use crate::core::pledges::{Authority, Holders, Pledges};
use crate::core::{Error, Rights};

/// What a file-system operation does to what it touches. Each face maps its
/// calls onto these; the rights each needs are in [`needs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read a file's bytes (read-file, open for reading, readlink).
    Read,
    /// Open a file; see [`OpenIntent`].
    Open(OpenIntent),
    /// Rename within one handle, as a whole: `remove` and `create` (then
    /// each end is decided as [`Op::RenameFrom`] and [`Op::RenameTo`]).
    Rename,
    /// Write a whole file through one handle, as a whole: `write` or
    /// `create` (then the open is decided as an [`Op::Open`]).
    WriteFile,
    /// Change a file through an open descriptor, or its size or times.
    Write,
    /// List a directory's entries.
    List,
    /// Read metadata (stat, stat-at, metadata-hash, the type of a file).
    Stat,
    /// Make a new directory or symbolic link.
    Create,
    /// Remove a file or an empty directory.
    Remove,
    /// Take a name away for a rename; the destination's rights come along,
    /// since the file (or a whole tree) becomes reachable with them.
    RenameFrom { dest: Rights },
    /// Give a name by rename; `replaces` when something is already there.
    RenameTo { replaces: bool },
    /// Make an existing file reachable under a second name, whose handle
    /// holds `dest`.
    LinkFrom { dest: Rights },
    /// The new name of a hard link.
    LinkTo,
    /// Derive a handle (or a WASI descriptor) with `rights`.
    Derive { rights: Rights },
    /// Use what an open file or descriptor already is (seek, its flags,
    /// its type), or open a directory only to go on through it: any right
    /// at all, nothing in particular.
    Hold,
}

/// What an open asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OpenIntent {
    pub read: bool,
    /// Write, append or truncate.
    pub write: bool,
    pub create: bool,
    /// The caller itself asked for `exclusive`.
    pub exclusive: bool,
}

/// Rights an operation needs: all of `all`, and at least one of `any`
/// (when `any` is not empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub all: Rights,
    pub any: Rights,
}

impl Need {
    fn all(all: Rights) -> Need {
        Need {
            all,
            any: Rights::empty(),
        }
    }

    /// The rights missing from `held`, if any.
    pub fn missing(&self, held: Rights) -> Option<Rights> {
        let mut missing = self.all & !held;
        if self.any != Rights::empty() && (self.any & held) == Rights::empty() {
            missing |= self.any;
        }
        (missing != Rights::empty()).then_some(missing)
    }

    /// The rights this need uses, when `held` has them.
    pub fn used(&self, held: Rights) -> Rights {
        self.all | (self.any & held)
    }
}

/// The one table: the rights each operation needs.
///
/// - an open needs the union of what its flags need; `create` without
///   `write` held may open only a file the same call creates (see
///   [`Allowed::new_only`]), so a drop box can fill new files but never
///   reach an existing one;
/// - metadata needs `list` or `read`;
/// - making a file reachable under a second name needs, at its source,
///   every right the destination would give over it; rename also needs
///   `remove` there, and `write` at a destination it replaces.
pub fn needs(op: Op, held: Rights) -> Need {
    match op {
        Op::Read => Need::all(Rights::READ),
        Op::Open(o) if o.create && o.write && (o.exclusive || !held.contains(Rights::WRITE)) => {
            // Only a file this call makes: nothing in it to read or keep
            // yet. What is opened must still not read without `read`, as
            // others may fill the file later: each face sees to it (see
            // `Allowed::new_only`).
            Need::all(Rights::CREATE)
        }
        Op::Open(o) => {
            let mut all = Rights::empty();
            if o.read {
                all |= Rights::READ;
            }
            if o.create {
                all |= Rights::CREATE;
            }
            if o.write {
                all |= Rights::WRITE;
            }
            Need::all(all)
        }
        Op::Rename => Need::all(Rights::REMOVE | Rights::CREATE),
        Op::WriteFile => Need {
            all: Rights::empty(),
            any: Rights::WRITE | Rights::CREATE,
        },
        Op::Write => Need::all(Rights::WRITE),
        Op::List => Need::all(Rights::LIST),
        Op::Stat => Need {
            all: Rights::empty(),
            any: Rights::LIST | Rights::READ,
        },
        Op::Create => Need::all(Rights::CREATE),
        Op::Remove => Need::all(Rights::REMOVE),
        Op::RenameFrom { dest } => Need::all(Rights::REMOVE | dest),
        Op::RenameTo { replaces } => Need::all(if replaces {
            Rights::CREATE | Rights::WRITE
        } else {
            Rights::CREATE
        }),
        Op::LinkFrom { dest } => Need::all(dest),
        Op::LinkTo => Need::all(Rights::CREATE),
        Op::Derive { rights } => Need::all(rights),
        // Any right at all: a descriptor narrowed to nothing is closed.
        Op::Hold => Need {
            all: Rights::empty(),
            any: Rights::all(),
        },
    }
}

/// What [`decide`] lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// The rights the operation used (for learning).
    pub used: Rights,
    /// The rights held where the path landed.
    pub held: Rights,
    /// An open that may reach only a file it creates itself: the face must
    /// open with `O_EXCL` and report an existing file as needing `write`,
    /// and must not let what it opens read unless `held` has `read`
    /// (capbroker's face refuses such an open; the WASI face, whose
    /// programs ask for reading by habit, as std's `File::create_new` does,
    /// gives a descriptor that cannot read).
    pub new_only: bool,
}

/// Who asks: the handle's identity for the audit trail, its revocation
/// lineage and rights, and the calling instance's pledges and audit trail.
pub struct Subject<'a> {
    pub label: &'a str,
    pub lineage: &'a Lineage,
    pub held: Rights,
    /// The calling instance's pledges, and those of every instance the
    /// handle passed through.
    pub pledges: &'a Pledges,
    pub holders: &'a Holders,
    pub audit: &'a Audit,
}

/// Decides one operation: see the module docs for the order. `scope` is
/// asked, after the handle's own rights passed, where `path` lands and
/// with what rights there (the handle's own when it is not narrowed);
/// `learn` hears about what was allowed.
pub fn decide<T>(
    who: &Subject<'_>,
    name: &str,
    op: Op,
    path: &str,
    scope: impl FnOnce() -> Result<(T, Rights), Error>,
    learn: impl FnOnce(Rights),
) -> Result<(T, Allowed), Error> {
    let verdict = (|| {
        // No file name holds one, and the OS would refuse it with text
        // that repeats the path, the NUL in it too.
        if path.contains('\0') {
            return Err(Error::Invalid("a path may not hold a NUL byte".into()));
        }
        who.lineage.check()?;
        if who.pledges.renounced().contains(Authority::FILESYSTEM)
            || who.holders.renounced(Authority::FILESYSTEM)
        {
            return Err(Error::Refused("the file system was pledged away".into()));
        }
        if let Some(missing) = needs(op, who.held).missing(who.held) {
            return Err(Error::Denied(missing));
        }
        let (target, there) = scope()?;
        let held = there & who.held;
        let need = needs(op, held);
        if let Some(missing) = need.missing(held) {
            return Err(Error::Denied(missing));
        }
        let new_only = matches!(op, Op::Open(o) if o.create && o.write
            && (o.exclusive || !held.contains(Rights::WRITE)));
        // A derived handle is learned by what it is used for, not by what
        // it could do.
        let used = match op {
            Op::Derive { .. } | Op::Rename | Op::WriteFile | Op::LinkFrom { .. } => Rights::empty(),
            // The destination's rights are learned where they are used;
            // learning keeps the source in step (see `learn`).
            Op::RenameFrom { .. } => Rights::REMOVE,
            // Either right lets metadata be read; the one that gives less
            // (names, not contents) is what is learned.
            Op::Stat if held.contains(Rights::LIST) => Rights::LIST,
            Op::Stat => Rights::READ,
            _ => need.used(held),
        };
        Ok((
            target,
            Allowed {
                used,
                held,
                new_only,
            },
        ))
    })();
    match &verdict {
        Ok((_, allowed)) => learn(allowed.used),
        Err(e) => who.audit.refused(name, who.label, path, who.held, e),
    }
    verdict
}

/// The error the `wasi:filesystem` face returns for a refusal of `op` by
/// [`decide`]: what wasmtime 48 returns for the same refusal where it has
/// one (`not-permitted` when a change is refused, or a link or rename
/// across rights), `access` otherwise.
pub fn wasi_code(op: Op, err: &Error) -> ErrorCode {
    let moves = matches!(
        op,
        Op::RenameFrom { .. } | Op::RenameTo { .. } | Op::LinkFrom { .. } | Op::LinkTo
    );
    match err {
        Error::Denied(_) if moves => ErrorCode::NotPermitted,
        Error::Denied(missing)
            if missing.intersects(Rights::WRITE | Rights::CREATE | Rights::REMOVE) =>
        {
            ErrorCode::NotPermitted
        }
        Error::Escape(_) => ErrorCode::NotPermitted,
        Error::NotFound(_) => ErrorCode::NoEntry,
        Error::Exists(_) => ErrorCode::Exist,
        Error::NotDirectory(_) => ErrorCode::NotDirectory,
        Error::IsDirectory(_) => ErrorCode::IsDirectory,
        Error::NotEmpty(_) => ErrorCode::NotEmpty,
        Error::Invalid(_) => ErrorCode::Invalid,
        Error::LimitExceeded(_) => ErrorCode::InsufficientMemory,
        Error::Io(_) => ErrorCode::Io,
        Error::Denied(_) | Error::Revoked | Error::Refused(_) => ErrorCode::Access,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_box_opens_new_files_only() {
        let create = Rights::CREATE;
        let o = OpenIntent {
            write: true,
            create: true,
            ..Default::default()
        };
        assert_eq!(needs(Op::Open(o), create).missing(create), None);
        let w = OpenIntent {
            write: true,
            ..Default::default()
        };
        assert_eq!(
            needs(Op::Open(w), create).missing(create),
            Some(Rights::WRITE)
        );
    }

    #[test]
    fn metadata_needs_list_or_read() {
        let n = needs(Op::Stat, Rights::empty());
        assert_eq!(n.missing(Rights::READ), None);
        assert_eq!(n.missing(Rights::LIST), None);
        assert!(n.missing(Rights::CREATE).is_some());
    }
}
