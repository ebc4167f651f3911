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
        Self::parse_net(spec, "--connect", NetGrant::parse).map(|(name, g)| NamedGrant {
            name,
            grant: Grant::Connect(g),
        })
    }

    /// Parses the value of a `--udp` flag, as `--connect`: the ranges and
    /// hosts name the peers datagrams may go to and come from.
    pub fn parse_udp(spec: &str) -> Result<NamedGrant, Error> {
        Self::parse_net(spec, "--udp", NetGrant::parse).map(|(name, g)| NamedGrant {
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

    /// Parses the value of a `--dir` flag: `NAME=PATH[:RIGHTS]`.
    ///
    /// A `:` suffix is read as rights only when it parses as rights, so host
    /// paths that contain a colon still work.
    pub fn parse_dir(spec: &str) -> Result<NamedGrant, Error> {
        const FORM: &str = "NAME=PATH[:RIGHTS]";
        let empty = |part| bad("--dir", spec, BadFlag::Empty { part, form: FORM });
        let Some((name, rest)) = spec.split_once('=') else {
            return Err(bad("--dir", spec, BadFlag::Form(FORM)));
        };
        // A WASI command's preopens are named by guest paths: `/data`, `.`.
        let path_like = name.trim_start_matches('/').replace(['/', '.'], "_");
        if path_like.is_empty() && name != "/" {
            return Err(empty("name"));
        }
        check_name(spec, "--dir", if name == "/" { "root" } else { &path_like })?;
        let (path, rights) = match rest.rsplit_once(':') {
            Some((path, rights)) if !path.is_empty() => match parse_rights(rights) {
                Ok(r) => (path, r),
                Err(e) if looks_like_rights(rights) => return Err(bad("--dir", spec, e)),
                Err(_) => (rest, Rights::all()),
            },
            _ => (rest, Rights::all()),
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
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(flag, spec, BadFlag::Name(name.to_string())));
    }
    Ok(())
}

fn looks_like_rights(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && s.chars().all(|c| c.is_ascii_lowercase() || c == ',')
}
