//! Per-store broker state, and how capbroker's interfaces reach it.
//!
//! This is the shape every capability kind shares (the same one
//! wasmtime-wasi uses): the embedder keeps a [`BrokerCtx`] and a
//! [`ResourceTable`] in its store data and implements [`BrokerView`];
//! [`add_to_linker`] then wires every capbroker interface to them, each
//! kind's host functions seeing only its own context and the [`Core`].
//! Handles of all kinds, and WASI's own resources, live in that one table,
//! so one bound covers them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};

use super::components::Components;
use crate::core::audit::{Audit, AuditLog};
use crate::core::learn::Learner;
use crate::core::limits::Account;
use crate::core::pledges::{Authority, Pledges};
use crate::core::{Core, Error, Rights, View};
use crate::fs::FsCtx;
use crate::grants::{GrantsCtx, HandleValue};
use crate::net::NetCtx;
use crate::pledge::{PledgeCtx, Pledgeable};
use crate::spawn::mailbox::End;
use crate::spawn::SpawnCtx;
use crate::wasi::{EnvCtx, WasiState};

/// What capbroker keeps for one component instance, besides its handles:
/// the core state every kind consults, and each kind's own context.
pub struct BrokerCtx {
    pub(crate) core: Core,
    pub(crate) kinds: Kinds,
    /// What spawners granted to this instance can start.
    pub(crate) components: Arc<Components>,
}

/// Each kind's own per-store context.
#[derive(Default)]
pub struct Kinds {
    pub fs: FsCtx,
    pub net: NetCtx,
    pub spawn: SpawnCtx,
    pub grants: GrantsCtx,
    pub env: EnvCtx,
}

/// Process ids, unique in this host process.
static NEXT_PID: AtomicU64 = AtomicU64::new(1);

impl BrokerCtx {
    /// State for a root instance of the component known to the operator as
    /// `component`, which can spawn the `components` its spawners allow.
    pub fn new(component: &str, components: Arc<Components>) -> Self {
        BrokerCtx {
            core: Core {
                audit: Audit::new(component, NEXT_PID.fetch_add(1, Ordering::Relaxed)),
                pledges: Pledges::default(),
                memory: Account::default(),
                learner: None,
            },
            kinds: Kinds::default(),
            components,
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
            core: Core {
                audit: parent
                    .core
                    .audit
                    .child(component, NEXT_PID.fetch_add(1, Ordering::Relaxed)),
                pledges: Pledges::default(),
                memory: mailbox.child_memory(),
                learner: parent.core.learner.clone(),
            },
            kinds: Kinds {
                spawn: SpawnCtx {
                    mailbox: Some(mailbox),
                },
                grants: GrantsCtx { pending: grants },
                ..Kinds::default()
            },
            components: parent.components.clone(),
        }
    }

    /// Records what this instance and its children use, for `capbroker
    /// run --learn`.
    pub fn with_learner(mut self, learner: Option<Arc<Learner>>) -> Self {
        self.core.learner = learner;
        self
    }

    /// Also writes this instance's audit events to `log`.
    pub fn with_audit_log(mut self, log: Option<Arc<AuditLog>>) -> Self {
        self.core.audit = self.core.audit.with_log(log);
        self
    }

    /// Gives the instance the operator's standard WASI grants; `pledges`
    /// must be the ones its `WasiCtx` was built with.
    pub fn with_wasi(mut self, wasi: WasiState, pledges: Pledges) -> Self {
        self.kinds.fs = wasi.fs;
        self.kinds.net = wasi.tcp;
        self.kinds.env = wasi.env;
        self.core.pledges = pledges;
        self
    }

    /// Hands the guest a handle the embedder made itself, under `name`:
    /// the guest takes it with `grants.granted`.
    pub fn grant(&mut self, name: impl Into<String>, handle: HandleValue) {
        self.kinds.grants.pending.push((name.into(), handle));
    }

    pub fn audit(&self) -> &Audit {
        &self.core.audit
    }
}

impl Pledgeable for Kinds {
    fn renounce(&mut self, authority: Authority) {
        if authority.contains(Authority::FILESYSTEM) {
            self.fs.renounce();
        }
        if authority.contains(Authority::NETWORK) {
            self.net.renounce();
        }
        if authority.contains(Authority::ENVIRONMENT) {
            self.env.clear();
        }
    }

    fn unveil(
        &mut self,
        table: &mut ResourceTable,
        _core: &Core,
        preopen: &str,
        sub_path: &str,
        rights: Rights,
    ) -> Result<(), Error> {
        self.fs.unveil(table, preopen, sub_path, rights)
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

impl<'a> BrokerCtxView<'a> {
    /// The view of one kind's context `K`.
    fn view<K: ?Sized>(self, kind: impl FnOnce(&'a mut Kinds) -> &'a mut K) -> View<'a, K> {
        View {
            table: self.table,
            core: &self.ctx.core,
            kind: kind(&mut self.ctx.kinds),
        }
    }

    fn fs(self) -> View<'a, FsCtx> {
        self.view(|k| &mut k.fs)
    }

    fn net(self) -> View<'a, NetCtx> {
        self.view(|k| &mut k.net)
    }

    fn spawn(self) -> View<'a, SpawnCtx> {
        self.view(|k| &mut k.spawn)
    }

    fn grants(self) -> View<'a, GrantsCtx> {
        self.view(|k| &mut k.grants)
    }

    fn pledge(self) -> View<'a, PledgeCtx> {
        self.view(|k| k as &mut PledgeCtx)
    }
}

/// The process runner's own interface, `process`, sees the whole state.
pub(crate) struct Broker;

impl HasData for Broker {
    type Data<'a> = BrokerCtxView<'a>;
}

/// Adds every capbroker interface to `linker`: each room's, then the
/// process runner's.
pub fn add_to_linker<T: BrokerView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use crate::core::view::HasView;
    use crate::core::wit::capbroker::caps::types;
    types::add_to_linker::<T, HasView<GrantsCtx>>(linker, |t| t.broker().grants())?;
    crate::fs::add_to_linker(linker, |t| t.broker().fs())?;
    crate::net::add_to_linker(linker, |t| t.broker().net())?;
    crate::spawn::add_to_linker(linker, |t| t.broker().spawn())?;
    crate::grants::add_to_linker(linker, |t| t.broker().grants())?;
    crate::pledge::add_to_linker(linker, |t| t.broker().pledge())?;
    super::wit::process::add_to_linker::<T, Broker>(linker, T::broker)?;
    Ok(())
}

impl crate::core::wit::capbroker::caps::types::Host for BrokerCtxView<'_> {
    fn convert_error(&mut self, err: crate::core::HostError) -> wasmtime::Result<Error> {
        match err {
            crate::core::HostError::Guest(e) => Ok(e),
            crate::core::HostError::Trap(t) => Err(t),
        }
    }
}

impl crate::core::wit::capbroker::caps::types::HostRevoker for BrokerCtxView<'_> {
    fn revoke(
        &mut self,
        revoker: wasmtime::component::Resource<crate::core::lineage::RevokerHandle>,
    ) -> wasmtime::Result<()> {
        self.ctx.core.audit.revoked(revoker.rep());
        self.table.get(&revoker)?.revoke();
        Ok(())
    }

    fn drop(
        &mut self,
        revoker: wasmtime::component::Resource<crate::core::lineage::RevokerHandle>,
    ) -> wasmtime::Result<()> {
        self.table.delete(revoker)?;
        Ok(())
    }
}
