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

use super::spec::*;
use crate::core::learn::Learner;
use crate::core::lineage::{Lineage, RevokerHandle};
use crate::core::pledges::{Authority, Pledges};
use crate::core::{Error, Invalid};
pub use crate::net::wit::net::AddressRange;

/// A `connect` gives up after this long, over all the addresses it tries:
/// an address that drops SYNs would otherwise hold the guest for the
/// system's own timeout (minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Looks up host names for connect grants: the system's resolver, or one a
/// test or an embedder supplies.
pub trait Resolve {
    fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The host's resolver (`getaddrinfo`).
pub struct SystemResolver;

/// A host name of a connect grant that gives no address to reach.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The resolver failed. (Its error is in the message, not the
    /// `source`: see [`crate::core::error`].)
    #[error("cannot look up `{host}`: {error}")]
    Failed { host: String, error: std::io::Error },
    #[error("`{host}` resolves to no address")]
    NoAddress { host: String },
}

impl Resolve for SystemResolver {
    fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        use std::net::ToSocketAddrs;
        Ok((host, 0).to_socket_addrs()?.map(|a| a.ip()).collect())
    }
}

/// A granted host name and the addresses its one lookup returned.
#[derive(Debug)]
pub(crate) struct Named {
    pub(crate) host: HostPorts,
    pub(crate) addrs: Box<[IpAddr]>,
}

/// What ends a network handle: the revocation of a revocable ancestor, or a
/// pledge of the network by any instance that has held it or a handle it
/// came from. The second reaches copies given to children too, so a
/// process that pledged cannot have a child use the network for it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Life {
    pub(crate) lineage: Lineage,
    pub(crate) holders: Arc<[Pledges]>,
}

impl Life {
    /// Revoked first, then pledged, as everywhere else.
    pub(crate) fn check(&self) -> Result<(), Error> {
        self.lineage.check()?;
        self.holders
            .iter()
            .try_for_each(|p| p.check(Authority::NETWORK, "the network"))
    }

    pub(crate) fn held_by(&self, pledges: &Pledges) -> Life {
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
    pub(crate) ranges: Arc<[Range]>,
    /// The host names a connect right was granted, each with what its
    /// lookup returned. Attenuation keeps them; `ranges` decides which of
    /// their addresses are still reached.
    pub(crate) names: Arc<[Named]>,
    pub(crate) life: Life,
    /// `capbroker learn`'s recorder and the grant's name.
    pub(crate) learn: Option<(Arc<Learner>, Arc<str>)>,
}

impl Reach {
    /// A listen right's reach: addresses only (see [`listen_host`]).
    pub fn listen(grant: &NetGrant) -> Result<Reach, Invalid> {
        if let Some(h) = grant.hosts.first() {
            return Err(listen_host(h));
        }
        Ok(Reach::of(grant.ranges.clone(), Vec::new()))
    }

    /// A connect right's reach, its host names looked up now by the
    /// system's resolver.
    pub fn connect(grant: &NetGrant) -> Result<Reach, LookupError> {
        Reach::connect_with(grant, &SystemResolver)
    }

    /// A connect right's reach, its host names looked up now by `resolver`,
    /// once each. The right reaches exactly the addresses returned, for
    /// good: a later change in DNS does not move it, and nothing the guest
    /// does causes another lookup.
    pub fn connect_with(grant: &NetGrant, resolver: &dyn Resolve) -> Result<Reach, LookupError> {
        let mut ranges = grant.ranges.clone();
        let mut names = Vec::with_capacity(grant.hosts.len());
        for h in &grant.hosts {
            let mut addrs: Vec<IpAddr> = Vec::new();
            let found = resolver
                .lookup(&h.host)
                .map_err(|error| LookupError::Failed {
                    host: h.host.clone(),
                    error,
                })?;
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
                return Err(LookupError::NoAddress {
                    host: h.host.clone(),
                });
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

    pub(crate) fn of(ranges: Vec<Range>, names: Vec<Named>) -> Reach {
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

    pub(crate) fn describe(&self) -> String {
        self.ranges
            .iter()
            .map(Range::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether one address is reached: no IPv4-mapped IPv6 forms, and
    /// inside a range.
    pub(crate) fn admits(&self, addr: &SocketAddr) -> Result<(), Error> {
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
        // Without an IPv6 scope id, which no grant spells: the address and
        // port are what a grant names.
        self.learned(|| SocketAddr::new(addr.ip(), addr.port()).to_string());
        Ok(())
    }

    pub(crate) fn learned(&self, what: impl FnOnce() -> String) {
        if let Some((learner, grant)) = &self.learn {
            learner.net(grant, what());
        }
    }

    /// The addresses `connect(address)` may try, in order, and what
    /// `capbroker learn` should note for it. An `ip:port` is judged as it
    /// is; a `host:port` is matched as text against the granted names and
    /// is never looked up.
    pub(crate) fn targets(&self, address: &str) -> Result<(Vec<SocketAddr>, String), Error> {
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

    pub(crate) fn attenuate(&self, asked: &[AddressRange]) -> Result<Reach, Error> {
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
    pub(crate) fn pool(&self) -> cap_std::net::Pool {
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

    pub(crate) fn revocable(&self) -> Result<(Reach, RevokerHandle), Error> {
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
    pub(crate) fn held_by(&self, pledges: &Pledges) -> Reach {
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

/// The right to exchange UDP datagrams with the peers of its [`Reach`].
pub struct UdpRight(pub Reach);

/// What listen, connect and UDP rights share: a reach, and how to wrap one.
pub(crate) trait Right: Send + Sized + 'static {
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

impl Right for UdpRight {
    const KIND: &'static str = "udp-right";
    fn reach(&self) -> &Reach {
        &self.0
    }
    fn wrap(reach: Reach) -> Self {
        UdpRight(reach)
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
    /// whose pledges these are; see `grants.granted`.
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

/// A UDP socket made by a [`UdpRight`]: it sends to, and hands over
/// datagrams from, only the peers of that right's reach, and ends with it.
pub struct UdpSocketHandle {
    pub(crate) socket: tokio::net::UdpSocket,
    pub(crate) reach: Reach,
}

/// A listening socket.
pub struct TcpListenerHandle {
    pub(crate) listener: tokio::net::TcpListener,
    pub(crate) life: Life,
}

/// A connected socket.
pub struct TcpStreamHandle {
    pub(crate) stream: tokio::net::TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) life: Life,
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

pub(crate) fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

/// Parses an `ip:port` strictly: no short forms such as `127.1`.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, Error> {
    s.parse().map_err(|_| {
        Error::Invalid(format!(
            "`{s}` is not an IP address and port (e.g. 127.0.0.1:8080, [::1]:8080)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::host::connect;

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
            .to_string()
            .contains("empty"));
        assert!(NetGrant::parse("example.com").is_err());
        assert!(NetGrant::parse("127.1:80").is_err());
        let listen = Reach::listen(&NetGrant::parse("localhost:80").unwrap());
        assert!(listen.unwrap_err().to_string().contains("not host names"));
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
        assert!(e.to_string().contains("no address"), "{e}");
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
