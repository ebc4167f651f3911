//! The grant flags of `capbroker run` (`--dir`, `--listen`, `--connect`,
//! `--udp`, `--spawn`), parsed into the same grants a manifest makes.

use std::path::PathBuf;

use super::{BadFlag, Error};
use crate::core::rights::parse_rights;
use crate::core::{Invalid, Rights};
use crate::fs::DirGrant;
use crate::grants::{Grant, NamedGrant};
use crate::net::NetGrant;
use crate::spawn::SpawnGrant;

/// The error of `flag` with the value `spec`.
fn bad(flag: &'static str, spec: &str, problem: impl Into<BadFlag>) -> Error {
    Error::Flag {
        flag,
        spec: spec.to_string(),
        problem: problem.into(),
    }
}

impl Grant {
    /// Parses the value of a `--listen` flag: `NAME=RANGE[,RANGE…]`, each
    /// range `IP[/PREFIX]:PORT[-PORT]`.
    pub fn parse_listen(spec: &str) -> Result<NamedGrant, Error> {
        Self::parse_net(spec, "--listen", NetGrant::parse_listen).map(|(name, g)| NamedGrant {
            name,
            grant: Grant::Listen(g),
        })
    }

    /// Parses the value of a `--connect` flag, as `--listen`; a range may
    /// also be `HOST:PORT[-PORT]`, a host name the broker looks up when it
    /// starts the component.
    pub fn parse_connect(spec: &str) -> Result<NamedGrant, Error> {
        Self::parse_net(spec, "--connect", NetGrant::parse_peers).map(|(name, g)| NamedGrant {
            name,
            grant: Grant::Connect(g),
        })
    }

    /// Parses the value of a `--udp` flag, as `--connect`: the ranges and
    /// hosts name the peers datagrams may go to and come from.
    pub fn parse_udp(spec: &str) -> Result<NamedGrant, Error> {
        Self::parse_net(spec, "--udp", NetGrant::parse_peers).map(|(name, g)| NamedGrant {
            name,
            grant: Grant::Udp(g),
        })
    }

    fn parse_net(
        spec: &str,
        flag: &'static str,
        parse: fn(&str) -> Result<NetGrant, Invalid>,
    ) -> Result<(String, NetGrant), Error> {
        let (name, rest) = split_name(spec, flag, "NAME=ADDRESS[/PREFIX]:PORT[-PORT][,…]")?;
        let grant = parse(rest).map_err(|e| bad(flag, spec, e))?;
        Ok((name.to_string(), grant))
    }

    /// Parses the value of a `--spawn` flag: `NAME[=KEY=VALUE,…]`; see
    /// [`SpawnGrant::parse`].
    pub fn parse_spawn(spec: &str) -> Result<NamedGrant, Error> {
        let (name, rest) = match spec.split_once('=') {
            Some(_) => split_name(spec, "--spawn", "NAME[=KEY=VALUE,…]")?,
            None => (spec, ""),
        };
        check_name(spec, "--spawn", name)?;
        let grant = SpawnGrant::parse(rest).map_err(|e| bad("--spawn", spec, e))?;
        Ok(NamedGrant {
            name: name.to_string(),
            grant: Grant::Spawner(grant),
        })
    }

    /// Parses the value of a `--dir` flag, in capbroker's form
    /// `NAME=PATH[:RIGHTS]`, wasmtime's `HOST::GUEST[:RIGHTS]` (GUEST is the
    /// name, as NAME) or `HOST` alone (named, as wasmtime maps it, by its own
    /// path, with every right).
    ///
    /// The text alone says which form, never what exists on the host: a
    /// name holds neither `=` nor `:`, so `=` marks capbroker's form and
    /// `::` wasmtime's, and a value with both (`a=/x::y`) could be either
    /// and is refused. In capbroker's form a `:` suffix is read as rights
    /// only when it parses as rights, so host paths with a colon still work;
    /// in wasmtime's the first `::` ends the host path and the first `:`
    /// after it the name, so rights there must be rights.
    pub fn parse_dir(spec: &str) -> Result<NamedGrant, Error> {
        let form = |problem| bad("--dir", spec, problem);
        let empty = |part| {
            form(BadFlag::Empty {
                part,
                form: DIR_FORMS,
            })
        };
        let (name, path, rights) = match (spec.find('='), spec.find("::")) {
            (Some(_), Some(_)) => return Err(form(BadFlag::EqualsAndColons)),
            (Some(eq), None) => {
                let (name, rest) = (&spec[..eq], &spec[eq + 1..]);
                check_guest_name(spec, name)?;
                match rest.rsplit_once(':') {
                    Some((path, rights)) if !path.is_empty() => match parse_rights(rights) {
                        Ok(r) => (name, path, r),
                        Err(e) if looks_like_rights(rights) => return Err(form(e.into())),
                        Err(_) => (name, rest, Rights::all()),
                    },
                    _ => (name, rest, Rights::all()),
                }
            }
            (None, Some(at)) => {
                let (path, rest) = (&spec[..at], &spec[at + 2..]);
                let (name, rights) = match rest.split_once(':') {
                    Some((name, rights)) => {
                        (name, parse_rights(rights).map_err(|e| form(e.into()))?)
                    }
                    None => (rest, Rights::all()),
                };
                if name.is_empty() {
                    return Err(empty("guest path"));
                }
                if !is_guest_name(name) {
                    return Err(form(BadFlag::GuestPath(name.to_string())));
                }
                (name, path, rights)
            }
            (None, None) => {
                if !spec.is_empty() && !is_guest_name(spec) {
                    return Err(form(BadFlag::GuestPath(spec.to_string())));
                }
                (spec, spec, Rights::all())
            }
        };
        if path.is_empty() {
            return Err(empty("host path"));
        }
        Ok(NamedGrant {
            name: name.to_string(),
            grant: Grant::Dir(DirGrant::new(PathBuf::from(path), rights, None)),
        })
    }
}

/// The forms a `--dir` value takes.
const DIR_FORMS: &str = "NAME=PATH[:RIGHTS], HOST::GUEST[:RIGHTS] or HOST";

/// A `--dir` grant's name: a name as every grant's, or a WASI command's
/// guest path (`/data`, `data`, `.`, `/`).
fn check_guest_name(spec: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(bad(
            "--dir",
            spec,
            BadFlag::Empty {
                part: "name",
                form: DIR_FORMS,
            },
        ));
    }
    if !is_guest_name(name) {
        return Err(bad("--dir", spec, BadFlag::Name(name.to_string())));
    }
    Ok(())
}

fn is_guest_name(name: &str) -> bool {
    let path_like = name.trim_start_matches('/').replace(['/', '.'], "_");
    is_name(if name == "/" { "root" } else { &path_like })
}

fn split_name<'a>(
    spec: &'a str,
    flag: &'static str,
    form: &'static str,
) -> Result<(&'a str, &'a str), Error> {
    let Some((name, rest)) = spec.split_once('=') else {
        return Err(bad(flag, spec, BadFlag::Form(form)));
    };
    check_name(spec, flag, name)?;
    Ok((name, rest))
}

fn check_name(spec: &str, flag: &'static str, name: &str) -> Result<(), Error> {
    if !is_name(name) {
        return Err(bad(flag, spec, BadFlag::Name(name.to_string())));
    }
    Ok(())
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn looks_like_rights(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && s.chars().all(|c| c.is_ascii_lowercase() || c == ',')
}
