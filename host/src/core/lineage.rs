//! Revocation: a handle can be made revocable, and revoking it cuts off it
//! and every handle derived from it, in every process.
//!
//! Each handle carries its [`Lineage`]: the revocation cells of the
//! revocable handles it descends from. Deriving a handle copies the lineage;
//! making it revocable adds a cell. Every call checks the cells first, so a
//! revocation takes effect on the next call, wherever the handle went.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::Error;

/// How many revocable ancestors a handle may have.
pub const MAX_DEPTH: usize = 64;

/// The revocation cells a handle depends on.
#[derive(Clone, Default, Debug)]
pub struct Lineage(Arc<[Arc<AtomicBool>]>);

impl Lineage {
    /// Fails with `revoked` if any revocable ancestor was revoked.
    pub fn check(&self) -> Result<(), Error> {
        if self.0.iter().any(|cell| cell.load(Ordering::Acquire)) {
            Err(Error::Revoked)
        } else {
            Ok(())
        }
    }

    /// Whether nothing can revoke this lineage.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The lineage of a new revocable handle derived from this one, and the
    /// revoker for it. Every call checks the whole lineage, so its depth is
    /// bounded.
    pub fn revocable(&self) -> Result<(Lineage, RevokerHandle), Error> {
        if self.0.len() >= MAX_DEPTH {
            return Err(Error::LimitExceeded(format!(
                "a handle can be made revocable at most {MAX_DEPTH} times over"
            )));
        }
        let cell = Arc::new(AtomicBool::new(false));
        let mut cells: Vec<_> = self.0.iter().cloned().collect();
        cells.push(cell.clone());
        Ok((Lineage(cells.into()), RevokerHandle(cell)))
    }
}

/// The host side of the WIT `revoker` resource.
pub struct RevokerHandle(Arc<AtomicBool>);

impl RevokerHandle {
    /// Ends every handle whose lineage holds this cell, for good.
    pub fn revoke(&self) {
        self.0.store(true, Ordering::Release);
    }
}
