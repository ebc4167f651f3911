//! capbroker's stateful file-system fuzzer, with a model oracle.
//!
//! An input ([`ops::Input`]) picks the operator's grants, then runs a
//! sequence of operations over one small host tree ([`tree`]) on both
//! faces: capbroker's `fs` interface and `wasi:filesystem` descriptors
//! from `to-descriptor`, in the `probe` guest (an interpreter that takes one
//! command at a time), a child that gets a shared copy of a directory,
//! and `wasi:filesystem` of a plain command (`std-probe`, Rust's
//! `std::fs`) with a preopen, unveil and pledge. It all runs in this
//! process, through the host library.
//!
//! After every app operation the oracle ([`model`]) checks that a refusal
//! it predicts happened, that a read returned the bytes the path names and
//! nothing from outside, that a listing named what is there, that no
//! derived handle holds more rights than it asked for and its parent had,
//! and that every change to the tree is one the operation's handles could
//! make. The command's steps are checked in the same way, and the tree once
//! after it ends.
//!
//! `fuzz_targets/confinement.rs` runs it under libFuzzer (`just fuzz`);
//! `tests/fuzz.rs` replays the corpus on stable.

/// The repository's root, and building its guest components (shared with
/// the tests).
#[path = "../../tests/support/guests.rs"]
pub mod guests;
pub mod model;
/// Making `openat2` unavailable, so that cap-std's own resolver is fuzzed
/// too (`CAPBROKER_FUZZ_NO_OPENAT2=1 just fuzz`); shared with the tests.
#[path = "../../tests/support/openat2.rs"]
pub mod openat2;
pub mod ops;
pub mod seeds;
pub mod tree;

use std::path::PathBuf;
use std::sync::Arc;

use capbroker::core::rights::rights_from_bits;
use capbroker::fs::DirGrant;
use capbroker::grants::{Grant, NamedGrant};
use capbroker::run::app::Loaded;
use capbroker::run::command::CommandComponent;
use capbroker::wasi::{MemoryOutputPipe, WasiGrants};
use capbroker::{AppComponent, Components, Limits, Outcome, Runtime};

use model::{join, names, Cap, Expect, Model};
use ops::*;
use tree::{Snapshot, Tree};

pub use guests::root;

/// A guest component, where `just guests` builds it.
pub fn guest(name: &str) -> PathBuf {
    root().join(format!("target/guests/wasm32-wasip2/release/{name}.wasm"))
}

/// What one input did, for the statistics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub inputs: u64,
    pub ops: u64,
    /// Refusals the model predicted (each checked).
    pub predicted: u64,
    /// Operations the broker allowed.
    pub allowed: u64,
    /// Inputs whose grants the broker refused at start.
    pub refused_setups: u64,
}

/// The fuzzer: the compiled guests and the tree, made once per process.
pub struct Harness {
    rt: Option<tokio::runtime::Runtime>,
    _runtime: Runtime,
    probe: AppComponent,
    command: CommandComponent,
    components: Arc<Components>,
    tree: Tree,
    pub stats: Stats,
}

/// An oracle failure: the input, where, and what went wrong.
#[derive(Debug)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Harness {
    /// Loads the guests (built beforehand, see [`guest`]).
    pub fn new() -> anyhow::Result<Harness> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let runtime = Runtime::new()?;
        let probe = runtime.load(&guest("probe"))?;
        let command = match runtime.load_any(&guest("std-probe"))? {
            Loaded::Command(c) => c,
            _ => anyhow::bail!("std-probe is not a command"),
        };
        let mut components = Components::new();
        components.insert("probe", probe.instance_pre().clone())?;
        Ok(Harness {
            rt: Some(rt),
            _runtime: runtime,
            probe,
            command,
            components: Arc::new(components),
            tree: Tree::new()?,
            stats: Stats::default(),
        })
    }

    /// Runs one input from its bytes.
    pub fn run_bytes(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        match Input::decode(bytes) {
            Some(input) => self.run(&input),
            None => Ok(()),
        }
    }

    pub fn run(&mut self, input: &Input) -> Result<(), Violation> {
        self.tree
            .reset()
            .map_err(|e| Violation(format!("cannot reset the tree: {e}")))?;
        self.stats.inputs += 1;
        // Out of `self` while it runs the input, which borrows the rest.
        let rt = self
            .rt
            .take()
            .expect("the runtime is put back after each input");
        let r = rt.block_on(self.run_async(input));
        self.rt = Some(rt);
        r
    }

    async fn run_async(&mut self, input: &Input) -> Result<(), Violation> {
        let fail = |at: &str, what: String| Violation(format!("{at}: {what}\ninput:\n{input}"));
        let setup = input.setup;
        let data = self.tree.data();
        let scope = |rights: u8, which: u8| -> Option<Vec<(&'static str, u8)>> {
            let entries: Vec<(&str, u8)> = match which {
                1 => vec![("sub", rights), ("ro", rights & (R_READ | R_LIST))],
                2 => vec![("sub/deep", rights), ("a.txt", rights & (R_READ | R_WRITE))],
                _ => return None,
            };
            Some(entries.into_iter().filter(|(_, r)| *r != 0).collect())
        };
        let dir_grant = |path: PathBuf, rights: u8, scope: &Option<Vec<(&str, u8)>>| {
            DirGrant::new(
                path,
                rights_from_bits(rights),
                scope.as_ref().map(|s| {
                    s.iter()
                        .map(|(p, r)| (PathBuf::from(p), rights_from_bits(*r)))
                        .collect()
                }),
            )
        };
        let cap = |root: &str, rights: u8, scope: &Option<Vec<(&str, u8)>>| {
            Cap::dir(
                names(root),
                rights,
                scope.as_ref().map(|s| {
                    s.iter()
                        .map(|(p, r)| (names(&format!("{root}/{p}")), *r))
                        .collect()
                }),
            )
        };
        // The probe asks for every right on `data`: the rights vary in the
        // scope's entries, and through the operations that derive handles.
        let data_scope = scope(setup.data, setup.scope);
        let mut grants = vec![NamedGrant {
            name: "data".into(),
            grant: Grant::Dir(dir_grant(data.clone(), R_ALL, &data_scope)),
        }];
        let mut caps = vec![(0, cap("data", R_ALL, &data_scope))];
        if setup.ro {
            grants.push(NamedGrant {
                name: "ro".into(),
                grant: Grant::Dir(dir_grant(data.clone(), R_READ | R_LIST, &None)),
            });
            caps.push((1, cap("data", R_READ | R_LIST, &None)));
        }
        if setup.boxed {
            grants.push(NamedGrant {
                name: "box".into(),
                grant: Grant::Dir(dir_grant(data.join("sub"), R_CREATE, &None)),
            });
            caps.push((2, cap("data/sub", R_CREATE, &None)));
        }
        grants.push(
            Grant::parse_spawn("sp=max-children=2").map_err(|e| fail("setup", e.to_string()))?,
        );
        let limits = Limits::default();
        let mut running = match self
            .probe
            .start(&grants, &limits, self.components.clone())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if std::env::var_os("CAPBROKER_FUZZ_DEBUG").is_some() {
                    eprintln!("grants refused: {e:#}");
                }
                self.stats.refused_setups += 1;
                return Ok(());
            }
        };
        match running.run(&[]).await {
            Ok(Outcome::Ok) => {}
            other => return Err(fail("start", format!("the probe's run: {other:?}"))),
        }
        let mut model = Model::new(caps);
        let mut snap = self.snapshot()?;
        let mut command_ops = Vec::new();
        for (i, op) in input.ops.iter().copied().enumerate() {
            if op.is_command() {
                command_ops.push(op);
                continue;
            }
            self.stats.ops += 1;
            let at = format!("op {i} `{}`", op.probe_command());
            let expect = model.expect(op, &snap);
            let result = match op {
                Op::Child { .. } => {
                    let spawned = step(&mut running, &op.probe_command()).await;
                    match spawned {
                        Err(e) => return Err(fail(&at, e)),
                        Ok(r) if r.starts_with("err") => r,
                        Ok(_) => {
                            let waited = step(&mut running, "wait child")
                                .await
                                .map_err(|e| fail(&at, e))?;
                            match waited.strip_prefix("ok:finished:") {
                                Some(r) => r.to_string(),
                                None => format!("err:child:{waited}"),
                            }
                        }
                    }
                }
                Op::KidOp { .. } => {
                    let sent = step(&mut running, &op.probe_command())
                        .await
                        .map_err(|e| fail(&at, e))?;
                    if sent.starts_with("err") {
                        sent
                    } else {
                        let got = step(&mut running, "precv kid")
                            .await
                            .map_err(|e| fail(&at, e))?;
                        match got.strip_prefix("ok:") {
                            Some("none") | None => format!("err:kid:{got}"),
                            Some(r) => r.to_string(),
                        }
                    }
                }
                _ => step(&mut running, &op.probe_command())
                    .await
                    .map_err(|e| fail(&at, e))?,
            };
            let after = if mutates(op) {
                self.snapshot()?
            } else {
                snap.clone()
            };
            check(&expect, &result, &snap, &after).map_err(|e| fail(&at, e))?;
            if expect.refuse.is_some() {
                self.stats.predicted += 1;
            }
            if result.starts_with("ok") {
                self.stats.allowed += 1;
                model.apply(op, &snap, &after);
                if after != snap {
                    model.follow_moves(&snap, &after);
                }
                if let Some(new) = derived(op) {
                    let cap = match op {
                        Op::ToDescriptor { .. } => None,
                        _ => model.dirs[new as usize].clone(),
                    };
                    if let Some(cap) = cap {
                        let got = step(&mut running, &format!("rights {}", DIRS[new as usize]))
                            .await
                            .map_err(|e| fail(&at, e))?;
                        let held = parse_rights(got.strip_prefix("ok:").unwrap_or(""));
                        if held & !cap.rights != 0 {
                            return Err(fail(
                                &at,
                                format!(
                                    "the new handle holds {got}, more than the model's {:#x}",
                                    cap.rights
                                ),
                            ));
                        }
                    }
                }
            } else if op == Op::PledgeFs {
                model.pledge_failed();
            }
            snap = after;
        }
        drop(running);
        if !command_ops.is_empty() {
            self.run_command(input, &command_ops, &snap).await?;
        }
        Ok(())
    }

    fn snapshot(&self) -> Result<Snapshot, Violation> {
        self.tree
            .snapshot()
            .map_err(|e| Violation(format!("cannot read the tree: {e}")))
    }

    /// Runs the command's steps in one run of `std-probe`, and checks each
    /// line and then the tree.
    async fn run_command(
        &mut self,
        input: &Input,
        steps: &[Op],
        before: &Snapshot,
    ) -> Result<(), Violation> {
        let fail = |at: &str, what: String| Violation(format!("{at}: {what}\ninput:\n{input}"));
        let setup = input.setup;
        let rights = setup.command;
        let entries: Option<Vec<(&str, u8)>> = match setup.command_scope {
            1 => Some(vec![("sub", rights)]),
            2 => Some(vec![
                ("sub/deep", rights),
                ("ro", rights & (R_READ | R_LIST)),
            ]),
            _ => None,
        }
        .map(|v| v.into_iter().filter(|(_, r)| *r != 0).collect());
        let grant = DirGrant::new(
            self.tree.data(),
            rights_from_bits(rights),
            entries.as_ref().map(|v| {
                v.iter()
                    .map(|(p, r)| (PathBuf::from(p), rights_from_bits(*r)))
                    .collect()
            }),
        );
        let initial = Cap::dir(
            names("data"),
            rights,
            entries.as_ref().map(|v| {
                v.iter()
                    .map(|(p, r)| (names(&format!("data/{p}")), *r))
                    .collect()
            }),
        );
        let pipe = MemoryOutputPipe::new(1 << 20);
        let grants = WasiGrants {
            dirs: vec![("/data".into(), grant)],
            stdout: Some(pipe.clone()),
            ..WasiGrants::default()
        };
        let args: Vec<String> = steps.iter().flat_map(|s| s.command_args()).collect();
        let limits = Limits::default();
        if let Err(e) = self.command.run(&grants, &args, &limits).await {
            let text = format!("{e:#}");
            // A scope the broker refuses at start is the operator's error.
            if text.contains("scope") || text.contains("paths") {
                self.stats.refused_setups += 1;
                return Ok(());
            }
            return Err(fail("command", format!("the command failed: {text}")));
        }
        let out = String::from_utf8_lossy(&pipe.contents()).into_owned();
        let lines: Vec<&str> = out.lines().collect();
        if lines.len() != steps.len() {
            return Err(fail(
                "command",
                format!(
                    "{} steps printed {} lines:\n{out}",
                    steps.len(),
                    lines.len()
                ),
            ));
        }
        let mut state = CommandState {
            cap: initial.clone(),
            view: None,
            pledged: false,
            changed: false,
            view_lost: false,
        };
        for (i, (op, line)) in steps.iter().zip(&lines).enumerate() {
            self.stats.ops += 1;
            let at = format!("command step {i} `{}`", op.command_args().join(" "));
            let ok = line.starts_with("ok");
            if model::leaks(line) {
                return Err(fail(&at, format!("read outside the grant: {line}")));
            }
            let refuse = state.predict(*op, before);
            if let Some(why) = &refuse {
                self.stats.predicted += 1;
                if ok {
                    return Err(fail(
                        &at,
                        format!("the model refuses ({why}), the broker allowed: {line}"),
                    ));
                }
            }
            if ok {
                self.stats.allowed += 1;
            }
            state.apply(*op, ok, before);
        }
        let after = self.snapshot()?;
        let bad = model::unexplained(before, &after, &[initial], true);
        if !bad.is_empty() {
            return Err(fail("after the command", bad.join("\n")));
        }
        Ok(())
    }
}

/// The model of the plain command: its preopen's view and rights.
struct CommandState {
    /// The preopen, narrowed by `unveil` (its root is the view).
    cap: Cap,
    /// The unveiled view, as a path from the preopen's root.
    view: Option<model::Names>,
    pledged: bool,
    /// Once a step changed the tree, what a path names may differ from the
    /// snapshot: from there on, only refusals that do not depend on the
    /// tree are predicted (the view's, which depend on the path's text,
    /// still are).
    changed: bool,
    /// The model could not tell where an unveil led.
    view_lost: bool,
}

impl CommandState {
    /// Where `rel` (from the preopen's root) leads below the view, or why
    /// it must be refused; `Ok(None)` when the model cannot tell.
    fn route(&self, rel: &str) -> Result<Option<String>, String> {
        let Some(view) = &self.view else {
            return Ok(Some(rel.to_string()));
        };
        let parts: Vec<String> = names(rel).into_iter().filter(|c| c != ".").collect();
        if parts.iter().any(|c| c == "..") {
            return Ok(None);
        }
        if !parts.starts_with(view) {
            return Err("outside the unveiled view".into());
        }
        let rest = join(&parts[view.len()..]);
        let slash = if rel.ends_with('/') && !rest.is_empty() {
            "/"
        } else {
            ""
        };
        Ok(Some(if rest.is_empty() {
            ".".into()
        } else {
            format!("{rest}{slash}")
        }))
    }

    /// The refusal the model predicts for a step, if any.
    fn predict(&self, op: Op, snap: &Snapshot) -> Option<String> {
        let path = |p: u8| PATHS[p as usize];
        let cap = &self.cap;
        if matches!(op, Op::CPledge) {
            return None;
        }
        if self.pledged {
            return (!matches!(op, Op::CUnveil { .. })).then(|| "pledged".to_string());
        }
        let (rel, follow, need, any) = match op {
            Op::CRead { p } => (path(p), true, R_READ, 0),
            // `std::fs::write`: create, truncate and write; where `write`
            // is not held, it may only make a new file.
            Op::CWrite { p, .. } if cap.rights & R_WRITE == 0 => (path(p), true, R_CREATE, 0),
            Op::CWrite { p, .. } => (path(p), true, R_WRITE | R_CREATE, 0),
            Op::CCreate { p } => (path(p), false, R_CREATE, 0),
            Op::CList { p } => (path(p), true, R_LIST, 0),
            Op::CMkdir { p } => (path(p), false, R_CREATE, 0),
            Op::CRemove { p } => (path(p), false, R_REMOVE, 0),
            Op::CStat { p } => (path(p), true, 0, R_READ | R_LIST),
            Op::CLink { q, .. } => (path(q), false, R_CREATE, 0),
            Op::CRename { p, .. } => (path(p), false, R_REMOVE, 0),
            Op::CAppend { p, .. } => (path(p), true, R_WRITE, 0),
            Op::CUnveil { p, r } => {
                if r & !cap.rights != 0 {
                    return Some("unveil asks for more than the preopen holds".into());
                }
                (path(p), true, 0, 0)
            }
            _ => return None,
        };
        let lacks = |r: u8| r & need != need || (any != 0 && r & any == 0);
        if cap.scope.is_none() && lacks(cap.rights) {
            return Some(format!("lacks rights {need:#x}/{any:#x}"));
        }
        // An absolute path names no preopen.
        if rel.starts_with('/') {
            return Some("no preopen".into());
        }
        if self.view_lost {
            return None;
        }
        // A step's path is from the preopen's root; an unveil's from the
        // last view (docs/wasi.md).
        let rel = match op {
            Op::CUnveil { .. } => rel.to_string(),
            _ => match self.route(rel) {
                Err(why) => return Some(why),
                Ok(None) => return None,
                Ok(Some(rel)) => rel,
            },
        };
        if self.changed {
            return None;
        }
        if matches!(op, Op::CWrite { .. }) && cap.rights & R_WRITE == 0 && !rel_new(cap, snap, &rel)
        {
            return Some("may only make a new file, and it exists".into());
        }
        match cap.locate(snap, &rel, follow) {
            Err(why) => Some(why.into()),
            Ok(Some((_, r))) if lacks(r) => Some("lacks rights there".into()),
            _ => None,
        }
    }

    /// Follows a step that printed `ok` (or not).
    fn apply(&mut self, op: Op, ok: bool, snap: &Snapshot) {
        match op {
            Op::CPledge => self.pledged = true,
            Op::CUnveil { p, r } if ok => {
                // From the last view (docs/wasi.md).
                let rel = PATHS[p as usize];
                let located = if self.changed || self.view_lost {
                    None
                } else {
                    self.cap.locate(snap, rel, true).ok().flatten()
                };
                self.cap.rights &= r;
                let parts: Vec<String> = names(rel).into_iter().filter(|c| c != ".").collect();
                match located {
                    Some((n, _))
                        if self.cap.scope.is_none() && !parts.iter().any(|c| c == "..") =>
                    {
                        self.cap.root = n;
                        let mut view = self.view.take().unwrap_or_default();
                        view.extend(parts);
                        self.view = Some(view);
                    }
                    _ => self.view_lost = true,
                }
            }
            Op::CRead { .. } | Op::CList { .. } | Op::CStat { .. } | Op::CUnveil { .. } => {}
            _ if ok => self.changed = true,
            _ => {}
        }
    }
}

/// Whether `rel` names nothing yet (as far as the model can tell).
fn rel_new(cap: &Cap, snap: &Snapshot, rel: &str) -> bool {
    match cap.locate(snap, rel, true) {
        Ok(Some((n, _))) => !snap.contains_key(&join(&n)),
        _ => true,
    }
}

/// One probe command; a trap is an error.
async fn step(running: &mut capbroker::Running, command: &str) -> Result<String, String> {
    let instance = running.instance();
    let store = running.store();
    let func = instance
        .get_typed_func::<(String,), (String,)>(&mut *store, "step")
        .map_err(|e| format!("no step export: {e}"))?;
    func.call_async(&mut *store, (command.to_string(),))
        .await
        .map(|(out,)| out)
        .map_err(|e| format!("`{command}` trapped: {e:?}"))
}

/// Checks one app operation's result against the model.
fn check(expect: &Expect, result: &str, before: &Snapshot, after: &Snapshot) -> Result<(), String> {
    let ok = result.starts_with("ok");
    if let (Some(why), true) = (&expect.refuse, ok) {
        return Err(format!(
            "the model refuses ({why}), the broker allowed: {result}"
        ));
    }
    if model::leaks(result) {
        return Err(format!("returned bytes from outside the grant: {result}"));
    }
    let value = result.strip_prefix("ok:").unwrap_or("");
    if ok {
        if let Some(bytes) = &expect.bytes {
            if value.as_bytes() != bytes.as_slice() {
                return Err(format!(
                    "read `{value}`, but the path names a file holding `{}`",
                    String::from_utf8_lossy(bytes)
                ));
            }
        }
        if let Some(bytes) = &expect.part_of {
            let whole = String::from_utf8_lossy(bytes);
            if !whole.contains(value) {
                return Err(format!(
                    "read `{value}` from an open file that holds `{whole}`"
                ));
            }
        }
        if let Some(want) = &expect.listing {
            let mut got: Vec<String> = value
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|e| e.split('=').next().unwrap().to_string())
                .collect();
            got.sort();
            if &got != want {
                return Err(format!("listed {got:?}, but the directory holds {want:?}"));
            }
        }
    }
    let bad = model::unexplained(before, after, &expect.using, false);
    if !bad.is_empty() {
        return Err(format!(
            "changes no handle of the operation could make (result {result}):\n{}",
            bad.join("\n")
        ));
    }
    Ok(())
}

/// Whether an operation could change the tree (if the broker were wrong,
/// any that opens a path could; only the ones that touch no path are left
/// out).
fn mutates(op: Op) -> bool {
    !matches!(
        op,
        Op::Attenuate { .. }
            | Op::Revocable { .. }
            | Op::Revoke { .. }
            | Op::Drop { .. }
            | Op::FDrop { .. }
            | Op::WDrop { .. }
            | Op::ToDescriptor { .. }
            | Op::PledgeFs
            | Op::FRead { .. }
            | Op::WRead { .. }
            | Op::WStreamRead { .. }
    )
}

/// The directory slot a derivation fills.
fn derived(op: Op) -> Option<u8> {
    match op {
        Op::OpenDir { new, .. } | Op::Attenuate { new, .. } | Op::Revocable { new, .. } => {
            Some(new)
        }
        _ => None,
    }
}

fn parse_rights(s: &str) -> u8 {
    let names = ["read", "write", "create", "list", "remove"];
    s.split(',')
        .filter_map(|w| names.iter().position(|n| *n == w))
        .fold(0, |acc, i| acc | 1 << i)
}
