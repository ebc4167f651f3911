//! The audit trail: every grant, derivation, drop, pledge, denial, spawn,
//! revocation, limit hit and exit, for each process.
//!
//! Events always go to `tracing` under the target `capbroker::audit`. With
//! an [`AuditLog`] (`capbroker run --audit FILE`) they are also written as
//! JSON Lines, one object per event; see the README for the schema. A
//! process that floods the log with denials is rate-limited: what is left
//! out is counted and reported in a `suppressed` event, and the guest is
//! never made to wait for the log.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::types::{Describe, Error, Rights, RightsList};

/// The JSON Lines sink shared by every process of one broker.
pub struct AuditLog {
    out: Mutex<Box<dyn Write + Send>>,
    start: Instant,
}

impl AuditLog {
    /// Writes to `out`, timestamps counted from now.
    pub fn new(out: Box<dyn Write + Send>) -> Arc<AuditLog> {
        Arc::new(AuditLog {
            out: Mutex::new(out),
            start: Instant::now(),
        })
    }

    /// Writes one event. The lock orders events (so, per process, too), and
    /// the timestamp is taken under it, so timestamps never go backwards.
    fn write(&self, mut event: Value) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        event["t_us"] = json!(self.start.elapsed().as_micros() as u64);
        // A log that cannot be written must not stop the guest.
        let _ = writeln!(out, "{event}").and_then(|()| out.flush());
    }
}

/// At most this many denials per process are written in a burst…
const BURST: f64 = 100.0;
/// …and this many per second after it.
const PER_SECOND: f64 = 50.0;

/// A token bucket for one process's denials.
struct Bucket {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            tokens: BURST,
            last: Instant::now(),
            suppressed: 0,
        }
    }

    /// Whether one more event may be written now; if so, how many were
    /// left out before it.
    fn take(&mut self) -> Option<u64> {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * PER_SECOND;
        self.tokens = (self.tokens + refill).min(BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Records what one component instance does with its handles.
#[derive(Clone)]
pub struct Audit {
    component: Arc<str>,
    pid: u64,
    parent: Option<u64>,
    log: Option<Arc<AuditLog>>,
    /// The rate limit on denials; only with a log.
    denials: Option<Arc<Mutex<Bucket>>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("component", &self.component)
            .field("pid", &self.pid)
            .finish()
    }
}

impl Audit {
    /// An audit trail for process `pid`, running the component known to the
    /// operator as `component`, with no JSON log.
    pub fn new(component: impl Into<Arc<str>>, pid: u64) -> Self {
        Audit {
            component: component.into(),
            pid,
            parent: None,
            log: None,
            denials: None,
        }
    }

    /// Also writes this process's events to `log`.
    pub fn with_log(mut self, log: Option<Arc<AuditLog>>) -> Self {
        self.denials = log.as_ref().map(|_| Arc::new(Mutex::new(Bucket::new())));
        self.log = log;
        self
    }

    /// The trail of a child process `pid` of this one, into the same log.
    pub fn child(&self, component: Arc<str>, pid: u64) -> Audit {
        Audit {
            parent: Some(self.pid),
            ..Audit::new(component, pid).with_log(self.log.clone())
        }
    }

    pub fn component(&self) -> &Arc<str> {
        &self.component
    }

    pub fn pid(&self) -> u64 {
        self.pid
    }

    /// Builds the event only when there is a log to write it to: spawning
    /// and dropping handles must not pay for JSON nobody reads.
    fn emit(&self, event: &str, fields: impl FnOnce() -> Value) {
        if let Some(log) = &self.log {
            let mut fields = fields();
            fields["event"] = json!(event);
            fields["pid"] = json!(self.pid);
            fields["parent"] = json!(self.parent);
            fields["component"] = json!(&*self.component);
            log.write(fields);
        }
    }

    /// The operator granted a handle.
    pub fn granted(&self, name: &str, target: &str, detail: &str) {
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            grant = name, target_path = target, detail, "granted");
        self.emit(
            "grant",
            || json!({ "grant": name, "target": target, "detail": detail }),
        );
    }

    /// The component derived a new handle from one it holds.
    pub fn derived(&self, op: &str, from: &str, to: &str, rights: Rights) {
        tracing::debug!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            op, from, to, rights = %RightsList(rights), "derived");
        self.emit("derive",
            || json!({ "op": op, "from": from, "to": to, "rights": RightsList(rights).to_string() }),
        );
    }

    /// The component dropped a handle.
    pub fn dropped(&self, handle: impl std::fmt::Display) {
        tracing::debug!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            %handle, "dropped");
        self.emit("drop", || json!({ "handle": handle.to_string() }));
    }

    /// The component gave up standard WASI authority for good.
    pub fn pledged(&self, authority: &str) {
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            authority, "pledged");
        self.emit("pledge", || json!({ "authority": authority }));
    }

    /// The component revoked a handle it had made revocable.
    pub fn revoked(&self, revoker: u32) {
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            revoker, "revoked");
        self.emit("revoke", || json!({ "revoker": revoker }));
    }

    /// The component started a child process.
    /// `grants` names the handles given; called only if the event is
    /// written somewhere.
    pub fn spawned<'a>(&self, child: u64, component: &str, grants: impl Fn() -> Vec<&'a str>) {
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            child, child_component = component, grants = ?grants(), "spawned");
        self.emit(
            "spawn",
            || json!({ "child": child, "child_component": component, "handles": grants() }),
        );
    }

    /// This process ended: how, and what it used.
    pub fn exited(&self, exit: &ExitRecord) {
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            status = %exit.status, fuel = exit.fuel_used, peak_memory = exit.peak_memory,
            wall_us = exit.wall_us, "exited");
        if let Some(limit) = exit.limit {
            self.emit("limit", || json!({ "limit": limit }));
        }
        self.flush_suppressed();
        self.emit("exit", || {
            json!({
                "status": exit.status,
                "fuel_used": exit.fuel_used,
                "peak_memory": exit.peak_memory,
                "wall_us": exit.wall_us,
            })
        });
    }

    /// A call was refused or failed. Refusals for want of rights, for
    /// leaving the handle, for limits and revocation are warnings; ordinary
    /// failures (not found, …) are informational, since programs probe for
    /// files all the time.
    pub fn refused(&self, op: &str, handle: &str, path: &str, held: Rights, err: &Error) {
        let denial = matches!(
            err,
            Error::Denied(_)
                | Error::Escape(_)
                | Error::LimitExceeded(_)
                | Error::Revoked
                | Error::Refused(_)
        );
        if denial {
            tracing::warn!(target: "capbroker::audit", component = %self.component,
                pid = self.pid, op, handle, path, rights = %RightsList(held),
                error = err.code(), "refused: {}", Describe(err))
        } else {
            tracing::info!(target: "capbroker::audit", component = %self.component,
                pid = self.pid, op, handle, path, error = err.code(), "failed: {}", Describe(err))
        }
        let Some(denials) = &self.denials else {
            return;
        };
        let Some(suppressed) = denials.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        if suppressed > 0 {
            self.emit("suppressed", || json!({ "count": suppressed }));
        }
        let mut fields = json!({
            "op": op,
            "handle": handle,
            "path": path,
            "rights": RightsList(held).to_string(),
            "error": err.code(),
            "message": Describe(err).to_string(),
        });
        if let Error::Denied(missing) = err {
            fields["missing"] = json!(RightsList(*missing).to_string());
        }
        if matches!(err, Error::LimitExceeded(_)) {
            self.emit("limit", || json!({ "limit": "handles", "op": op }));
        }
        self.emit(if denial { "deny" } else { "fail" }, move || fields);
    }

    fn flush_suppressed(&self) {
        let Some(denials) = &self.denials else {
            return;
        };
        let n = std::mem::take(&mut denials.lock().unwrap_or_else(|e| e.into_inner()).suppressed);
        if n > 0 {
            self.emit("suppressed", || json!({ "count": n }));
        }
    }
}

/// How a process ended and what it consumed, for its `exit` event.
pub struct ExitRecord {
    /// `finished`, `failed`, `trapped`, `out-of-memory`, `out-of-cpu`,
    /// `timed-out`, `killed`, or `exit N` for a command's exit code.
    pub status: Cow<'static, str>,
    /// Which limit ended it, if one did: `memory`, `cpu`, `time`.
    pub limit: Option<&'static str>,
    pub fuel_used: u64,
    pub peak_memory: u64,
    pub wall_us: u64,
}

pub mod report;
