//! The audit trail: every grant, derivation, drop, denial, spawn, exit and
//! revocation, as `tracing` events under the target `capbroker::audit`, each
//! naming the component and its process id.

use std::sync::Arc;

use crate::types::{Describe, Error, Rights, RightsList};

/// Records what one component instance does with its handles.
#[derive(Clone, Debug)]
pub struct Audit {
    component: Arc<str>,
    pid: u64,
}

impl Audit {
    /// An audit trail for process `pid`, running the component known to the
    /// operator as `component`.
    pub fn new(component: impl Into<Arc<str>>, pid: u64) -> Self {
        Audit {
            component: component.into(),
            pid,
        }
    }

    pub fn component(&self) -> &str {
        &self.component
    }

    pub fn pid(&self) -> u64 {
        self.pid
    }

    /// The operator granted a handle.
    pub fn granted(&self, name: &str, target: &str, detail: &str) {
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            grant = name, target_path = target, detail, "granted");
    }

    /// The component derived a new handle from one it holds.
    pub fn derived(&self, op: &str, from: &str, to: &str, rights: Rights) {
        tracing::debug!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            op, from, to, rights = %RightsList(rights), "derived");
    }

    /// The component dropped a handle.
    pub fn dropped(&self, handle: &str) {
        tracing::debug!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            handle, "dropped");
    }

    /// The component gave up standard WASI authority for good.
    pub fn pledged(&self, authority: &str) {
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            authority, "pledged");
    }

    /// The component revoked a handle it had made revocable.
    pub fn revoked(&self, revoker: u32) {
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            revoker, "revoked");
    }

    /// The component started a child process.
    pub fn spawned(&self, child: u64, component: &str, grants: &[String]) {
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            child, child_component = component, grants = ?grants, "spawned");
    }

    /// A child process of this component ended.
    pub fn exited(&self, child: u64, status: &str) {
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            child, status, "exited");
    }

    /// A call was refused or failed. Refusals for want of rights, for
    /// leaving the handle, for limits and revocation are warnings; ordinary
    /// failures (not found, …) are informational, since programs probe for
    /// files all the time.
    pub fn refused(&self, op: &str, handle: &str, path: &str, held: Rights, err: &Error) {
        match err {
            Error::Denied(_)
            | Error::Escape(_)
            | Error::LimitExceeded(_)
            | Error::Revoked
            | Error::Refused(_) => {
                tracing::warn!(target: "capbroker::audit", component = %self.component,
                    pid = self.pid, op, handle, path, rights = %RightsList(held),
                    error = err.code(), "refused: {}", Describe(err))
            }
            _ => tracing::info!(target: "capbroker::audit", component = %self.component,
                pid = self.pid, op, handle, path, error = err.code(), "failed: {}", Describe(err)),
        }
    }
}
