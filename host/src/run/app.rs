//! Loading and running components: the operator's `app` (root) and the
//! child components it may spawn.

use std::borrow::Cow;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::bail;
use wasmtime::component::{Component, Instance, InstancePre, Linker, ResourceTable};
use wasmtime::error::Context;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use wasmtime_wasi::p2::bindings::CommandPre;

use super::command::CommandComponent;
use super::components::Components;
use super::ctx::{self, BrokerCtx, BrokerCtxView, BrokerView};
use super::wit::{App, AppPre};
use crate::core::audit::{AuditLog, ExitRecord};
use crate::core::learn::Learner;
use crate::core::limits::{Limits, MemoryLimiter, REQUESTS_FUEL, REQUESTS_TIMEOUT};
use crate::core::view::WasiParts;
use crate::grants::{self, NamedGrant, Request};
use crate::wasi::{GuardedView, GuardedWasiView};

/// The store data of every capbroker component instance.
pub struct State {
    pub(crate) table: ResourceTable,
    wasi: WasiCtx,
    broker: BrokerCtx,
    limiter: MemoryLimiter,
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

/// What a store's instance consumed, and how it ended, for the audit log.
pub fn exit_record(
    store: &Store<State>,
    status: impl Into<Cow<'static, str>>,
    limit: Option<&'static str>,
) -> ExitRecord {
    let state = store.data();
    ExitRecord {
        status: status.into(),
        limit,
        fuel_used: state.fuel_start - store.get_fuel().unwrap_or(0),
        peak_memory: state.limiter.peak() as u64,
        wall_us: state.started.elapsed().as_micros() as u64,
    }
}

/// A store for one instance: no WASI authority but stdout and stderr,
/// bounded memory, handles and fuel, and a yield to tokio at every epoch.
pub fn new_store(engine: &Engine, broker: BrokerCtx, limits: &Limits) -> Store<State> {
    let wasi = WasiCtx::builder()
        .inherit_stdout()
        .inherit_stderr()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(crate::wasi::MAX_RANDOM)
        .build();
    new_store_with_wasi(engine, broker, wasi, limits)
}

/// A store as [`new_store`] makes, with the given WASI context.
pub fn new_store_with_wasi(
    engine: &Engine,
    broker: BrokerCtx,
    wasi: WasiCtx,
    limits: &Limits,
) -> Store<State> {
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.max_handles);
    LIVE_INSTANCES.fetch_add(1, Ordering::AcqRel);
    let fuel = limits.max_fuel.unwrap_or(u64::MAX);
    broker.core.memory.set_max(limits.max_memory);
    let limiter = MemoryLimiter::new(broker.core.memory.clone());
    let state = State {
        table,
        wasi,
        broker,
        limiter,
        fuel_start: fuel,
        started: Instant::now(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store
        .set_fuel(fuel)
        .expect("fuel is enabled on capbroker's engine");
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
    store
}

/// The engine and a linker with WASI and capbroker's interfaces.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    audit_log: Option<Arc<AuditLog>>,
}

impl Runtime {
    pub fn new() -> wasmtime::Result<Self> {
        let engine = crate::run::engine::new_engine()?;
        let mut linker = Linker::new(&engine);
        crate::wasi::add_to_linker(&mut linker)?;
        ctx::add_to_linker(&mut linker)?;
        Ok(Runtime {
            engine,
            linker,
            audit_log: None,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Writes the audit events of every component loaded from now on (and
    /// of their children) to `log`.
    pub fn set_audit_log(&mut self, log: Arc<AuditLog>) {
        self.audit_log = Some(log);
    }

    /// Reads, compiles and links the `app` component at `path`.
    pub fn load(&self, path: &Path) -> wasmtime::Result<AppComponent> {
        let bytes = read(path)?;
        self.load_bytes(&path.display().to_string(), &bytes)
    }

    /// Compiles and links an `app` component; `name` is how errors and the
    /// audit trail refer to it.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> wasmtime::Result<AppComponent> {
        let pre = self.link(name, bytes)?;
        let pre = AppPre::new(pre).with_context(|| {
            format!(
                "`{name}` does not implement capbroker's `app` world (capbroker:caps/app@0.1.0)"
            )
        })?;
        Ok(AppComponent {
            name: component_name(name),
            pre,
            audit_log: self.audit_log.clone(),
            learner: None,
        })
    }

    /// Reads, compiles and links a component of either kind.
    pub fn load_any(&self, path: &Path) -> wasmtime::Result<Loaded> {
        let name = path.display().to_string();
        let pre = self.link(&name, &read(path)?)?;
        if pre.component().get_export_index(None, "run").is_some() {
            let pre = AppPre::new(pre).with_context(|| {
                format!("`{name}` does not implement capbroker's `app` world (capbroker:caps/app@0.1.0)")
            })?;
            return Ok(Loaded::App(AppComponent {
                name: component_name(&name),
                pre,
                audit_log: self.audit_log.clone(),
                learner: None,
            }));
        }
        let pre = CommandPre::new(pre).with_context(|| {
            format!(
                "`{name}` is neither a capbroker app (it exports no `run` function) nor a \
                 WASI command (it does not export `wasi:cli/run`)"
            )
        })?;
        Ok(Loaded::Command(CommandComponent {
            name: component_name(&name),
            pre,
            audit_log: self.audit_log.clone(),
        }))
    }

    /// Reads, compiles and links a component to be spawned as a child.
    /// Its entry export is checked at each spawn, which names it.
    pub fn load_child(&self, path: &Path) -> wasmtime::Result<InstancePre<State>> {
        self.link(&path.display().to_string(), &read(path)?)
    }

    fn link(&self, name: &str, bytes: &[u8]) -> wasmtime::Result<InstancePre<State>> {
        check_header(name, bytes)?;
        let component = Component::from_binary(&self.engine, bytes).map_err(|e| {
            // The instance pool gives each core module one memory, which is
            // what lets a memory limit cover them all; say so plainly.
            if format!("{e:#}").contains("defined memories count") {
                e.context(format!(
                    "`{name}` has a core module with more than one memory: capbroker runs \
                     modules with one memory each"
                ))
            } else {
                e.context(format!("`{name}` is not a valid WebAssembly component"))
            }
        })?;
        self.linker
            .instantiate_pre(&component)
            .with_context(|| format!("`{name}` imports something capbroker does not provide"))
    }
}

fn read(path: &Path) -> wasmtime::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read component `{}`", path.display()))
}

/// The name a component file goes by: its file stem.
pub fn component_name(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// Tells a core module or a non-wasm file apart from a component, to say
/// which mistake was made.
fn check_header(name: &str, bytes: &[u8]) -> wasmtime::Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("`{name}` is not a WebAssembly file (it does not start with `\\0asm`)");
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!(
            "`{name}` is a core WebAssembly module, not a component: build it for \
             wasm32-wasip2, or wrap it with `wasm-tools component new`"
        );
    }
    Ok(())
}

/// A component `capbroker run` can run.
pub enum Loaded {
    /// A capbroker app: handles as arguments to `run`.
    App(AppComponent),
    /// A plain `wasi:cli` command: standard WASI from the operator's grants.
    Command(CommandComponent),
}

/// A compiled, linked `app` component, ready to be instantiated many times.
pub struct AppComponent {
    name: String,
    pre: AppPre<State>,
    audit_log: Option<Arc<AuditLog>>,
    learner: Option<Arc<Learner>>,
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `run` returned `ok`.
    Ok,
    /// `run` returned an error with this message.
    Failed(String),
    /// The component called `wasi:cli/exit` with this code.
    Exit(i32),
}

impl AppComponent {
    /// Records what instances started from now on (and their children)
    /// use, for `capbroker run --learn`.
    pub fn learn_with(&mut self, learner: Arc<Learner>) {
        self.learner = Some(learner);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The linked component, to register it as spawnable.
    pub fn instance_pre(&self) -> &InstancePre<State> {
        self.pre.instance_pre()
    }

    /// Instantiates the component in a store with `limits`. Instantiating
    /// runs guest code (start functions), so the timeout counts from here:
    /// the deadline it gives covers instantiation and `requests`.
    async fn instantiate(
        &self,
        limits: &Limits,
        components: Arc<Components>,
    ) -> wasmtime::Result<Started> {
        let deadline = limits.timeout.map(|t| (Instant::now() + t, t));
        let ctx = BrokerCtx::new(&self.name, components)
            .with_audit_log(self.audit_log.clone())
            .with_learner(self.learner.clone());
        let mut store = new_store(self.pre.engine(), ctx, limits);
        let instance = by(
            deadline,
            self.pre.instance_pre().instantiate_async(&mut store),
        )
        .await
        .unwrap_or_else(|t| Err(late("while instantiating", t)))
        .with_context(|| format!("cannot instantiate `{}`", self.name))?;
        let app = App::new(&mut store, &instance)?;
        Ok(Started {
            store,
            app,
            instance,
            deadline,
        })
    }

    /// The handles the component asks for, from its `requests` export.
    /// No operator's limit applies here (`capbroker inspect`, `--learn`), so
    /// the call gets [`REQUESTS_TIMEOUT`] and [`REQUESTS_FUEL`].
    pub async fn requests(&self) -> wasmtime::Result<Vec<Request>> {
        let limits = Limits {
            max_fuel: Some(REQUESTS_FUEL),
            timeout: Some(REQUESTS_TIMEOUT),
            ..Limits::default()
        };
        let mut s = self
            .instantiate(&limits, Arc::new(Components::new()))
            .await?;
        s.requests().await
    }

    /// Instantiates the component and hands it the operator's grants,
    /// fitted to its requests; its spawners can start `components`.
    /// Nothing runs yet but the `requests` export. Instantiation and
    /// `requests` run under `limits` as `run` does: within the fuel (one
    /// tank for all three) and, together, within the timeout.
    pub async fn start(
        &self,
        grants: &[NamedGrant],
        limits: &Limits,
        components: Arc<Components>,
    ) -> wasmtime::Result<Running> {
        let mut started = self.instantiate(limits, components).await?;
        let requests = started.requests().await?;
        let fitted = grants::fit(&requests, grants)?;
        let broker = &mut started.store.data_mut().broker;
        let names = broker.components.names();
        grants::open(&fitted, &broker.core, &names, &mut broker.kinds.grants)?;
        Ok(Running {
            store: started.store,
            app: started.app,
            instance: started.instance,
            ran: false,
            timeout: limits.timeout,
        })
    }
}

/// Waits for `call` until `deadline`, if there is one; else gives the
/// timeout back. A late call is dropped, which unwinds the guest: a busy
/// guest yields at every epoch tick, so the deadline holds.
pub(crate) async fn by<T>(
    deadline: Option<(Instant, Duration)>,
    call: impl Future<Output = T>,
) -> Result<T, Duration> {
    match deadline {
        Some((at, t)) => tokio::time::timeout_at(at.into(), call)
            .await
            .map_err(|_| t),
        None => Ok(call.await),
    }
}

/// The error for guest code that ran past `timeout` while `doing`.
pub(crate) fn late(doing: &str, timeout: Duration) -> wasmtime::Error {
    wasmtime::format_err!("the component ran past its timeout of {timeout:?} {doing}")
}

struct Started {
    store: Store<State>,
    app: App,
    instance: Instance,
    deadline: Option<(Instant, Duration)>,
}

impl Started {
    async fn requests(&mut self) -> wasmtime::Result<Vec<Request>> {
        let call = self.app.call_requests(&mut self.store);
        let result = match by(self.deadline, call).await {
            Ok(result) => result,
            Err(t) => {
                let record = exit_record(&self.store, "timed-out", Some("time"));
                self.store.data().audit().exited(&record);
                return Err(late("in its `requests` export", t));
            }
        };
        match Ended::of(result, &self.store) {
            Ended::Returned(requests) => Ok(requests),
            Ended::OutOfFuel(e) => Err(e.context(format!(
                "the component's `requests` export ran out of fuel ({} units)",
                self.store.data().fuel_start
            ))),
            Ended::OutOfMemory(e) => {
                Err(e.context("the component's `requests` export ran out of memory"))
            }
            Ended::Exit(code) => Err(wasmtime::format_err!(
                "the component exited with code {code} in its `requests` export"
            )),
            Ended::Trapped(e) => Err(e.context("the component's `requests` export failed")),
        }
    }
}

/// A started component holding its grants.
pub struct Running {
    store: Store<State>,
    app: App,
    instance: Instance,
    ran: bool,
    timeout: Option<Duration>,
}

impl Running {
    /// Calls `run` with `args` and the grants. A trap is an `Err` that says
    /// so; the host goes on.
    pub async fn run(&mut self, args: &[String]) -> wasmtime::Result<Outcome> {
        if std::mem::replace(&mut self.ran, true) {
            bail!("`run` was already called on this instance");
        }
        let call = self.app.call_run(&mut self.store, args);
        let result = match self.timeout {
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(r) => r,
                Err(_) => {
                    let record = exit_record(&self.store, "timed-out", Some("time"));
                    self.store.data().audit().exited(&record);
                    bail!("the component ran past its timeout of {t:?}")
                }
            },
            None => call.await,
        };
        let ended = Ended::of(result, &self.store);
        let status = ended.status(|r| if r.is_ok() { "finished" } else { "failed" });
        let record = exit_record(&self.store, status, ended.limit());
        self.store.data().audit().exited(&record);
        match ended {
            Ended::Returned(Ok(())) => Ok(Outcome::Ok),
            Ended::Returned(Err(msg)) => Ok(Outcome::Failed(msg)),
            Ended::Exit(0) => Ok(Outcome::Ok),
            Ended::Exit(code) => Ok(Outcome::Exit(code)),
            Ended::OutOfMemory(e) => Err(e.context("the component ran out of memory")),
            Ended::OutOfFuel(e) => Err(e.context("the component ran out of fuel")),
            Ended::Trapped(e) => Err(e.context("the component trapped")),
        }
    }

    pub fn store(&mut self) -> &mut Store<State> {
        &mut self.store
    }

    /// The instance, for calling exports beyond the `app` world.
    pub fn instance(&self) -> Instance {
        self.instance
    }
}

/// How a call of a component's entry point ended.
pub(crate) enum Ended<T> {
    Returned(T),
    /// It called `wasi:cli/exit`.
    Exit(i32),
    OutOfMemory(wasmtime::Error),
    OutOfFuel(wasmtime::Error),
    Trapped(wasmtime::Error),
}

impl<T> Ended<T> {
    pub(crate) fn of(result: wasmtime::Result<T>, store: &Store<State>) -> Ended<T> {
        match result {
            Ok(v) => Ended::Returned(v),
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => Ended::Exit(exit.0),
                None if store.data().memory_limit_hit() => Ended::OutOfMemory(e),
                None if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) => {
                    Ended::OutOfFuel(e)
                }
                None => Ended::Trapped(e),
            },
        }
    }

    /// The word for the audit log; `returned` names a return.
    pub(crate) fn status(&self, returned: impl Fn(&T) -> &'static str) -> Cow<'static, str> {
        match self {
            Ended::Returned(v) => returned(v).into(),
            Ended::Exit(0) => "finished".into(),
            Ended::Exit(code) => format!("exit {code}").into(),
            Ended::OutOfMemory(_) => "out-of-memory".into(),
            Ended::OutOfFuel(_) => "out-of-cpu".into(),
            Ended::Trapped(_) => "trapped".into(),
        }
    }

    /// The limit that ended it, if one did.
    pub(crate) fn limit(&self) -> Option<&'static str> {
        match self {
            Ended::OutOfMemory(_) => Some("memory"),
            Ended::OutOfFuel(_) => Some("cpu"),
            _ => None,
        }
    }
}
