//! Running plain `wasi:cli/command` components, as `wasmtime run` does, with
//! standard WASI authority from the operator's grants only.

use std::pin::pin;
use std::sync::Arc;

use wasmtime_wasi::p2::bindings::CommandPre;

use super::ctx::{BrokerCtx, Components, State};
use super::runner::{late, new_store_with_wasi, record_exit, supervise, Deadline, Ended};
use crate::core::audit::AuditLog;
use crate::core::learn::Learner;
use crate::core::limits::Limits;
use crate::core::pledges::Pledges;
use crate::wasi::WasiGrants;

/// A compiled, linked command component.
pub struct CommandComponent {
    pub(crate) name: String,
    pub(crate) pre: CommandPre<State>,
    pub(crate) audit_log: Option<Arc<AuditLog>>,
    pub(crate) learner: Option<Arc<Learner>>,
}

/// How a command ended.
#[derive(Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    /// `main` returned, or the program called `exit(0)`.
    Success,
    /// The program called `exit` with this non-zero code, or `run` returned
    /// an error (code 1).
    Exit(i32),
}

impl CommandComponent {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records what the program uses below its preopens, for `capbroker
    /// run --learn` (its network grants carry the same learner).
    pub fn learn_with(&mut self, learner: Arc<Learner>) {
        self.learner = Some(learner);
    }

    /// What the program imports, in the operator's terms: each kind of
    /// standard WASI authority it could use, with the flag that grants it.
    /// A program only gets what is granted; this says what is worth
    /// granting.
    pub fn wants(&self) -> Vec<&'static str> {
        const KINDS: [(&str, &str); 6] = [
            ("wasi:filesystem/", "files: --dir GUEST=PATH[:RIGHTS]"),
            ("wasi:sockets/", "network: --listen, --connect, --udp"),
            (
                "wasi:cli/environment",
                "environment variables and arguments: --env KEY[=VALUE]",
            ),
            ("wasi:cli/stdin", "standard input: --stdin"),
            ("wasi:http/outgoing-handler", "outgoing HTTP: --connect"),
            ("capbroker:caps/pledge", "capbroker's pledge and unveil"),
        ];
        let pre = self.pre.instance_pre();
        let engine = pre.engine();
        let imports: Vec<String> = pre
            .component()
            .component_type()
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        KINDS
            .iter()
            .filter(|(prefix, _)| imports.iter().any(|i| i.starts_with(prefix)))
            .map(|(_, what)| *what)
            .collect()
    }

    /// Runs the command with `args` (after `argv[0]`, which is the
    /// component's name) and the operator's `grants`. A trap is an `Err`.
    pub async fn run(
        &self,
        grants: &WasiGrants,
        args: &[String],
        limits: &Limits,
    ) -> wasmtime::Result<CommandOutcome> {
        let pledges = Pledges::default();
        let argv: Vec<String> = std::iter::once(self.name.clone())
            .chain(args.iter().cloned())
            .collect();
        let broker = BrokerCtx::new(&self.name, Arc::new(Components::new()))
            .with_audit_log(self.audit_log.clone())
            .with_learner(self.learner.clone());
        grants.audit(broker.audit());
        let (wasi, state) = grants.build(&argv, &pledges, broker.audit())?;
        let broker = broker.with_wasi(state, pledges);
        let mut store = new_store_with_wasi(self.pre.engine(), broker, wasi, limits);
        // Instantiating runs guest code too: the timeout counts from here.
        let deadline = Deadline::after(limits.timeout);
        let instantiating = self.pre.instantiate_async(&mut store);
        let command = super::runner::instantiate(instantiating, deadline, &self.name).await?;
        let call = command.wasi_cli_run().call_run(&mut store);
        let stopped = supervise(pin!(call), deadline, std::future::pending()).await;
        let ended = Ended::of(stopped, &store);
        let status = ended.status(|r| if r.is_ok() { "finished" } else { "exit 1" });
        record_exit(&store, status, ended.limit());
        match ended {
            Ended::Returned(Ok(())) | Ended::Exit(0) => Ok(CommandOutcome::Success),
            Ended::Returned(Err(())) => Ok(CommandOutcome::Exit(1)),
            Ended::Exit(code) => Ok(CommandOutcome::Exit(code)),
            Ended::OutOfMemory(e) => Err(e.context("the program ran out of memory")),
            Ended::OutOfFuel(e) => Err(e.context("the program ran out of fuel")),
            Ended::TimedOut(t) => Err(late("the program", t, "")),
            Ended::Killed => Err(wasmtime::format_err!("the program was killed")),
            Ended::Trapped(e) => Err(e.context("the program trapped")),
        }
    }
}
