//! The `net` interface: listen and connect rights over sets of addresses,
//! and the TCP sockets they yield. cap-std's `Pool` makes every bind and
//! connect; the ranges here decide what goes into it and how rights narrow.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::Resource;

pub use crate::bindings::capbroker::caps::net::AddressRange;
use crate::bindings::capbroker::caps::net::{
    Host, HostConnectRight, HostListenRight, HostTcpListener, HostTcpStream,
};
use crate::ctx::BrokerCtxView;
use crate::learn::Learner;
use crate::revoke::{Lineage, RevokerHandle};
use crate::types::{Error, HostError, HostResult, Rights};

/// `tcp-stream.read` returns at most this many bytes per call.
const MAX_READ: u32 = 1 << 20;

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

impl Range {
    /// Parses `IP[/PREFIX]:PORT[-PORT]`, IPv6 in brackets
    /// (`[::1]:8080`, `[fd00::]/8:443`).
    pub fn parse(s: &str) -> Result<Range, String> {
        let bad = || {
            format!("`{s}` is not ADDRESS[/PREFIX]:PORT[-PORT] (e.g. 127.0.0.1:8080, 10.0.0.0/8:443, [::1]:8000-8099)")
        };
        let (addr, ports) = s.rsplit_once(':').ok_or_else(bad)?;
        let net = parse_network(&addr.replace(['[', ']'], "")).ok_or_else(bad)?;
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let p = ports.parse().map_err(|_| bad())?;
                (p, p)
            }
        };
        if first > last {
            return Err(format!("`{s}`: the port range is empty"));
        }
        Ok(Range {
            net: net.trunc(),
            ports: (first, last),
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

/// The ranges of a listen or connect right, as the operator grants them
/// (`--listen NAME=RANGE[,RANGE…]`) and as guests narrow them.
#[derive(Clone, Debug)]
pub struct NetGrant {
    pub ranges: Vec<Range>,
}

impl NetGrant {
    pub fn parse(spec: &str) -> Result<NetGrant, String> {
        let ranges = spec
            .split(',')
            .map(Range::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if ranges.is_empty() {
            return Err("no address range given".into());
        }
        Ok(NetGrant { ranges })
    }
}

/// Addresses a right covers, and the checks both kinds of right share.
#[derive(Clone, Debug)]
pub struct Reach {
    ranges: Arc<[Range]>,
    lineage: Lineage,
    /// `capbroker learn`'s recorder and the grant's name.
    learn: Option<(Arc<Learner>, Arc<str>)>,
}

impl Reach {
    pub fn new(grant: &NetGrant) -> Reach {
        Reach {
            ranges: grant.ranges.clone().into(),
            lineage: Lineage::default(),
            learn: None,
        }
    }

    /// The same reach, its uses noted by `learner` for grant `name`.
    pub fn learned_by(mut self, learner: Option<Arc<Learner>>, name: &str) -> Reach {
        self.learn = learner.map(|l| (l, name.into()));
        self
    }

    fn describe(&self) -> String {
        self.ranges
            .iter()
            .map(Range::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks one address: no IPv4-mapped IPv6 forms, and inside a range.
    pub(crate) fn check(&self, addr: &SocketAddr) -> Result<(), Error> {
        if let IpAddr::V6(v6) = addr.ip() {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Err(Error::Refused(format!(
                    "{addr} is an IPv4-mapped IPv6 address: use {v4}:{} if it is granted",
                    addr.port()
                )));
            }
        }
        if self.ranges.iter().any(|r| r.contains(addr)) {
            if let Some((learner, grant)) = &self.learn {
                learner.net(grant, addr.to_string());
            }
            Ok(())
        } else {
            Err(Error::Refused(format!(
                "{addr} is outside the grant ({})",
                self.describe()
            )))
        }
    }

    fn attenuate(&self, asked: &[AddressRange]) -> Result<Reach, Error> {
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
            lineage: self.lineage.clone(),
            learn: self.learn.clone(),
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

    fn revocable(&self) -> (Reach, RevokerHandle) {
        let (lineage, revoker) = self.lineage.revocable();
        (
            Reach {
                ranges: self.ranges.clone(),
                lineage,
                learn: self.learn.clone(),
            },
            revoker,
        )
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
        match reach
            .lineage
            .check()
            .and_then(|()| reach.attenuate(&ranges))
        {
            Ok(narrow) => Ok(self.table.push(R::wrap(narrow))?),
            Err(e) => self.refuse(&format!("{}.attenuate", R::KIND), "", e),
        }
    }

    fn revocable_right<R: Right>(
        &mut self,
        r: Resource<R>,
    ) -> HostResult<(Resource<R>, Resource<RevokerHandle>)> {
        let reach = self.table.get(&r)?.reach();
        reach.lineage.check()?;
        let (copy, revoker) = reach.revocable();
        let copy = self.table.push(R::wrap(copy))?;
        Ok((copy, self.table.push(revoker)?))
    }
}

impl ListenRight {
    pub fn copy(&self) -> ListenRight {
        ListenRight(self.0.clone())
    }
    pub fn lineage(&self) -> &Lineage {
        &self.0.lineage
    }
}

impl ConnectRight {
    pub fn copy(&self) -> ConnectRight {
        ConnectRight(self.0.clone())
    }
    pub fn lineage(&self) -> &Lineage {
        &self.0.lineage
    }
}

/// A listening socket.
pub struct TcpListenerHandle {
    listener: tokio::net::TcpListener,
    lineage: Lineage,
}

/// A connected socket.
pub struct TcpStreamHandle {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    lineage: Lineage,
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
            lineage: self.lineage.clone(),
        })
    }

    pub fn lineage(&self) -> &Lineage {
        &self.lineage
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
            reach.lineage.check()?;
            let addr = parse_addr(&address)?;
            if addr.port() == 0 && !reach.ranges.iter().any(|r| r.ports.0 == 0) {
                return Err(Error::Refused(
                    "port 0 lets the system pick a port: name one in the grant".into(),
                ));
            }
            reach.check(&addr)?;
            let listener = reach.pool().bind_tcp_listener(addr).map_err(io)?;
            let std = std::net::TcpListener::from(std::os::fd::OwnedFd::from(listener));
            std.set_nonblocking(true).map_err(io)?;
            let listener = tokio::net::TcpListener::from_std(std).map_err(io)?;
            Ok(TcpListenerHandle {
                listener,
                lineage: reach.lineage.clone(),
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
        match connect(&reach, &address).await {
            Ok(s) => Ok(self.table.push(s)?),
            Err(e) => self.refuse("connect", &address, e),
        }
    }

    fn drop(&mut self, r: Resource<ConnectRight>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

/// Resolves `address` (names through the host's resolver), keeps the
/// addresses `reach` covers, and connects to the first that answers.
async fn connect(reach: &Reach, address: &str) -> Result<TcpStreamHandle, Error> {
    reach.lineage.check()?;
    let candidates: Vec<SocketAddr> = match address.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => {
            let (host, port) = address
                .rsplit_once(':')
                .ok_or_else(|| Error::Invalid(format!("`{address}` is not HOST:PORT")))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(Error::Invalid(format!("`{address}` is not HOST:PORT")));
            }
            tokio::net::lookup_host(address)
                .await
                .map_err(|e| Error::NotFound(format!("{address}: {e}")))?
                .collect()
        }
    };
    let allowed: Vec<SocketAddr> = candidates
        .iter()
        .copied()
        .filter(|a| reach.check(a).is_ok())
        .collect();
    if allowed.is_empty() {
        return Err(match candidates.as_slice() {
            [literal] if literal.to_string() == address => reach.check(literal).unwrap_err(),
            resolved => Error::Refused(format!(
                "{address} resolves to {}, none inside the grant ({})",
                resolved
                    .iter()
                    .map(SocketAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                reach.describe()
            )),
        });
    }
    let pool = reach.pool();
    // cap-std connects with a blocking call; keep it off the async threads.
    let stream = tokio::task::spawn_blocking(move || {
        let mut last = None;
        for addr in allowed {
            match pool.connect_tcp_stream(addr) {
                Ok(s) => return Ok((s, addr)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one address was tried"))
    })
    .await
    .map_err(|e| Error::Io(e.to_string()))?
    .map_err(io)?;
    let (stream, peer) = stream;
    let std = std::net::TcpStream::from(std::os::fd::OwnedFd::from(stream));
    std.set_nonblocking(true).map_err(io)?;
    let stream = tokio::net::TcpStream::from_std(std).map_err(io)?;
    Ok(TcpStreamHandle {
        stream,
        peer,
        lineage: reach.lineage.clone(),
    })
}

impl HostTcpListener for BrokerCtxView<'_> {
    fn local_address(&mut self, l: Resource<TcpListenerHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&l)?.listener.local_addr()?.to_string())
    }

    async fn accept(
        &mut self,
        l: Resource<TcpListenerHandle>,
    ) -> HostResult<Resource<TcpStreamHandle>> {
        let l = self.table.get(&l)?;
        l.lineage.check()?;
        let (stream, peer) = l.listener.accept().await.map_err(io)?;
        let lineage = l.lineage.clone();
        Ok(self.table.push(TcpStreamHandle {
            stream,
            peer,
            lineage,
        })?)
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
        let s = self.table.get_mut(&s)?;
        s.lineage.check()?;
        let mut buf = vec![0; len.min(MAX_READ) as usize];
        let n = s.stream.read(&mut buf).await.map_err(io)?;
        buf.truncate(n);
        Ok(buf)
    }

    async fn write(&mut self, s: Resource<TcpStreamHandle>, data: Vec<u8>) -> HostResult<()> {
        let s = self.table.get_mut(&s)?;
        s.lineage.check()?;
        Ok(s.stream.write_all(&data).await.map_err(io)?)
    }

    async fn shutdown(&mut self, s: Resource<TcpStreamHandle>) -> HostResult<()> {
        let s = self.table.get_mut(&s)?;
        s.lineage.check()?;
        Ok(s.stream.shutdown().await.map_err(io)?)
    }

    fn drop(&mut self, s: Resource<TcpStreamHandle>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}
