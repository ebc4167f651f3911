//! A run's configuration, validated: the grants (each directory opened
//! once), the components, the environment and the limits, from a manifest,
//! the flags, or both.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::route::Route;
use crate::core::limits::Limits;
use crate::grants::{Grant, NamedGrant};

/// A run's configuration: from a manifest, the flags, or both.
#[derive(Default)]
pub struct Config {
    pub component: Option<PathBuf>,
    pub args: Vec<String>,
    pub grants: Vec<NamedGrant>,
    pub components: Vec<(String, PathBuf)>,
    pub env: Vec<(String, String)>,
    pub stdin: bool,
    pub max_memory: Option<usize>,
    pub max_handles: Option<usize>,
    pub max_fuel: Option<u64>,
    pub timeout: Option<Duration>,
    /// The manifest this configuration was read from, if any.
    pub manifest: Option<ManifestSource>,
    /// `capbroker serve`: where to listen, and what each request gets.
    pub addr: Option<std::net::SocketAddr>,
    pub routes: Vec<Route>,
    /// Compile without the compiled-component cache (`--no-cache`, or
    /// `cache = false` in the manifest): nothing is read from it or
    /// written to it.
    pub no_cache: bool,
}

/// The manifest a [`Config`] was read from, and what in the configuration
/// is still its (the flags replace some), for `--print-config`.
#[derive(Clone, Debug)]
pub struct ManifestSource {
    /// As the operator named it.
    pub path: PathBuf,
    pub(crate) grants: BTreeSet<String>,
    pub(crate) components: BTreeSet<String>,
    pub(crate) limits: BTreeSet<&'static str>,
}

impl Config {
    /// `flags` added to this configuration: a grant, component or variable
    /// of the same name, or a limit the flags set, replaces the manifest's.
    pub fn merge(mut self, flags: Config) -> Config {
        if let Some(m) = &mut self.manifest {
            m.grants
                .retain(|n| !flags.grants.iter().any(|f| &f.name == n));
            m.components
                .retain(|n| !flags.components.iter().any(|(f, _)| f == n));
            for (key, set) in flags.limits_set() {
                if set {
                    m.limits.remove(key);
                }
            }
        }
        self.grants
            .retain(|g| !flags.grants.iter().any(|f| f.name == g.name));
        self.grants.extend(flags.grants);
        self.components
            .retain(|(n, _)| !flags.components.iter().any(|(f, _)| f == n));
        self.components.extend(flags.components);
        self.env
            .retain(|(k, _)| !flags.env.iter().any(|(f, _)| f == k));
        self.env.extend(flags.env);
        Config {
            component: flags.component.or(self.component),
            args: if flags.args.is_empty() {
                self.args
            } else {
                flags.args
            },
            grants: self.grants,
            components: self.components,
            env: self.env,
            stdin: self.stdin || flags.stdin,
            no_cache: self.no_cache || flags.no_cache,
            max_memory: flags.max_memory.or(self.max_memory),
            max_handles: flags.max_handles.or(self.max_handles),
            max_fuel: flags.max_fuel.or(self.max_fuel),
            timeout: flags.timeout.or(self.timeout),
            manifest: self.manifest.or(flags.manifest),
            addr: flags.addr.or(self.addr),
            routes: if flags.routes.is_empty() {
                self.routes
            } else {
                flags.routes
            },
        }
    }

    /// Each limit's key, and whether this configuration sets it.
    pub(crate) fn limits_set(&self) -> [(&'static str, bool); 4] {
        [
            ("max-memory", self.max_memory.is_some()),
            ("max-handles", self.max_handles.is_some()),
            ("max-fuel", self.max_fuel.is_some()),
            ("timeout", self.timeout.is_some()),
        ]
    }

    /// The limits of the root component: these, or the defaults.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            max_memory: self.max_memory.unwrap_or(d.max_memory),
            max_handles: self.max_handles.unwrap_or(d.max_handles),
            max_fuel: self.max_fuel.or(d.max_fuel),
            timeout: self.timeout.or(d.timeout),
        }
    }

    /// The name of a grant given twice (by the flags: a manifest's keys
    /// are its own), which would leave which one a component gets to
    /// order, and which `--print-config` could not show.
    pub fn twice_granted(&self) -> Option<&str> {
        first_repeat(self.grants.iter().map(|g| g.name.as_str()))
    }

    /// A variable set twice (by the flags, `-S inherit-env` included),
    /// which the program would see twice, the first one winning.
    pub fn env_twice(&self) -> Option<&str> {
        first_repeat(self.env.iter().map(|(k, _)| k.as_str()))
    }

    /// The same configuration with every path made absolute, so that a
    /// manifest written from it can live anywhere.
    pub fn absolute(&self) -> Config {
        let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let mut c = Config {
            component: self.component.as_deref().map(abs),
            args: self.args.clone(),
            grants: self.grants.clone(),
            components: self
                .components
                .iter()
                .map(|(n, p)| (n.clone(), abs(p)))
                .collect(),
            env: self.env.clone(),
            manifest: self.manifest.clone(),
            routes: self.routes.clone(),
            ..*self
        };
        for g in &mut c.grants {
            if let Grant::Dir(d) = &mut g.grant {
                // By its text, as the run opened it: following links here,
                // after a guest ran, would write down where a guest's link
                // leads (the next run's check then sees no link at all).
                if let Some(p) = d.resolved() {
                    d.host_path = p;
                }
            }
        }
        c
    }
}

/// The first name that comes again in `names`.
fn first_repeat<'a>(names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::HashSet::new();
    names.into_iter().find(|n| !seen.insert(*n))
}
