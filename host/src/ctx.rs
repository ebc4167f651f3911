//! Per-store broker state and the view host functions work through.
//!
//! This is the shape every capability kind shares (the same one wasmtime-wasi
//! uses): the embedder keeps a [`BrokerCtx`] and a [`ResourceTable`] in its
//! store data and implements [`BrokerView`]; [`add_to_linker`] then wires
//! every capbroker interface to them. Handles of all kinds, and WASI's own
//! resources, live in that one table, so one bound covers them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};

use crate::audit::{Audit, AuditLog};
use crate::bindings::capbroker::caps as wit;
use crate::grants::HandleValue;
use crate::learn::Learner;
use crate::limits::Account;
use crate::mailbox::End;
use crate::pledge::Pledges;
use crate::spawn::Components;
use crate::wasi::WasiState;

/// What capbroker keeps for one component instance, besides its handles.
pub struct BrokerCtx {
    pub(crate) audit: Audit,
    /// What spawners granted to this instance can start.
    pub(crate) components: Arc<Components>,
    /// The queues to this instance's parent, if it is a child process.
    pub(crate) mailbox: Option<End>,
    /// Its memory: linear memory and the messages it sent, not yet read.
    pub(crate) memory: Account,
    /// What the instance has given up with `pledge`.
    pub(crate) pledges: Pledges,
    /// The guards in front of standard WASI.
    pub(crate) wasi: WasiState,
    /// Granted handles the guest has not yet taken with `grants.granted`.
    pub(crate) pending: Vec<(String, HandleValue)>,
    /// `capbroker learn`'s recorder, handed to every handle granted here and
    /// to every child.
    pub(crate) learner: Option<Arc<Learner>>,
}

/// Process ids, unique in this host process.
static NEXT_PID: AtomicU64 = AtomicU64::new(1);

impl BrokerCtx {
    /// State for a root instance of the component known to the operator as
    /// `component`, which can spawn the `components` its spawners allow.
    pub fn new(component: &str, components: Arc<Components>) -> Self {
        BrokerCtx {
            audit: Audit::new(component, NEXT_PID.fetch_add(1, Ordering::Relaxed)),
            components,
            mailbox: None,
            memory: Account::default(),
            pledges: Pledges::default(),
            wasi: WasiState::default(),
            pending: Vec::new(),
            learner: None,
        }
    }

    /// State for a child process of the process `parent` audits.
    /// It can spawn what its parent can, is learned from if the parent is,
    /// and takes `grants` with `grants.granted`.
    pub(crate) fn child(
        parent: &BrokerCtx,
        component: Arc<str>,
        mailbox: End,
        grants: Vec<(String, HandleValue)>,
    ) -> Self {
        BrokerCtx {
            audit: parent
                .audit
                .child(component, NEXT_PID.fetch_add(1, Ordering::Relaxed)),
            components: parent.components.clone(),
            memory: mailbox.child_memory(),
            mailbox: Some(mailbox),
            pledges: Pledges::default(),
            wasi: WasiState::default(),
            pending: grants,
            learner: parent.learner.clone(),
        }
    }

    /// Records what this instance and its children use, for `capbroker learn`.
    pub fn with_learner(mut self, learner: Option<Arc<Learner>>) -> Self {
        self.learner = learner;
        self
    }

    /// Also writes this instance's audit events to `log`.
    pub fn with_audit_log(mut self, log: Option<Arc<AuditLog>>) -> Self {
        self.audit = self.audit.with_log(log);
        self
    }

    /// Gives the instance the operator's standard WASI grants; `pledges`
    /// must be the ones its `WasiCtx` was built with.
    pub fn with_wasi(mut self, wasi: WasiState, pledges: Pledges) -> Self {
        self.wasi = wasi;
        self.pledges = pledges;
        self
    }

    /// Hands the guest a handle the embedder made itself, under `name`:
    /// the guest takes it with `grants.granted`.
    pub fn grant(&mut self, name: impl Into<String>, handle: HandleValue) {
        self.pending.push((name.into(), handle));
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
    wit::net::add_to_linker::<T, Broker>(linker, T::broker)?;
    wit::spawn::add_to_linker::<T, Broker>(linker, T::broker)?;
    wit::grants::add_to_linker::<T, Broker>(linker, T::broker)?;
    wit::process::add_to_linker::<T, Broker>(linker, T::broker)?;
    wit::mailbox::add_to_linker::<T, Broker>(linker, T::broker)?;
    wit::pledge::add_to_linker::<T, Broker>(linker, T::broker)?;
    wit::wasi_fs::add_to_linker::<T, Broker>(linker, T::broker)?;
    Ok(())
}
