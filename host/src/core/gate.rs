//! Rights that only narrow, shared by a descriptor or socket and everything
//! opened from it (streams, listings), whatever became of it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

use super::audit::Audit;
use super::lineage::Lineage;
use super::pledges::{Authority, Holders};
use super::rights::{rights_from_bits, rights_to_bits};
use super::{Error, Rights};

/// Rights shared by a descriptor and everything opened from it (streams,
/// listings), the revocable capbroker handles it descends from, and the
/// pledges of the instances that held it.
#[derive(Clone, Debug)]
pub struct Gate {
    pub(crate) bits: Arc<AtomicU8>,
    pub(crate) lineage: Lineage,
    pub(crate) holders: Holders,
    /// Where refusals of streams and listings are recorded, and the name
    /// of the root they come from.
    pub(crate) trail: Option<(Audit, Arc<str>)>,
}

impl Gate {
    pub fn new(rights: Rights) -> Gate {
        Gate::with_lineage(rights, Lineage::default())
    }

    pub fn with_lineage(rights: Rights, lineage: Lineage) -> Gate {
        Gate {
            bits: Arc::new(AtomicU8::new(rights_to_bits(rights))),
            lineage,
            holders: Holders::default(),
            trail: None,
        }
    }

    /// The same gate, its refusals recorded in `audit` under `label`.
    pub fn recorded(mut self, audit: &Audit, label: &str) -> Gate {
        self.trail = Some((audit.clone(), label.into()));
        self
    }

    /// Records that `op` was refused for want of `need` (a stream or a
    /// listing, which the authority core does not see call by call).
    pub fn refused(&self, op: &str, need: Rights) {
        let Some((audit, label)) = &self.trail else {
            return;
        };
        let held = self.rights();
        let err = if self.lineage.check().is_err() {
            Error::Revoked
        } else if self.pledged() {
            Error::Refused("the file system was pledged away".into())
        } else {
            Error::Denied(if need & !held == Rights::empty() {
                need
            } else {
                need & !held
            })
        };
        audit.refused(op, label, "", held, &err);
    }

    /// The same gate, also closed once `holders` renounce the file system.
    pub fn held_by(mut self, holders: Holders) -> Gate {
        self.holders = holders;
        self
    }

    /// A gate of its own for something opened from this gate's descriptor:
    /// `rights` for now, and the same lineage and pledges.
    pub fn derive(&self, rights: Rights) -> Gate {
        Gate {
            bits: Arc::new(AtomicU8::new(rights_to_bits(rights))),
            lineage: self.lineage.clone(),
            holders: self.holders.clone(),
            trail: self.trail.clone(),
        }
    }

    pub fn rights(&self) -> Rights {
        rights_from_bits(self.bits.load(Ordering::Acquire))
    }

    /// Keeps only `keep`. Nothing widens a gate.
    pub fn narrow(&self, keep: Rights) {
        self.bits.fetch_and(rights_to_bits(keep), Ordering::AcqRel);
    }

    pub(crate) fn pledged(&self) -> bool {
        self.holders.renounced(Authority::FILESYSTEM)
    }

    /// For streams and sockets, which cannot reach the audit trail: `Ok`
    /// if the gate holds `need` (any right at all when `need` is empty),
    /// nothing it descends from was revoked and nothing was pledged away;
    /// otherwise `EACCES`.
    pub fn check(&self, need: Rights) -> Result<(), ErrorCode> {
        let held = self.rights();
        if held.contains(need)
            && held != Rights::empty()
            && self.lineage.check().is_ok()
            && !self.pledged()
        {
            Ok(())
        } else {
            Err(ErrorCode::Access)
        }
    }

    /// Whether anything besides its descriptor (a stream, a listing) still
    /// uses this gate.
    pub fn shared(&self) -> bool {
        Arc::strong_count(&self.bits) > 1
    }
}
