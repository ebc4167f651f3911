//! The `net` interface: listen and connect rights over sets of addresses,
//! and the TCP sockets they yield. The ranges here decide what a right
//! reaches and how rights narrow; cap-std's `Pool` makes every bind and
//! checks every connect, which tokio then makes with a deadline.
//!
//! The broker never looks up a name a guest chose: that would send the
//! guest's text to DNS (an exfiltration channel) and tell the guest what
//! names resolve to. Only a name the operator put in a connect grant is
//! looked up, once, when the grant is made; the grant then reaches exactly
//! the addresses that lookup returned, and the guest's `connect` matches
//! its name against the granted ones as text.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::Resource;

pub use crate::bindings::capbroker::caps::net::AddressRange;
use crate::bindings::capbroker::caps::net::{
    Host, HostConnectRight, HostListenRight, HostTcpListener, HostTcpStream,
};
use crate::ctx::BrokerCtxView;
use crate::learn::Learner;
use crate::pledge::{Authority, Pledges};
use crate::revoke::{Lineage, RevokerHandle};
use crate::types::{Error, HostError, HostResult, Rights};

/// `tcp-stream.read` returns at most this many bytes per call.
const MAX_READ: u32 = 1 << 20;

/// A `connect` gives up after this long, over all the addresses it tries:
/// an address that drops SYNs would otherwise hold the guest for the
/// system's own timeout (minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses an IP network (`10.0.0.0/8`) or a single address (`127.0.0.1`).
fn parse_network(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        s.parse().ok()
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    }
}

/// One range of addresses: a network and an inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub net: IpNet,
    pub ports: (u16, u16),
}

/// Parses `PORT` or `PORT-PORT`: `None` if it is neither, `Some(Err)` for
/// an empty range.
fn parse_ports(s: &str) -> Option<Result<(u16, u16), String>> {
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => {
            let p = s.parse().ok()?;
            (p, p)
        }
    };
    Some(if first > last {
        Err("the port range is empty".into())
    } else {
        Ok((first, last))
    })
}

/// `s` as a DNS host name, lower-cased and without a trailing dot, or `None`
/// if it is not spelled as one: dot-separated labels of letters, digits and
/// `-`, the last beginning with a letter. That last rule keeps out every
/// numeric form the system resolver reads as an address (`127.1`,
/// `2130706434`, `0x7f.1`), so a granted name never stands for an address
/// the operator did not write as one.
pub fn host_name(s: &str) -> Option<String> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return None;
    }
    let labels_ok = s.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    let last = s.rsplit('.').next()?;
    (labels_ok && last.starts_with(|c: char| c.is_ascii_alphabetic()))
        .then(|| s.to_ascii_lowercase())
}

impl Range {
    /// Parses `IP[/PREFIX]:PORT[-PORT]`, IPv6 in brackets
    /// (`[::1]:8080`, `[fd00::]/8:443`).
    pub fn parse(s: &str) -> Result<Range, String> {
        let bad = || {
            format!("`{s}` is not ADDRESS[/PREFIX]:PORT[-PORT] (e.g. 127.0.0.1:8080, 10.0.0.0/8:443, [::1]:8000-8099)")
        };
        let (addr, ports) = s.rsplit_once(':').ok_or_else(bad)?;
        let net = parse_network(&addr.replace(['[', ']'], "")).ok_or_else(bad)?;
        let ports = parse_ports(ports)
            .ok_or_else(bad)?
            .map_err(|e| format!("`{s}`: {e}"))?;
        Ok(Range {
            net: net.trunc(),
            ports,
        })
    }

    fn from_wit(r: &AddressRange) -> Result<Range, Error> {
        let net = parse_network(&r.network)
            .ok_or_else(|| Error::Invalid(format!("`{}` is not an IP network", r.network)))?;
        if r.first_port > r.last_port {
            return Err(Error::Invalid(format!(
                "ports {}-{} are an empty range",
                r.first_port, r.last_port
            )));
        }
        Ok(Range {
            net: net.trunc(),
            ports: (r.first_port, r.last_port),
        })
    }

    fn to_wit(self) -> AddressRange {
        AddressRange {
            network: self.net.to_string(),
            first_port: self.ports.0,
            last_port: self.ports.1,
        }
    }

    fn contains(&self, addr: &SocketAddr) -> bool {
        self.net.contains(&addr.ip()) && (self.ports.0..=self.ports.1).contains(&addr.port())
    }

    fn within(&self, outer: &Range) -> bool {
        outer.net.contains(&self.net)
            && outer.ports.0 <= self.ports.0
            && self.ports.1 <= outer.ports.1
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = match self.net {
            IpNet::V6(n) if n.prefix_len() == 128 => format!("[{}]", n.addr()),
            IpNet::V6(n) => format!("[{}]/{}", n.addr(), n.prefix_len()),
            IpNet::V4(n) if n.prefix_len() == 32 => n.addr().to_string(),
            IpNet::V4(n) => n.to_string(),
        };
        match self.ports {
            (a, b) if a == b => write!(f, "{net}:{a}"),
            (a, b) => write!(f, "{net}:{a}-{b}"),
        }
    }
}

/// A host name in a connect grant (`api=example.com:443`), with its ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPorts {
    /// Lower-cased, without a trailing dot.
    pub host: String,
    pub ports: (u16, u16),
}

impl HostPorts {
    /// Parses `HOST:PORT[-PORT]`; `None` if it is not spelled so.
    fn parse(s: &str) -> Option<Result<HostPorts, String>> {
        let (host, ports) = s.rsplit_once(':')?;
        let host = host_name(host)?;
        Some(
            parse_ports(ports)?
                .map(|ports| HostPorts { host, ports })
                .map_err(|e| format!("`{s}`: {e}")),
        )
    }
}

impl std::fmt::Display for HostPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ports {
            (a, b) if a == b => write!(f, "{}:{a}", self.host),
            (a, b) => write!(f, "{}:{a}-{b}", self.host),
        }
    }
}

/// The ranges of a listen or connect right, as the operator grants them
/// (`--listen NAME=RANGE[,RANGE…]`) and as guests narrow them; a connect
/// grant may also name hosts (`--connect api=example.com:443`).
#[derive(Clone, Debug, Default)]
pub struct NetGrant {
    pub ranges: Vec<Range>,
    /// Looked up when the grant is made into a right ([`Reach::connect`]);
    /// a listen grant with names is refused then.
    pub hosts: Vec<HostPorts>,
}

impl NetGrant {
    pub fn parse(spec: &str) -> Result<NetGrant, String> {
        let mut grant = NetGrant::default();
        for entry in spec.split(',') {
            match Range::parse(entry) {
                Ok(r) => grant.ranges.push(r),
                Err(e) => match HostPorts::parse(entry) {
                    Some(h) => grant.hosts.push(h?),
                    None if entry.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                        return Err(format!(
                            "`{entry}` is not ADDRESS[/PREFIX]:PORT[-PORT] or \
                             HOST:PORT[-PORT] (e.g. 127.0.0.1:8080, example.com:443)"
                        ))
                    }
                    None => return Err(e),
                },
            }
        }
        Ok(grant)
    }

    /// Parses a listen grant: addresses only.
    pub fn parse_listen(spec: &str) -> Result<NetGrant, String> {
        let grant = NetGrant::parse(spec)?;
        match grant.hosts.first() {
            Some(h) => Err(listen_host(h)),
            None => Ok(grant),
        }
    }

    /// Each range and host as the flags and the manifest write them.
    pub fn entries(&self) -> Vec<String> {
        self.ranges
            .iter()
            .map(Range::to_string)
            .chain(self.hosts.iter().map(HostPorts::to_string))
            .collect()
    }
}

impl std::fmt::Display for NetGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.entries().join(","))
    }
}

/// A listen grant names no host: it would bind wherever the name pointed at
/// start.
fn listen_host(h: &HostPorts) -> String {
    format!(
        "`{h}` is not ADDRESS[/PREFIX]:PORT[-PORT]: a listen grant takes addresses, not host names"
    )
}

/// Looks up host names for connect grants: the system's resolver, or one a
/// test or an embedder supplies.
pub trait Resolve {
    fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The host's resolver (`getaddrinfo`).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        use std::net::ToSocketAddrs;
        Ok((host, 0).to_socket_addrs()?.map(|a| a.ip()).collect())
    }
}

/// A granted host name and the addresses its one lookup returned.
#[derive(Debug)]
struct Named {
    host: HostPorts,
    addrs: Box<[IpAddr]>,
}

/// What ends a network handle: the revocation of a revocable ancestor, or a
/// pledge of the network by any instance that has held it or a handle it
/// came from. The second reaches copies given to children too, so a
/// process that pledged cannot have a child use the network for it.
#[derive(Clone, Debug, Default)]
struct Life {
    lineage: Lineage,
    holders: Arc<[Pledges]>,
}

impl Life {
    /// Revoked first, then pledged, as everywhere else.
    fn check(&self) -> Result<(), Error> {
        self.lineage.check()?;
        self.holders
            .iter()
            .try_for_each(|p| p.check(Authority::NETWORK, "the network"))
    }

    fn held_by(&self, pledges: &Pledges) -> Life {
        let holders: Vec<Pledges> = self
            .holders
            .iter()
            .cloned()
            .chain([pledges.clone()])
            .collect();
        Life {
            lineage: self.lineage.clone(),
            holders: holders.into(),
        }
    }
}

/// The most ranges an attenuated right holds.
pub const MAX_RANGES: usize = 64;

/// Addresses a right covers, and the checks both kinds of right share.
#[derive(Clone, Debug)]
pub struct Reach {
    /// Every address reached, the granted names' too.
    ranges: Arc<[Range]>,
    /// The host names a connect right was granted, each with what its
    /// lookup returned. Attenuation keeps them; `ranges` decides which of
    /// their addresses are still reached.
    names: Arc<[Named]>,
    life: Life,
    /// `capbroker learn`'s recorder and the grant's name.
    learn: Option<(Arc<Learner>, Arc<str>)>,
}

impl Reach {
    /// A listen right's reach: addresses only (see [`listen_host`]).
    pub fn listen(grant: &NetGrant) -> Result<Reach, String> {
        if let Some(h) = grant.hosts.first() {
            return Err(listen_host(h));
        }
        Ok(Reach::of(grant.ranges.clone(), Vec::new()))
    }

    /// A connect right's reach, its host names looked up now by the
    /// system's resolver.
    pub fn connect(grant: &NetGrant) -> Result<Reach, String> {
        Reach::connect_with(grant, &SystemResolver)
    }

    /// A connect right's reach, its host names looked up now by `resolver`,
    /// once each. The right reaches exactly the addresses returned, for
    /// good: a later change in DNS does not move it, and nothing the guest
    /// does causes another lookup.
    pub fn connect_with(grant: &NetGrant, resolver: &dyn Resolve) -> Result<Reach, String> {
        let mut ranges = grant.ranges.clone();
        let mut names = Vec::with_capacity(grant.hosts.len());
        for h in &grant.hosts {
            let mut addrs: Vec<IpAddr> = Vec::new();
            let found = resolver
                .lookup(&h.host)
                .map_err(|e| format!("cannot look up `{}`: {e}", h.host))?;
            for ip in found {
                // The mapped form is refused at connect: keep the plain one.
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                };
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
            if addrs.is_empty() {
                return Err(format!("`{}` resolves to no address", h.host));
            }
            ranges.extend(addrs.iter().map(|ip| Range {
                net: IpNet::from(*ip),
                ports: h.ports,
            }));
            names.push(Named {
                host: h.clone(),
                addrs: addrs.into(),
            });
        }
        Ok(Reach::of(ranges, names))
    }

    fn of(ranges: Vec<Range>, names: Vec<Named>) -> Reach {
        Reach {
            ranges: ranges.into(),
            names: names.into(),
            life: Life::default(),
            learn: None,
        }
    }

    /// The same reach, its uses noted by `learner` for grant `name`.
    pub fn learned_by(mut self, learner: Option<Arc<Learner>>, name: &str) -> Reach {
        self.learn = learner.map(|l| (l, name.into()));
        self
    }

    /// The grant for the audit trail: its ranges, and what each name
    /// resolved to.
    pub fn detail(&self) -> String {
        let mut out = self.describe();
        for n in self.names.iter() {
            let addrs: Vec<String> = n.addrs.iter().map(IpAddr::to_string).collect();
            out.push_str(&format!("; {} = {}", n.host, addrs.join(" ")));
        }
        out
    }

    fn describe(&self) -> String {
        self.ranges
            .iter()
            .map(Range::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether one address is reached: no IPv4-mapped IPv6 forms, and
    /// inside a range.
    fn admits(&self, addr: &SocketAddr) -> Result<(), Error> {
        if let IpAddr::V6(v6) = addr.ip() {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Err(Error::Refused(format!(
                    "{addr} is an IPv4-mapped IPv6 address: use {v4}:{} if it is granted",
                    addr.port()
                )));
            }
        }
        if self.ranges.iter().any(|r| r.contains(addr)) {
            Ok(())
        } else {
            Err(Error::Refused(format!(
                "{addr} is outside the grant ({})",
                self.describe()
            )))
        }
    }

    /// [`Reach::admits`], noting the use for `capbroker learn`.
    pub(crate) fn check(&self, addr: &SocketAddr) -> Result<(), Error> {
        self.admits(addr)?;
        self.learned(|| addr.to_string());
        Ok(())
    }

    fn learned(&self, what: impl FnOnce() -> String) {
        if let Some((learner, grant)) = &self.learn {
            learner.net(grant, what());
        }
    }

    /// The addresses `connect(address)` may try, in order, and what
    /// `capbroker learn` should note for it. An `ip:port` is judged as it
    /// is; a `host:port` is matched as text against the granted names and
    /// is never looked up.
    fn targets(&self, address: &str) -> Result<(Vec<SocketAddr>, String), Error> {
        if let Ok(addr) = address.parse::<SocketAddr>() {
            self.admits(&addr)?;
            return Ok((vec![addr], addr.to_string()));
        }
        let bad = || {
            Error::Invalid(format!(
                "`{address}` is not IP:PORT or HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080, example.com:443)"
            ))
        };
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        let wanted = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let named: Vec<&Named> = self
            .names
            .iter()
            .filter(|n| n.host.host == wanted)
            .collect();
        if named.is_empty() {
            let granted: Vec<String> = self.names.iter().map(|n| n.host.host.clone()).collect();
            return Err(Error::Refused(format!(
                "`{host}` is not a host name granted to this right ({}); \
                 the broker looks up only the names the operator grants",
                if granted.is_empty() {
                    "it was granted addresses only".to_string()
                } else {
                    format!("it was granted {}", granted.join(", "))
                }
            )));
        }
        let mut ported = named
            .iter()
            .filter(|n| (n.host.ports.0..=n.host.ports.1).contains(&port))
            .peekable();
        if ported.peek().is_none() {
            let granted: Vec<String> = named.iter().map(|n| n.host.to_string()).collect();
            return Err(Error::Refused(format!(
                "port {port} of `{host}` is not granted (granted: {})",
                granted.join(", ")
            )));
        }
        let mut candidates: Vec<SocketAddr> = Vec::new();
        for n in ported {
            for ip in n.addrs.iter() {
                let addr = SocketAddr::new(*ip, port);
                if !candidates.contains(&addr) && self.admits(&addr).is_ok() {
                    candidates.push(addr);
                }
            }
        }
        if candidates.is_empty() {
            let resolved: Vec<String> = named
                .iter()
                .flat_map(|n| n.addrs.iter().map(IpAddr::to_string))
                .collect();
            return Err(Error::Refused(format!(
                "`{wanted}` was resolved, when it was granted, to {}: none of them is inside this right ({})",
                resolved.join(", "),
                self.describe()
            )));
        }
        Ok((candidates, format!("{wanted}:{port}")))
    }

    fn attenuate(&self, asked: &[AddressRange]) -> Result<Reach, Error> {
        // The host keeps the list for as long as the right lives, and
        // checks it against the held one: both are bounded.
        if asked.len() > MAX_RANGES {
            return Err(Error::LimitExceeded(format!(
                "{} ranges asked: a right holds at most {MAX_RANGES}",
                asked.len()
            )));
        }
        let mut ranges = Vec::with_capacity(asked.len());
        for a in asked {
            let r = Range::from_wit(a)?;
            if !self.ranges.iter().any(|held| r.within(held)) {
                return Err(Error::Refused(format!(
                    "{r} is not within the right ({})",
                    self.describe()
                )));
            }
            ranges.push(r);
        }
        Ok(Reach {
            ranges: ranges.into(),
            ..self.clone()
        })
    }

    /// A cap-std pool holding exactly these ranges.
    fn pool(&self) -> cap_std::net::Pool {
        let mut pool = cap_std::net::Pool::new();
        for r in self.ranges.iter() {
            // cap-std's port range is half-open.
            pool.insert_ip_net_port_range(
                r.net,
                r.ports.0,
                r.ports.1.checked_add(1),
                cap_std::ambient_authority(),
            );
        }
        pool
    }

    fn revocable(&self) -> Result<(Reach, RevokerHandle), Error> {
        let (lineage, revoker) = self.life.lineage.revocable()?;
        Ok((
            Reach {
                life: Life {
                    lineage,
                    holders: self.life.holders.clone(),
                },
                ..self.clone()
            },
            revoker,
        ))
    }

    /// The same reach, also ended by a pledge of the network in the
    /// instance whose pledges these are.
    fn held_by(&self, pledges: &Pledges) -> Reach {
        Reach {
            life: self.life.held_by(pledges),
            ..self.clone()
        }
    }
}

/// The right to listen on the addresses of its [`Reach`].
pub struct ListenRight(pub Reach);
/// The right to connect to the addresses of its [`Reach`].
pub struct ConnectRight(pub Reach);

/// What listen and connect rights share: a reach, and how to wrap one.
trait Right: Send + Sized + 'static {
    const KIND: &'static str;
    fn reach(&self) -> &Reach;
    fn wrap(reach: Reach) -> Self;
}

impl Right for ListenRight {
    const KIND: &'static str = "listen-right";
    fn reach(&self) -> &Reach {
        &self.0
    }
    fn wrap(reach: Reach) -> Self {
        ListenRight(reach)
    }
}

impl Right for ConnectRight {
    const KIND: &'static str = "connect-right";
    fn reach(&self) -> &Reach {
        &self.0
    }
    fn wrap(reach: Reach) -> Self {
        ConnectRight(reach)
    }
}

impl BrokerCtxView<'_> {
    fn ranges_of<R: Right>(&mut self, r: Resource<R>) -> wasmtime::Result<Vec<AddressRange>> {
        Ok(self
            .table
            .get(&r)?
            .reach()
            .ranges
            .iter()
            .map(|r| r.to_wit())
            .collect())
    }

    fn attenuate_right<R: Right>(
        &mut self,
        r: Resource<R>,
        ranges: Vec<AddressRange>,
    ) -> HostResult<Resource<R>> {
        let reach = self.table.get(&r)?.reach();
        match reach.life.check().and_then(|()| reach.attenuate(&ranges)) {
            Ok(narrow) => Ok(self.table.push(R::wrap(narrow))?),
            Err(e) => self.refuse(&format!("{}.attenuate", R::KIND), "", e),
        }
    }

    fn revocable_right<R: Right>(
        &mut self,
        r: Resource<R>,
    ) -> HostResult<(Resource<R>, Resource<RevokerHandle>)> {
        let reach = self.table.get(&r)?.reach();
        if let Err(e) = reach.life.check() {
            return self.refuse(&format!("{}.revocable", R::KIND), "", e);
        }
        let (copy, revoker) = match reach.revocable() {
            Ok(made) => made,
            Err(e) => return self.refuse(&format!("{}.revocable", R::KIND), "", e),
        };
        let copy = self.table.push(R::wrap(copy))?;
        Ok((copy, self.table.push(revoker)?))
    }
}

impl ListenRight {
    pub fn copy(&self) -> ListenRight {
        ListenRight(self.0.clone())
    }
    pub fn lineage(&self) -> &Lineage {
        &self.0.life.lineage
    }
    /// The same right, ended by a pledge of the network in the instance
    /// whose pledges these are; see [`crate::grants`]' `granted`.
    pub fn held_by(self, pledges: &Pledges) -> ListenRight {
        ListenRight(self.0.held_by(pledges))
    }
}

impl ConnectRight {
    pub fn copy(&self) -> ConnectRight {
        ConnectRight(self.0.clone())
    }
    pub fn lineage(&self) -> &Lineage {
        &self.0.life.lineage
    }
    /// As [`ListenRight::held_by`].
    pub fn held_by(self, pledges: &Pledges) -> ConnectRight {
        ConnectRight(self.0.held_by(pledges))
    }
}

/// A listening socket.
pub struct TcpListenerHandle {
    listener: tokio::net::TcpListener,
    life: Life,
}

/// A connected socket.
pub struct TcpStreamHandle {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    life: Life,
}

impl TcpStreamHandle {
    /// A second handle on the same connection, for a child process.
    pub fn share(&self) -> Result<TcpStreamHandle, Error> {
        use std::os::fd::AsFd;
        let fd = self
            .stream
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::Io(e.to_string()))?;
        let std = std::net::TcpStream::from(fd);
        let stream = tokio::net::TcpStream::from_std(std).map_err(|e| Error::Io(e.to_string()))?;
        Ok(TcpStreamHandle {
            stream,
            peer: self.peer,
            life: self.life.clone(),
        })
    }

    pub fn lineage(&self) -> &Lineage {
        &self.life.lineage
    }

    /// As [`ListenRight::held_by`].
    pub fn held_by(mut self, pledges: &Pledges) -> TcpStreamHandle {
        self.life = self.life.held_by(pledges);
        self
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

/// Parses an `ip:port` strictly: no short forms such as `127.1`.
fn parse_addr(s: &str) -> Result<SocketAddr, Error> {
    s.parse().map_err(|_| {
        Error::Invalid(format!(
            "`{s}` is not an IP address and port (e.g. 127.0.0.1:8080, [::1]:8080)"
        ))
    })
}

impl BrokerCtxView<'_> {
    fn refuse<T>(&self, op: &str, what: &str, e: Error) -> HostResult<T> {
        self.ctx.audit.refused(op, "net", what, Rights::empty(), &e);
        Err(HostError::Guest(e))
    }

    /// Fails, recorded, if `life` has ended.
    fn alive(&self, op: &str, life: &Life) -> HostResult<()> {
        match life.check() {
            Ok(()) => Ok(()),
            Err(e) => self.refuse(op, "", e),
        }
    }
}

impl Host for BrokerCtxView<'_> {}

impl HostListenRight for BrokerCtxView<'_> {
    fn ranges(&mut self, r: Resource<ListenRight>) -> wasmtime::Result<Vec<AddressRange>> {
        self.ranges_of(r)
    }

    fn attenuate(
        &mut self,
        r: Resource<ListenRight>,
        ranges: Vec<AddressRange>,
    ) -> HostResult<Resource<ListenRight>> {
        self.attenuate_right(r, ranges)
    }

    fn revocable(
        &mut self,
        r: Resource<ListenRight>,
    ) -> HostResult<(Resource<ListenRight>, Resource<RevokerHandle>)> {
        self.revocable_right(r)
    }

    fn listen(
        &mut self,
        r: Resource<ListenRight>,
        address: String,
    ) -> HostResult<Resource<TcpListenerHandle>> {
        let reach = self.table.get(&r)?.0.clone();
        let result = (|| {
            reach.life.check()?;
            let addr = parse_addr(&address)?;
            // The system may pick any port: only a grant of every port on
            // that address covers that.
            if addr.port() == 0
                && !reach
                    .ranges
                    .iter()
                    .any(|r| r.ports == (0, u16::MAX) && r.net.contains(&addr.ip()))
            {
                return Err(Error::Refused(
                    "port 0 lets the system pick a port: name one in the grant".into(),
                ));
            }
            reach.check(&addr)?;
            // `[::]` listens on every IPv4 address too (the socket is not
            // IPv6-only): the grant must cover `0.0.0.0` as well.
            if addr.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
                let v4 = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port());
                if reach.check(&v4).is_err() {
                    return Err(Error::Refused(format!(
                        "{addr} listens on {v4} too, which the grant does not cover"
                    )));
                }
            }
            let listener = reach.pool().bind_tcp_listener(addr).map_err(io)?;
            let std = std::net::TcpListener::from(std::os::fd::OwnedFd::from(listener));
            std.set_nonblocking(true).map_err(io)?;
            let listener = tokio::net::TcpListener::from_std(std).map_err(io)?;
            Ok(TcpListenerHandle {
                listener,
                life: reach.life.clone(),
            })
        })();
        match result {
            Ok(l) => Ok(self.table.push(l)?),
            Err(e) => self.refuse("listen", &address, e),
        }
    }

    fn drop(&mut self, r: Resource<ListenRight>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl HostConnectRight for BrokerCtxView<'_> {
    fn ranges(&mut self, r: Resource<ConnectRight>) -> wasmtime::Result<Vec<AddressRange>> {
        self.ranges_of(r)
    }

    fn attenuate(
        &mut self,
        r: Resource<ConnectRight>,
        ranges: Vec<AddressRange>,
    ) -> HostResult<Resource<ConnectRight>> {
        self.attenuate_right(r, ranges)
    }

    fn revocable(
        &mut self,
        r: Resource<ConnectRight>,
    ) -> HostResult<(Resource<ConnectRight>, Resource<RevokerHandle>)> {
        self.revocable_right(r)
    }

    async fn connect(
        &mut self,
        r: Resource<ConnectRight>,
        address: String,
    ) -> HostResult<Resource<TcpStreamHandle>> {
        let reach = self.table.get(&r)?.0.clone();
        match connect(&reach, &address, CONNECT_TIMEOUT).await {
            Ok(s) => Ok(self.table.push(s)?),
            Err(e) => self.refuse("connect", &address, e),
        }
    }

    fn drop(&mut self, r: Resource<ConnectRight>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

/// Connects to the first of `address`'s targets (see [`Reach::targets`])
/// that answers within `timeout`, all tries together. cap-std's pool checks
/// each address; tokio connects, so that giving up cancels the attempt and
/// no thread waits on it.
async fn connect(
    reach: &Reach,
    address: &str,
    timeout: Duration,
) -> Result<TcpStreamHandle, Error> {
    reach.life.check()?;
    let (candidates, learned) = reach.targets(address)?;
    let pool = reach.pool();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    for addr in candidates {
        // The system takes the unspecified address for a loopback one:
        // never an address a grant could mean.
        if addr.ip().is_unspecified() {
            last = Some(Error::Refused(format!(
                "{addr}: not an address to connect to"
            )));
            continue;
        }
        pool._pool()
            .check_addr(&addr)
            .map_err(|e| Error::Refused(format!("{addr}: {e}")))?;
        match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // The right may have ended while the connection was made.
                reach.life.check()?;
                reach.learned(|| learned);
                return Ok(TcpStreamHandle {
                    stream,
                    peer: addr,
                    life: reach.life.clone(),
                });
            }
            Ok(Err(e)) => last = Some(Error::Io(format!("{addr}: {e}"))),
            Err(_) => {
                last = Some(Error::Io(format!(
                    "{address}: no connection within {} ms",
                    timeout.as_millis()
                )));
                break;
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Io(format!("{address}: no address to try"))))
}

impl HostTcpListener for BrokerCtxView<'_> {
    fn local_address(&mut self, l: Resource<TcpListenerHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&l)?.listener.local_addr()?.to_string())
    }

    async fn accept(
        &mut self,
        l: Resource<TcpListenerHandle>,
    ) -> HostResult<Resource<TcpStreamHandle>> {
        let life = self.table.get(&l)?.life.clone();
        self.alive("accept", &life)?;
        let (stream, peer) = self.table.get(&l)?.listener.accept().await.map_err(io)?;
        // A copy elsewhere may have ended while this one waited: the
        // connection is then closed unseen.
        self.alive("accept", &life)?;
        Ok(self.table.push(TcpStreamHandle { stream, peer, life })?)
    }

    fn drop(&mut self, l: Resource<TcpListenerHandle>) -> wasmtime::Result<()> {
        self.table.delete(l)?;
        Ok(())
    }
}

impl HostTcpStream for BrokerCtxView<'_> {
    fn peer_address(&mut self, s: Resource<TcpStreamHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&s)?.peer.to_string())
    }

    async fn read(&mut self, s: Resource<TcpStreamHandle>, len: u32) -> HostResult<Vec<u8>> {
        let life = self.table.get(&s)?.life.clone();
        self.alive("read", &life)?;
        let mut buf = vec![0; len.min(MAX_READ) as usize];
        let n = self
            .table
            .get_mut(&s)?
            .stream
            .read(&mut buf)
            .await
            .map_err(io)?;
        // What arrived after the stream ended is not handed over.
        self.alive("read", &life)?;
        buf.truncate(n);
        Ok(buf)
    }

    async fn write(&mut self, s: Resource<TcpStreamHandle>, data: Vec<u8>) -> HostResult<()> {
        let life = self.table.get(&s)?.life.clone();
        self.alive("write", &life)?;
        let s = self.table.get_mut(&s)?;
        Ok(s.stream.write_all(&data).await.map_err(io)?)
    }

    async fn shutdown(&mut self, s: Resource<TcpStreamHandle>) -> HostResult<()> {
        let life = self.table.get(&s)?.life.clone();
        self.alive("shutdown", &life)?;
        let s = self.table.get_mut(&s)?;
        Ok(s.stream.shutdown().await.map_err(io)?)
    }

    fn drop(&mut self, s: Resource<TcpStreamHandle>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver that answers every name with `addrs` and counts lookups.
    struct Counting {
        addrs: Vec<IpAddr>,
        lookups: AtomicUsize,
    }

    impl Counting {
        fn new(addrs: &[&str]) -> Counting {
            Counting {
                addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                lookups: AtomicUsize::new(0),
            }
        }
    }

    impl Resolve for Counting {
        fn lookup(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok(self.addrs.clone())
        }
    }

    fn code(e: &Error) -> &'static str {
        e.code()
    }

    fn refusal<T>(r: Result<T, Error>) -> Error {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn only_names_spelled_as_names_are_host_names() {
        assert_eq!(host_name("Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(host_name("localhost").as_deref(), Some("localhost"));
        assert_eq!(host_name("a-b.c1.io").as_deref(), Some("a-b.c1.io"));
        // What the system resolver would read as addresses.
        for numeric in ["127.1", "2130706434", "0x7f.1", "0x7f000001", "127.0.0.1"] {
            assert_eq!(host_name(numeric), None, "{numeric}");
        }
        for bad in [
            "", ".", "a..b", "-a.com", "a-.com", "a_b.com", "a b", "a/b", "[::1]",
        ] {
            assert_eq!(host_name(bad), None, "{bad}");
        }
        assert_eq!(host_name(&"a".repeat(64)), None);
    }

    #[test]
    fn a_grant_names_hosts_with_ports() {
        let g = NetGrant::parse("10.0.0.0/8:443,api.example.com:443-444").unwrap();
        assert_eq!(g.ranges.len(), 1);
        assert_eq!(
            g.hosts,
            vec![HostPorts {
                host: "api.example.com".into(),
                ports: (443, 444)
            }]
        );
        assert_eq!(g.to_string(), "10.0.0.0/8:443,api.example.com:443-444");
        assert!(NetGrant::parse("example.com:90-80")
            .unwrap_err()
            .contains("empty"));
        assert!(NetGrant::parse("example.com").is_err());
        assert!(NetGrant::parse("127.1:80").is_err());
        let listen = Reach::listen(&NetGrant::parse("localhost:80").unwrap());
        assert!(listen.unwrap_err().contains("not host names"));
    }

    #[test]
    fn a_granted_name_is_looked_up_once_and_fixes_its_addresses() {
        let resolver = Counting::new(&["127.0.0.3", "::ffff:127.0.0.4", "127.0.0.3"]);
        let grant = NetGrant::parse("api.test:8000,127.0.0.9:1").unwrap();
        let reach = Reach::connect_with(&grant, &resolver).unwrap();
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);
        // The mapped answer is kept as the plain address, once.
        assert_eq!(
            reach.describe(),
            "127.0.0.9:1, 127.0.0.3:8000, 127.0.0.4:8000"
        );
        assert_eq!(
            reach.detail(),
            "127.0.0.9:1, 127.0.0.3:8000, 127.0.0.4:8000; api.test:8000 = 127.0.0.3 127.0.0.4"
        );
        let (to, learned) = reach.targets("API.test.:8000").unwrap();
        assert_eq!(
            to,
            [
                "127.0.0.3:8000".parse().unwrap(),
                "127.0.0.4:8000".parse().unwrap()
            ]
        );
        assert_eq!(learned, "api.test:8000");
        assert_eq!(reach.targets("127.0.0.4:8000").unwrap().0.len(), 1);
        assert_eq!(
            code(&reach.targets("127.0.0.5:8000").unwrap_err()),
            "refused"
        );
        assert_eq!(
            code(&reach.targets("api.test:8001").unwrap_err()),
            "refused"
        );
        // Any other name is refused as text, never looked up.
        for other in [
            "evil.test:8000",
            "x.api.test:8000",
            "127.1:8000",
            "0x7f000003:8000",
        ] {
            let e = reach.targets(other).unwrap_err();
            assert_eq!(code(&e), "refused", "{other}: {e:?}");
        }
        assert_eq!(code(&reach.targets("api.test").unwrap_err()), "invalid");
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);

        // Narrowing away the name's addresses leaves the name nothing.
        let narrow = reach
            .attenuate(&[AddressRange {
                network: "127.0.0.4".into(),
                first_port: 8000,
                last_port: 8000,
            }])
            .unwrap();
        assert_eq!(narrow.targets("api.test:8000").unwrap().0.len(), 1);
        let none = reach
            .attenuate(&[AddressRange {
                network: "127.0.0.9".into(),
                first_port: 1,
                last_port: 1,
            }])
            .unwrap();
        let e = none.targets("api.test:8000").unwrap_err();
        assert!(format!("{e:?}").contains("none of them"), "{e:?}");
    }

    #[test]
    fn a_grant_whose_name_does_not_resolve_is_refused() {
        let nothing = Counting::new(&[]);
        let grant = NetGrant::parse("api.test:80").unwrap();
        let e = Reach::connect_with(&grant, &nothing).unwrap_err();
        assert!(e.contains("no address"), "{e}");
    }

    #[tokio::test]
    async fn a_guest_name_is_never_looked_up() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let resolver = Counting::new(&["127.0.0.1"]);
        let grant = NetGrant::parse(&format!("api.test:{port}")).unwrap();
        let reach = Reach::connect_with(&grant, &resolver).unwrap();
        let s = connect(&reach, &format!("api.test:{port}"), CONNECT_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(s.peer, SocketAddr::from(([127, 0, 0, 1], port)));
        let e = refusal(connect(&reach, &format!("localhost:{port}"), CONNECT_TIMEOUT).await);
        assert_eq!(code(&e), "refused");
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_pledge_by_any_holder_ends_a_right() {
        let (parent, child) = (Pledges::default(), Pledges::default());
        let reach = Reach::listen(&NetGrant::parse("127.0.0.1:80").unwrap())
            .unwrap()
            .held_by(&parent);
        let copy = reach.clone().held_by(&child);
        assert!(copy.life.check().is_ok());
        parent.renounce(Authority::NETWORK);
        assert_eq!(code(&reach.life.check().unwrap_err()), "refused");
        assert_eq!(code(&copy.life.check().unwrap_err()), "refused");
    }
}
