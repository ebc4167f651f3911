//! The per-store state every capability kind's host code works through.
//!
//! The shape is wasmtime-wasi's: each kind keeps its own context, and its
//! host functions are implemented on a [`View`] that borrows that context,
//! the store's one [`ResourceTable`] and the [`Core`] state every kind
//! consults (the audit trail, the pledges, the memory account, the
//! learner). A kind sees no other kind's state.

use std::sync::Arc;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::audit::Audit;
use super::error::HostError;
use super::learn::Learner;
use super::limits::Account;
use super::lineage::RevokerHandle;
use super::pledges::Pledges;
use super::wit::capbroker::caps::types::{self, HostRevoker};
use super::Error;

/// What every kind consults: one instance's audit trail, what it has
/// pledged away, its memory account and, in learning mode, the recorder.
pub struct Core {
    pub audit: Audit,
    pub pledges: Pledges,
    /// Its memory: linear memory and the messages it sent, not yet read.
    pub memory: Account,
    /// `capbroker run --learn`'s recorder, handed to every handle granted
    /// here and to every child.
    pub learner: Option<Arc<Learner>>,
}

/// Borrowed access to one kind's context `K`, the handle table and the
/// core state of one store.
pub struct View<'a, K: ?Sized> {
    pub table: &'a mut ResourceTable,
    pub core: &'a Core,
    pub kind: &'a mut K,
}

/// The [`HasData`] of a kind whose context is `K`, for `add_to_linker`.
pub struct HasView<K: ?Sized>(std::marker::PhantomData<K>);

impl<K: ?Sized + Send + 'static> HasData for HasView<K> {
    type Data<'a> = View<'a, K>;
}

impl<K: ?Sized + Send> types::Host for View<'_, K> {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<Error> {
        match err {
            HostError::Guest(e) => Ok(e),
            HostError::Trap(t) => Err(t),
        }
    }
}

impl<K: ?Sized + Send> HostRevoker for View<'_, K> {
    fn revoke(&mut self, revoker: Resource<RevokerHandle>) -> wasmtime::Result<()> {
        self.table.get(&revoker)?.revoke();
        self.core.audit.revoked(revoker.rep());
        Ok(())
    }

    fn drop(&mut self, revoker: Resource<RevokerHandle>) -> wasmtime::Result<()> {
        self.table.delete(revoker)?;
        Ok(())
    }
}

/// The WASI context and the table, as wasmtime-wasi's own host code wants
/// them: what each kind's WASI face hands its calls on to.
pub struct WasiParts<'a> {
    pub ctx: &'a mut WasiCtx,
    pub table: &'a mut ResourceTable,
}

impl WasiView for WasiParts<'_> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.ctx,
            table: self.table,
        }
    }
}

/// What a kind's WASI face works through: wasmtime-wasi's parts, the core
/// state, and the kind's own context `K`.
pub struct WasiFace<'a, K: ?Sized> {
    pub wasi: WasiParts<'a>,
    pub core: &'a Core,
    pub kind: &'a mut K,
}

/// The [`HasData`] of a WASI face whose kind's context is `K`.
pub struct HasWasiFace<K: ?Sized>(std::marker::PhantomData<K>);

impl<K: ?Sized + Send + 'static> HasData for HasWasiFace<K> {
    type Data<'a> = WasiFace<'a, K>;
}
