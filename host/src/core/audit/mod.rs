//! The audit trail: every grant, derivation, drop, pledge, denial, spawn,
//! revocation, limit hit and exit, for each process.
//!
//! Events always go to `tracing` under the target `capbroker::audit` (the
//! `capbroker` binary prints warnings, denials among them, on stderr). With
//! an [`AuditLog`] (`capbroker run --audit FILE`) they are also written as
//! JSON Lines, one object per event; see docs/audit.md for the schema.
//!
//! A guest decides how many denials it causes and what text they carry, so
//! both are bounded here, where every caller goes through: a process that
//! floods denials is rate-limited on stderr and in the log alike (what is
//! left out is counted and reported in a `suppressed` event), the guest is
//! never made to wait for the log, and the guest's text (paths, addresses,
//! messages quoting them) is escaped and shortened by [`clean`] before it
//! reaches either.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};

use crate::core::{Describe, Error, Rights, RightsList};

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

/// Longest a path, address or handle name is written, in bytes after
/// escaping; [`clean`] says how much it left out.
pub const MAX_TEXT: usize = 256;
/// Longest a denial's message is written, likewise.
pub const MAX_MESSAGE: usize = 512;

/// `text` (a guest's, usually) made safe for a terminal and a log line, and
/// at most `max` bytes plus a short note of what was cut. Control characters
/// (newlines, ESC and so ANSI escape sequences, C1 controls), Unicode
/// format and separator characters (bidirectional overrides, zero-width
/// characters) and `\` are written as Rust escapes (`\n`, `\u{1b}`, `\\`),
/// so what is printed is unambiguous and moves no cursor.
pub fn clean(text: &str, max: usize) -> Cow<'_, str> {
    let unsafe_char = |c: char| c == '\\' || c.is_control() || invisible(c);
    if text.len() <= max && !text.contains(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(max.min(text.len()) + 24);
    for (i, c) in text.char_indices() {
        let start = out.len();
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || invisible(c) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        if out.len() > max {
            out.truncate(start);
            out.push_str(&format!("…[{} more bytes]", text.len() - i));
            break;
        }
    }
    Cow::Owned(out)
}

/// Characters that print as nothing or reorder what follows: Unicode's
/// format (Cf) and line/paragraph separator characters that terminals and
/// viewers honour.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
        | '\u{e0000}'..='\u{e007f}')
}

/// Displays cleaned text in double quotes (escaping `"` too), for stderr,
/// where a field's end must be plain.
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.replace('"', "\\\""))
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
    /// The rate limit on denials, on stderr and in the log alike.
    denials: Arc<Mutex<Bucket>>,
    /// The rate limit on derive and drop events in the log, which a guest
    /// can make as fast as it can call (a bucket of their own, so that
    /// they never crowd out denials).
    changes: Arc<Mutex<Bucket>>,
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
            denials: Arc::new(Mutex::new(Bucket::new())),
            changes: Arc::new(Mutex::new(Bucket::new())),
        }
    }

    /// Also writes this process's events to `log`.
    pub fn with_log(mut self, log: Option<Arc<AuditLog>>) -> Self {
        self.log = log;
        self
    }

    /// The trail of a child process `pid` of this one, into the same log.
    /// It shares this one's rate limits: a process tree as a whole (a
    /// server's per-request children included) writes no more than one
    /// process may.
    pub fn child(&self, component: Arc<str>, pid: u64) -> Audit {
        // Made field by field: `Audit::new` would allocate two rate limits
        // only for them to be dropped, on every spawn.
        Audit {
            component,
            pid,
            parent: Some(self.pid),
            log: self.log.clone(),
            denials: self.denials.clone(),
            changes: self.changes.clone(),
        }
    }

    /// Whether events are written to a log (not only to stderr).
    pub fn logged(&self) -> bool {
        self.log.is_some()
    }

    /// Whether events a guest makes as fast as it calls (a child's exit
    /// among them) are written anywhere: to the log, or to stderr at
    /// `info`. When not, there is no need to gather what they would say.
    pub fn writes_changes(&self) -> bool {
        self.log.is_some() || tracing::enabled!(target: "capbroker::audit", tracing::Level::INFO)
    }

    pub fn component(&self) -> &Arc<str> {
        &self.component
    }

    pub fn pid(&self) -> u64 {
        self.pid
    }

    /// Whether one more event a guest makes as fast as it calls (derive,
    /// drop, pledge, revoke, spawn) may be written, to the log or at
    /// `level` on stderr; what is left out is counted in a `suppressed`
    /// event before the next one written. Free when nothing is written.
    fn take_change(&self, level: tracing::Level) -> bool {
        let traced = if level == tracing::Level::DEBUG {
            tracing::enabled!(target: "capbroker::audit", tracing::Level::DEBUG)
        } else {
            tracing::enabled!(target: "capbroker::audit", tracing::Level::INFO)
        };
        if self.log.is_none() && !traced {
            return false;
        }
        let taken = self
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(suppressed) = taken else {
            return false;
        };
        if suppressed > 0 {
            self.emit(
                "suppressed",
                || json!({ "count": suppressed, "of": "derive,drop,pledge,revoke,spawn" }),
            );
        }
        true
    }

    /// Writes a derive or drop event within the rate limit.
    fn emit_change(&self, event: &str, fields: impl FnOnce() -> Value) {
        if self.log.is_some() && self.take_change(tracing::Level::DEBUG) {
            self.emit(event, fields);
        }
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

    /// `capbroker serve` took a request for this instance, on `route`.
    pub fn request(&self, method: &str, target: &str, route: &str) {
        tracing::debug!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            method, target = %clean(target, MAX_TEXT), route, "request");
        self.emit(
            "request",
            || json!({ "method": method, "target": clean(target, MAX_TEXT), "route": route }),
        );
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
        let (from, to) = (clean(from, MAX_TEXT), clean(to, MAX_TEXT));
        tracing::debug!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            op, from = %Quoted(&from), to = %Quoted(&to), rights = %RightsList(rights), "derived");
        self.emit_change("derive",
            || json!({ "op": op, "from": from, "to": to, "rights": RightsList(rights).to_string() }),
        );
    }

    /// The component dropped a handle.
    pub fn dropped(&self, handle: impl std::fmt::Display) {
        // Spawns drop handles all the time: format nothing nobody reads.
        if self.log.is_none()
            && !tracing::enabled!(target: "capbroker::audit", tracing::Level::DEBUG)
        {
            return;
        }
        let handle = handle.to_string();
        let handle = clean(&handle, MAX_TEXT);
        tracing::debug!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            handle = %Quoted(&handle), "dropped");
        self.emit_change("drop", || json!({ "handle": handle }));
    }

    /// The component gave up standard WASI authority for good.
    pub fn pledged(&self, authority: &str) {
        if !self.take_change(tracing::Level::INFO) {
            return;
        }
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            authority, "pledged");
        self.emit("pledge", || json!({ "authority": authority }));
    }

    /// The component revoked a handle it had made revocable.
    pub fn revoked(&self, revoker: u32) {
        if !self.take_change(tracing::Level::INFO) {
            return;
        }
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            revoker, "revoked");
        self.emit("revoke", || json!({ "revoker": revoker }));
    }

    /// The component started a child process.
    /// `grants` names the handles given; called only if the event is
    /// written somewhere.
    pub fn spawned<'a>(&self, child: u64, component: &str, grants: impl Fn() -> Vec<&'a str>) {
        if !self.take_change(tracing::Level::INFO) {
            return;
        }
        // Share names are the guest's text, up to 64 of 256 bytes: the
        // line keeps to the size of others, and says how many it leaves out.
        let handles = || -> Vec<String> {
            let all = grants();
            let mut out = Vec::new();
            let mut bytes = 0;
            for g in &all {
                let name = clean(g, MAX_TEXT).into_owned();
                if bytes + name.len() > MAX_MESSAGE {
                    break;
                }
                bytes += name.len();
                out.push(name);
            }
            if out.len() < all.len() {
                out.push(format!("… {} more", all.len() - out.len()));
            }
            out
        };
        tracing::info!(target: "capbroker::audit", component = %self.component, pid = self.pid,
            child, child_component = component, grants = ?handles(), "spawned");
        self.emit(
            "spawn",
            || json!({ "child": child, "child_component": component, "handles": handles() }),
        );
    }

    /// This process ended: how, and what it used.
    pub fn exited(&self, exit: &ExitRecord) {
        // A child's exit is an event its parent makes as fast as it spawns;
        // the root's is written whatever happens.
        if self.parent.is_some() && !self.take_change(tracing::Level::INFO) {
            return;
        }
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
    /// files all the time. Both count against the process's rate limit,
    /// and the guest's text in them is [`clean`]ed.
    pub fn refused(&self, op: &str, handle: &str, path: &str, held: Rights, err: &Error) {
        let Some(suppressed) = self
            .denials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        // On stderr the count rides on this line rather than its own, so
        // the line count stays that of the rate limit.
        let left_out = if suppressed > 0 {
            self.emit("suppressed", || json!({ "count": suppressed }));
            format!(" [{suppressed} before this left out by the rate limit]")
        } else {
            String::new()
        };
        let denial = matches!(
            err,
            Error::Denied(_)
                | Error::Escape(_)
                | Error::LimitExceeded(_)
                | Error::Revoked
                | Error::Refused(_)
        );
        let (op, handle, path) = (
            clean(op, MAX_TEXT),
            clean(handle, MAX_TEXT),
            clean(path, MAX_TEXT),
        );
        let message = Describe(err).to_string();
        let message = clean(&message, MAX_MESSAGE);
        if denial {
            tracing::warn!(target: "capbroker::audit", component = %self.component,
                pid = self.pid, op = %op, handle = %Quoted(&handle), path = %Quoted(&path),
                rights = %RightsList(held), error = err.code(), "refused: {message}{left_out}")
        } else {
            tracing::info!(target: "capbroker::audit", component = %self.component,
                pid = self.pid, op = %op, handle = %Quoted(&handle), path = %Quoted(&path),
                error = err.code(), "failed: {message}{left_out}")
        }
        if self.log.is_none() {
            return;
        }
        let mut fields = json!({
            "op": op,
            "handle": handle,
            "path": path,
            "rights": RightsList(held).to_string(),
            "error": err.code(),
            "message": message,
        });
        if let Error::Denied(missing) = err {
            fields["missing"] = json!(RightsList(*missing).to_string());
        }
        if let Error::LimitExceeded(what) = err {
            self.emit(
                "limit",
                || json!({ "limit": limit_named(what), "op": &*op }),
            );
        }
        self.emit(if denial { "deny" } else { "fail" }, move || fields);
    }

    /// Says how many denials and failures were left out since the last
    /// one written.
    fn flush_suppressed(&self) {
        let n = std::mem::take(
            &mut self
                .denials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .suppressed,
        );
        if n > 0 {
            tracing::warn!(target: "capbroker::audit", component = %self.component,
                pid = self.pid, count = n, "{n} denials and failures left out by the rate limit");
            self.emit("suppressed", || json!({ "count": n }));
        }
        let n = std::mem::take(
            &mut self
                .changes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .suppressed,
        );
        if n > 0 {
            self.emit(
                "suppressed",
                || json!({ "count": n, "of": "derive,drop,pledge,revoke,spawn" }),
            );
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

/// Says `message` on stderr after `first`. It may carry a guest's text (its
/// error, the names of its functions in a backtrace): each line is escaped
/// and cut, so it moves no cursor and makes no line of its own, and at most
/// 64 lines follow the first.
pub fn say(first: &str, message: &str) {
    let mut lines = message.lines();
    eprintln!("{first}{}", clean(lines.next().unwrap_or(""), 4096));
    for line in lines.take(64) {
        eprintln!("  {}", clean(line, 1024));
    }
}

/// Which limit a `limit-exceeded` message is about, by what it starts with.
fn limit_named(message: &str) -> &'static str {
    let starts = |p: &str| message.starts_with(p);
    if starts("the handle table") {
        "handles"
    } else if starts("max-children") {
        "children"
    } else if message.contains("memory") {
        "memory"
    } else if starts("shares") {
        "shares"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_text_passes_unchanged() {
        assert!(matches!(clean("sub/hello.txt", 64), Cow::Borrowed(_)));
        assert!(matches!(clean("café/日本", 64), Cow::Borrowed(_)));
    }

    #[test]
    fn control_and_invisible_characters_are_escaped() {
        let hostile = "a\nb\r\x1b[2J\x07\u{9b}31m\u{202e}txt\u{200b}\\n\"";
        let out = clean(hostile, 256);
        assert_eq!(
            out,
            "a\\nb\\r\\u{1b}[2J\\u{7}\\u{9b}31m\\u{202e}txt\\u{200b}\\\\n\""
        );
        assert!(!out.chars().any(|c| c.is_control() || invisible(c)));
    }

    #[test]
    fn long_text_is_cut_and_says_how_much() {
        let long = format!("{}{}", "é".repeat(300), "\x1b".repeat(100));
        let out = clean(&long, 256);
        assert!(out.len() <= 256 + 24, "{}", out.len());
        assert!(out.ends_with(&format!("…[{} more bytes]", long.len() - 256)));
        // Escapes are never cut in half.
        let escs = "\x1b".repeat(100);
        let out = clean(&escs, 20);
        assert_eq!(out, "\\u{1b}\\u{1b}\\u{1b}…[97 more bytes]");
    }

    #[test]
    fn the_summary_cleans_what_it_prints() {
        let line = r#"{"event":"deny","pid":1,"component":"p","op":"read","handle":"d","path":"\u001b[2Jx\n","error":"escape","message":"m"}"#;
        let out = report::summarise("log", line).unwrap();
        assert!(!out.contains('\x1b'), "{out:?}");
        assert!(out.contains("`\\u{1b}[2Jx\\n`"), "{out}");
    }
}
