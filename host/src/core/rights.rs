//! Rights: what a handle allows, as the WIT and the command line name them.

use std::fmt;

pub use super::wit::capbroker::caps::types::Rights;
use super::{Error, Invalid};

/// Every right, with the name the WIT and the command line use for it.
pub const RIGHT_NAMES: [(Rights, &str); 5] = [
    (Rights::READ, "read"),
    (Rights::WRITE, "write"),
    (Rights::CREATE, "create"),
    (Rights::LIST, "list"),
    (Rights::REMOVE, "remove"),
];

/// WIT flags as bits, one per entry of `all`, to keep in an atomic.
pub fn flags_to_bits<F>(all: &[(F, &str)], value: F) -> u8
where
    F: Copy + PartialEq + std::ops::BitAnd<Output = F>,
{
    all.iter()
        .enumerate()
        .filter(|(_, (f, _))| value & *f == *f)
        .fold(0, |bits, (i, _)| bits | 1 << i)
}

/// The inverse of [`flags_to_bits`]; `none` is the empty set.
pub fn flags_from_bits<F>(all: &[(F, &str)], bits: u8, none: F) -> F
where
    F: Copy + std::ops::BitOr<Output = F>,
{
    all.iter()
        .enumerate()
        .filter(|(i, _)| bits & 1 << i != 0)
        .fold(none, |v, (_, (f, _))| v | *f)
}

/// Rights as bits, to keep in an atomic.
pub fn rights_to_bits(r: Rights) -> u8 {
    flags_to_bits(&RIGHT_NAMES, r)
}

/// The inverse of [`rights_to_bits`].
pub fn rights_from_bits(bits: u8) -> Rights {
    flags_from_bits(&RIGHT_NAMES, bits, Rights::empty())
}

/// `read` and `list`: what a `:ro` grant carries.
pub fn read_only() -> Rights {
    Rights::READ | Rights::LIST
}

/// Formats rights as the comma-separated list the command line accepts,
/// e.g. `read,list`; no rights at all is `none`.
pub struct RightsList(pub Rights);

impl fmt::Display for RightsList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = RIGHT_NAMES
            .iter()
            .filter(|(r, _)| self.0.contains(*r))
            .map(|(_, n)| *n)
            .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// Parses `ro`, `rw`, `all`, `none` or a comma-separated list of right names.
pub fn parse_rights(spec: &str) -> Result<Rights, Invalid> {
    match spec {
        "ro" => return Ok(read_only()),
        "rw" | "all" => return Ok(Rights::all()),
        "none" => return Ok(Rights::empty()),
        _ => {}
    }
    let mut rights = Rights::empty();
    for word in spec.split(',') {
        let word = word.trim();
        let (right, _) = RIGHT_NAMES
            .iter()
            .find(|(_, name)| *name == word)
            .ok_or_else(|| Invalid::Word {
                what: "right",
                word: word.into(),
                within: None,
                known: "rights are ro, rw, none, or a comma-separated list of read, write, \
                        create, list, remove",
            })?;
        rights |= *right;
    }
    Ok(rights)
}

/// Fails with `denied`, naming the missing rights, unless `held` contains all
/// of `needed`.
pub fn require(held: Rights, needed: Rights) -> Result<(), Error> {
    let missing = needed & !held;
    if missing == Rights::empty() {
        Ok(())
    } else {
        Err(Error::Denied(missing))
    }
}
