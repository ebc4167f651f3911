//! The error every capability call returns to the guest, and what a host
//! function returns: a guest error, or a trap for a host fault; and
//! [`Invalid`], an operator's value that does not parse.
//!
//! The broker's typed errors (here, and the policy's) carry the text of
//! what caused them in their message, never also as their `source`: the
//! edge prints an error with its chain of sources (`{:#}`), and would say
//! the cause twice.

use std::fmt;
use std::io;

use wasmtime::component::ResourceTableError;

use super::rights::RightsList;
pub use super::wit::capbroker::caps::types::Error;

/// `text` cut to at most `max` bytes (on a character boundary), with `…`
/// after it when something was cut: for guest text the host keeps.
pub fn shortened(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …");
    }
    text
}

/// Displays an [`Error`] for people (bindgen's `Display` is its `Debug`).
pub struct Describe<'a>(pub &'a Error);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::Denied(r) => write!(f, "denied: the handle lacks {}", RightsList(*r)),
            Error::Escape(p) => write!(f, "escape: `{p}` leads outside the handle"),
            Error::NotFound(p) => write!(f, "not found: `{p}`"),
            Error::Exists(p) => write!(f, "exists: `{p}`"),
            Error::NotDirectory(p) => write!(f, "not a directory: `{p}`"),
            Error::IsDirectory(p) => write!(f, "is a directory: `{p}`"),
            Error::NotEmpty(p) => write!(f, "directory not empty: `{p}`"),
            Error::Invalid(m) => write!(f, "invalid: {m}"),
            Error::LimitExceeded(m) => write!(f, "limit exceeded: {m}"),
            Error::Io(m) => write!(f, "i/o error: {m}"),
            Error::Revoked => write!(f, "revoked: the handle was revoked"),
            Error::Refused(m) => write!(f, "refused: {m}"),
        }
    }
}

impl Error {
    /// The WIT case name, for logs.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Denied(_) => "denied",
            Error::Escape(_) => "escape",
            Error::NotFound(_) => "not-found",
            Error::Exists(_) => "exists",
            Error::NotDirectory(_) => "not-directory",
            Error::IsDirectory(_) => "is-directory",
            Error::NotEmpty(_) => "not-empty",
            Error::Invalid(_) => "invalid",
            Error::LimitExceeded(_) => "limit-exceeded",
            Error::Io(_) => "io",
            Error::Revoked => "revoked",
            Error::Refused(_) => "refused",
        }
    }

    /// Maps a host I/O error on `path` to the guest's error. cap-std reports
    /// an attempt to leave the directory as `PermissionDenied` with a fixed
    /// message (and `openat2` as `EXDEV`, which cap-std maps to the same).
    pub fn from_io(err: &io::Error, path: &str) -> Error {
        let path = path.to_string();
        match err.kind() {
            io::ErrorKind::NotFound => Error::NotFound(path),
            io::ErrorKind::AlreadyExists => Error::Exists(path),
            io::ErrorKind::NotADirectory => Error::NotDirectory(path),
            io::ErrorKind::IsADirectory => Error::IsDirectory(path),
            io::ErrorKind::DirectoryNotEmpty => Error::NotEmpty(path),
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidFilename => {
                Error::Invalid(format!("`{path}`: {err}"))
            }
            io::ErrorKind::PermissionDenied if is_escape(err) => Error::Escape(path),
            _ if err.raw_os_error() == Some(libc::ELOOP) => {
                Error::Invalid(format!("`{path}`: too many levels of symbolic links"))
            }
            _ => Error::Io(format!("`{path}`: {err}")),
        }
    }
}

fn is_escape(err: &io::Error) -> bool {
    err.to_string().contains("outside of the filesystem")
}

/// What a host function returns: an error for the guest, or a trap when the
/// host itself is in a state it cannot explain (never because of guest input).
#[derive(Debug)]
pub enum HostError {
    Guest(Error),
    Trap(wasmtime::Error),
}

pub type HostResult<T> = Result<T, HostError>;

impl From<Error> for HostError {
    fn from(e: Error) -> Self {
        HostError::Guest(e)
    }
}

impl From<ResourceTableError> for HostError {
    fn from(e: ResourceTableError) -> Self {
        match e {
            // A full table is the guest's doing (it holds too many handles):
            // an error value, never a trap.
            ResourceTableError::Full => HostError::Guest(Error::LimitExceeded(
                "the handle table is full: drop handles you no longer need".into(),
            )),
            other => HostError::Trap(wasmtime::Error::new(other)),
        }
    }
}

/// An operator's value that does not parse (a flag's, or a manifest
/// entry's): the text, and what is wrong with it. Its `Display` is what the
/// operator reads after the flag or entry the value came from. The variants
/// are shapes of message, not kinds: each room says what it expected.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Invalid {
    /// Not of the form expected: "`lots` is not a size (expected e.g. …)".
    #[error("`{text}` is not {expected}")]
    Form {
        text: String,
        /// What the text should be, and how to write it.
        expected: &'static str,
    },
    /// A word that is none of those known: "unknown right `fly` (rights
    /// are …)". `within` is the text the word is part of, when naming it
    /// helps.
    #[error("unknown {what} `{word}`{} ({known})", in_text(within))]
    Word {
        what: &'static str,
        word: String,
        within: Option<String>,
        known: &'static str,
    },
    /// A number too large to hold: "`9999999999GiB` is too large".
    #[error("`{0}` is too large")]
    TooLarge(String),
    /// Not a whole number: "max-children `two` is not a whole number".
    #[error("{what} `{text}` is not a whole number")]
    NotWhole { what: &'static str, text: String },
    /// Well formed, but it would allow nothing: "max-children of 0 would
    /// allow no child at all".
    #[error("{0}")]
    Nothing(&'static str),
    /// A part of `text` is invalid: "`[::1]:90-80`: the port range is
    /// empty".
    #[error("`{text}`: {part}")]
    In { text: String, part: Box<Invalid> },
    /// Limits the broker refuses whoever asks (the operator, or a guest
    /// for a child): "invalid: max-fuel of 0 would run nothing".
    #[error("{}", Describe(.0))]
    Limits(Error),
}

impl Invalid {
    /// `text` is not of the form `expected`.
    pub fn form(text: &str, expected: &'static str) -> Invalid {
        Invalid::Form {
            text: text.into(),
            expected,
        }
    }

    /// `self`, as the error of a part of `text`.
    pub fn within(self, text: &str) -> Invalid {
        Invalid::In {
            text: text.into(),
            part: Box::new(self),
        }
    }
}

/// Where an unknown word was: ` in ` and the text, or nothing.
fn in_text(within: &Option<String>) -> String {
    within
        .as_ref()
        .map(|t| format!(" in `{t}`"))
        .unwrap_or_default()
}
