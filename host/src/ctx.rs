//! Per-store broker state and the view host functions work through.
//!
//! This is the shape every capability kind shares (the same one wasmtime-wasi
//! uses): the embedder keeps a [`BrokerCtx`] and a [`ResourceTable`] in its
//! store data and implements [`BrokerView`]; [`add_to_linker`] then wires
//! every capbroker interface to them. Handles of all kinds, and WASI's own
//! resources, live in that one table, so one bound covers them all.

use wasmtime::component::{HasData, Linker, ResourceTable};

use crate::audit::Audit;
use crate::bindings::capbroker::caps as wit;

/// What capbroker keeps for one component instance, besides its handles.
pub struct BrokerCtx {
    pub(crate) audit: Audit,
}

impl BrokerCtx {
    /// State for the component known to the operator as `component`.
    pub fn new(component: &str) -> Self {
        BrokerCtx {
            audit: Audit::new(component),
        }
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }
}

/// Borrowed access to the broker state and the handle table of one store.
pub struct BrokerCtxView<'a> {
    pub ctx: &'a mut BrokerCtx,
    pub table: &'a mut ResourceTable,
}

/// Implemented by an embedder's store data to give capbroker its state.
pub trait BrokerView: Send {
    fn broker(&mut self) -> BrokerCtxView<'_>;
}

struct Broker;

impl HasData for Broker {
    type Data<'a> = BrokerCtxView<'a>;
}

/// Adds every capbroker interface to `linker`.
pub fn add_to_linker<T: BrokerView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wit::types::add_to_linker::<T, Broker>(linker, T::broker)?;
    wit::fs::add_to_linker::<T, Broker>(linker, T::broker)?;
    wit::grants::add_to_linker::<T, Broker>(linker, T::broker)?;
    Ok(())
}
