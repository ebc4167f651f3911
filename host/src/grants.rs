//! The `grants` interface: how an operator's grant becomes a guest's handle.
//!
//! Every capability kind goes through the same life cycle:
//! 1. the operator grants it (`--dir NAME=PATH[:RIGHTS]`, parsed by
//!    [`Grant::parse`]);
//! 2. it is fitted to what the component asked for in its `requests` export
//!    ([`fit`]): a grant the component did not ask for is an error, and a
//!    grant with more authority than asked for is narrowed to the request;
//! 3. the host resource is opened and kept in the store's broker state
//!    ([`Grant::hand_over`]);
//! 4. the guest takes it with `grants.granted`, which pushes every pending
//!    handle into the store's table once.
//!
//! A new kind adds a case to [`Grant`], [`Wants`] and [`Handle`] and a module
//! with its host side, like [`crate::fs`].

use std::path::PathBuf;

use wasmtime::bail;
use wasmtime::error::Context;

pub use crate::bindings::capbroker::caps::grants::{Grant as GuestGrant, Handle, Share, Shared};
pub use crate::bindings::capbroker::caps::types::{Request, Wants};

use wasmtime::component::{ResourceTable, ResourceTableError};

use crate::ctx::BrokerCtxView;
use crate::fs::{DirGrant, DirHandle};
use crate::net::{ConnectRight, ListenRight, NetGrant, Reach, TcpStreamHandle};
use crate::pledge::Pledges;
use crate::spawn::{SpawnGrant, SpawnerHandle};
use crate::types::{parse_rights, Rights, RightsList};

/// One capability the operator grants, by kind.
#[derive(Clone, Debug)]
pub enum Grant {
    Dir(DirGrant),
    Spawner(SpawnGrant),
    Listen(NetGrant),
    Connect(NetGrant),
}

/// A host handle of any kind, before it is put into a store's table.
pub enum HandleValue {
    Dir(DirHandle),
    Spawner(SpawnerHandle),
    Listen(ListenRight),
    Connect(ConnectRight),
    TcpStream(TcpStreamHandle),
}

impl HandleValue {
    /// The same handle, ended for good when the instance whose pledges
    /// these are pledges its kind of authority away (the network for a
    /// network handle, the file system for a directory, spawning for a
    /// spawner).
    fn held_by(self, pledges: &Pledges) -> HandleValue {
        match self {
            HandleValue::Listen(h) => HandleValue::Listen(h.held_by(pledges)),
            HandleValue::Connect(h) => HandleValue::Connect(h.held_by(pledges)),
            HandleValue::TcpStream(h) => HandleValue::TcpStream(h.held_by(pledges)),
            HandleValue::Dir(h) => HandleValue::Dir(h.held_by(pledges)),
            HandleValue::Spawner(h) => HandleValue::Spawner(h.held_by(pledges)),
        }
    }

    /// Puts the handle into `table`, as the guest will see it.
    pub fn push_into(self, table: &mut ResourceTable) -> Result<Handle, ResourceTableError> {
        Ok(match self {
            HandleValue::Dir(h) => Handle::Dir(table.push(h)?),
            HandleValue::Spawner(h) => Handle::Spawner(table.push(h)?),
            HandleValue::Listen(h) => Handle::Listen(table.push(h)?),
            HandleValue::Connect(h) => Handle::Connect(table.push(h)?),
            HandleValue::TcpStream(h) => Handle::TcpStream(table.push(h)?),
        })
    }
}

/// An operator's grant under the name the component knows it by.
#[derive(Clone, Debug)]
pub struct NamedGrant {
    pub name: String,
    pub grant: Grant,
}

impl Grant {
    /// The kind's name, as in the flag that grants it.
    pub fn kind(&self) -> &'static str {
        match self {
            Grant::Dir(_) => "dir",
            Grant::Spawner(_) => "spawner",
            Grant::Listen(_) => "listen",
            Grant::Connect(_) => "connect",
        }
    }

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
            grant: Grant::Dir(DirGrant {
                host_path: PathBuf::from(path),
                rights,
                paths: None,
            }),
        })
    }

    /// Checks that the grant's host resource can be opened, before anything
    /// is loaded, so that a bad path is reported first and alone.
    pub fn check(&self) -> wasmtime::Result<()> {
        match self {
            Grant::Dir(d) => d.open().map(drop),
            Grant::Spawner(_) | Grant::Listen(_) | Grant::Connect(_) => Ok(()),
        }
    }

    /// What the guest will hold: the operator's grant narrowed to `wants`.
    /// Errors when the kinds differ or the grant lacks a right the component
    /// needs.
    fn fit(&self, name: &str, wants: &Wants) -> wasmtime::Result<Grant> {
        match (self, wants) {
            (Grant::Dir(d), Wants::Dir(wanted)) => {
                let missing = *wanted & !d.rights;
                if missing != Rights::empty() {
                    bail!(
                        "grant `{name}`: the component needs {} on it, but the operator \
                         granted only {} (missing {})",
                        RightsList(*wanted),
                        RightsList(d.rights),
                        RightsList(missing)
                    );
                }
                Ok(Grant::Dir(DirGrant {
                    host_path: d.host_path.clone(),
                    rights: d.rights & *wanted,
                    paths: d.paths.clone(),
                }))
            }
            (Grant::Spawner(_), Wants::Spawner)
            | (Grant::Listen(_), Wants::Listen)
            | (Grant::Connect(_), Wants::Connect) => Ok(self.clone()),
            (granted, _) => bail!(
                "grant `{name}`: the component asks for a {} handle, not a {}",
                wants_kind(wants),
                granted.kind()
            ),
        }
    }

    /// Opens the host resource and keeps it for the guest's
    /// `grants.granted`.
    /// `beside` are the rights of other directory grants overlapping this one
    /// (see [`crate::fs::beside`]).
    pub fn hand_over(
        &self,
        name: &str,
        beside: Rights,
        view: BrokerCtxView<'_>,
    ) -> wasmtime::Result<()> {
        let (value, target, detail) = match self {
            Grant::Dir(d) => {
                let dir = d.open().with_context(|| format!("grant `{name}`"))?;
                let target = d.host_path.display().to_string();
                let detail = RightsList(d.rights).to_string();
                let handle = DirHandle::grant(
                    dir,
                    d.rights,
                    beside,
                    name,
                    d.paths.as_deref(),
                    view.ctx.learner.clone(),
                )
                .with_context(|| format!("grant `{name}`"))?;
                (HandleValue::Dir(handle), target, detail)
            }
            Grant::Spawner(s) => {
                let spawner = s.spawner(view.ctx.components.clone())?;
                let b = spawner.budget();
                let detail = format!(
                    "max-memory={},max-fuel={},timeout={}ms,max-children={},components={}",
                    b.limits.max_memory,
                    b.limits.max_fuel,
                    b.limits.timeout_ms,
                    b.max_children,
                    b.components.join("+")
                );
                (HandleValue::Spawner(spawner), "spawner".into(), detail)
            }
            Grant::Listen(g) | Grant::Connect(g) => {
                let listen = matches!(self, Grant::Listen(_));
                let reach = if listen {
                    Reach::listen(g)
                } else {
                    Reach::connect(g)
                };
                let reach = reach
                    .map_err(|e| wasmtime::format_err!("grant `{name}`: {e}"))?
                    .learned_by(view.ctx.learner.clone(), name);
                let detail = reach.detail();
                let value = if listen {
                    HandleValue::Listen(ListenRight(reach))
                } else {
                    HandleValue::Connect(ConnectRight(reach))
                };
                (value, self.kind().into(), detail)
            }
        };
        view.ctx.audit.granted(name, &target, &detail);
        view.ctx.pending.push((name.to_string(), value));
        Ok(())
    }
}

impl crate::bindings::capbroker::caps::grants::Host for BrokerCtxView<'_> {
    fn granted(&mut self) -> wasmtime::Result<Vec<GuestGrant>> {
        let pending = std::mem::take(&mut self.ctx.pending);
        let mut out = Vec::with_capacity(pending.len());
        for (name, value) in pending {
            // The operator's limit on handles is below what was granted:
            // the component cannot start as configured.
            let value = value.held_by(&self.ctx.pledges);
            let handle = value.push_into(self.table).with_context(|| {
                format!("grant `{name}`: the handle table is full (raise max-handles)")
            })?;
            out.push(GuestGrant { name, handle });
        }
        Ok(out)
    }
}

/// For each grant, the rights of the other directory grants overlapping its
/// directory (none for other kinds); see [`crate::fs::beside`].
pub fn beside(grants: &[NamedGrant]) -> Vec<Rights> {
    let dirs: Vec<(usize, &DirGrant)> = grants
        .iter()
        .enumerate()
        .filter_map(|(i, g)| match &g.grant {
            Grant::Dir(d) => Some((i, d)),
            _ => None,
        })
        .collect();
    let rights = crate::fs::beside(&dirs.iter().map(|(_, d)| *d).collect::<Vec<_>>());
    let mut out = vec![Rights::empty(); grants.len()];
    for ((i, _), r) in dirs.iter().zip(rights) {
        out[*i] = r;
    }
    out
}

fn wants_kind(w: &Wants) -> &'static str {
    match w {
        Wants::Dir(_) => "dir",
        Wants::Spawner => "spawner",
        Wants::Listen => "listen",
        Wants::Connect => "connect",
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

/// Matches the operator's grants to the component's requests. Every grant
/// must answer a request of the same kind and carry the rights it asks for;
/// every request that is not optional must be granted. Returns the grants
/// narrowed to the requests, in the order the operator gave them.
pub fn fit(requests: &[Request], grants: &[NamedGrant]) -> wasmtime::Result<Vec<NamedGrant>> {
    let mut seen = std::collections::HashSet::new();
    let mut fitted = Vec::new();
    for g in grants {
        if !seen.insert(g.name.as_str()) {
            bail!("grant `{}` is given twice", g.name);
        }
        let Some(request) = requests.iter().find(|r| r.name == g.name) else {
            let known: Vec<String> = requests
                .iter()
                .map(|r| format!("{} ({})", r.name, wants_kind(&r.wants)))
                .collect();
            bail!(
                "grant `{}`: the component does not ask for a handle by that name \
                 (it asks for: {})",
                g.name,
                if known.is_empty() {
                    "nothing".to_string()
                } else {
                    known.join(", ")
                }
            );
        };
        if g.grant.kind() != wants_kind(&request.wants) {
            bail!(
                "grant `{}`: the component asks for a {} handle, not a {}",
                g.name,
                wants_kind(&request.wants),
                g.grant.kind()
            );
        }
        fitted.push(NamedGrant {
            name: g.name.clone(),
            grant: g.grant.fit(&g.name, &request.wants)?,
        });
    }
    let missing: Vec<String> = requests
        .iter()
        .filter(|r| !r.optional && !seen.contains(r.name.as_str()))
        .map(describe_request)
        .collect();
    if !missing.is_empty() {
        bail!(
            "the component needs grants the operator did not give: {}",
            missing.join("; ")
        );
    }
    Ok(fitted)
}

/// One request as the operator would grant it, e.g.
/// `--dir data=PATH:read,list (where it keeps its state)`.
pub fn describe_request(r: &Request) -> String {
    let flag = match &r.wants {
        Wants::Dir(rights) => format!("--dir {}=PATH:{}", r.name, RightsList(*rights)),
        Wants::Spawner => format!(
            "--spawn {}=max-memory=SIZE,max-fuel=N,timeout=T,max-children=N",
            r.name
        ),
        Wants::Listen => format!("--listen {}=ADDRESS:PORT", r.name),
        Wants::Connect => format!(
            "--connect {}=ADDRESS[/PREFIX]:PORT[-PORT] or HOST:PORT",
            r.name
        ),
    };
    let optional = if r.optional { ", optional" } else { "" };
    if r.about.is_empty() {
        format!("{flag}{optional}")
    } else {
        format!("{flag} ({}{optional})", r.about)
    }
}
