//! The audit trail: every grant, attenuation, drop and denial, as `tracing`
//! events under the target `capbroker::audit`, each naming the component.

use std::sync::Arc;

use crate::types::{Describe, Error, Rights, RightsList};

/// Records what one component instance does with its handles.
#[derive(Clone, Debug)]
pub struct Audit {
    component: Arc<str>,
}

impl Audit {
    /// An audit trail for the component known to the operator as `component`.
    pub fn new(component: impl Into<Arc<str>>) -> Self {
        Audit {
            component: component.into(),
        }
    }

    pub fn component(&self) -> &str {
        &self.component
    }

    /// The operator granted a handle.
    pub fn granted(&self, name: &str, target: &str, rights: Rights) {
        tracing::info!(target: "capbroker::audit", component = %self.component, grant = name,
            target_path = target, rights = %RightsList(rights), "granted");
    }

    /// The component derived a new handle from one it holds.
    pub fn derived(&self, op: &str, from: &str, to: &str, rights: Rights) {
        tracing::debug!(target: "capbroker::audit", component = %self.component, op, from,
            to, rights = %RightsList(rights), "derived");
    }

    /// The component dropped a handle.
    pub fn dropped(&self, handle: &str) {
        tracing::debug!(target: "capbroker::audit", component = %self.component, handle,
            "dropped");
    }

    /// A call was refused or failed. Refusals for want of rights or for
    /// leaving the handle are warnings; ordinary failures (not found, …) are
    /// informational, since programs probe for files all the time.
    pub fn refused(&self, op: &str, handle: &str, path: &str, held: Rights, err: &Error) {
        match err {
            Error::Denied(_) | Error::Escape(_) | Error::LimitExceeded(_) => {
                tracing::warn!(target: "capbroker::audit", component = %self.component, op,
                    handle, path, rights = %RightsList(held), error = err.code(), "refused: {}", Describe(err))
            }
            _ => tracing::info!(target: "capbroker::audit", component = %self.component, op,
                handle, path, error = err.code(), "failed: {}", Describe(err)),
        }
    }
}
