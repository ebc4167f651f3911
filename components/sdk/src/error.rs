//! The error of the std-shaped layer.
//!
//! The WIT `error` variant is what the host sends, but wit-bindgen gives it
//! a `Display` that is its `Debug` form and no `std::error::Error`, so it
//! neither prints well nor travels through `?` into `Box<dyn Error>` or
//! `std::io::Error`. This type wraps it (the WIT code stays readable through
//! [`Error::code`] and [`Error::wit`]) and adds the one failure that is not
//! the host's: a grant the component asked for and did not get.

use std::fmt;
use std::io;

use crate::bindings::capbroker::caps::types::Error as WitError;
use crate::Rights;

/// A `Result` whose error is the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a capbroker call failed: the host's WIT error, or a missing grant.
///
/// It prints as a sentence (the same text as the WIT error's `message()`),
/// is a `std::error::Error`, and converts into `std::io::Error` with the
/// `ErrorKind` std would use for the same failure, so code written against
/// `std::io` can handle a denial as `PermissionDenied`.
pub struct Error {
    repr: Repr,
}

enum Repr {
    Wit(WitError),
    /// Contents that are not UTF-8 where text was asked for: the WIT
    /// `invalid`, but std's `InvalidData` (the input was fine, the data
    /// was not).
    NotText(WitError),
    NotGranted {
        name: String,
        kind: &'static str,
    },
}

impl Error {
    /// A lookup in [`crate::Grants`] found no handle of `kind` under `name`.
    pub(crate) fn not_granted(name: &str, kind: &'static str) -> Error {
        Error {
            repr: Repr::NotGranted {
                name: name.into(),
                kind,
            },
        }
    }

    /// A file's contents are not UTF-8 text.
    pub(crate) fn not_text(path: &std::path::Path) -> Error {
        Error {
            repr: Repr::NotText(WitError::Invalid(format!(
                "`{}` is not UTF-8",
                path.display()
            ))),
        }
    }

    /// The WIT case name (e.g. `denied`, `not-found`), or `not-granted` for
    /// a missing grant: a stable string to match on or log.
    pub fn code(&self) -> &'static str {
        match &self.repr {
            Repr::Wit(e) | Repr::NotText(e) => e.code(),
            Repr::NotGranted { .. } => "not-granted",
        }
    }

    /// The host's error, for code that matches on the WIT variant.
    pub fn wit(&self) -> Option<&WitError> {
        match &self.repr {
            Repr::Wit(e) | Repr::NotText(e) => Some(e),
            Repr::NotGranted { .. } => None,
        }
    }

    /// The host's error, by value.
    pub fn into_wit(self) -> Option<WitError> {
        match self.repr {
            Repr::Wit(e) | Repr::NotText(e) => Some(e),
            Repr::NotGranted { .. } => None,
        }
    }

    /// For `denied`, the rights the handle lacked.
    pub fn missing_rights(&self) -> Option<Rights> {
        match &self.repr {
            Repr::Wit(WitError::Denied(r)) => Some(*r),
            _ => None,
        }
    }

    /// For a missing grant, the name it was looked up under.
    pub fn grant_name(&self) -> Option<&str> {
        match &self.repr {
            Repr::NotGranted { name, .. } => Some(name),
            Repr::Wit(_) | Repr::NotText(_) => None,
        }
    }

    /// The `std::io::ErrorKind` this error becomes in a `std::io::Error`.
    ///
    /// Everything that is the broker saying no (`denied`, `escape`,
    /// `revoked`, `refused`) is `PermissionDenied`: that is what std code
    /// already handles for a sandbox, and what `std::fs` itself reports
    /// after a pledge.
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as K;
        match &self.repr {
            Repr::NotGranted { .. } => K::NotFound,
            Repr::NotText(_) => K::InvalidData,
            Repr::Wit(e) => match e {
                WitError::Denied(_)
                | WitError::Escape(_)
                | WitError::Revoked
                | WitError::Refused(_) => K::PermissionDenied,
                WitError::NotFound(_) => K::NotFound,
                WitError::Exists(_) => K::AlreadyExists,
                WitError::NotDirectory(_) => K::NotADirectory,
                WitError::IsDirectory(_) => K::IsADirectory,
                WitError::NotEmpty(_) => K::DirectoryNotEmpty,
                WitError::Invalid(_) => K::InvalidInput,
                WitError::LimitExceeded(_) => K::QuotaExceeded,
                WitError::Io(_) => K::Other,
            },
        }
    }

    /// The error as a sentence; the same as `to_string()`. Kept so that
    /// code written against the WIT error's `message()` reads the same.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Wit(e) | Repr::NotText(e) => f.write_str(&e.message()),
            Repr::NotGranted { name, kind } => write!(f, "no {kind} granted as `{name}`"),
        }
    }
}

/// Short, like `std::io::Error`'s: `fn main() -> Result<(), Error>` prints
/// this, and the code plus the sentence is what a reader needs.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code())
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for Error {}

impl From<WitError> for Error {
    fn from(e: WitError) -> Error {
        Error { repr: Repr::Wit(e) }
    }
}

/// Keeps the `Error` inside: `io_error.get_ref()` downcasts back to it, so
/// the WIT code survives a trip through `std::io`.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Lets `?` work in the `Result<_, String>` that a component's `run`
/// returns.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}
