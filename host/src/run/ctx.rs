//! Per-store state: capbroker's ([`BrokerCtx`]), and the data of every
//! store the broker runs ([`State`]), with the [`Components`] its
//! spawners can start.
//!
//! This is the shape every capability kind shares (the same one
//! wasmtime-wasi uses): the embedder keeps a [`BrokerCtx`] and a
//! [`ResourceTable`] in its store data and implements [`BrokerView`];
//! [`add_to_linker`] then wires every capbroker interface to them, each
//! kind's host functions seeing only its own context and the [`Core`].
//! Handles of all kinds, and WASI's own resources, live in that one table,
//! so one bound covers them all.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use wasmtime::bail;
use wasmtime::component::{InstancePre, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::core::audit::{Audit, AuditLog};
use crate::core::learn::Learner;
use crate::core::limits::Account;
use crate::core::limits::{Limits, MemoryLimiter};
use crate::core::lineage::RevokerHandle;
use crate::core::pledges::{Authority, Pledges};
use crate::core::view::WasiParts;
use crate::core::wit::capbroker::caps::types;
use crate::core::HostError;
use crate::core::{Core, Error, Rights, View};
use crate::fs::FsCtx;
use crate::grants::{GrantsCtx, HandleValue};
use crate::net::http::Outgoing;
use crate::net::{Lookup, NetCtx};
use crate::pledge::{PledgeCtx, Pledgeable};
use crate::spawn::mailbox::End;
use crate::spawn::SpawnCtx;
use crate::wasi::{EnvCtx, WasiState};
use crate::wasi::{GuardedView, GuardedWasiView};

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
    /// What `wasi:sockets/ip-name-lookup` answers.
    pub lookup: Lookup,
    /// `wasi:http`'s state, made when a component first uses it (most
    /// never do: a child process should not pay for it).
    pub http: Option<Box<HttpState>>,
}

/// `wasi:http`'s state for one instance: outgoing requests go through
/// capbroker's connector, within the instance's connect grants.
#[derive(Default)]
pub struct HttpState {
    pub ctx: WasiHttpCtx,
    pub hooks: Outgoing,
}

/// How much the host holds for one `wasi:http` resource of an instance:
/// each `fields` at most its share of half the memory budget, each body's
/// buffer at most its share of a quarter (two pieces in flight), with the
/// handle table bounding how many there are. So their sum stays within the
/// memory budget, or 16 KiB a handle if that is more.
#[derive(Clone, Copy)]
struct HttpBound {
    fields: usize,
    chunk: usize,
}

impl HttpBound {
    fn of(limits: &Limits) -> HttpBound {
        let handles = limits.max_handles.max(1);
        HttpBound {
            fields: (limits.max_memory / (2 * handles)).clamp(8 << 10, 128 << 10),
            chunk: (limits.max_memory / (4 * handles)).clamp(4 << 10, 1 << 20),
        }
    }
}

impl HttpState {
    fn bound(&mut self, b: HttpBound) {
        self.ctx.set_field_size_limit(b.fields);
        self.hooks.chunk = b.chunk;
    }
}

/// Process ids, unique in this host process.
static NEXT_PID: AtomicU64 = AtomicU64::new(1);

/// A new process id.
pub fn next_pid() -> u64 {
    NEXT_PID.fetch_add(1, Ordering::Relaxed)
}

impl BrokerCtx {
    /// State for a root instance of the component known to the operator as
    /// `component`, which can spawn the `components` its spawners allow.
    pub fn new(component: &str, components: Arc<Components>) -> Self {
        let audit = Audit::new(component, NEXT_PID.fetch_add(1, Ordering::Relaxed));
        BrokerCtx::with_trail(audit, components)
    }

    /// State for a root instance whose events go to `audit` (a request's,
    /// under `serve`, is a child of the server's).
    pub fn with_trail(audit: Audit, components: Arc<Components>) -> Self {
        BrokerCtx {
            core: Core {
                audit,
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
        self.kinds.net = wasi.sockets;
        self.kinds.env = wasi.env;
        self.kinds.lookup = wasi.lookup;
        self.kinds.http = Some(Box::new(HttpState {
            ctx: WasiHttpCtx::new(),
            hooks: wasi.http,
        }));
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

    pub(crate) fn fs(self) -> View<'a, FsCtx> {
        self.view(|k| &mut k.fs)
    }

    pub(crate) fn net(self) -> View<'a, NetCtx> {
        self.view(|k| &mut k.net)
    }

    pub(crate) fn spawn(self) -> View<'a, SpawnCtx> {
        self.view(|k| &mut k.spawn)
    }

    pub(crate) fn grants(self) -> View<'a, GrantsCtx> {
        self.view(|k| &mut k.grants)
    }

    pub(crate) fn pledge(self) -> View<'a, PledgeCtx> {
        self.view(|k| k as &mut PledgeCtx)
    }
}

// The process runner's `process` interface works on the whole state, and
// its errors and revokers are the core's: handled by a kind's view.
impl BrokerCtxView<'_> {
    fn reborrow(&mut self) -> View<'_, GrantsCtx> {
        BrokerCtxView {
            ctx: &mut *self.ctx,
            table: &mut *self.table,
        }
        .grants()
    }
}

impl types::Host for BrokerCtxView<'_> {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<Error> {
        types::Host::convert_error(&mut self.reborrow(), err)
    }
}

impl types::HostRevoker for BrokerCtxView<'_> {
    fn revoke(&mut self, revoker: Resource<RevokerHandle>) -> wasmtime::Result<()> {
        types::HostRevoker::revoke(&mut self.reborrow(), revoker)
    }

    fn drop(&mut self, revoker: Resource<RevokerHandle>) -> wasmtime::Result<()> {
        types::HostRevoker::drop(&mut self.reborrow(), revoker)
    }
}

/// The store data of every capbroker component instance.
pub struct State {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    broker: BrokerCtx,
    limiter: MemoryLimiter,
    /// What the host may hold for each `wasi:http` resource.
    http_bound: HttpBound,
    /// The fuel the store started with, and when, for the exit record.
    fuel_start: u64,
    started: Instant,
}

/// Instances whose store is alive, across the host process.
static LIVE_INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// How many component instances (roots and child processes) hold a store
/// right now: a child's is freed as soon as it ends.
pub fn live_instances() -> usize {
    LIVE_INSTANCES.load(Ordering::Acquire)
}

impl Drop for State {
    fn drop(&mut self) {
        LIVE_INSTANCES.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // Without a grant's connector, the default one refuses everything.
        let bound = self.http_bound;
        let http = self.broker.kinds.http.get_or_insert_with(|| {
            let mut h = Box::<HttpState>::default();
            h.bound(bound);
            h
        });
        WasiHttpCtxView {
            ctx: &mut http.ctx,
            hooks: &mut http.hooks,
            table: &mut self.table,
        }
    }
}

impl GuardedWasiView for State {
    fn guarded(&mut self) -> GuardedView<'_> {
        GuardedView {
            wasi: WasiParts {
                ctx: &mut self.wasi,
                table: &mut self.table,
            },
            core: &self.broker.core,
            fs: &mut self.broker.kinds.fs,
            net: &mut self.broker.kinds.net,
            env: &mut self.broker.kinds.env,
            lookup: &mut self.broker.kinds.lookup,
        }
    }
}

impl BrokerView for State {
    fn broker(&mut self) -> BrokerCtxView<'_> {
        BrokerCtxView {
            ctx: &mut self.broker,
            table: &mut self.table,
        }
    }
}

impl State {
    /// The data of a new store: `broker`'s state, `wasi`'s context, a
    /// table of at most `limits.max_handles`, memory within
    /// `limits.max_memory`, and `fuel` to start with.
    pub(crate) fn new(broker: BrokerCtx, wasi: WasiCtx, limits: &Limits, fuel: u64) -> State {
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.max_handles);
        LIVE_INSTANCES.fetch_add(1, Ordering::AcqRel);
        broker.core.memory.set_max(limits.max_memory);
        let limiter = MemoryLimiter::new(broker.core.memory.clone());
        let mut broker = broker;
        let http_bound = HttpBound::of(limits);
        if let Some(http) = broker.kinds.http.as_mut() {
            http.bound(http_bound);
        }
        State {
            table,
            wasi,
            broker,
            limiter,
            http_bound,
            fuel_start: fuel,
            started: Instant::now(),
        }
    }

    /// The names of the handles granted to the instance, not taken yet.
    pub(crate) fn pending_names(&self) -> Vec<&str> {
        let pending = &self.broker.kinds.grants.pending;
        pending.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub(crate) fn broker_mut(&mut self) -> &mut BrokerCtx {
        &mut self.broker
    }

    pub(crate) fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }

    pub(crate) fn fuel_start(&self) -> u64 {
        self.fuel_start
    }

    pub(crate) fn peak_memory(&self) -> usize {
        self.limiter.peak()
    }

    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// The instance's memory account.
    pub(crate) fn memory(&self) -> &crate::core::limits::Account {
        &self.broker.core.memory
    }

    /// How many entries the handle table holds now.
    pub fn live_handles(&mut self) -> usize {
        self.table.iter_mut().count()
    }

    /// Whether the instance tried to grow memory past its limit.
    pub fn memory_limit_hit(&self) -> bool {
        self.limiter.hit()
    }

    pub fn pid(&self) -> u64 {
        self.broker.core.audit.pid()
    }

    pub fn audit(&self) -> &crate::core::audit::Audit {
        &self.broker.core.audit
    }
}

/// The components a broker can start as child processes, by name.
///
/// Names are shared with the audit trails of the processes that run them,
/// so that a spawn does not copy its child's name.
#[derive(Default)]
pub struct Components(BTreeMap<Arc<str>, InstancePre<State>>);

impl Components {
    pub fn new() -> Self {
        Components::default()
    }

    /// Adds a compiled, linked component under `name`.
    pub fn insert(&mut self, name: &str, pre: InstancePre<State>) -> wasmtime::Result<()> {
        if name == "self" {
            bail!("`self` is reserved: it names the component that spawns");
        }
        if self.0.insert(name.into(), pre).is_some() {
            bail!("two components are named `{name}`");
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&InstancePre<State>> {
        self.0.get(name)
    }

    /// The component named `name`, and the name as the map shares it.
    pub fn entry(&self, name: &str) -> Option<(&Arc<str>, &InstancePre<State>)> {
        self.0.get_key_value(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.0.keys().map(|n| n.to_string()).collect()
    }
}
