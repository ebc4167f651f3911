//! Learning mode's manifest: a run's configuration narrowed to what the run
//! used, each grant by its own kind (see [`crate::core::kind::Kind::narrow`]).

use super::{Config, Error};
use crate::core::kind::Learned;
use crate::core::learn::Learner;
use crate::grants::{Grant, NamedGrant, Request};

/// `config` narrowed to what `learner` saw: directory grants reach only the
/// paths used, each with the rights used there; network grants only the
/// addresses used; spawners only the components started, with headroom
/// over the children's peaks. `requests` are the component's, so that what
/// it requires stays granted (and with the rights it asks for: the paths do
/// the narrowing). Returns the manifest's text, with what was learned in
/// comments.
pub fn manifest(learner: &Learner, config: &Config, requests: &[Request]) -> Result<String, Error> {
    let mut learned = Config {
        component: config.component.clone(),
        args: config.args.clone(),
        env: config.env.clone(),
        stdin: config.stdin,
        no_cache: config.no_cache,
        max_memory: config.max_memory,
        max_handles: config.max_handles,
        max_fuel: config.max_fuel,
        timeout: config.timeout,
        grants: Vec::new(),
        components: Vec::new(),
        manifest: None,
        addr: config.addr,
        routes: Vec::new(),
    };
    let mut notes = Vec::new();
    if !config.env.is_empty() {
        notes.push(
            "# env: a WASI program reads its whole environment at once, so learning cannot \
             tell which variables it used: every one granted is kept"
                .to_string(),
        );
    }
    learner.seen(|used| {
        for g in &config.grants {
            let request = requests.iter().find(|r| r.name == g.name);
            let mut seen = Learned {
                used,
                required: request.is_some_and(|r| !r.optional),
                wants: request.map(|r| &r.wants),
                notes: &mut notes,
            };
            if let Some(grant) = g.grant.narrow(&g.name, &mut seen) {
                learned.grants.push(NamedGrant {
                    name: g.name.clone(),
                    grant,
                });
            }
        }
        learned.components = config
            .components
            .iter()
            .filter(|(n, _)| used.spawns.values().any(|s| s.spawned.contains(n)))
            .cloned()
            .collect();
    });
    let notes: String = notes.iter().map(|n| format!("{n}\n")).collect();
    Ok(format!(
        "# Written by `capbroker run --learn`: only what the run used.\n{notes}\n{}",
        learned.to_toml()?
    ))
}

/// The manifest `capbroker run --learn` writes for a plain WASI command:
/// [`manifest`], with no requests (a command declares none), after the
/// learned paths are reconciled with the disk (see [`Learner::reconcile`]).
pub fn command(learner: &Learner, config: &Config) -> Result<String, Error> {
    reconcile(learner, &config.grants);
    manifest(learner, config, &[])
}

/// Reconciles, for each directory grant, the learned paths with what is
/// below its root at the end of the run.
fn reconcile(learner: &Learner, grants: &[NamedGrant]) {
    for g in grants {
        if let Grant::Dir(d) = &g.grant {
            learner.reconcile(&g.name, &d.host_path);
        }
    }
}

/// The learner's name for the requests of a route under `capbroker serve`:
/// each request is counted, with its peaks, as a child of its route.
pub const REQUESTS: &str = "requests";

/// The route-scoped manifest `capbroker serve --learn` writes: each route
/// as it was, its grants narrowed to what the requests on it used (a grant
/// no request used is left out), and its limits twice the peaks its
/// requests reached. A route no request matched keeps no grant at all.
///
/// `base` is the limits the server ran every route under (serve's own
/// defaults filled in), written as the manifest's `[limits]`: written as
/// `run`'s defaults instead, they would widen every route.
pub fn routes(
    config: &Config,
    learners: &[Option<std::sync::Arc<Learner>>],
    base: &crate::core::limits::Limits,
) -> Result<String, Error> {
    use crate::core::learn::HEADROOM;
    let mut learned = Config {
        component: config.component.clone(),
        addr: config.addr,
        max_memory: Some(base.max_memory),
        max_handles: Some(base.max_handles),
        max_fuel: base.max_fuel,
        timeout: base.timeout,
        ..Config::default()
    };
    let base = base.clone();
    let mut notes = Vec::new();
    for (route, learner) in config.routes.iter().zip(learners) {
        let mut r = route.clone();
        r.grants.clear();
        if let Some(learner) = learner {
            reconcile(learner, &route.grants);
            learner.seen(|used| {
                for g in &route.grants {
                    let mut seen = Learned {
                        used,
                        required: false,
                        wants: None,
                        notes: &mut notes,
                    };
                    if let Some(grant) = g.grant.narrow(&g.name, &mut seen) {
                        r.grants.push(NamedGrant {
                            name: g.name.clone(),
                            grant,
                        });
                    }
                }
                match used.spawns.get(REQUESTS) {
                    Some(s) if s.children > 0 => {
                        notes.push(format!(
                            "# route {}: {} requests; peaks: {} bytes of memory, {} fuel, {} us",
                            route.name(),
                            s.children,
                            s.peak_memory,
                            s.peak_fuel,
                            s.peak_wall_us
                        ));
                        // Twice the peaks, never more than the route had
                        // (a client could push a peak up while learning),
                        // and a timeout of at least a second: wall-clock
                        // time varies with load far more than fuel does.
                        let had = route.limits.over(&base);
                        let memory = (s.peak_memory.max(1 << 20) * HEADROOM) as usize;
                        r.limits.max_memory = Some(memory.min(had.max_memory));
                        let fuel = s.peak_fuel.max(1) * HEADROOM;
                        r.limits.max_fuel = Some(had.max_fuel.map_or(fuel, |f| fuel.min(f)));
                        let time = std::time::Duration::from_micros(s.peak_wall_us * HEADROOM)
                            .max(std::time::Duration::from_secs(1));
                        r.limits.timeout = Some(had.timeout.map_or(time, |t| time.min(t)));
                    }
                    _ => notes.push(format!("# route {}: no request", route.name())),
                }
            });
        }
        learned.routes.push(r);
    }
    let notes: String = notes.iter().map(|n| format!("{n}\n")).collect();
    Ok(format!(
        "# Written by `capbroker serve --learn`: only what the requests used.\n{notes}\n{}",
        learned.to_toml()?
    ))
}
