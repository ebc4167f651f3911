//! What an instance has given up with `pledge`: recorded in [`Pledges`],
//! which every kind's checks consult on every call. Bits are only ever
//! added.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use super::rights::{flags_from_bits, flags_to_bits};
pub use super::wit::capbroker::caps::pledge::Authority;
use super::Error;

/// What one instance has given up so far.
#[derive(Clone, Default, Debug)]
pub struct Pledges(Arc<AtomicU8>);

impl Pledges {
    pub fn renounced(&self) -> Authority {
        from_bits(self.0.load(Ordering::Acquire))
    }

    pub fn renounce(&self, a: Authority) {
        self.0.fetch_or(to_bits(a), Ordering::AcqRel);
    }

    /// `Err(refused)` if `a` has been given up.
    pub fn check(&self, a: Authority, what: &str) -> Result<(), Error> {
        if self.renounced().contains(a) {
            Err(Error::Refused(format!("{what} was pledged away")))
        } else {
            Ok(())
        }
    }
}

/// The pledges of every instance a handle has passed through (the one
/// that was granted it, and each parent that shared it on): a pledge in any
/// of them ends the handle, so that a process cannot keep authority it gave
/// up by having handed it to a child first.
#[derive(Clone, Default, Debug)]
pub struct Holders(Arc<[Pledges]>);

impl Holders {
    /// These holders and one more.
    pub fn with(&self, pledges: &Pledges) -> Holders {
        Holders(self.0.iter().chain([pledges]).cloned().collect())
    }

    /// Whether any holder gave up `a`.
    pub fn renounced(&self, a: Authority) -> bool {
        self.0.iter().any(|p| p.renounced().contains(a))
    }
}

/// Every class of authority, with its name.
const AUTHORITY_NAMES: [(Authority, &str); 4] = [
    (Authority::FILESYSTEM, "filesystem"),
    (Authority::NETWORK, "network"),
    (Authority::ENVIRONMENT, "environment"),
    (Authority::SPAWN, "spawn"),
];

fn to_bits(a: Authority) -> u8 {
    flags_to_bits(&AUTHORITY_NAMES, a)
}

fn from_bits(bits: u8) -> Authority {
    flags_from_bits(&AUTHORITY_NAMES, bits, Authority::empty())
}

/// Names for the audit trail.
pub fn names(a: Authority) -> String {
    AUTHORITY_NAMES
        .iter()
        .filter(|(f, _)| a.contains(*f))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}
