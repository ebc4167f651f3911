//! The `process` interface: starting child processes, talking to them,
//! waiting for them, killing them.
//!
//! A child runs as a tokio task with its own store and handle table. It
//! ends alone, whatever it does: a trap, running out of memory or fuel, its
//! timeout or a kill ends its task, drops its store (freeing its memory and
//! handles) and gives back its slot in the spawners' budgets. Only then is
//! its exit status published to the parent.

use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use wasmtime::component::{InstancePre, Resource};
use wasmtime::{Store, Trap};

use crate::app::{exit_record, new_store, State};
use crate::bindings::capbroker::caps::grants::{Share, Shared};
pub use crate::bindings::capbroker::caps::process::ExitStatus;
use crate::bindings::capbroker::caps::process::{Host, HostProcess};
use crate::ctx::{BrokerCtx, BrokerCtxView};
use crate::grants::HandleValue;
use crate::limits::Limits;
use crate::mailbox::{self, End};
use crate::spawn::{ChildLimits, SpawnerHandle};
use crate::types::{Error, HostError, HostResult};

/// The parent's handle on a child process.
pub struct ProcessHandle {
    id: u64,
    mailbox: End,
    /// The child ends when this fires, or when it closes because the
    /// handle was dropped: no process outlives the last handle to it.
    kill: Option<oneshot::Sender<()>>,
    ended: oneshot::Receiver<ExitStatus>,
    /// The exit status, once heard.
    status: Option<ExitStatus>,
}

impl ProcessHandle {
    /// The exit status if the child has ended, without waiting.
    fn poll_status(&mut self) -> wasmtime::Result<Option<&ExitStatus>> {
        if self.status.is_none() {
            match self.ended.try_recv() {
                Ok(s) => self.status = Some(s),
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => {
                    wasmtime::bail!("the task of process {} vanished", self.id)
                }
            }
        }
        Ok(self.status.as_ref())
    }
}

/// A short word for an exit status, for the audit trail.
pub fn status_word(s: &ExitStatus) -> &'static str {
    match s {
        ExitStatus::Finished(_) => "finished",
        ExitStatus::Failed(_) => "failed",
        ExitStatus::Trapped(_) => "trapped",
        ExitStatus::OutOfMemory => "out-of-memory",
        ExitStatus::OutOfCpu => "out-of-cpu",
        ExitStatus::TimedOut => "timed-out",
        ExitStatus::Killed => "killed",
    }
}

impl BrokerCtxView<'_> {
    /// Copies the shared handles for the child, by name.
    fn copies_for_child(
        &mut self,
        grants: &[Share],
        limits: &ChildLimits,
    ) -> HostResult<Vec<(String, HandleValue)>> {
        let mut out: Vec<(String, HandleValue)> = Vec::with_capacity(grants.len());
        for g in grants {
            if out.iter().any(|(n, _)| *n == g.name) {
                return Err(Error::Invalid(format!("grant `{}` is given twice", g.name)).into());
            }
            let copied = match &g.handle {
                Shared::Dir(h) => {
                    let h = self.table.get(h)?;
                    h.lineage().check()?;
                    HandleValue::Dir(h.copy(&g.name))
                }
                Shared::Spawner(h) => {
                    let h = self.table.get(h)?;
                    h.lineage().check()?;
                    HandleValue::Spawner(h.copy_within(limits))
                }
                Shared::Listen(h) => {
                    let h = self.table.get(h)?;
                    h.lineage().check()?;
                    HandleValue::Listen(h.copy())
                }
                Shared::Connect(h) => {
                    let h = self.table.get(h)?;
                    h.lineage().check()?;
                    HandleValue::Connect(h.copy())
                }
                Shared::TcpStream(h) => {
                    let h = self.table.get(h)?;
                    h.lineage().check()?;
                    HandleValue::TcpStream(h.share()?)
                }
            };
            out.push((g.name.clone(), copied));
        }
        Ok(out)
    }
}

impl Host for BrokerCtxView<'_> {
    fn spawn(
        &mut self,
        spawner: Resource<SpawnerHandle>,
        component: String,
        entry: Option<String>,
        grants: Vec<Share>,
        limits: ChildLimits,
        input: Vec<u8>,
    ) -> HostResult<Resource<ProcessHandle>> {
        let result = self.spawn_child(spawner, &component, entry, &grants, limits, input);
        if let Err(HostError::Guest(e)) = &result {
            self.ctx.audit.refused(
                "spawn",
                "spawner",
                &component,
                crate::types::Rights::empty(),
                e,
            );
        }
        result
    }
}

impl BrokerCtxView<'_> {
    fn spawn_child(
        &mut self,
        spawner: Resource<SpawnerHandle>,
        component: &str,
        entry: Option<String>,
        grants: &[Share],
        limits: ChildLimits,
        input: Vec<u8>,
    ) -> HostResult<Resource<ProcessHandle>> {
        self.ctx
            .pledges
            .check(crate::pledge::Authority::SPAWN, "spawning")?;
        let caller = self.ctx.audit.component().clone();
        let (pre, slot) = self
            .table
            .get(&spawner)?
            .admit(&caller, component, &limits)?;
        let name = if component == "self" {
            &*caller
        } else {
            component
        };
        let entry = entry.map_or(Cow::Borrowed("start"), Cow::Owned);
        if pre.component().get_export_index(None, &*entry).is_none() {
            return Err(
                Error::Invalid(format!("component `{name}` has no export `{entry}`")).into(),
            );
        }
        let copies = self.copies_for_child(grants, &limits)?;

        let (parent_end, child_end) = mailbox::link();
        let ctx = BrokerCtx::child(self.ctx, name, child_end, copies);
        let pid = ctx.audit.pid();
        self.ctx.audit.spawned(pid, name, || {
            ctx.pending.iter().map(|(n, _)| n.as_str()).collect()
        });
        let learner = ctx.learner.clone();
        if let Some(l) = &learner {
            l.spawned(component);
        }
        let store_limits = Limits {
            max_memory: usize::try_from(limits.max_memory).unwrap_or(usize::MAX),
            max_fuel: Some(limits.max_fuel),
            timeout: Some(Duration::from_millis(limits.timeout_ms)),
            ..Limits::default()
        };
        let mut store = new_store(pre.engine(), ctx, &store_limits);

        let (status_tx, ended) = oneshot::channel();
        let (kill, killed) = oneshot::channel();
        let run = {
            let deadline = Instant::now() + Duration::from_millis(limits.timeout_ms);
            async move {
                let child = run_child(&pre, &mut store, &entry, input);
                let status = supervise(child, killed, deadline).await;
                let limit = match status {
                    ExitStatus::OutOfMemory => Some("memory"),
                    ExitStatus::OutOfCpu => Some("cpu"),
                    ExitStatus::TimedOut => Some("time"),
                    _ => None,
                };
                let record = exit_record(&store, status_word(&status).to_string(), limit);
                let child_audit = store.data().audit().clone();
                // Free everything the child held before anyone hears it ended.
                drop(store);
                drop(slot);
                child_audit.exited(&record);
                if let Some(l) = &learner {
                    l.exited(&record);
                }
                let _ = status_tx.send(status);
            }
        };
        // Boxed first: the future is large, and tokio would copy it by value.
        tokio::spawn(Box::pin(run));
        let handle = ProcessHandle {
            id: pid,
            mailbox: parent_end,
            kill: Some(kill),
            ended,
            status: None,
        };
        Ok(self.table.push(handle)?)
    }
}

/// Runs `child` until it ends, is killed, or passes `deadline`.
///
/// The timer is armed only once the child first waits: a child that runs
/// to its end in one go (most per-request children) never touches tokio's
/// timer wheel. A busy child still waits at every epoch tick (see
/// `new_store`), so its deadline holds.
async fn supervise(
    child: impl Future<Output = ExitStatus>,
    mut killed: oneshot::Receiver<()>,
    deadline: Instant,
) -> ExitStatus {
    let mut child = pin!(child);
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    poll_fn(|cx| {
        if Pin::new(&mut killed).poll(cx).is_ready() {
            return Poll::Ready(ExitStatus::Killed);
        }
        if let Some(timer) = timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(ExitStatus::TimedOut);
            }
        }
        if let Poll::Ready(status) = child.as_mut().poll(cx) {
            return Poll::Ready(status);
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(ExitStatus::TimedOut),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Instantiates the child and calls its entry point.
async fn run_child(
    pre: &InstancePre<State>,
    store: &mut Store<State>,
    entry: &str,
    input: Vec<u8>,
) -> ExitStatus {
    let result = async {
        let instance = pre.instantiate_async(&mut *store).await?;
        let func = instance
            .get_typed_func::<(Vec<u8>,), (Result<Vec<u8>, String>,)>(&mut *store, entry)
            .map_err(|e| {
                e.context(format!(
                    "export `{entry}` is not a child entry point \
                     (func(input: list<u8>) -> result<list<u8>, string>)"
                ))
            })?;
        let (out,) = func.call_async(&mut *store, (input,)).await?;
        Ok::<_, wasmtime::Error>(out)
    }
    .await;
    match result {
        Ok(Ok(out)) => ExitStatus::Finished(out),
        Ok(Err(msg)) => ExitStatus::Failed(msg),
        Err(e) => classify(&e, store),
    }
}

/// Says why a child's call failed: its memory limit, its fuel, or a trap.
fn classify(e: &wasmtime::Error, store: &Store<State>) -> ExitStatus {
    if store.data().memory_limit_hit() {
        return ExitStatus::OutOfMemory;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => ExitStatus::OutOfCpu,
        _ => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) if exit.0 == 0 => ExitStatus::Finished(Vec::new()),
            Some(exit) => ExitStatus::Failed(format!("exited with code {}", exit.0)),
            None => ExitStatus::Trapped(format!("{e:#}")),
        },
    }
}

impl HostProcess for BrokerCtxView<'_> {
    fn id(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&p)?.id)
    }

    async fn send(&mut self, p: Resource<ProcessHandle>, message: Vec<u8>) -> HostResult<()> {
        let port = self.table.get(&p)?.mailbox.port();
        port.send(message)
            .await
            .map_err(|_| Error::Invalid("the process has ended".into()).into())
    }

    async fn receive(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
        let port = self.table.get(&p)?.mailbox.port();
        Ok(port.receive().await)
    }

    async fn wait(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<ExitStatus> {
        let p = self.table.get_mut(&p)?;
        if p.status.is_none() {
            let status = (&mut p.ended)
                .await
                .map_err(|_| wasmtime::format_err!("the task of process {} vanished", p.id))?;
            p.status = Some(status);
        }
        Ok(p.status.clone().expect("just set"))
    }

    fn try_wait(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<Option<ExitStatus>> {
        Ok(self.table.get_mut(&p)?.poll_status()?.cloned())
    }

    fn kill(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<()> {
        if let Some(kill) = self.table.get_mut(&p)?.kill.take() {
            let _ = kill.send(());
        }
        Ok(())
    }

    fn drop(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<()> {
        let p = self.table.delete(p)?;
        self.ctx.audit.dropped(format_args!("process {}", p.id));
        Ok(())
    }
}
