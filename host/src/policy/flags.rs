//! The grant flags of `capbroker run` (`--dir`, `--listen`, `--connect`,
//! `--spawn`), parsed into the same grants a manifest makes.

use std::path::PathBuf;

use wasmtime::bail;

use crate::core::rights::parse_rights;
use crate::core::Rights;
use crate::fs::DirGrant;
use crate::grants::{Grant, NamedGrant};
use crate::net::NetGrant;
use crate::spawn::SpawnGrant;

impl Grant {
    /// Parses the value of a `--listen` flag: `NAME=RANGE[,RANGE…]`, each
    /// range `IP[/PREFIX]:PORT[-PORT]`.
    pub fn parse_listen(spec: &str) -> wasmtime::Result<NamedGrant> {
        Self::parse_net(spec, "--listen", NetGrant::parse_listen).map(|(name, g)| NamedGrant {
            name,
            grant: Grant::Listen(g),
        })
    }

    /// Parses the value of a `--connect` flag, as `--listen`; a range may
    /// also be `HOST:PORT[-PORT]`, a host name the broker looks up when it
    /// starts the component.
    pub fn parse_connect(spec: &str) -> wasmtime::Result<NamedGrant> {
        Self::parse_net(spec, "--connect", NetGrant::parse).map(|(name, g)| NamedGrant {
            name,
            grant: Grant::Connect(g),
        })
    }

    fn parse_net(
        spec: &str,
        flag: &str,
        parse: fn(&str) -> Result<NetGrant, String>,
    ) -> wasmtime::Result<(String, NetGrant)> {
        let (name, rest) = split_name(spec, flag, "NAME=ADDRESS[/PREFIX]:PORT[-PORT][,…]")?;
        let grant = parse(rest).map_err(|e| wasmtime::format_err!("{flag} {spec}: {e}"))?;
        Ok((name.to_string(), grant))
    }

    /// Parses the value of a `--spawn` flag: `NAME[=KEY=VALUE,…]`; see
    /// [`SpawnGrant::parse`].
    pub fn parse_spawn(spec: &str) -> wasmtime::Result<NamedGrant> {
        let (name, rest) = match spec.split_once('=') {
            Some(_) => split_name(spec, "--spawn", "NAME[=KEY=VALUE,…]")?,
            None => (spec, ""),
        };
        check_name(spec, "--spawn", name)?;
        let grant =
            SpawnGrant::parse(rest).map_err(|e| wasmtime::format_err!("--spawn {spec}: {e}"))?;
        Ok(NamedGrant {
            name: name.to_string(),
            grant: Grant::Spawner(grant),
        })
    }

    /// Parses the value of a `--dir` flag: `NAME=PATH[:RIGHTS]`.
    ///
    /// A `:` suffix is read as rights only when it parses as rights, so host
    /// paths that contain a colon still work.
    pub fn parse_dir(spec: &str) -> wasmtime::Result<NamedGrant> {
        let Some((name, rest)) = spec.split_once('=') else {
            bail!("--dir {spec}: expected NAME=PATH[:RIGHTS]");
        };
        // A WASI command's preopens are named by guest paths: `/data`, `.`.
        let path_like = name.trim_start_matches('/').replace(['/', '.'], "_");
        if path_like.is_empty() && name != "/" {
            bail!("--dir {spec}: the name is empty (expected NAME=PATH[:RIGHTS])");
        }
        check_name(spec, "--dir", if name == "/" { "root" } else { &path_like })?;
        let (path, rights) = match rest.rsplit_once(':') {
            Some((path, rights)) if !path.is_empty() => match parse_rights(rights) {
                Ok(r) => (path, r),
                Err(e) if looks_like_rights(rights) => {
                    bail!("--dir {spec}: {e}")
                }
                Err(_) => (rest, Rights::all()),
            },
            _ => (rest, Rights::all()),
        };
        if path.is_empty() {
            bail!("--dir {spec}: the host path is empty (expected NAME=PATH[:RIGHTS])");
        }
        Ok(NamedGrant {
            name: name.to_string(),
            grant: Grant::Dir(DirGrant::new(PathBuf::from(path), rights, None)),
        })
    }
}

fn split_name<'a>(spec: &'a str, flag: &str, form: &str) -> wasmtime::Result<(&'a str, &'a str)> {
    let Some((name, rest)) = spec.split_once('=') else {
        bail!("{flag} {spec}: expected {form}");
    };
    check_name(spec, flag, name)?;
    Ok((name, rest))
}

fn check_name(spec: &str, flag: &str, name: &str) -> wasmtime::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("{flag} {spec}: the name `{name}` must be letters, digits, `-` or `_`");
    }
    Ok(())
}

fn looks_like_rights(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && s.chars().all(|c| c.is_ascii_lowercase() || c == ',')
}
