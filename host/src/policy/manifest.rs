//! `capbroker.toml`: what an app may touch, in a file. Host paths are
//! relative to the manifest's folder; flags on the command line add to it
//! or override it (see [`Config::merge`]). Every error names the file, the
//! line and column, the key, and what was expected; unknown keys are errors.
//!
//! A manifest is read only when the operator names it, and a run whose
//! grants could change the manifest is refused
//! ([`Config::check_manifest_out_of_reach`]): otherwise a guest could write
//! the grants of its own next run.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::ops::Range;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use wasmtime::bail;

use crate::core::limits::{parse_count, parse_duration, parse_size, Limits};
use crate::core::rights::parse_rights;
use crate::core::RightsList;
use crate::fs::DirGrant;
use crate::grants::{Grant, NamedGrant};
use crate::net::NetGrant;
use crate::spawn::SpawnGrant;

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
    /// The manifest this configuration was read from, if any.
    pub manifest: Option<ManifestSource>,
}

/// The manifest a [`Config`] was read from, and what in the configuration
/// is still its (the flags replace some), for `--print-config`.
#[derive(Clone, Debug)]
pub struct ManifestSource {
    /// As the operator named it.
    pub path: PathBuf,
    grants: BTreeSet<String>,
    components: BTreeSet<String>,
    limits: BTreeSet<&'static str>,
}

/// The rights that change what is in a directory.
fn writing() -> crate::core::Rights {
    crate::core::Rights::WRITE | crate::core::Rights::CREATE | crate::core::Rights::REMOVE
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
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let base = base.canonicalize().map_err(|e| {
            wasmtime::format_err!(
                "cannot find the manifest's folder `{}`: {e}",
                base.display()
            )
        })?;
        let mut c = Config::parse(&path.display().to_string(), &text, &base)?;
        c.manifest = Some(ManifestSource {
            path: path.to_path_buf(),
            grants: c.grants.iter().map(|g| g.name.clone()).collect(),
            components: c.components.iter().map(|(n, _)| n.clone()).collect(),
            limits: c
                .limits_set()
                .into_iter()
                .filter(|(_, set)| *set)
                .map(|(k, _)| k)
                .collect(),
        });
        Ok(c)
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
                None => crate::core::Rights::all(),
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
                        if beyond != crate::core::Rights::empty() {
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
            max_memory: flags.max_memory.or(self.max_memory),
            max_handles: flags.max_handles.or(self.max_handles),
            max_fuel: flags.max_fuel.or(self.max_fuel),
            timeout: flags.timeout.or(self.timeout),
            manifest: self.manifest.or(flags.manifest),
        }
    }

    /// Refuses a manifest that a directory grant of this run could change
    /// (see [`lookup`] for what that covers). Children only ever get
    /// handles derived from the run's grants, so these are every grant of
    /// the run, a plain command's preopens included. Places are compared by
    /// identity (device and inode), so that `..`, symbolic links and bind
    /// mounts do not make one folder look like two.
    pub fn check_manifest_out_of_reach(&self) -> wasmtime::Result<()> {
        match &self.manifest {
            Some(manifest) => self.check_out_of_reach(&manifest.path, "the manifest"),
            None => Ok(()),
        }
    }

    /// Refuses a run in which a directory grant could change `path`, a file
    /// the broker reads or writes for the operator (`what`: the manifest,
    /// the `--audit` log, the `--learn` output), or put a link in its place
    /// that the broker would follow. The file need not exist yet.
    /// Refuses a directory grant whose host path goes through a symbolic
    /// link inside another grant that can write there: a guest of an
    /// earlier run could have put the link there, to point this grant at
    /// any folder of the host. (Each grant is then opened before any guest
    /// runs, so no guest of this run can change what it opens.)
    pub fn check_grants_not_redirected(&self) -> wasmtime::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let dirs: Vec<(&str, &crate::fs::DirGrant)> = self
            .grants
            .iter()
            .filter_map(|g| match &g.grant {
                Grant::Dir(d) => Some((g.name.as_str(), d)),
                _ => None,
            })
            .collect();
        let writers: Vec<(&str, (u64, u64))> = dirs
            .iter()
            .filter(|(_, d)| {
                let paths = d.paths.iter().flatten().map(|(_, r)| *r);
                (paths.fold(d.rights, |a, r| a | r) & writing()) != crate::core::Rights::empty()
            })
            .filter_map(|(n, d)| {
                let m = std::fs::metadata(d.resolved()?).ok()?;
                Some((*n, (m.dev(), m.ino())))
            })
            .collect();
        if writers.is_empty() {
            return Ok(());
        }
        for (name, d) in &dirs {
            let mut todo: Vec<std::ffi::OsString> = Vec::new();
            let Some(start) = d.resolved() else {
                bail!("grant `{name}`: a relative path, and the working folder is gone");
            };
            todo.extend(start.components().rev().map(|c| c.as_os_str().to_owned()));
            let mut at = PathBuf::from("/");
            let mut links = 0;
            while let Some(part) = todo.pop() {
                match part.to_str() {
                    Some("/") => at = PathBuf::from("/"),
                    Some(".") => {}
                    Some("..") => {
                        at.pop();
                    }
                    _ => {
                        let next = at.join(&part);
                        // What is missing fails to open, with its own error.
                        let Ok(meta) = std::fs::symlink_metadata(&next) else {
                            break;
                        };
                        if !meta.is_symlink() {
                            at = next;
                            continue;
                        }
                        let chain = crate::fs::ancestry(&at);
                        // The grant itself too: its own path may climb back
                        // out of it with `..` after a link inside it.
                        if let Some((writer, _)) = writers.iter().find(|(_, id)| chain.contains(id))
                        {
                            bail!(
                                "grant `{name}`: its path `{}` goes through the link `{}`, \
                                 inside grant `{writer}`, which can write there: a guest \
                                 could have put it there to point `{name}` elsewhere; name \
                                 the folder itself",
                                d.host_path.display(),
                                next.display()
                            );
                        }
                        links += 1;
                        if links > 40 {
                            bail!("grant `{name}`: too many symbolic links in its path");
                        }
                        let target = std::fs::read_link(&next)?;
                        todo.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn check_out_of_reach(&self, path: &Path, what: &str) -> wasmtime::Result<()> {
        let cannot_tell = |e: std::io::Error| {
            wasmtime::format_err!(
                "cannot tell whether a grant reaches {what} `{}`: {e}",
                path.display()
            )
        };
        let mut writable = Vec::new();
        for g in &self.grants {
            let Grant::Dir(d) = &g.grant else { continue };
            let roots = match &d.paths {
                None => vec![(d.resolved().unwrap_or_default(), d.rights)],
                Some(paths) => paths
                    .iter()
                    .map(|(p, r)| (d.resolved().unwrap_or_default().join(p), *r))
                    .collect(),
            };
            for (root, rights) in roots {
                let rights = rights & writing();
                if rights != crate::core::Rights::empty() {
                    writable.push((g, root, rights, d.paths.is_some()));
                }
            }
        }
        let Some((first, root, rights, _)) = writable.first() else {
            return Ok(());
        };
        let (links, steps) = lookup(path).map_err(cannot_tell)?;
        if links > 1 {
            bail!(
                "{what} `{}` has {links} hard links: the broker cannot tell whether grant \
                 `{}` (`{}`, {}) reaches one of them; give it a file of its own",
                path.display(),
                first.name,
                root.display(),
                RightsList(*rights)
            );
        }
        for (g, root, rights, narrowed) in writable {
            let id = match std::fs::metadata(&root) {
                Ok(m) => (m.dev(), m.ino()),
                // A narrowed path that is not there holds nothing the
                // manifest depends on.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && narrowed => continue,
                Err(e) => return Err(cannot_tell(e)),
            };
            if let Some(step) = steps.iter().find(|s| s.id == id) {
                bail!(
                    "{what} `{}` is within reach of grant `{}`: its {} over `{}` can \
                     change `{}`, {}, so a guest could rewrite it or put a link in its place; \
                     keep it out of every grant with write, create or remove, or grant less",
                    path.display(),
                    g.name,
                    RightsList(rights),
                    root.display(),
                    step.path.display(),
                    step.role
                );
            }
        }
        Ok(())
    }

    /// Each limit's key, and whether this configuration sets it.
    fn limits_set(&self) -> [(&'static str, bool); 4] {
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

    /// The configuration as a manifest, with absolute host paths and every
    /// default filled in.
    pub fn to_toml(&self) -> String {
        self.toml(false)
    }

    /// [`Config::to_toml`] with a comment above each grant, component and
    /// limit saying where it came from (`capbroker run --print-config`).
    pub fn to_toml_with_origins(&self) -> String {
        self.toml(true)
    }

    /// Where the grant or component `name` came from.
    fn origin(&self, name: &str, of: fn(&ManifestSource) -> &BTreeSet<String>) -> String {
        match &self.manifest {
            Some(m) if of(m).contains(name) => m.path.display().to_string(),
            _ => "the command line".into(),
        }
    }

    /// Where the limit `key` came from.
    fn limit_origin(&self, key: &str) -> String {
        let set = self.limits_set().iter().any(|(k, set)| *k == key && *set);
        match &self.manifest {
            Some(m) if m.limits.contains(key) => m.path.display().to_string(),
            _ if set => "the command line".into(),
            _ => "the default".into(),
        }
    }

    fn toml(&self, origins: bool) -> String {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let from = |out: &mut String, origin: String| {
            if origins {
                writeln!(out, "# from {origin}").unwrap();
            }
        };
        let grant_from = |g: &NamedGrant| self.origin(&g.name, |m| &m.grants);
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
        if origins {
            match &self.manifest {
                Some(m) => writeln!(out, "# manifest: {}", m.path.display()).unwrap(),
                None => writeln!(out, "# manifest: none").unwrap(),
            }
        }
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
                from(&mut out, grant_from(g));
                writeln!(out, "{table}.{} = [{}]", q(&g.name), ranges.join(", ")).unwrap();
            }
        }
        let l = self.limits();
        writeln!(out, "\n[limits]").unwrap();
        from(&mut out, self.limit_origin("max-memory"));
        writeln!(out, "max-memory = {}", l.max_memory).unwrap();
        from(&mut out, self.limit_origin("max-handles"));
        writeln!(out, "max-handles = {}", l.max_handles).unwrap();
        from(&mut out, self.limit_origin("max-fuel"));
        match l.max_fuel {
            Some(f) => writeln!(out, "max-fuel = {f}").unwrap(),
            None => writeln!(out, "# max-fuel: unlimited").unwrap(),
        }
        from(&mut out, self.limit_origin("timeout"));
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
                    writeln!(out).unwrap();
                    from(&mut out, grant_from(g));
                    writeln!(out, "[dir.{}]", q(&g.name)).unwrap();
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
                    writeln!(out).unwrap();
                    from(&mut out, grant_from(g));
                    writeln!(out, "[spawn.{}]", q(&g.name)).unwrap();
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
                from(&mut out, self.origin(n, |m| &m.components));
                writeln!(out, "{} = {}", q(n), q(&p.display().to_string())).unwrap();
            }
        }
        out
    }
}

/// A place what a manifest's path names depends on, for
/// [`Config::check_manifest_out_of_reach`].
struct Step {
    role: &'static str,
    path: PathBuf,
    /// Device and inode.
    id: (u64, u64),
}

/// Every place the file at `path` depends on: the file itself and each
/// folder its lookup reads an entry of, from `/` (through the working
/// folder for a relative path), following symbolic links wherever they
/// lead, `..` included. A folder above one is among them, so a rename that
/// puts another folder in one's place is covered. Also the file's link
/// count: a hard link elsewhere is a way to it that no walk finds.
fn lookup(path: &Path) -> std::io::Result<(u64, Vec<Step>)> {
    fn push(todo: &mut Vec<OsString>, p: &Path) {
        todo.extend(p.components().rev().map(|c| c.as_os_str().to_owned()));
    }
    let mut todo = Vec::new();
    push(&mut todo, &std::env::current_dir()?.join(path));
    let mut at = PathBuf::from("/");
    let mut folders = BTreeSet::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        // `at` is always a real folder, so `..` is its lexical parent.
        match part.to_str() {
            Some("/") => at = PathBuf::from("/"),
            Some(".") => {}
            Some("..") => {
                at.pop();
            }
            _ => {
                folders.insert(at.clone());
                let next = at.join(&part);
                let meta = match std::fs::symlink_metadata(&next) {
                    // A file not made yet: what it depends on is its folder.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && todo.is_empty() => {
                        return steps_of(None, folders);
                    }
                    other => other?,
                };
                if meta.is_symlink() {
                    links += 1;
                    if links > 40 {
                        return Err(std::io::Error::other("too many symbolic links"));
                    }
                    push(&mut todo, &std::fs::read_link(&next)?);
                } else {
                    at = next;
                }
            }
        }
    }
    steps_of(Some(at), folders)
}

/// The steps of [`lookup`]: the file at `at` (if it exists) and `folders`,
/// with the file's link count.
fn steps_of(at: Option<PathBuf>, folders: BTreeSet<PathBuf>) -> std::io::Result<(u64, Vec<Step>)> {
    let mut steps = Vec::new();
    let mut nlink = 1;
    if let Some(at) = at {
        let file = std::fs::metadata(&at)?;
        nlink = file.nlink();
        steps.push(Step {
            role: "the file itself",
            id: (file.dev(), file.ino()),
            path: at,
        });
    }
    for path in folders {
        let m = std::fs::metadata(&path)?;
        steps.push(Step {
            role: "a folder its path is looked up in",
            id: (m.dev(), m.ino()),
            path,
        });
    }
    Ok((nlink, steps))
}

/// A manifest path below a directory grant's root, normalized (`.` is the
/// root itself); `None` when it is absolute or climbs out.
fn below_root(p: &str) -> Option<PathBuf> {
    crate::fs::join_below(Path::new(""), p)
}
