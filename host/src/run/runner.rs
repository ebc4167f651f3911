//! The one process runner: how every instance (the operator's app, a plain
//! command, each child process) gets its store, runs under its deadline,
//! and how its end is told apart and recorded.
//!
//! - [`new_store`]: bounded memory, handles and fuel, and a yield to tokio
//!   at every epoch tick, from one [`Limits`];
//! - [`supervise`]: the one deadline mechanism, with an optional kill;
//! - [`Ended::of`]: the one classifier of how guest code ended;
//! - [`exit_record`] and [`record_exit`]: the one exit record, for the
//!   audit trail and learning mode.

use std::borrow::Cow;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;

use super::ctx::{BrokerCtx, State};
use crate::core::audit::ExitRecord;
use crate::core::limits::Limits;

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
    let fuel = limits.max_fuel.unwrap_or(u64::MAX);
    let mut store = Store::new(engine, State::new(broker, wasi, limits, fuel));
    store.limiter(|s| s.limiter());
    // wasmtime's own count of the guest's handles (100,000 by default)
    // must not end a run before `max-handles` does: each resource in the
    // table is a handle, and a call lends borrowed ones besides.
    store.set_max_component_handles(limits.max_handles.saturating_mul(2).max(100_000));
    store
        .set_fuel(fuel)
        .expect("fuel is enabled on capbroker's engine");
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
    store
}

/// When a run must end, if ever: the instant, and the timeout it came from.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Option<(Instant, Duration)>);

impl Deadline {
    /// `timeout` from now, or never.
    pub fn after(timeout: Option<Duration>) -> Deadline {
        Deadline::from_instant(Instant::now(), timeout)
    }

    /// `timeout` from `start`, or never: for a run whose store was made at
    /// `start`, without reading the clock again.
    pub fn from(start: std::time::Instant, timeout: Option<Duration>) -> Deadline {
        Deadline::from_instant(Instant::from_std(start), timeout)
    }

    /// A timeout so long that its end cannot be told (about 2^63 s) never
    /// ends the run: it is no deadline, not a panic.
    fn from_instant(start: Instant, timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.and_then(|t| Some((start.checked_add(t)?, t))))
    }

    /// The timeout it came from.
    pub fn timeout(&self) -> Option<Duration> {
        self.0.map(|(_, t)| t)
    }
}

/// How supervised guest code stopped.
pub enum Stopped<T> {
    /// It returned (or trapped): the call's own result.
    Done(T),
    /// It ran past its deadline, of this timeout.
    Late(Duration),
    /// It was killed.
    Killed,
}

/// Runs `call` until it ends, passes `deadline`, or `killed` fires.
///
/// The kill is listened for and the timer armed only once the call first
/// waits: guest code that runs to its end in one go (most per-request
/// children) never touches tokio's timer wheel. A busy guest still waits at
/// every epoch tick (see [`new_store`]), so its deadline holds. A stopped
/// call is dropped, which unwinds the guest.
pub async fn supervise<T>(
    mut call: Pin<&mut impl Future<Output = T>>,
    deadline: Deadline,
    killed: impl Future<Output = ()>,
) -> Stopped<T> {
    let mut killed = pin!(killed);
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    let mut waited = false;
    poll_fn(|cx| {
        if waited {
            // Once it has waited, a killed or late call is not run any more.
            if let Some(end) = stopped(killed.as_mut(), timer.as_mut(), deadline, cx) {
                return Poll::Ready(end);
            }
            return call.as_mut().poll(cx).map(Stopped::Done);
        }
        if let Poll::Ready(done) = call.as_mut().poll(cx) {
            return Poll::Ready(Stopped::Done(done));
        }
        // Its first wait: from here on, listen for the kill and the clock.
        waited = true;
        if let Some((at, _)) = deadline.0 {
            timer = Some(Box::pin(tokio::time::sleep_until(at)));
        }
        match stopped(killed.as_mut(), timer.as_mut(), deadline, cx) {
            Some(end) => Poll::Ready(end),
            None => Poll::Pending,
        }
    })
    .await
}

/// Instantiates a component (`instantiating`, which runs its start
/// functions) within `deadline`; `name` is how the error names it.
pub async fn instantiate<T>(
    instantiating: impl Future<Output = wasmtime::Result<T>>,
    deadline: Deadline,
    name: &str,
) -> wasmtime::Result<T> {
    let late = |t: Duration| late("the component", t, "while instantiating");
    match supervise(pin!(instantiating), deadline, std::future::pending()).await {
        Stopped::Done(r) => r,
        Stopped::Late(t) => Err(late(t)),
        Stopped::Killed => Err(late(deadline.timeout().unwrap_or_default())),
    }
    .map_err(|e| e.context(format!("cannot instantiate `{name}`")))
}

/// How a waiting call ends from outside, if it does: killed, or late.
fn stopped<T>(
    killed: Pin<&mut impl Future<Output = ()>>,
    timer: Option<&mut Pin<Box<Sleep>>>,
    deadline: Deadline,
    cx: &mut Context<'_>,
) -> Option<Stopped<T>> {
    if killed.poll(cx).is_ready() {
        return Some(Stopped::Killed);
    }
    let (Some(timer), Some((_, t))) = (timer, deadline.0) else {
        return None;
    };
    timer
        .as_mut()
        .poll(cx)
        .is_ready()
        .then_some(Stopped::Late(t))
}

/// How a call of guest code ended.
pub enum Ended<T> {
    Returned(T),
    /// It called `wasi:cli/exit`.
    Exit(i32),
    OutOfMemory(wasmtime::Error),
    OutOfFuel(wasmtime::Error),
    /// It ran past its deadline, of this timeout.
    TimedOut(Duration),
    Killed,
    Trapped(wasmtime::Error),
}

impl<T> Ended<T> {
    /// Tells apart how guest code on `store` ended. The guest's own ending
    /// (a return, or `exit`) comes first: it may have met a limit and
    /// handled it. Then its fuel, which is unambiguous; then its memory
    /// limit, for the traps a failed allocation ends in, if the last growth
    /// was refused; then any other trap.
    pub fn of(stopped: Stopped<wasmtime::Result<T>>, store: &Store<State>) -> Ended<T> {
        match stopped {
            Stopped::Late(t) => Ended::TimedOut(t),
            Stopped::Killed => Ended::Killed,
            Stopped::Done(Ok(v)) => Ended::Returned(v),
            Stopped::Done(Err(e)) => {
                if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    return Ended::Exit(exit.0);
                }
                let trap = e.downcast_ref::<Trap>().copied();
                // A refused growth explains only how a failed allocation
                // ends (an abort, or a use of the null it got), and only
                // while memory has not grown since.
                let from_allocation = matches!(
                    trap,
                    None | Some(Trap::UnreachableCodeReached | Trap::MemoryOutOfBounds)
                );
                if trap == Some(Trap::OutOfFuel) {
                    Ended::OutOfFuel(e)
                } else if store.data().memory_limit_hit() && from_allocation {
                    Ended::OutOfMemory(e)
                } else {
                    Ended::Trapped(e)
                }
            }
        }
    }

    /// The word for the audit log; `returned` names a return.
    pub fn status(&self, returned: impl Fn(&T) -> &'static str) -> Cow<'static, str> {
        match self {
            Ended::Returned(v) => returned(v).into(),
            Ended::Exit(0) => "finished".into(),
            Ended::Exit(code) => format!("exit {code}").into(),
            Ended::OutOfMemory(_) => "out-of-memory".into(),
            Ended::OutOfFuel(_) => "out-of-cpu".into(),
            Ended::TimedOut(_) => "timed-out".into(),
            Ended::Killed => "killed".into(),
            Ended::Trapped(_) => "trapped".into(),
        }
    }

    /// The limit that ended it, if one did.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Ended::OutOfMemory(_) => Some("memory"),
            Ended::OutOfFuel(_) => Some("cpu"),
            Ended::TimedOut(_) => Some("time"),
            _ => None,
        }
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
        fuel_used: state.fuel_start() - store.get_fuel().unwrap_or(0),
        peak_memory: state.peak_memory() as u64,
        wall_us: state.started().elapsed().as_micros() as u64,
    }
}

/// Records in the instance's audit trail how it ended, and gives the record.
pub fn record_exit(
    store: &Store<State>,
    status: impl Into<Cow<'static, str>>,
    limit: Option<&'static str>,
) -> ExitRecord {
    let record = exit_record(store, status, limit);
    store.data().audit().exited(&record);
    record
}

/// The error for guest code of `what` ("the component", "the program")
/// that ran past `timeout` while `doing` (may be empty).
pub fn late(what: &str, timeout: Duration, doing: &str) -> wasmtime::Error {
    let doing = if doing.is_empty() {
        String::new()
    } else {
        format!(" {doing}")
    };
    wasmtime::format_err!("{what} ran past its timeout of {timeout:?}{doing}")
}
