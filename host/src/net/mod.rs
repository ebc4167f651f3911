//! The network room: listen, connect and UDP rights over sets of addresses
//! and the sockets they yield (capbroker's `net` interface), and the guard
//! in front of standard `wasi:sockets`.
//!
//! - [`spec`]: what the operator grants ([`NetGrant`]);
//! - [`handle`]: what a right reaches ([`Reach`]), the rights and sockets;
//! - [`host`]: the `net` interface's host functions;
//! - [`wasi`]: the `wasi:sockets` face;
//! - [`lookup`]: `wasi:sockets/ip-name-lookup`, answered from the grants;
//! - [`http`]: outgoing `wasi:http` requests, through the same checks;
//! - [`wit`]: the generated bindings.
//!
//! [`Listeners`], [`Connectors`] and [`UdpRights`] are the kinds' life
//! cycles.

pub mod handle;
pub mod host;
pub mod http;
pub mod lookup;
pub mod spec;
pub mod wasi;
pub mod wit;

pub use handle::{
    ConnectRight, ListenRight, LookupError, Reach, Resolve, SystemResolver, TcpListenerHandle,
    TcpStreamHandle, UdpRight, UdpSocketHandle, CONNECT_TIMEOUT, MAX_RANGES,
};
pub use lookup::Lookup;
pub use spec::{host_name, HostPorts, NetGrant, Range};
pub use wit::net::AddressRange;

use std::marker::PhantomData;
use std::path::Path;

use toml::Spanned;

use crate::core::kind::{
    FitError, Handle, Kind, Learned, Located, OpenEnv, Opened, ShareTo, Words,
};
use crate::core::pledges::Pledges;
use crate::core::wit::capbroker::caps::types::Wants;
use crate::core::{Error, Invalid};

/// The net room's per-store state: the WASI face's sockets.
pub type NetCtx = wasi::WasiSockets;

/// Adds the `net` interface to `linker`. Its host functions need no state
/// of their own: `K` is whatever context the caller's view carries.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> crate::core::View<'_, NetCtx>,
) -> wasmtime::Result<()> {
    wit::net::add_to_linker::<T, crate::core::view::HasView<NetCtx>>(linker, get)
}

/// What tells listen, connect and UDP grants apart; the rest of their life
/// cycle is the same ([`Net`]).
pub trait Direction: Handle {
    /// The flag and manifest table that grant it.
    const NAME: &'static str;
    /// How the flag is written, for `capbroker inspect`.
    const FORM: &'static str;
    /// Why a grant reaches nothing.
    type Unreachable: std::fmt::Display;
    /// Parses the ranges of a grant.
    fn parse(spec: &str) -> Result<NetGrant, Invalid>;
    /// What a grant reaches (a connect grant's host names looked up).
    fn reach(spec: &NetGrant) -> Result<Reach, Self::Unreachable>;
    fn wrap(reach: Reach) -> Self;
}

impl Direction for ListenRight {
    const NAME: &'static str = "listen";
    const FORM: &'static str = "ADDRESS:PORT";
    type Unreachable = Invalid;
    fn parse(spec: &str) -> Result<NetGrant, Invalid> {
        NetGrant::parse_listen(spec)
    }
    fn reach(spec: &NetGrant) -> Result<Reach, Invalid> {
        Reach::listen(spec)
    }
    fn wrap(reach: Reach) -> Self {
        ListenRight(reach)
    }
}

/// Connect and UDP grants name peers, by address or by a host name looked
/// up once, at start.
macro_rules! peer_direction {
    ($($right:ident: $name:literal,)*) => {
        $(
            impl Direction for $right {
                const NAME: &'static str = $name;
                const FORM: &'static str = "ADDRESS[/PREFIX]:PORT[-PORT] or HOST:PORT";
                type Unreachable = LookupError;
                fn parse(spec: &str) -> Result<NetGrant, Invalid> {
                    NetGrant::parse_peers(spec)
                }
                fn reach(spec: &NetGrant) -> Result<Reach, LookupError> {
                    Reach::connect(spec)
                }
                fn wrap(reach: Reach) -> Self {
                    $right(reach)
                }
            }
        )*
    };
}

peer_direction! {
    ConnectRight: "connect",
    UdpRight: "udp",
}

/// A network grant's life cycle, for listen, connect or UDP rights.
pub struct Net<R>(PhantomData<R>);

/// Listen grants: `--listen NAME=RANGES`, `[listen]`.
pub type Listeners = Net<ListenRight>;

/// Connect grants: `--connect NAME=RANGES`, `[connect]`.
pub type Connectors = Net<ConnectRight>;

/// UDP grants: `--udp NAME=RANGES`, `[udp]`, the ranges naming peers.
pub type UdpRights = Net<UdpRight>;

impl<R: Direction> Kind for Net<R> {
    const NAME: &'static str = R::NAME;
    type Spec = NetGrant;
    type Handle = R;
    type Table = Spanned<Words>;

    fn from_table(t: &Self::Table, name: &str, _: &Path) -> Result<NetGrant, Located> {
        // `[]`: granted, as a component may require, but reaching nothing
        // (what learning writes for a required grant the run never used).
        if matches!(t.get_ref(), Words::Many(v) if v.is_empty()) {
            return Ok(NetGrant::default());
        }
        R::parse(&t.get_ref().joined())
            .map_err(|e| Located::at(t.span(), format!("[{}] {name}: {e}", R::NAME)))
    }

    fn to_table(spec: &NetGrant) -> Self::Table {
        Spanned::new(0..0, Words::Many(spec.entries()))
    }

    fn fit(spec: &NetGrant, _: &str, _: &Wants) -> Result<NetGrant, FitError> {
        Ok(spec.clone())
    }

    fn open(
        spec: &NetGrant,
        name: &str,
        _: &[&NetGrant],
        env: &OpenEnv<'_>,
    ) -> wasmtime::Result<Opened<R>> {
        let reach = R::reach(spec)
            .map_err(|e| wasmtime::format_err!("grant `{name}`: {e}"))?
            .learned_by(env.learner.cloned(), name);
        Ok(Opened {
            target: R::NAME.into(),
            detail: reach.detail(),
            handle: R::wrap(reach),
        })
    }

    fn describe(name: &str, _: &Wants) -> String {
        format!("--{} {name}={}", R::NAME, R::FORM)
    }

    fn narrow(spec: &NetGrant, name: &str, learned: &mut Learned<'_>) -> Option<NetGrant> {
        narrow(spec, name, learned)
    }
}

/// A network grant narrowed to the addresses the run used.
fn narrow(spec: &NetGrant, name: &str, learned: &mut Learned<'_>) -> Option<NetGrant> {
    if learned.used.too_many.contains(name) {
        learned.notes.push(format!(
            "# {name}: more uses than learning keeps: kept as granted"
        ));
        return Some(spec.clone());
    }
    let used = learned.used.net.get(name).cloned().unwrap_or_default();
    if used.is_empty() {
        if learned.required {
            learned.notes.push(format!(
                "# {name}: not used, but required: nothing to reach"
            ));
            return Some(NetGrant::default());
        }
        learned
            .notes
            .push(format!("# {name}: not used, not granted"));
        return None;
    }
    let used: Vec<String> = used.into_iter().collect();
    learned
        .notes
        .push(format!("# {name}: used {}", used.join(", ")));
    // Each address as a grant of its own: one that does not read back as
    // a grant is left out (never widened to the operator's whole range).
    let mut grant = NetGrant::default();
    for u in &used {
        match NetGrant::parse(u) {
            Ok(g) => {
                grant.ranges.extend(g.ranges);
                grant.hosts.extend(g.hosts);
            }
            Err(e) => learned
                .notes
                .push(format!("# {name}: `{u}` left out ({e})")),
        }
    }
    narrow_named_ports(&mut grant);
    if grant.ranges.is_empty() && grant.hosts.is_empty() && !learned.required {
        return None;
    }
    Some(grant)
}

/// A looked-up name is learned as its grant wrote it, ports and all (the
/// lookup does not say which port follows): narrowed to the ports the run
/// then used under the same grant, when some of them are the name's.
fn narrow_named_ports(grant: &mut NetGrant) {
    let used: std::collections::BTreeSet<u16> = grant
        .ranges
        .iter()
        .filter(|r| r.ports.0 == r.ports.1)
        .map(|r| r.ports.0)
        .collect();
    let mut hosts = Vec::new();
    for h in grant.hosts.drain(..) {
        let mine: Vec<u16> = used
            .iter()
            .copied()
            .filter(|p| (h.ports.0..=h.ports.1).contains(p))
            .collect();
        if mine.is_empty() {
            hosts.push(h);
            continue;
        }
        for p in mine {
            let one = HostPorts {
                host: h.host.clone(),
                ports: (p, p),
            };
            if !hosts.contains(&one) {
                hosts.push(one);
            }
        }
    }
    grant.hosts = hosts;
}

impl Handle for ListenRight {
    fn share(&self, _: &ShareTo<'_>) -> Result<Self, Error> {
        self.lineage().check()?;
        Ok(self.copy())
    }

    fn held_by(self, pledges: &Pledges) -> Self {
        ListenRight::held_by(self, pledges)
    }
}

impl Handle for ConnectRight {
    fn share(&self, _: &ShareTo<'_>) -> Result<Self, Error> {
        self.lineage().check()?;
        Ok(self.copy())
    }

    fn held_by(self, pledges: &Pledges) -> Self {
        ConnectRight::held_by(self, pledges)
    }
}

impl Handle for UdpRight {
    fn share(&self, _: &ShareTo<'_>) -> Result<Self, Error> {
        self.0.life.lineage.check()?;
        Ok(UdpRight(self.0.clone()))
    }

    fn held_by(self, pledges: &Pledges) -> Self {
        UdpRight(self.0.held_by(pledges))
    }
}

impl Handle for TcpStreamHandle {
    fn share(&self, _: &ShareTo<'_>) -> Result<Self, Error> {
        self.lineage().check()?;
        TcpStreamHandle::share(self)
    }

    fn held_by(self, pledges: &Pledges) -> Self {
        TcpStreamHandle::held_by(self, pledges)
    }
}
