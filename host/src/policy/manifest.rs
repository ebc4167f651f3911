//! `capbroker.toml`: what a run may touch, in a file. Host paths are
//! relative to the manifest's folder; flags on the command line add to it
//! or override it (see [`Config::merge`]). Every error names the file, the
//! line and column, the key, and what was expected; unknown keys are errors.
//!
//! The file is read into a [`Policy`] by serde, then validated into a
//! [`Config`] (each kind turning its own table entries into grants); a
//! [`Config`] is written back the same way, as a [`Policy`] serialised by
//! serde: `--print-config` and learning mode write no TOML by hand.
//!
//! A manifest is read only when the operator names it, and a run whose
//! grants could change the manifest is refused
//! ([`Config::check_manifest_out_of_reach`]): otherwise a guest could write
//! the grants of its own next run.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::config::{Config, ManifestSource};
use super::route::{Route, RouteLimits, RouteTable};
use super::Error;
use crate::core::kind::{Amount, Kind, Located};
use crate::core::limits::{parse_count, parse_duration, parse_size};
use crate::grants::{with_kinds, Grant, NamedGrant};

/// `[limits]`: what the root component may consume.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<Spanned<Amount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_handles: Option<Spanned<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fuel: Option<Spanned<Amount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Spanned<String>>,
}

/// `[serve]`: how `capbroker serve` listens.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeTable {
    /// `HOST:PORT` to listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<Spanned<String>>,
}

/// Makes [`Policy`] from the registry's list of kinds: a table per kind.
macro_rules! policy {
    (
        granted { $($case:ident($table:ident) => $kind:ty,)* }
        shared { $($scase:ident => $handle:ty,)* }
    ) => {
        /// What the operator grants a run, as `capbroker.toml` writes it:
        /// plain data, read and written by serde. Each kind's grants are a
        /// table of its own ([`Kind::Table`]).
        #[derive(Serialize, Deserialize, Clone, Debug, Default)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct Policy {
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub component: Option<Spanned<String>>,
            #[serde(default)]
            pub args: Vec<String>,
            #[serde(default)]
            pub stdin: bool,
            /// `cache = false`: compile without the compiled-component cache.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub cache: Option<bool>,
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub env: BTreeMap<String, String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub limits: Option<LimitsTable>,
            $(
                #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
                pub $table: BTreeMap<String, <$kind as Kind>::Table>,
            )*
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub components: BTreeMap<String, Spanned<String>>,
            /// `[serve]`: how `capbroker serve` listens.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub serve: Option<ServeTable>,
            /// `[[route]]`: what each request gets under `capbroker serve`.
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub route: Vec<RouteTable>,
        }

        impl Policy {
            /// The grants of every kind's table, each checked by its kind;
            /// host paths are relative to `base`.
            fn grants(&self, base: &Path) -> Result<Vec<NamedGrant>, Located> {
                let mut out = Vec::new();
                $(
                    for (name, t) in &self.$table {
                        let spec = <$kind as Kind>::from_table(t, name, base)?;
                        out.push(NamedGrant {
                            name: name.clone(),
                            grant: Grant::$case(spec),
                        });
                    }
                )*
                Ok(out)
            }

            /// Writes `g` in its kind's table.
            fn insert(&mut self, g: &NamedGrant) {
                match &g.grant {
                    $(Grant::$case(s) => {
                        self.$table.insert(g.name.clone(), <$kind as Kind>::to_table(s));
                    })*
                }
            }
        }

        /// The manifest tables that hold grants.
        const GRANT_TABLES: &[&str] = &[$(stringify!($table),)*];
    };
}

with_kinds!(policy);

/// Reads a `[limits]`-shaped table; `here` names it in errors.
fn read_limits(l: &LimitsTable, here: &str) -> Result<RouteLimits, Located> {
    let mut out = RouteLimits::default();
    if let Some(m) = &l.max_memory {
        let size = parse_size(&m.get_ref().text())
            .map_err(|e| Located::at(m.span(), format!("{here} max-memory: {e}")))?;
        if size == 0 {
            return Err(Located::at(
                m.span(),
                format!("{here} max-memory: zero would stop any component from starting"),
            ));
        }
        out.max_memory = Some(size);
    }
    if let Some(h) = &l.max_handles {
        let n = *h.get_ref();
        if !(16..=1_000_000).contains(&n) {
            return Err(Located::at(
                h.span(),
                format!("{here} max-handles: {n} is not in 16..=1000000"),
            ));
        }
        out.max_handles = Some(n as usize);
    }
    if let Some(f) = &l.max_fuel {
        let fuel = parse_count(&f.get_ref().text())
            .map_err(|e| Located::at(f.span(), format!("{here} max-fuel: {e}")))?;
        out.max_fuel = Some(fuel);
    }
    if let Some(t) = &l.timeout {
        let d = parse_duration(t.get_ref())
            .map_err(|e| Located::at(t.span(), format!("{here} timeout: {e}")))?;
        out.timeout = Some(d);
    }
    Ok(out)
}

/// Where in the file, for errors.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, span: Range<usize>, message: impl std::fmt::Display) -> Error {
        let before = &self.text[..span.start.min(self.text.len())];
        Error::Manifest {
            file: self.name.to_string(),
            line: before.matches('\n').count() + 1,
            col: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
            message: message.to_string(),
        }
    }
}

fn parse_policy(src: &Source) -> Result<Policy, Error> {
    toml::from_str(src.text).map_err(|e| {
        let msg = e.message().trim_end().to_string();
        match e.span() {
            Some(span) => src.at(span, msg),
            None => Error::Unplaced {
                file: src.name.to_string(),
                message: msg,
            },
        }
    })
}

impl Config {
    /// Reads the manifest at `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::Read {
            path: path.to_path_buf(),
            error,
        })?;
        // Absolute, so that `--print-config` names the same places from
        // anywhere.
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let base = base.canonicalize().map_err(|error| Error::Folder {
            path: base.to_path_buf(),
            error,
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
    pub fn parse(name: &str, text: &str, base: &Path) -> Result<Config, Error> {
        let src = Source { name, text };
        Config::from_policy(&src, parse_policy(&src)?, base)
    }

    /// What of the manifest at `path` decides how its component compiles:
    /// the `component`, and what sizes the instance pool (`[limits]` and
    /// the `[spawn]` grants). For compiling an artifact, maybe where the
    /// host paths its other grants name are not (an image being built).
    pub fn budgets(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let name = path.display().to_string();
        let src = Source {
            name: &name,
            text: &text,
        };
        let mut policy = parse_policy(&src)?;
        let budgets = Policy {
            component: policy.component.take(),
            limits: policy.limits.take(),
            spawn: std::mem::take(&mut policy.spawn),
            ..Policy::default()
        };
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Config::from_policy(&src, budgets, base)
    }

    fn from_policy(src: &Source, policy: Policy, base: &Path) -> Result<Config, Error> {
        let mut c = Config {
            component: policy.component.as_ref().map(|p| base.join(p.get_ref())),
            args: policy.args.clone(),
            env: policy.env.clone().into_iter().collect(),
            stdin: policy.stdin,
            no_cache: policy.cache == Some(false),
            ..Config::default()
        };
        if let Some(l) = &policy.limits {
            let l = read_limits(l, "[limits]").map_err(|e| src.at(e.span, e.message))?;
            c.max_memory = l.max_memory;
            c.max_handles = l.max_handles;
            c.max_fuel = l.max_fuel;
            c.timeout = l.timeout;
        }
        c.grants = policy.grants(base).map_err(|e| src.at(e.span, e.message))?;
        for (name, path) in &policy.components {
            let p = base.join(path.get_ref());
            if !p.is_file() {
                return Err(src.at(
                    path.span(),
                    format!("[components] {name}: no file at `{}`", p.display()),
                ));
            }
            c.components.push((name.clone(), p));
        }
        if let Some(addr) = policy.serve.as_ref().and_then(|s| s.addr.as_ref()) {
            let parsed = addr.get_ref().parse().map_err(|_| {
                src.at(
                    addr.span(),
                    format!("[serve] addr: `{}` is not HOST:PORT", addr.get_ref()),
                )
            })?;
            c.addr = Some(parsed);
        }
        for (i, r) in policy.route.iter().enumerate() {
            let route = r
                .route(i, base, read_limits)
                .map_err(|e| src.at(e.span, e.message))?;
            c.routes.push(route);
        }
        Ok(c)
    }

    /// The configuration as a [`Policy`], every default filled in.
    pub fn to_policy(&self) -> Policy {
        fn spanned<T>(v: T) -> Spanned<T> {
            Spanned::new(0..0, v)
        }
        let l = self.limits();
        let mut p = Policy {
            component: self
                .component
                .as_ref()
                .map(|c| spanned(c.display().to_string())),
            args: self.args.clone(),
            stdin: self.stdin,
            cache: self.no_cache.then_some(false),
            env: self.env.iter().cloned().collect(),
            limits: Some(LimitsTable {
                max_memory: Some(spanned(Amount::Number(l.max_memory as u64))),
                max_handles: Some(spanned(l.max_handles as u64)),
                max_fuel: l.max_fuel.map(|f| spanned(Amount::Number(f))),
                timeout: l.timeout.map(|t| spanned(format!("{}ms", t.as_millis()))),
            }),
            components: self
                .components
                .iter()
                .map(|(n, p)| (n.clone(), spanned(p.display().to_string())))
                .collect(),
            ..Policy::default()
        };
        for g in &self.grants {
            p.insert(g);
        }
        p.route = self.routes.iter().map(Route::to_table).collect();
        if let Some(addr) = self.addr {
            p.serve = Some(ServeTable {
                addr: Some(spanned(addr.to_string())),
            });
        }
        p
    }

    /// The configuration as a manifest, every default filled in. Refused
    /// when a path is not UTF-8: TOML cannot hold it, and writing another
    /// path in its place would grant another folder when read back.
    pub fn to_toml(&self) -> Result<String, Error> {
        if let Some(path) = self.paths().find(|p| p.to_str().is_none()) {
            return Err(Error::NotUtf8 {
                path: path.to_path_buf(),
            });
        }
        Ok(toml::to_string(&self.to_policy()).expect("a policy is plain data that TOML can hold"))
    }

    /// Every host path the configuration names.
    fn paths(&self) -> impl Iterator<Item = &Path> {
        let routes = self.routes.iter().flat_map(|r| r.grants.iter());
        let dirs = self
            .grants
            .iter()
            .chain(routes)
            .filter_map(|g| match &g.grant {
                Grant::Dir(d) => Some(d),
                _ => None,
            });
        let scoped = dirs
            .clone()
            .flat_map(|d| d.paths.iter().flatten().map(|(p, _)| p.as_path()));
        self.component
            .as_deref()
            .into_iter()
            .chain(self.components.iter().map(|(_, p)| p.as_path()))
            .chain(dirs.map(|d| d.host_path.as_path()))
            .chain(scoped)
    }

    /// [`Config::to_toml`] with a comment above each grant, component and
    /// limit saying where it came from (`capbroker run --print-config`).
    pub fn to_toml_with_origins(&self) -> Result<String, Error> {
        let mut out = match &self.manifest {
            Some(m) => format!("# manifest: {}\n", commented(&m.path.display().to_string())),
            None => "# manifest: none\n".to_string(),
        };
        let mut table = String::new();
        let text = self.to_toml()?;
        for (line, in_string) in text.lines().zip(starts_in_string(&text)) {
            // Inside a multi-line string, a line is part of a value.
            if !in_string {
                self.origin_of(line, &mut table, &mut out);
            }
            out.push_str(line);
            out.push('\n');
        }
        if table == "limits" {
            self.unset_limits(&mut out);
        }
        Ok(out)
    }

    /// Writes to `out` where what `line` begins came from, if it begins a
    /// grant, a limit or a component; `table` is the table the line is in.
    fn origin_of(&self, line: &str, table: &mut String, out: &mut String) {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if table == "limits" {
                self.unset_limits(out);
            }
            *table = header.to_string();
            // `[dir.NAME]`, `[spawn.NAME]`: a grant of its own.
            if let Some((kind, name)) = header.split_once('.') {
                // A name TOML quotes (`"/data"`) is one name all the same.
                let name = unquoted(name);
                if !name.contains('.') && is_grant_table(kind) {
                    out.push_str(&format!("# from {}\n", commented(&self.grant_origin(name))));
                }
            }
        } else if let Some((key, _)) = line.split_once(" = ") {
            let key = unquoted(key);
            let origin = match table.as_str() {
                "limits" => Some(self.limit_origin(key)),
                "components" => Some(self.origin(key, |m| &m.components)),
                t if is_grant_table(t) => Some(self.grant_origin(key)),
                _ => None,
            };
            if let Some(origin) = origin {
                out.push_str(&format!("# from {}\n", commented(&origin)));
            }
        }
    }

    /// Says which limits are unlimited, and why.
    fn unset_limits(&self, out: &mut String) {
        // Within the table, before the blank line that ends it.
        let blank = out.ends_with("\n\n");
        if blank {
            out.pop();
        }
        let l = self.limits();
        for (key, unset, what) in [
            ("max-fuel", l.max_fuel.is_none(), "unlimited"),
            ("timeout", l.timeout.is_none(), "none"),
        ] {
            if unset {
                out.push_str(&format!(
                    "# from {}\n# {key}: {what}\n",
                    commented(&self.limit_origin(key))
                ));
            }
        }
        if blank {
            out.push('\n');
        }
    }

    /// Where the grant `name` came from.
    fn grant_origin(&self, name: &str) -> String {
        self.origin(name, |m| &m.grants)
    }

    /// Where the grant or component `name` came from.
    fn origin(
        &self,
        name: &str,
        of: fn(&ManifestSource) -> &std::collections::BTreeSet<String>,
    ) -> String {
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
}

/// `text` fit to stay in one comment line: control characters (a newline
/// in a folder's name) escaped, so that nothing after them becomes TOML.
fn commented(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// For each line of the TOML `text`, whether it begins inside a string (a
/// multi-line one, which is the only kind a line can begin in), read as
/// TOML reads strings: escapes in basic strings, none in literal ones, and
/// comments.
fn starts_in_string(text: &str) -> Vec<bool> {
    #[derive(PartialEq)]
    enum In {
        Code,
        Comment,
        Basic { multi: bool },
        Literal { multi: bool },
    }
    let mut at = In::Code;
    let mut starts = vec![false];
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        match (&at, b[i]) {
            (_, b'\n') => {
                if at == In::Comment {
                    at = In::Code;
                }
                starts.push(matches!(at, In::Basic { .. } | In::Literal { .. }));
            }
            (In::Code, b'#') => at = In::Comment,
            (In::Code, b'"') if rest.starts_with(b"\"\"\"") => {
                at = In::Basic { multi: true };
                i += 2;
            }
            (In::Code, b'"') => at = In::Basic { multi: false },
            (In::Code, b'\'') if rest.starts_with(b"'''") => {
                at = In::Literal { multi: true };
                i += 2;
            }
            (In::Code, b'\'') => at = In::Literal { multi: false },
            (In::Basic { .. }, b'\\') => i += 1,
            (In::Basic { multi: true }, b'"') if rest.starts_with(b"\"\"\"") => {
                at = In::Code;
                i += 2;
            }
            (In::Basic { multi: false }, b'"') => at = In::Code,
            (In::Literal { multi: true }, b'\'') if rest.starts_with(b"'''") => {
                at = In::Code;
                i += 2;
            }
            (In::Literal { multi: false }, b'\'') => at = In::Code,
            _ => {}
        }
        i += 1;
    }
    starts
}

/// A key as written, without the quotes TOML puts around one that is not
/// bare (grant names hold no quote or backslash to escape).
fn unquoted(key: &str) -> &str {
    key.strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(key)
}

/// Whether `table` holds grants (`dir`, `listen`, …).
fn is_grant_table(table: &str) -> bool {
    GRANT_TABLES.contains(&table)
}
