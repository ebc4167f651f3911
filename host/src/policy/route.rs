//! `[[route]]`: what a request gets under `capbroker serve`, by its method
//! and path.
//!
//! Paths are matched with Spin's route syntax: `/hello` is that path only,
//! `/users/:id` takes any one segment where `:id` is, and a trailing `/...`
//! takes the path before it and anything below. Routes are tried in file
//! order and the first that matches wins; a request no route matches gets
//! 404 without an instance. Each route lists its own grants (directories,
//! as WASI preopens with capbroker's rights; connect ranges, for sockets
//! and outgoing HTTP alike), its environment and its limits; a route that
//! lists none gets none.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::manifest::LimitsTable;
use crate::core::kind::{Kind, Located};
use crate::core::limits::Limits;
use crate::grants::{Grant, NamedGrant};

/// A `[[route]]` table as `capbroker.toml` writes it.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouteTable {
    /// The path pattern, in Spin's syntax.
    pub route: Spanned<String>,
    /// The methods it takes (`GET`, `POST`, …); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Spanned<Vec<String>>>,
    /// Directories, by the guest path they are preopened at.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dir: BTreeMap<String, <crate::fs::Dirs as Kind>::Table>,
    /// Where its requests may connect: sockets and outgoing HTTP.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connect: BTreeMap<String, <crate::net::Connectors as Kind>::Table>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Limits of each request on this route, in place of `[limits]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsTable>,
}

/// A route, validated.
#[derive(Clone, Debug)]
pub struct Route {
    pub pattern: Pattern,
    /// Upper-case method names; `None`: every method.
    pub methods: Option<Vec<String>>,
    /// Directory grants named by guest path, and connect grants.
    pub grants: Vec<NamedGrant>,
    pub env: Vec<(String, String)>,
    /// What this route sets in place of the manifest's `[limits]`.
    pub limits: RouteLimits,
}

/// The limits a route sets; the rest come from `[limits]` or the flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteLimits {
    pub max_memory: Option<usize>,
    pub max_handles: Option<usize>,
    pub max_fuel: Option<u64>,
    pub timeout: Option<Duration>,
}

impl RouteLimits {
    /// These limits over `base`.
    pub fn over(&self, base: &Limits) -> Limits {
        Limits {
            max_memory: self.max_memory.unwrap_or(base.max_memory),
            max_handles: self.max_handles.unwrap_or(base.max_handles),
            max_fuel: self.max_fuel.or(base.max_fuel),
            timeout: self.timeout.or(base.timeout),
        }
    }
}

impl Route {
    /// The route as a `[[route]]` table.
    pub fn to_table(&self) -> RouteTable {
        fn spanned<T>(v: T) -> Spanned<T> {
            Spanned::new(0..0, v)
        }
        let mut t = RouteTable {
            route: spanned(self.pattern.text.clone()),
            methods: self.methods.clone().map(spanned),
            dir: BTreeMap::new(),
            connect: BTreeMap::new(),
            env: self.env.iter().cloned().collect(),
            limits: None,
        };
        for g in &self.grants {
            match &g.grant {
                Grant::Dir(d) => {
                    t.dir
                        .insert(g.name.clone(), <crate::fs::Dirs as Kind>::to_table(d));
                }
                Grant::Connect(n) => {
                    t.connect.insert(
                        g.name.clone(),
                        <crate::net::Connectors as Kind>::to_table(n),
                    );
                }
                // `route` admits no other kind.
                _ => {}
            }
        }
        let l = &self.limits;
        if l.max_memory.is_some()
            || l.max_fuel.is_some()
            || l.timeout.is_some()
            || l.max_handles.is_some()
        {
            use crate::core::kind::Amount;
            t.limits = Some(LimitsTable {
                max_memory: l.max_memory.map(|m| spanned(Amount::Number(m as u64))),
                max_handles: l.max_handles.map(|h| spanned(h as u64)),
                max_fuel: l.max_fuel.map(|f| spanned(Amount::Number(f))),
                timeout: l
                    .timeout
                    .map(|d| spanned(format!("{}ms", d.as_millis().max(1)))),
            });
        }
        t
    }

    /// Whether a request of `method` for `path` (without its query) is
    /// this route's.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = match &self.methods {
            None => true,
            Some(m) => m.iter().any(|m| m == method),
        };
        method_ok && self.pattern.matches(path)
    }

    /// How the audit trail and errors name it: `GET,POST /upload/...`.
    pub fn name(&self) -> String {
        match &self.methods {
            None => self.pattern.text.clone(),
            Some(m) => format!("{} {}", m.join(","), self.pattern.text),
        }
    }
}

/// One segment of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Exact(String),
    /// `:name`: any one non-empty segment.
    Param,
}

/// A path pattern in Spin's route syntax.
#[derive(Clone, Debug)]
pub struct Pattern {
    segments: Vec<Segment>,
    /// A trailing `/...`: the path and anything below it.
    rest: bool,
    /// As written.
    pub text: String,
}

impl Pattern {
    /// Parses `/a/:b/...`. Refused: a pattern not starting with `/`, an
    /// empty segment, `...` anywhere but at the end, a nameless or repeated
    /// `:name`, `.` or `..` segments, and characters a path cannot hold
    /// unencoded (`?`, `#`, `%`, spaces, controls).
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let Some(body) = text.strip_prefix('/') else {
            return Err(format!("`{text}` does not start with `/`"));
        };
        if let Some(c) = text
            .chars()
            .find(|c| matches!(c, '?' | '#' | '%') || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "`{text}` holds `{}`: a route matches the path as sent, without its query",
                c.escape_default()
            ));
        }
        // A trailing slash does not count: `/a/` is `/a`.
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        let mut rest = false;
        let mut params: Vec<&str> = Vec::new();
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            match *part {
                "" => return Err(format!("`{text}` has an empty segment (`//`)")),
                "..." if i + 1 == parts.len() => rest = true,
                "." | ".." => return Err(format!("`{text}`: `{part}` segments are not matched")),
                p if p.contains("...") => {
                    return Err(format!("`{text}`: `...` may only be the last segment"))
                }
                p => match p.strip_prefix(':') {
                    Some(name) => {
                        let ok = !name.is_empty()
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                        if !ok {
                            return Err(format!(
                                "`{text}`: `{p}` is not a parameter (`:name`, letters, digits, _)"
                            ));
                        }
                        if params.contains(&name) {
                            return Err(format!("`{text}`: `:{name}` appears twice"));
                        }
                        params.push(name);
                        segments.push(Segment::Param);
                    }
                    None => segments.push(Segment::Exact(p.to_string())),
                },
            }
        }
        Ok(Pattern {
            segments,
            rest,
            text: text.to_string(),
        })
    }

    /// Whether `path` (as sent, without its query) matches. A trailing
    /// slash does not count.
    pub fn matches(&self, path: &str) -> bool {
        let Some(body) = path.strip_prefix('/') else {
            return false;
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut parts = if body.is_empty() {
            None
        } else {
            Some(body.split('/'))
        }
        .into_iter()
        .flatten();
        for seg in &self.segments {
            match (seg, parts.next()) {
                (_, None) => return false,
                (Segment::Exact(e), Some(p)) if e == p => {}
                (Segment::Param, Some(p)) if !p.is_empty() => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

/// Why a request path is refused before any route is tried: a `.` or `..`
/// segment, plain or percent-encoded. Handlers that tidy a path would
/// otherwise read one route's path as another's.
pub fn unsafe_segment(path: &str) -> Option<&str> {
    path.split('/').find(|seg| {
        let decoded = seg
            .to_ascii_lowercase()
            .replace("%2e", ".")
            .replace("%2f", "/")
            .replace("%5c", "\\");
        decoded == "." || decoded == ".." || decoded.contains('/') || decoded.contains('\\')
    })
}

impl RouteTable {
    /// Validates the route; host paths are relative to `base`.
    /// `limits` reads a `[limits]`-shaped table.
    pub(crate) fn route(
        &self,
        index: usize,
        base: &Path,
        limits: impl Fn(&LimitsTable, &str) -> Result<RouteLimits, Located>,
    ) -> Result<Route, Located> {
        let at = |span: std::ops::Range<usize>, msg: String| Located::at(span, msg);
        let here = format!("[[route]] #{}", index + 1);
        let pattern = Pattern::parse(self.route.get_ref())
            .map_err(|e| at(self.route.span(), format!("{here} route: {e}")))?;
        let methods = match &self.methods {
            None => None,
            Some(m) => {
                if m.get_ref().is_empty() {
                    return Err(at(
                        m.span(),
                        format!("{here} methods: empty; leave it out to take every method"),
                    ));
                }
                let mut out = Vec::new();
                for name in m.get_ref() {
                    let ok = !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-');
                    if !ok {
                        return Err(at(
                            m.span(),
                            format!("{here} methods: `{name}` is not an HTTP method"),
                        ));
                    }
                    out.push(name.to_ascii_uppercase());
                }
                Some(out)
            }
        };
        let mut grants = Vec::new();
        for (guest, t) in &self.dir {
            if guest.is_empty() {
                return Err(at(
                    self.route.span(),
                    format!("{here} dir: a guest path may not be empty"),
                ));
            }
            let spec = <crate::fs::Dirs as Kind>::from_table(t, guest, base)?;
            grants.push(NamedGrant {
                name: guest.clone(),
                grant: Grant::Dir(spec),
            });
        }
        for (name, t) in &self.connect {
            let spec = <crate::net::Connectors as Kind>::from_table(t, name, base)?;
            grants.push(NamedGrant {
                name: name.clone(),
                grant: Grant::Connect(spec),
            });
        }
        let limits = match &self.limits {
            Some(t) => limits(t, &format!("{here} limits"))?,
            None => RouteLimits::default(),
        };
        Ok(Route {
            pattern,
            methods,
            grants,
            env: self.env.clone().into_iter().collect(),
            limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(path)
    }

    #[test]
    fn spin_route_syntax() {
        assert!(m("/hello", "/hello"));
        assert!(m("/hello", "/hello/"));
        assert!(!m("/hello", "/hello/x"));
        assert!(!m("/hello", "/hell"));
        assert!(!m("/hello", "/"));
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
        assert!(m("/...", "/"));
        assert!(m("/...", "/a/b/c"));
        assert!(m("/upload/...", "/upload"));
        assert!(m("/upload/...", "/upload/a.txt"));
        assert!(m("/upload/...", "/upload/a/b"));
        assert!(!m("/upload/...", "/uploads"));
        assert!(!m("/upload/...", "/x/upload"));
        assert!(m("/users/:id", "/users/7"));
        assert!(!m("/users/:id", "/users/"));
        assert!(!m("/users/:id", "/users/7/x"));
        assert!(m("/users/:id/...", "/users/7/x/y"));
        assert!(!m("/upload/...", "upload/a"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "hello", "/a//b", "/a/.../b", "/a/b...", "/:", "/:a/:a", "/a?b", "/a b", "/%2e", "/..",
            "/a/./b", "/:a-b",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dot_segments_are_caught_encoded_or_not() {
        for bad in [
            "/a/../b",
            "/a/%2e%2E/b",
            "/.",
            "/a/%2e",
            "/a/x%2fy",
            "/a/x%5Cy",
            "/a/.%2e",
        ] {
            assert!(unsafe_segment(bad).is_some(), "{bad}");
        }
        for ok in ["/", "/a/b", "/a/..b", "/a/b.txt", "/a/...", "/a/%41"] {
            assert!(unsafe_segment(ok).is_none(), "{ok}");
        }
    }
}
