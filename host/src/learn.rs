//! `capbroker learn`: what a run actually used, and the manifest that
//! grants only that.
//!
//! Handles carry the [`Learner`] of their run (a directory handle with its
//! grant's name and its place below the grant's root; a network right with
//! its grant's name), and note each use that passed its checks. Children
//! inherit the learner from their parent, so what they use is learned for
//! the grant it came from. At the end, [`Learner::manifest`] narrows the
//! run's configuration to what was used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::audit::ExitRecord;
use crate::grants::{Grant, NamedGrant, Request, Wants};
use crate::manifest::Config;
use crate::net::NetGrant;
use crate::spawn::{ChildLimits, SpawnGrant};
use crate::types::{Rights, RightsList};

/// How much more than the peak a learned budget allows.
pub const HEADROOM: u64 = 2;

/// The recorder of one run.
#[derive(Default, Debug)]
pub struct Learner {
    used: Mutex<Used>,
}

#[derive(Default, Debug)]
struct Used {
    /// Per directory grant: each path below its root, and the rights used on it.
    dirs: BTreeMap<String, BTreeMap<PathBuf, Rights>>,
    /// Per directory grant: renames and links made, from and to; a source
    /// needs what its destination is granted.
    moves: BTreeMap<String, BTreeSet<(PathBuf, PathBuf)>>,
    /// Per network grant: the addresses listened on or connected to.
    net: BTreeMap<String, BTreeSet<String>>,
    /// The components started as children, by the name they were spawned by.
    spawned: BTreeSet<String>,
    children: u64,
    running: u64,
    peak_running: u64,
    peak_memory: u64,
    peak_fuel: u64,
    peak_wall_us: u64,
}

impl Learner {
    pub fn new() -> Arc<Learner> {
        Arc::new(Learner::default())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Used) -> T) -> T {
        f(&mut self.used.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Something at `from` was renamed or linked to `to`, both relative to
    /// the root of grant `grant`.
    pub fn moved(&self, grant: &str, from: PathBuf, to: PathBuf) {
        self.with(|u| {
            u.moves
                .entry(grant.to_string())
                .or_default()
                .insert((from, to));
        })
    }

    /// `rights` were used on `path`, relative to the root of grant `grant`.
    pub fn dir(&self, grant: &str, path: PathBuf, rights: Rights) {
        self.with(|u| {
            *u.dirs
                .entry(grant.to_string())
                .or_default()
                .entry(path)
                .or_insert(Rights::empty()) |= rights;
        })
    }

    /// The network grant `grant` was used for `addr` (`IP:PORT`).
    pub fn net(&self, grant: &str, addr: String) {
        self.with(|u| {
            u.net.entry(grant.to_string()).or_default().insert(addr);
        })
    }

    /// A child was started as `component` (the name given to `spawn`).
    pub fn spawned(&self, component: &str) {
        self.with(|u| {
            u.spawned.insert(component.to_string());
            u.children += 1;
            u.running += 1;
            u.peak_running = u.peak_running.max(u.running);
        })
    }

    /// A child ended, having used what `exit` says.
    pub fn exited(&self, exit: &ExitRecord) {
        self.with(|u| {
            u.running = u.running.saturating_sub(1);
            u.peak_memory = u.peak_memory.max(exit.peak_memory);
            u.peak_fuel = u.peak_fuel.max(exit.fuel_used);
            u.peak_wall_us = u.peak_wall_us.max(exit.wall_us);
        })
    }

    /// Waits (a little) for children that are still ending, so that what
    /// they used is counted.
    pub async fn settle(&self) {
        for _ in 0..200 {
            if self.with(|u| u.running) == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// `config` narrowed to what was used: directory grants reach only the
    /// paths used, each with the rights used there; network grants only
    /// the addresses used; spawners only the components started, with
    /// [`HEADROOM`] times the children's peaks. `requests` are the
    /// component's, so that what it requires stays granted (and with the
    /// rights it asks for: the paths do the narrowing). Returns the
    /// manifest's text, with what was learned in comments.
    pub fn manifest(&self, config: &Config, requests: &[Request]) -> String {
        let mut learned = Config {
            component: config.component.clone(),
            args: config.args.clone(),
            env: config.env.clone(),
            stdin: config.stdin,
            max_memory: config.max_memory,
            max_handles: config.max_handles,
            max_fuel: config.max_fuel,
            timeout: config.timeout,
            grants: Vec::new(),
            components: Vec::new(),
            manifest: None,
        };
        let mut notes = String::new();
        self.with(|u| {
            for g in &config.grants {
                let request = requests.iter().find(|r| r.name == g.name);
                let required = request.is_some_and(|r| !r.optional);
                let narrowed = match &g.grant {
                    Grant::Dir(d) => {
                        let paths: Vec<(PathBuf, Rights)> = u
                            .dirs
                            .get(&g.name)
                            .map(|m| m.iter().map(|(p, r)| (p.clone(), *r & d.rights)).collect())
                            .unwrap_or_default();
                        let moves = u.moves.get(&g.name).cloned().unwrap_or_default();
                        let paths = consistent(paths, &moves);
                        if paths.is_empty() && !required {
                            writeln!(notes, "# dir.{}: not used, not granted", g.name).unwrap();
                            continue;
                        }
                        let used = paths.iter().fold(Rights::empty(), |a, (_, r)| a | *r);
                        let wanted = match request.map(|r| &r.wants) {
                            Some(Wants::Dir(w)) => *w,
                            _ => Rights::empty(),
                        };
                        writeln!(
                            notes,
                            "# dir.{}: {} path(s) used, rights used: {}",
                            g.name,
                            paths.len(),
                            RightsList(used)
                        )
                        .unwrap();
                        Grant::Dir(crate::fs::DirGrant {
                            host_path: d.host_path.clone(),
                            rights: d.rights & (used | wanted),
                            paths: Some(paths),
                        })
                    }
                    Grant::Listen(n) | Grant::Connect(n) => {
                        let used = u.net.get(&g.name).cloned().unwrap_or_default();
                        if used.is_empty() {
                            if required {
                                writeln!(notes, "# {}: not used, but required: kept", g.name)
                                    .unwrap();
                                learned.grants.push(g.clone());
                            } else {
                                writeln!(notes, "# {}: not used, not granted", g.name).unwrap();
                            }
                            continue;
                        }
                        let spec: Vec<String> = used.into_iter().collect();
                        writeln!(notes, "# {}: used {}", g.name, spec.join(", ")).unwrap();
                        let exact = NetGrant::parse(&spec.join(",")).unwrap_or_else(|e| {
                            writeln!(notes, "# {}: kept as granted ({e})", g.name).unwrap();
                            n.clone()
                        });
                        match &g.grant {
                            Grant::Listen(_) => Grant::Listen(exact),
                            _ => Grant::Connect(exact),
                        }
                    }
                    Grant::Spawner(s) => {
                        if u.children == 0 {
                            if required {
                                writeln!(
                                    notes,
                                    "# spawn.{}: not used, but required: no components",
                                    g.name
                                )
                                .unwrap();
                                learned.grants.push(NamedGrant {
                                    name: g.name.clone(),
                                    grant: Grant::Spawner(SpawnGrant {
                                        components: Some(Vec::new()),
                                        ..s.clone()
                                    }),
                                });
                            } else {
                                writeln!(notes, "# spawn.{}: not used, not granted", g.name)
                                    .unwrap();
                            }
                            continue;
                        }
                        writeln!(
                            notes,
                            "# spawn.{}: {} children, at most {} at once; peaks: memory {} bytes, \
                             fuel {}, wall {} µs; granted {HEADROOM}x",
                            g.name,
                            u.children,
                            u.peak_running,
                            u.peak_memory,
                            u.peak_fuel,
                            u.peak_wall_us
                        )
                        .unwrap();
                        const PAGE: u64 = 64 << 10;
                        let memory = (u.peak_memory * HEADROOM).div_ceil(PAGE).max(1) * PAGE;
                        let limits = ChildLimits {
                            max_memory: memory.min(s.limits.max_memory),
                            max_fuel: (u.peak_fuel * HEADROOM).max(1).min(s.limits.max_fuel),
                            timeout_ms: (u.peak_wall_us * HEADROOM)
                                .div_ceil(1000)
                                .max(100)
                                .min(s.limits.timeout_ms),
                        };
                        Grant::Spawner(SpawnGrant {
                            limits,
                            max_children: (u.peak_running * HEADROOM).min(u64::from(s.max_children))
                                as u32,
                            // What was spawned is learned for the whole run,
                            // not per spawner: keep only what this one was
                            // granted, so no spawner learns another's.
                            components: Some(
                                u.spawned
                                    .iter()
                                    .filter(|c| {
                                        s.components
                                            .as_ref()
                                            .is_none_or(|allowed| allowed.iter().any(|a| a == *c))
                                    })
                                    .cloned()
                                    .collect(),
                            ),
                        })
                    }
                };
                learned.grants.push(NamedGrant {
                    name: g.name.clone(),
                    grant: narrowed,
                });
            }
            learned.components = config
                .components
                .iter()
                .filter(|(n, _)| u.spawned.contains(n))
                .cloned()
                .collect();
        });
        format!(
            "# Written by `capbroker learn`: only what the run used.\n{notes}\n{}",
            learned.to_toml()
        )
    }
}

/// Makes learned paths a scope the broker accepts and the same run can
/// use again: a path below another gets that one's rights too (a scope
/// refuses a narrower path below a wider one, which reaches it by other
/// names anyway; see [`crate::fs::open_scope`]), and the source of a rename
/// gets what the scope's paths give together (the ceiling the move needs).
fn consistent(
    mut paths: Vec<(PathBuf, Rights)>,
    moves: &BTreeSet<(PathBuf, PathBuf)>,
) -> Vec<(PathBuf, Rights)> {
    let at = |paths: &[(PathBuf, Rights)], p: &PathBuf| {
        paths
            .iter()
            .filter(|(q, _)| p.starts_with(q))
            .fold(Rights::empty(), |a, (_, r)| a | *r)
    };
    // Each pass only adds rights, from a finite set: it ends.
    loop {
        let before = paths.clone();
        // A move's destination may be any of the scope's paths (a renamed
        // directory or a link can put it there), so its source needs what
        // they all give together.
        let all = paths.iter().fold(Rights::empty(), |a, (_, r)| a | *r);
        for (from, _) in moves {
            if let Some((_, r)) = paths.iter_mut().find(|(p, _)| p == from) {
                *r |= all;
            }
        }
        let snapshot = paths.clone();
        for (p, r) in paths.iter_mut() {
            *r |= at(&snapshot, p);
        }
        if paths == before {
            return paths;
        }
    }
}
