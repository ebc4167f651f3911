//! Learning mode's manifest: a run's configuration narrowed to what the run
//! used, each grant by its own kind (see [`crate::core::kind::Kind::narrow`]).

use super::{Config, Error};
use crate::core::kind::Learned;
use crate::core::learn::Learner;
use crate::grants::{NamedGrant, Request};

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
