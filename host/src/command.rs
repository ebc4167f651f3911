//! Running plain `wasi:cli/command` components, as `wasmtime run` does, with
//! standard WASI authority from the operator's grants only.

use std::sync::Arc;

use wasmtime::error::Context;
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::app::{new_store_with_wasi, State};
use crate::ctx::BrokerCtx;
use crate::limits::Limits;
use crate::pledge::Pledges;
use crate::spawn::Components;
use crate::wasi::WasiGrants;

/// A compiled, linked command component.
pub struct CommandComponent {
    pub(crate) name: String,
    pub(crate) pre: CommandPre<State>,
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
        let (wasi, state) = grants.build(&argv, &pledges)?;
        let broker =
            BrokerCtx::new(&self.name, Arc::new(Components::new())).with_wasi(state, pledges);
        let mut store = new_store_with_wasi(self.pre.engine(), broker, wasi, limits);
        let command = self
            .pre
            .instantiate_async(&mut store)
            .await
            .with_context(|| format!("cannot instantiate `{}`", self.name))?;
        let call = command.wasi_cli_run().call_run(&mut store);
        let result = match limits.timeout {
            Some(t) => match tokio::time::timeout(t, call).await {
                Ok(r) => r,
                Err(_) => wasmtime::bail!("the program ran past its timeout of {t:?}"),
            },
            None => call.await,
        };
        match result {
            Ok(Ok(())) => Ok(CommandOutcome::Success),
            Ok(Err(())) => Ok(CommandOutcome::Exit(1)),
            Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) if exit.0 == 0 => Ok(CommandOutcome::Success),
                Some(exit) => Ok(CommandOutcome::Exit(exit.0)),
                None if store.data().memory_limit_hit() => {
                    Err(e.context("the program ran out of memory"))
                }
                None if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) => {
                    Err(e.context("the program ran out of fuel"))
                }
                None => Err(e.context("the program trapped")),
            },
        }
    }
}
