//! What can be wrong with what the operator grants: a flag, the manifest,
//! or a run whose grants reach what the broker keeps for the operator.
//! Every message the policy gives is here. As in [`crate::core::error`], a
//! cause's text is in the message, never also the `source`.

use std::io;
use std::path::PathBuf;

use crate::core::{Invalid, Rights, RightsList};

/// An error of the policy: from the flags, the manifest, or the checks
/// made before any guest runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A grant flag's value: `--dir data: expected NAME=PATH[:RIGHTS]`.
    #[error("{flag} {spec}: {problem}")]
    Flag {
        flag: &'static str,
        spec: String,
        problem: BadFlag,
    },
    /// The manifest cannot be read.
    #[error("cannot read the manifest `{}`: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    /// The manifest's folder, which its host paths are relative to, is not
    /// there.
    #[error("cannot find the manifest's folder `{}`: {error}", path.display())]
    Folder { path: PathBuf, error: io::Error },
    /// An error in the manifest, and where: "capbroker.toml:3:10: [dir.cfg]
    /// rights: unknown right `rwx` (…)".
    #[error("{file}:{line}:{col}: {message}")]
    Manifest {
        file: String,
        line: usize,
        col: usize,
        message: String,
    },
    /// An error in the manifest that TOML does not place.
    #[error("{file}: {message}")]
    Unplaced { file: String, message: String },
    /// A configuration that names a path TOML cannot hold, written as a
    /// manifest (`--print-config`, `--learn`): rather than write another
    /// path in its place.
    #[error(
        "cannot write `{}` in a manifest: it is not UTF-8, and a manifest holds only \
         UTF-8 text",
        path.display()
    )]
    NotUtf8 { path: PathBuf },
    /// A run refused before any guest runs (boxed: it is much the largest,
    /// and every flag's parser returns this type).
    #[error(transparent)]
    Reach(Box<Refusal>),
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        Error::Reach(Box::new(r))
    }
}

/// A link on a grant's path that cannot be read.
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Refusal::Io(e).into()
    }
}

/// What is wrong with a grant flag's value.
#[derive(Debug, thiserror::Error)]
pub enum BadFlag {
    /// Not of the flag's form.
    #[error("expected {0}")]
    Form(&'static str),
    /// A part left empty: "the host path is empty (expected …)".
    #[error("the {part} is empty (expected {form})")]
    Empty {
        part: &'static str,
        form: &'static str,
    },
    #[error("the name `{0}` must be letters, digits, `-` or `_`")]
    Name(String),
    /// A `--dir` value in wasmtime's form whose guest path capbroker does
    /// not take as a grant's name.
    #[error(
        "`{0}` cannot be a guest path: it must be letters, digits, `-`, `_`, `.` and `/` \
         (expected NAME=PATH[:RIGHTS], HOST::GUEST[:RIGHTS] or HOST)"
    )]
    GuestPath(String),
    /// A `--dir` value that reads as either form.
    #[error(
        "it has both `=` and `::`, so it could be NAME=PATH[:RIGHTS] or \
         HOST::GUEST[:RIGHTS]; write a host path with `=` in it in the first form, \
         and grant one with `::` in it in a manifest"
    )]
    EqualsAndColons,
    /// The value of the grant does not parse.
    #[error(transparent)]
    Value(#[from] Invalid),
}

/// Why a run is refused before any guest runs: a grant could change a file
/// the broker reads or writes for the operator (`what`: the manifest, the
/// `--audit` log, the `--learn` output), or a grant is redirected through
/// a link another grant could have planted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{what} `{}` is within reach of grant `{grant}`: its {} over `{}` can \
         change `{}`, {role}, so a guest could rewrite it or put a link in its place; \
         keep it out of every grant with write, create or remove, or grant less",
        path.display(),
        RightsList(*rights),
        root.display(),
        step.display()
    )]
    InReach {
        what: &'static str,
        path: PathBuf,
        grant: String,
        rights: Rights,
        root: PathBuf,
        /// The file itself, or a folder its path is looked up in (`role`).
        step: PathBuf,
        role: &'static str,
    },
    /// A hard link elsewhere is a way to the file that no walk finds.
    #[error(
        "{what} `{}` has {links} hard links: the broker cannot tell whether grant \
         `{grant}` (`{}`, {}) reaches one of them; give it a file of its own",
        path.display(),
        root.display(),
        RightsList(*rights)
    )]
    HardLinks {
        what: &'static str,
        path: PathBuf,
        links: u64,
        grant: String,
        root: PathBuf,
        rights: Rights,
    },
    #[error("cannot tell whether a grant reaches {what} `{}`: {error}", path.display())]
    CannotTell {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error(
        "grant `{grant}`: its path `{}` goes through the link `{}`, inside grant \
         `{writer}`, which can write there: a guest could have put it there to point \
         `{grant}` elsewhere; name the folder itself",
        path.display(),
        link.display()
    )]
    Redirected {
        grant: String,
        path: PathBuf,
        link: PathBuf,
        writer: String,
    },
    /// A grant whose folder is not the one its path names by the time the
    /// path is checked.
    #[error(
        "grant `{grant}`: `{}` is no longer the folder the broker opened (a link on its \
         path changed); name the folder itself, and run again",
        path.display()
    )]
    Changed { grant: String, path: PathBuf },
    /// A grant's path that cannot be followed: "grant `data`: too many
    /// symbolic links in its path".
    #[error("grant `{grant}`: {why}")]
    Path { grant: String, why: &'static str },
    /// A link on a grant's path that cannot be read.
    #[error(transparent)]
    Io(#[from] io::Error),
}
