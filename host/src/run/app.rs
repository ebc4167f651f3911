//! Loading and running components: the operator's `app` (root) and the
//! child components it may spawn.

use std::path::Path;
use std::pin::pin;
use std::sync::Arc;

use wasmtime::bail;
use wasmtime::component::{Component, Instance, InstancePre, Linker};
use wasmtime::error::Context;
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::CommandPre;

use super::cache::Cache;
use super::command::CommandComponent;
use super::ctx::{BrokerCtx, Components, State};
use super::engine::Pool;
use super::runner::{late, new_store, record_exit, supervise, Deadline, Ended};
use super::wit::{App, AppPre};
use crate::core::audit::AuditLog;
use crate::core::learn::Learner;
use crate::core::limits::{Limits, REQUESTS_FUEL, REQUESTS_TIMEOUT};
use crate::grants::{self, NamedGrant, Request};

/// The engine and a linker with WASI and capbroker's interfaces.
pub struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    audit_log: Option<Arc<AuditLog>>,
    cache: Option<Cache>,
}

impl Runtime {
    /// A runtime whose instance pool holds [`Pool::default`]: 1,000
    /// instances of up to 4 GiB each.
    pub fn new() -> wasmtime::Result<Self> {
        Self::with_pool(&Pool::default())
    }

    /// A runtime whose instance pool is sized for `pool`, as
    /// [`Pool::for_budgets`] makes it from the operator's grants: a spawn
    /// beyond it fails. One runtime (one engine) a process is enough: every
    /// component loaded in it shares the pool.
    pub fn with_pool(pool: &Pool) -> wasmtime::Result<Self> {
        Self::with_engine(crate::run::engine::new_engine(pool)?)
    }

    /// A runtime for one short instance after another in the same slots,
    /// as `serve` runs them: a slot keeps the pages its last instance
    /// dirtied (see [`crate::run::engine::Reset::DirtyPages`]).
    pub fn for_requests(pool: &Pool) -> wasmtime::Result<Self> {
        use crate::run::engine::{new_engine_with, Reset};
        Self::with_engine(new_engine_with(pool, Reset::DirtyPages)?)
    }

    fn with_engine(engine: Engine) -> wasmtime::Result<Self> {
        let mut linker = Linker::new(&engine);
        crate::wasi::add_to_linker(&mut linker)?;
        // Outgoing requests go through capbroker's connector, within the
        // instance's connect grants (none: every request is refused).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        super::link::add_to_linker(&mut linker)?;
        Ok(Runtime {
            engine,
            linker,
            audit_log: None,
            cache: None,
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

    /// Keeps the components compiled from now on in the user's cache
    /// folder and loads them from it (see [`crate::run::cache`]). A cache
    /// that cannot be used is a warning, and components are compiled as
    /// without it.
    pub fn use_default_cache(&mut self) {
        self.cache = Cache::open_default(&self.engine);
    }

    /// Keeps compiled components in `cache`, made for this runtime's
    /// engine ([`Runtime::engine`]).
    pub fn set_cache(&mut self, cache: Cache) {
        self.cache = Some(cache);
    }

    /// Reads, compiles and links the `app` component at `path`.
    pub fn load(&self, path: &Path) -> wasmtime::Result<AppComponent> {
        let name = path.display().to_string();
        let pre = self.link(&name, &read(path)?, Artifacts::Accepted)?;
        self.app(&name, pre)
    }

    /// Compiles and links an `app` component; `name` is how errors and the
    /// audit trail refer to it. `bytes` must be WebAssembly: a compiled
    /// artifact is machine code, taken only from a file the operator names
    /// ([`Runtime::load`]).
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> wasmtime::Result<AppComponent> {
        let pre = self.link(name, bytes, Artifacts::Refused)?;
        self.app(name, pre)
    }

    fn app(&self, name: &str, pre: InstancePre<State>) -> wasmtime::Result<AppComponent> {
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

    /// Reads, compiles and links the `wasi:http/proxy` component at
    /// `path`, for `capbroker serve`.
    pub fn load_proxy(
        &self,
        path: &Path,
    ) -> wasmtime::Result<wasmtime_wasi_http::p2::bindings::ProxyPre<State>> {
        let name = path.display().to_string();
        let pre = self.link(&name, &read(path)?, Artifacts::Accepted)?;
        wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).with_context(|| {
            format!(
                "`{name}` is not a wasi:http proxy component (it does not export \
                 wasi:http/incoming-handler@0.2)"
            )
        })
    }

    /// Reads, compiles and links a component of either kind.
    pub fn load_any(&self, path: &Path) -> wasmtime::Result<Loaded> {
        let name = path.display().to_string();
        let pre = self.link(&name, &read(path)?, Artifacts::Accepted)?;
        if pre.component().get_export_index(None, "run").is_some() {
            return Ok(Loaded::App(self.app(&name, pre)?));
        }
        if wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre.clone()).is_ok() {
            return Ok(Loaded::Proxy(name));
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
            learner: None,
        }))
    }

    /// Reads, compiles and links a component to be spawned as a child.
    /// Its entry export is checked at each spawn, which names it.
    pub fn load_child(&self, path: &Path) -> wasmtime::Result<InstancePre<State>> {
        self.link(
            &path.display().to_string(),
            &read(path)?,
            Artifacts::Accepted,
        )
    }

    /// The ahead-of-time artifact of the component at `path`, for this
    /// runtime's engine (`capbroker compile`), sealed
    /// ([`super::compiled::seal`]): checked as a run would check it, so a
    /// component that could never run here is refused now.
    pub fn compile_artifact(&self, path: &Path) -> wasmtime::Result<Vec<u8>> {
        let name = path.display().to_string();
        let bytes = read(path)?;
        if super::compiled::is_artifact(&bytes) {
            bail!("`{name}` is compiled already: compile the `.wasm` it was made from");
        }
        let pre = self.link(&name, &bytes, Artifacts::Refused)?;
        let runnable = pre.component().get_export_index(None, "run").is_some()
            || wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre.clone()).is_ok()
            || CommandPre::new(pre.clone()).is_ok();
        if !runnable {
            bail!(
                "`{name}` is neither a capbroker app (it exports no `run` function), a \
                 wasi:http proxy, nor a WASI command (it does not export `wasi:cli/run`): \
                 capbroker could not run it"
            );
        }
        let artifact = pre
            .component()
            .serialize()
            .with_context(|| format!("cannot serialize the compiled `{name}`"))?;
        Ok(super::compiled::seal(artifact))
    }

    fn link(
        &self,
        name: &str,
        bytes: &[u8],
        artifacts: Artifacts,
    ) -> wasmtime::Result<InstancePre<State>> {
        if super::compiled::is_artifact(bytes) {
            if artifacts == Artifacts::Refused {
                bail!(
                    "`{name}` is a compiled artifact: machine code is taken only from a file \
                     the operator names, never as bytes"
                );
            }
            super::compiled::check_named(name)?;
            let component = super::compiled::load(&self.engine, name, bytes)?;
            return self.instantiate_pre(name, &component);
        }
        check_header(name, bytes)?;
        let compile = || {
            // A WASI preview 1 program runs as `wasmtime run` runs it, as
            // the component its adapter makes of it. Adapted only to be
            // compiled: the cache knows it by its own bytes (the adapter is
            // capbroker's, whose version is in every entry's name).
            let adapted;
            let bytes = if crate::wasi::p1::is_core_module(bytes) {
                adapted = crate::wasi::p1::componentize(name, bytes)?;
                &adapted[..]
            } else {
                bytes
            };
            Component::from_binary(&self.engine, bytes).map_err(|e| {
                // The instance pool gives each core module one memory, which
                // is what lets a memory limit cover them all; say so plainly.
                if format!("{e:#}").contains("defined memories count") {
                    e.context(format!(
                        "`{name}` has a core module with more than one memory: capbroker \
                         runs modules with one memory each"
                    ))
                } else {
                    e.context(format!("`{name}` is not a valid WebAssembly component"))
                }
            })
        };
        let component = match &self.cache {
            Some(cache) => cache.get_or_compile(&self.engine, name, bytes, compile)?,
            None => compile()?,
        };
        self.instantiate_pre(name, &component)
    }

    fn instantiate_pre(
        &self,
        name: &str,
        component: &Component,
    ) -> wasmtime::Result<InstancePre<State>> {
        self.linker
            .instantiate_pre(component)
            .with_context(|| format!("`{name}` imports something capbroker does not provide"))
    }
}

/// Whether a load may take a compiled artifact (see [`super::compiled`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Artifacts {
    Accepted,
    Refused,
}

/// The most a component file may hold: a Python component is tens of MiB.
const MAX_COMPONENT_BYTES: u64 = 1 << 30;

/// The component file at `path`. A guest granted its folder in another run
/// may have put anything there (a link to `/dev/zero`, to a FIFO): only a
/// regular file of a bounded size is read, and opening never blocks.
fn read(path: &Path) -> wasmtime::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let what = || format!("cannot read component `{}`", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(what)?;
    let meta = file.metadata().with_context(what)?;
    if !meta.is_file() {
        bail!("component `{}` is not a regular file", path.display());
    }
    let too_big = || {
        format!(
            "component `{}` is larger than {} MiB, the most capbroker reads",
            path.display(),
            MAX_COMPONENT_BYTES >> 20
        )
    };
    if meta.len() > MAX_COMPONENT_BYTES {
        bail!("{}", too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_COMPONENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(what)?;
    if bytes.len() as u64 > MAX_COMPONENT_BYTES {
        bail!("{}", too_big());
    }
    // Machine code must be reachable by no name but the one given: a
    // second link could sit in a folder a guest of another run may write.
    if super::compiled::is_artifact(&bytes) && meta.nlink() != 1 {
        bail!(
            "`{}` holds compiled machine code and has {} hard links: the broker cannot tell \
             whether a guest could write one of them; give it a file of its own",
            path.display(),
            meta.nlink()
        );
    }
    Ok(bytes)
}

/// The name a component file goes by: its file stem.
pub fn component_name(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// Tells a non-wasm file apart from a module or a component, to say which
/// mistake was made.
fn check_header(name: &str, bytes: &[u8]) -> wasmtime::Result<()> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        bail!("`{name}` is not a WebAssembly file (it does not start with `\\0asm`)");
    }
    Ok(())
}

/// A component `capbroker run` can run.
pub enum Loaded {
    /// A capbroker app: handles as arguments to `run`.
    App(AppComponent),
    /// A plain `wasi:cli` command: standard WASI from the operator's grants.
    Command(CommandComponent),
    /// A `wasi:http/proxy` component, for `capbroker serve`; its name.
    Proxy(String),
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
        let deadline = Deadline::after(limits.timeout);
        let ctx = BrokerCtx::new(&self.name, components)
            .with_audit_log(self.audit_log.clone())
            .with_learner(self.learner.clone());
        let mut store = new_store(self.pre.engine(), ctx, limits);
        let instantiating = self.pre.instance_pre().instantiate_async(&mut store);
        let instance = super::runner::instantiate(instantiating, deadline, &self.name).await?;
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
        let broker = started.store.data_mut().broker_mut();
        let names = broker.components.names();
        grants::open(&fitted, &broker.core, &names, &mut broker.kinds.grants)?;
        Ok(Running {
            store: started.store,
            app: started.app,
            instance: started.instance,
            ran: false,
            deadline: started.deadline,
            requests,
        })
    }
}

struct Started {
    store: Store<State>,
    app: App,
    instance: Instance,
    deadline: Deadline,
}

impl Started {
    async fn requests(&mut self) -> wasmtime::Result<Vec<Request>> {
        let call = self.app.call_requests(&mut self.store);
        let stopped = supervise(pin!(call), self.deadline, std::future::pending()).await;
        let ended = Ended::of(stopped, &self.store);
        if let Ended::TimedOut(t) = ended {
            record_exit(&self.store, ended.status(|_| "finished"), ended.limit());
            return Err(late("the component", t, "in its `requests` export"));
        }
        match ended {
            Ended::Returned(requests) => Ok(requests),
            Ended::OutOfFuel(e) => Err(e.context(format!(
                "the component's `requests` export ran out of fuel ({} units)",
                self.store.data().fuel_start()
            ))),
            Ended::OutOfMemory(e) => {
                Err(e.context("the component's `requests` export ran out of memory"))
            }
            Ended::Exit(code) => Err(wasmtime::format_err!(
                "the component exited with code {code} in its `requests` export"
            )),
            Ended::Trapped(e) => Err(e.context("the component's `requests` export failed")),
            Ended::TimedOut(_) | Ended::Killed => Err(wasmtime::format_err!(
                "the component's `requests` export was stopped"
            )),
        }
    }
}

/// A started component holding its grants.
pub struct Running {
    store: Store<State>,
    app: App,
    instance: Instance,
    ran: bool,
    /// One deadline for the whole run: instantiation, `requests` and `run`.
    deadline: Deadline,
    /// What the component asked for when it started.
    requests: Vec<Request>,
}

impl Running {
    /// Calls `run` with `args` and the grants. A trap is an `Err` that says
    /// so; the host goes on.
    pub async fn run(&mut self, args: &[String]) -> wasmtime::Result<Outcome> {
        if std::mem::replace(&mut self.ran, true) {
            bail!("`run` was already called on this instance");
        }
        let call = self.app.call_run(&mut self.store, args);
        let stopped = supervise(pin!(call), self.deadline, std::future::pending()).await;
        let ended = Ended::of(stopped, &self.store);
        let status = ended.status(|r| if r.is_ok() { "finished" } else { "failed" });
        record_exit(&self.store, status, ended.limit());
        match ended {
            Ended::Returned(Ok(())) => Ok(Outcome::Ok),
            Ended::Returned(Err(msg)) => Ok(Outcome::Failed(msg)),
            Ended::Exit(0) => Ok(Outcome::Ok),
            Ended::Exit(code) => Ok(Outcome::Exit(code)),
            Ended::OutOfMemory(e) => Err(e.context("the component ran out of memory")),
            Ended::OutOfFuel(e) => Err(e.context("the component ran out of fuel")),
            Ended::TimedOut(t) => Err(late("the component", t, "")),
            Ended::Killed => bail!("the component was killed"),
            Ended::Trapped(e) => Err(e.context("the component trapped")),
        }
    }

    /// The handles the component asked for when it started, as its
    /// `requests` export gave them, under the run's own limits.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    pub fn store(&mut self) -> &mut Store<State> {
        &mut self.store
    }

    /// The instance, for calling exports beyond the `app` world.
    pub fn instance(&self) -> Instance {
        self.instance
    }
}
