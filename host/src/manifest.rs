//! `capbroker.toml`: what an app may touch, in a file. Host paths are
//! relative to the manifest's folder; flags on the command line add to it
//! or override it (see [`Config::merge`]). Every error names the file, the
//! line and column, the key, and what was expected; unknown keys are errors.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::fs::DirGrant;
use crate::grants::{Grant, NamedGrant};
use crate::limits::{parse_count, parse_duration, parse_size, Limits};
use crate::net::NetGrant;
use crate::spawn::SpawnGrant;
use crate::types::{parse_rights, RightsList};

/// The file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    component: Option<Spanned<String>>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    stdin: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    limits: Option<LimitsSpec>,
    #[serde(default)]
    dir: BTreeMap<String, DirSpec>,
    #[serde(default)]
    listen: BTreeMap<String, Spanned<Ranges>>,
    #[serde(default)]
    connect: BTreeMap<String, Spanned<Ranges>>,
    #[serde(default)]
    spawn: BTreeMap<String, Spanned<SpawnSpec>>,
    #[serde(default)]
    components: BTreeMap<String, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct LimitsSpec {
    max_memory: Option<Spanned<Amount>>,
    max_handles: Option<Spanned<u64>>,
    max_fuel: Option<Spanned<Amount>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirSpec {
    path: Spanned<String>,
    rights: Option<Spanned<Words>>,
    /// The paths below `path` the handle reaches, each with its rights.
    paths: Option<BTreeMap<String, Spanned<Words>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SpawnSpec {
    max_memory: Option<Amount>,
    max_fuel: Option<Amount>,
    timeout: Option<String>,
    max_children: Option<u64>,
    components: Option<Vec<String>>,
}

/// `"64MiB"` or `1000`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Amount {
    Number(u64),
    Text(String),
}

impl Amount {
    fn text(&self) -> String {
        match self {
            Amount::Number(n) => n.to_string(),
            Amount::Text(s) => s.clone(),
        }
    }
}

/// `"read,list"` or `["read", "list"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Words {
    One(String),
    Many(Vec<String>),
}

impl Words {
    fn joined(&self) -> String {
        match self {
            Words::One(s) => s.clone(),
            Words::Many(v) => v.join(","),
        }
    }
}

/// `"127.0.0.1:8080"` or a list of ranges.
type Ranges = Words;

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
}

/// Where in the file, for errors.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, span: Range<usize>, msg: impl std::fmt::Display) -> wasmtime::Error {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        wasmtime::format_err!("{}:{line}:{col}: {msg}", self.name)
    }
}

impl Config {
    /// Reads the manifest at `path`.
    pub fn load(path: &Path) -> wasmtime::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            wasmtime::format_err!("cannot read the manifest `{}`: {e}", path.display())
        })?;
        // Absolute, so that `--print-config` names the same places from
        // anywhere.
        let base = path.parent().unwrap_or(Path::new("."));
        let base = base.canonicalize().map_err(|e| {
            wasmtime::format_err!(
                "cannot find the manifest's folder `{}`: {e}",
                base.display()
            )
        })?;
        Config::parse(&path.display().to_string(), &text, &base)
    }

    /// Parses a manifest's `text`; `name` is how errors refer to it, and
    /// host paths are relative to `base`.
    pub fn parse(name: &str, text: &str, base: &Path) -> wasmtime::Result<Config> {
        let src = Source { name, text };
        let file: File = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim_end().to_string();
            match e.span() {
                Some(span) => src.at(span, msg),
                None => wasmtime::format_err!("{name}: {msg}"),
            }
        })?;
        let mut c = Config {
            component: file.component.map(|p| base.join(p.into_inner())),
            args: file.args,
            env: file.env.into_iter().collect(),
            stdin: file.stdin,
            ..Config::default()
        };
        if let Some(l) = file.limits {
            if let Some(m) = l.max_memory {
                let size = parse_size(&m.get_ref().text())
                    .map_err(|e| src.at(m.span(), format!("[limits] max-memory: {e}")))?;
                c.max_memory = Some(size);
            }
            if let Some(h) = l.max_handles {
                c.max_handles = Some(*h.get_ref() as usize);
            }
            if let Some(f) = l.max_fuel {
                let fuel = parse_count(&f.get_ref().text())
                    .map_err(|e| src.at(f.span(), format!("[limits] max-fuel: {e}")))?;
                c.max_fuel = Some(fuel);
            }
            if let Some(t) = l.timeout {
                let d = parse_duration(t.get_ref())
                    .map_err(|e| src.at(t.span(), format!("[limits] timeout: {e}")))?;
                c.timeout = Some(d);
            }
        }
        for (name, d) in file.dir {
            let rights = match &d.rights {
                None => crate::types::Rights::all(),
                Some(r) => parse_rights(&r.get_ref().joined())
                    .map_err(|e| src.at(r.span(), format!("[dir.{name}] rights: {e}")))?,
            };
            let host_path = base.join(d.path.get_ref());
            let paths = match d.paths {
                None => None,
                Some(map) => {
                    let mut paths = Vec::new();
                    for (p, r) in map {
                        let below = below_root(&p).ok_or_else(|| {
                            src.at(
                                r.span(),
                                format!(
                                    "[dir.{name}.paths] `{p}`: expected a path below the \
                                     directory (relative, without `..`)"
                                ),
                            )
                        })?;
                        let path_rights = parse_rights(&r.get_ref().joined()).map_err(|e| {
                            src.at(r.span(), format!("[dir.{name}.paths] `{p}`: {e}"))
                        })?;
                        let beyond = path_rights & !rights;
                        if beyond != crate::types::Rights::empty() {
                            return Err(src.at(
                                r.span(),
                                format!(
                                    "[dir.{name}.paths] `{p}`: {} is not in the directory's rights ({})",
                                    RightsList(beyond),
                                    RightsList(rights)
                                ),
                            ));
                        }
                        paths.push((below, path_rights));
                    }
                    Some(paths)
                }
            };
            let grant = DirGrant {
                host_path,
                rights,
                paths,
            };
            grant
                .open()
                .map_err(|e| src.at(d.path.span(), format!("[dir.{name}] path: {e:#}")))?;
            c.grants.push(NamedGrant {
                name,
                grant: Grant::Dir(grant),
            });
        }
        for (table, entries, listen) in [
            ("listen", file.listen, true),
            ("connect", file.connect, false),
        ] {
            for (name, ranges) in entries {
                let parse = if listen {
                    NetGrant::parse_listen
                } else {
                    NetGrant::parse
                };
                let g = parse(&ranges.get_ref().joined())
                    .map_err(|e| src.at(ranges.span(), format!("[{table}] {name}: {e}")))?;
                c.grants.push(NamedGrant {
                    name,
                    grant: if listen {
                        Grant::Listen(g)
                    } else {
                        Grant::Connect(g)
                    },
                });
            }
        }
        for (name, s) in file.spawn {
            let spec = s.get_ref();
            let mut pairs = Vec::new();
            if let Some(v) = &spec.max_memory {
                pairs.push(format!("max-memory={}", v.text()));
            }
            if let Some(v) = &spec.max_fuel {
                pairs.push(format!("max-fuel={}", v.text()));
            }
            if let Some(v) = &spec.timeout {
                pairs.push(format!("timeout={v}"));
            }
            if let Some(v) = spec.max_children {
                pairs.push(format!("max-children={v}"));
            }
            if let Some(v) = &spec.components {
                pairs.push(format!("components={}", v.join("+")));
            }
            let g = SpawnGrant::parse(&pairs.join(","))
                .map_err(|e| src.at(s.span(), format!("[spawn.{name}]: {e}")))?;
            c.grants.push(NamedGrant {
                name,
                grant: Grant::Spawner(g),
            });
        }
        for (name, path) in file.components {
            let p = base.join(path.get_ref());
            if !p.is_file() {
                return Err(src.at(
                    path.span(),
                    format!("[components] {name}: no file at `{}`", p.display()),
                ));
            }
            c.components.push((name, p));
        }
        Ok(c)
    }

    /// `flags` added to this configuration: a grant, component or variable
    /// of the same name, or a limit the flags set, replaces the manifest's.
    pub fn merge(mut self, flags: Config) -> Config {
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
            max_memory: flags.max_memory.or(self.max_memory),
            max_handles: flags.max_handles.or(self.max_handles),
            max_fuel: flags.max_fuel.or(self.max_fuel),
            timeout: flags.timeout.or(self.timeout),
        }
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
            ..*self
        };
        for g in &mut c.grants {
            if let Grant::Dir(d) = &mut g.grant {
                d.host_path = abs(&d.host_path);
            }
        }
        c
    }

    /// The configuration as a manifest, with absolute host paths and every
    /// default filled in (`capbroker run --print-config`).
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        // In the order a manifest is read back: by kind, then by name.
        let mut grants: Vec<&NamedGrant> = self.grants.iter().collect();
        grants.sort_by_key(|g| {
            let kind = match g.grant {
                Grant::Listen(_) => 0,
                Grant::Connect(_) => 1,
                Grant::Dir(_) => 2,
                Grant::Spawner(_) => 3,
            };
            (kind, g.name.clone())
        });
        let mut out = String::new();
        if let Some(c) = &self.component {
            writeln!(out, "component = {}", q(&c.display().to_string())).unwrap();
        }
        let args: Vec<String> = self.args.iter().map(|a| q(a)).collect();
        writeln!(out, "args = [{}]", args.join(", ")).unwrap();
        writeln!(out, "stdin = {}", self.stdin).unwrap();
        for g in &grants {
            if let Grant::Listen(n) | Grant::Connect(n) = &g.grant {
                let table = if matches!(g.grant, Grant::Listen(_)) {
                    "listen"
                } else {
                    "connect"
                };
                let ranges: Vec<String> = n.entries().iter().map(|r| q(r)).collect();
                writeln!(out, "{table}.{} = [{}]", q(&g.name), ranges.join(", ")).unwrap();
            }
        }
        let l = self.limits();
        writeln!(out, "\n[limits]").unwrap();
        writeln!(out, "max-memory = {}", l.max_memory).unwrap();
        writeln!(out, "max-handles = {}", l.max_handles).unwrap();
        match l.max_fuel {
            Some(f) => writeln!(out, "max-fuel = {f}").unwrap(),
            None => writeln!(out, "# max-fuel: unlimited").unwrap(),
        }
        match l.timeout {
            Some(t) => writeln!(out, "timeout = {}", q(&format!("{}ms", t.as_millis()))).unwrap(),
            None => writeln!(out, "# timeout: none").unwrap(),
        }
        if !self.env.is_empty() {
            writeln!(out, "\n[env]").unwrap();
            for (k, v) in &self.env {
                writeln!(out, "{} = {}", q(k), q(v)).unwrap();
            }
        }
        for g in &grants {
            match &g.grant {
                Grant::Dir(d) => {
                    writeln!(out, "\n[dir.{}]", q(&g.name)).unwrap();
                    writeln!(out, "path = {}", q(&d.host_path.display().to_string())).unwrap();
                    writeln!(out, "rights = {}", q(&RightsList(d.rights).to_string())).unwrap();
                    if let Some(paths) = &d.paths {
                        writeln!(out, "\n[dir.{}.paths]", q(&g.name)).unwrap();
                        for (p, r) in paths {
                            let p = if p.as_os_str().is_empty() {
                                ".".to_string()
                            } else {
                                p.display().to_string()
                            };
                            writeln!(out, "{} = {}", q(&p), q(&RightsList(*r).to_string()))
                                .unwrap();
                        }
                    }
                }
                Grant::Listen(_) | Grant::Connect(_) => {}
                Grant::Spawner(s) => {
                    writeln!(out, "\n[spawn.{}]", q(&g.name)).unwrap();
                    writeln!(out, "max-memory = {}", s.limits.max_memory).unwrap();
                    writeln!(out, "max-fuel = {}", s.limits.max_fuel).unwrap();
                    writeln!(
                        out,
                        "timeout = {}",
                        q(&format!("{}ms", s.limits.timeout_ms))
                    )
                    .unwrap();
                    writeln!(out, "max-children = {}", s.max_children).unwrap();
                    if let Some(c) = &s.components {
                        let c: Vec<String> = c.iter().map(|n| q(n)).collect();
                        writeln!(out, "components = [{}]", c.join(", ")).unwrap();
                    }
                }
            }
        }
        if !self.components.is_empty() {
            writeln!(out, "\n[components]").unwrap();
            for (n, p) in &self.components {
                writeln!(out, "{} = {}", q(n), q(&p.display().to_string())).unwrap();
            }
        }
        out
    }
}

/// A manifest path below a directory grant's root, normalized (`.` is the
/// root itself); `None` when it is absolute or climbs out.
fn below_root(p: &str) -> Option<PathBuf> {
    crate::fs::join_below(Path::new(""), p)
}
