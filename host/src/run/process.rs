//! The `process` interface: starting child processes, talking to them,
//! waiting for them, killing them.
//!
//! A child runs with its own store and handle table. It ends alone,
//! whatever it does: a trap, running out of memory or fuel, its timeout or a
//! kill ends its run, drops its store (freeing its memory and handles) and
//! gives back its slot in the spawners' budgets. Only then is its exit
//! status published to the parent.
//!
//! A spawn starts the child at once, on the spawning thread, and runs it
//! until it first waits: on a message, a timer, or the next epoch tick,
//! which every running guest yields at (see `engine`). Only a child still
//! running then becomes a tokio task of its own. Most per-request children
//! finish in that first stretch, and so never pay for a task, its
//! scheduling or the wake-up of their parent (Python's asyncio calls this
//! an eager task). The parent waits at most one tick for its spawn to
//! return, and children still run concurrently with each other and with it.

use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use wasmtime::component::{ComponentExportIndex, InstancePre, Resource};
use wasmtime::Store;

use super::ctx::{BrokerCtx, BrokerCtxView, State};
use super::runner::{exit_record, new_store, supervise, Deadline, Ended};
pub use super::wit::process::ExitStatus;
use super::wit::process::{Host, HostProcess};
use crate::core::error::shortened;
use crate::core::kind::ShareTo;
use crate::core::limits::Limits;
use crate::core::{Error, HostError, HostResult};
use crate::grants::{HandleValue, Share};
use crate::spawn::mailbox::{self, End, Unsent};
use crate::spawn::{Admitted, ChildLimits, SpawnerHandle};

/// The longest name a share may have (the child holds it as its grant's
/// name, the host as the handle's label).
pub const MAX_SHARE_NAME: usize = 256;

/// A child's result up to this size is given back to the parent without
/// keeping the child's place in `max-children` (so, at most this much per
/// handle the parent holds); a larger one keeps the place until the
/// parent drops the process handle.
pub const SMALL_RESULT: usize = 4096;

/// The parent's handle on a child process.
pub struct ProcessHandle {
    id: u64,
    /// The parent's end of the link to the child: its mailbox, and its
    /// kill, which dropping the handle also sends.
    mailbox: End,
    exit: Exit,
}

/// Where a child's exit status is.
enum Exit {
    /// With the task of a child that outlived its first stretch.
    Running(JoinHandle<ExitStatus>),
    /// Heard.
    Ended(ExitStatus),
}

impl ProcessHandle {
    /// The exit status if the child has ended, without waiting.
    fn try_status(&mut self) -> Option<&ExitStatus> {
        if let Exit::Running(task) = &mut self.exit {
            if !task.is_finished() {
                return None;
            }
            // A finished task is ready at the first poll.
            let Poll::Ready(ended) = Pin::new(task).poll(&mut Context::from_waker(Waker::noop()))
            else {
                return None;
            };
            self.exit = Exit::Ended(lost_if_failed(ended, self.id));
        }
        self.heard()
    }

    /// The exit status, waiting for the child to end.
    async fn wait(&mut self) -> &ExitStatus {
        if let Exit::Running(task) = &mut self.exit {
            let ended = task.await;
            self.exit = Exit::Ended(lost_if_failed(ended, self.id));
        }
        self.heard().expect("the child has just ended")
    }

    /// The exit status, if it has been heard.
    fn heard(&self) -> Option<&ExitStatus> {
        match &self.exit {
            Exit::Ended(status) => Some(status),
            Exit::Running(_) => None,
        }
    }
}

/// Only a bug in the broker ends a child's task without a status; the parent
/// hears of it as the child's trap rather than trapping itself.
fn lost_if_failed(ended: Result<ExitStatus, JoinError>, id: u64) -> ExitStatus {
    ended.unwrap_or_else(|e| ExitStatus::Trapped(format!("capbroker lost process {id}: {e}")))
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
        grants: Vec<Share>,
        limits: &ChildLimits,
    ) -> HostResult<Vec<(String, HandleValue)>> {
        check_shares(&grants)?;
        let mut out: Vec<(String, HandleValue)> = Vec::with_capacity(grants.len());
        for g in grants {
            let to = ShareTo {
                name: &g.name,
                max_memory: limits.max_memory,
                max_fuel: limits.max_fuel,
                timeout_ms: limits.timeout_ms,
            };
            let copied = HandleValue::shared(self.table, &g.handle, &to)?;
            out.push((g.name, copied));
        }
        Ok(out)
    }
}

/// The most handles one spawn shares with its child. Each is a copy the
/// host makes (a TCP stream's is a file descriptor of its own) and the
/// child holds until it takes them, outside its handle table.
pub const MAX_SHARES: usize = 64;

/// Up to this many shares, names are compared pairwise, which allocates
/// nothing; beyond it a hash set keeps the check linear.
const PAIRWISE_SHARES: usize = 8;

/// Refuses more than [`MAX_SHARES`] shares, or a name given twice, in time
/// linear in the number of shares: the guest chooses the list, and the
/// host's work on it runs outside the guest's fuel.
fn check_shares(grants: &[Share]) -> Result<(), Error> {
    if grants.len() > MAX_SHARES {
        return Err(Error::LimitExceeded(format!(
            "shares: {} handles given to one spawn, at most {MAX_SHARES}",
            grants.len()
        )));
    }
    if let Some(g) = grants.iter().find(|g| g.name.len() > MAX_SHARE_NAME) {
        return Err(Error::Invalid(format!(
            "a share's name is {} bytes, at most {MAX_SHARE_NAME}",
            g.name.len()
        )));
    }
    let twice = |name: &str| Error::Invalid(format!("grant `{name}` is given twice"));
    if grants.len() <= PAIRWISE_SHARES {
        for (i, g) in grants.iter().enumerate() {
            if grants[..i].iter().any(|h| h.name == g.name) {
                return Err(twice(&g.name));
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(grants.len());
        if let Some(g) = grants.iter().find(|g| !seen.insert(g.name.as_str())) {
            return Err(twice(&g.name));
        }
    }
    Ok(())
}

impl Host for BrokerCtxView<'_> {
    async fn spawn(
        &mut self,
        spawner: Resource<SpawnerHandle>,
        component: String,
        entry: Option<String>,
        grants: Vec<Share>,
        limits: ChildLimits,
        input: Vec<u8>,
    ) -> HostResult<Resource<ProcessHandle>> {
        let result = self
            .spawn_child(spawner, &component, entry, grants, limits, input)
            .await;
        if let Err(HostError::Guest(e)) = &result {
            self.ctx.core.audit.refused(
                "spawn",
                "spawner",
                &component,
                crate::core::Rights::empty(),
                e,
            );
        }
        result
    }
}

impl BrokerCtxView<'_> {
    async fn spawn_child(
        &mut self,
        spawner: Resource<SpawnerHandle>,
        component: &str,
        entry: Option<String>,
        grants: Vec<Share>,
        limits: ChildLimits,
        input: Vec<u8>,
    ) -> HostResult<Resource<ProcessHandle>> {
        self.ctx
            .core
            .pledges
            .check(crate::core::pledges::Authority::SPAWN, "spawning")?;
        // Borrowed, not cloned: the table and the context are apart.
        let components = &self.ctx.components;
        // The spawner's grant, for learning mode only.
        let grant = match &self.ctx.core.learner {
            Some(_) => Some(self.table.get(&spawner)?.grant().clone()),
            None => None,
        };
        let Admitted { name, slot } = self.table.get(&spawner)?.admit(
            self.ctx.core.audit.component(),
            component,
            &limits,
            |n| components.get(n).is_some(),
        )?;
        let Some((name, pre)) = components.entry(name) else {
            return Err(Error::Invalid(format!("there is no component `{name}`")).into());
        };
        let (name, pre) = (name.clone(), pre.clone());
        let entry = entry.map_or(Cow::Borrowed("start"), Cow::Owned);
        let Some(export) = pre.component().get_export_index(None, &*entry) else {
            return Err(
                Error::Invalid(format!("component `{name}` has no export `{entry}`")).into(),
            );
        };
        let entry = Entry {
            name: entry,
            export,
        };
        let copies = self.copies_for_child(grants, &limits)?;

        let (parent_end, child_end) = mailbox::link(self.ctx.core.memory.clone());
        let ctx = BrokerCtx::child(self.ctx, name.clone(), child_end, copies);
        let pid = ctx.core.audit.pid();
        let learner = ctx.core.learner.clone().zip(grant);
        let store_limits = Limits {
            max_memory: usize::try_from(limits.max_memory).unwrap_or(usize::MAX),
            max_fuel: Some(limits.max_fuel),
            timeout: Some(Duration::from_millis(limits.timeout_ms)),
            // A child holds no more handles (and so host files) than its
            // parent may.
            max_handles: self.table.max_capacity().min(Limits::default().max_handles),
        };
        let mut store = new_store(pre.engine(), ctx, &store_limits);
        // The host holds the input until the child's entry point returns,
        // beside the child's own copy: it counts against the child's
        // memory meanwhile.
        let input_account = store.data().memory().clone();
        let input_len = input.len();
        if let Err(e) = input_account.charge(input_len) {
            return Err(Error::LimitExceeded(format!(
                "the input of {input_len} bytes does not fit the child's memory ({})",
                crate::core::Describe(&e)
            ))
            .into());
        }
        // Only a child that starts is recorded as one.
        self.ctx
            .core
            .audit
            .spawned(pid, &name, || store.data().pending_names());
        if let Some((l, grant)) = &learner {
            // The component's own name: `self` names no component in a
            // manifest.
            l.spawned(grant, &name);
        }

        let link = parent_end.port();
        let run = {
            // From the moment the child's store was made, a moment ago.
            let deadline = Deadline::from(
                store.data().started(),
                Some(Duration::from_millis(limits.timeout_ms)),
            );
            async move {
                let stopped = {
                    // Pinned where it is made: the future is large, and
                    // every move of it is a copy.
                    let child = pin!(run_child(&pre, &mut store, &entry, input));
                    supervise(child, deadline, link.killed()).await
                };
                input_account.release(input_len);
                let ended = Ended::of(stopped, &store);
                let limit = ended.limit();
                let status = exit_status(ended);
                // The exit record and the trail to write it to, if anyone
                // reads it: the audit trail or learning mode.
                let exit = {
                    let audit = store.data().audit();
                    (audit.writes_changes() || learner.is_some()).then(|| {
                        let record = exit_record(&store, status_word(&status), limit);
                        (audit.clone(), record)
                    })
                };
                // Free everything the child held before anyone hears it ended.
                drop(store);
                match &status {
                    // A large result is held for the parent until it lets go
                    // of the handle: it keeps the child's place meanwhile.
                    ExitStatus::Finished(out) if out.len() > SMALL_RESULT => {
                        link.release_when_dropped(slot)
                    }
                    ExitStatus::Failed(m) if m.len() > SMALL_RESULT => {
                        link.release_when_dropped(slot)
                    }
                    _ => link.release_when_read(slot),
                }
                if let Some((child_audit, record)) = &exit {
                    child_audit.exited(record);
                    if let Some((l, grant)) = &learner {
                        l.exited(grant, record);
                    }
                }
                status
            }
        };
        // Pinned on the heap, so that it can move to a task of its own if it
        // does not end in its first stretch.
        let mut run = Box::pin(run);
        let exit = match poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await {
            Poll::Ready(status) => Exit::Ended(status),
            Poll::Pending => Exit::Running(tokio::spawn(run)),
        };
        let handle = ProcessHandle {
            id: pid,
            mailbox: parent_end,
            exit,
        };
        Ok(self.table.push(handle)?)
    }
}

/// A child's entry point: its name, and where it is in the component, found
/// once at the spawn so that the child need not look it up by name.
struct Entry {
    name: Cow<'static, str>,
    export: ComponentExportIndex,
}

/// Instantiates the child and calls its entry point.
async fn run_child(
    pre: &InstancePre<State>,
    store: &mut Store<State>,
    entry: &Entry,
    input: Vec<u8>,
) -> wasmtime::Result<Result<Vec<u8>, String>> {
    let instance = pre.instantiate_async(&mut *store).await?;
    let func = instance
        .get_typed_func::<(Vec<u8>,), (Result<Vec<u8>, String>,)>(&mut *store, &entry.export)
        .map_err(|e| {
            e.context(format!(
                "export `{}` is not a child entry point \
                 (func(input: list<u8>) -> result<list<u8>, string>)",
                entry.name
            ))
        })?;
    let (out,) = func.call_async(&mut *store, (input,)).await?;
    Ok(out)
}

/// A child's exit status, from how its entry point ended.
fn exit_status(ended: Ended<Result<Vec<u8>, String>>) -> ExitStatus {
    match ended {
        Ended::Returned(Ok(out)) => ExitStatus::Finished(out),
        Ended::Returned(Err(msg)) => ExitStatus::Failed(msg),
        Ended::Exit(0) => ExitStatus::Finished(Vec::new()),
        Ended::Exit(code) => ExitStatus::Failed(format!("exited with code {code}")),
        Ended::OutOfMemory(_) => ExitStatus::OutOfMemory,
        Ended::OutOfFuel(_) => ExitStatus::OutOfCpu,
        Ended::TimedOut(_) => ExitStatus::TimedOut,
        Ended::Killed => ExitStatus::Killed,
        // It names the guest's own functions, whose names the guest
        // chooses, and the host keeps it for the parent.
        Ended::Trapped(e) => ExitStatus::Trapped(shortened(format!("{e:#}"), SMALL_RESULT)),
    }
}

impl HostProcess for BrokerCtxView<'_> {
    fn id(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&p)?.id)
    }

    async fn send(&mut self, p: Resource<ProcessHandle>, message: Vec<u8>) -> HostResult<()> {
        let port = self.table.get(&p)?.mailbox.port();
        match port.send(message).await {
            Ok(()) => Ok(()),
            Err(Unsent::Gone(_)) => Err(Error::Invalid("the process has ended".into()).into()),
            Err(Unsent::TooBig(e)) => {
                self.ctx.core.audit.refused(
                    "process.send",
                    "process",
                    "",
                    crate::core::Rights::empty(),
                    &e,
                );
                Err(e.into())
            }
        }
    }

    async fn receive(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
        let port = self.table.get(&p)?.mailbox.port();
        Ok(port.receive().await)
    }

    async fn wait(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<ExitStatus> {
        Ok(self.table.get_mut(&p)?.wait().await.clone())
    }

    fn try_wait(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<Option<ExitStatus>> {
        Ok(self.table.get_mut(&p)?.try_status().cloned())
    }

    fn kill(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<()> {
        self.table.get(&p)?.mailbox.kill();
        Ok(())
    }

    fn drop(&mut self, p: Resource<ProcessHandle>) -> wasmtime::Result<()> {
        let p = self.table.delete(p)?;
        self.ctx
            .core
            .audit
            .dropped(format_args!("process {}", p.id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_message_is_cut_to_a_small_result() {
        let long = "é".repeat(SMALL_RESULT);
        let cut = shortened(long, SMALL_RESULT);
        assert!(cut.len() <= SMALL_RESULT + " …".len());
        assert!(cut.ends_with(" …"));
        assert_eq!(shortened("short".into(), SMALL_RESULT), "short");
    }
}
