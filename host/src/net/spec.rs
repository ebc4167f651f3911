//! What an operator grants of the network: ranges of addresses and ports
//! to listen on or connect to, or host names to look up once at start.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::AddressRange;
use crate::core::{Error, Invalid};

/// Parses an IP network (`10.0.0.0/8`) or a single address (`127.0.0.1`).
pub(crate) fn parse_network(s: &str) -> Option<IpNet> {
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
pub(crate) fn parse_ports(s: &str) -> Option<Result<(u16, u16), Invalid>> {
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
        None => {
            let p = s.parse().ok()?;
            (p, p)
        }
    };
    Some(if first > last {
        Err(Invalid::Nothing("the port range is empty"))
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
    pub fn parse(s: &str) -> Result<Range, Invalid> {
        let bad = || {
            Invalid::form(
                s,
                "ADDRESS[/PREFIX]:PORT[-PORT] (e.g. 127.0.0.1:8080, 10.0.0.0/8:443, \
                 [::1]:8000-8099)",
            )
        };
        let (addr, ports) = s.rsplit_once(':').ok_or_else(bad)?;
        let net = parse_network(&addr.replace(['[', ']'], "")).ok_or_else(bad)?;
        let ports = parse_ports(ports)
            .ok_or_else(bad)?
            .map_err(|e| e.within(s))?;
        Ok(Range {
            net: net.trunc(),
            ports,
        })
    }

    pub(crate) fn from_wit(r: &AddressRange) -> Result<Range, Error> {
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

    pub(crate) fn to_wit(self) -> AddressRange {
        AddressRange {
            network: self.net.to_string(),
            first_port: self.ports.0,
            last_port: self.ports.1,
        }
    }

    pub(crate) fn contains(&self, addr: &SocketAddr) -> bool {
        self.net.contains(&addr.ip()) && (self.ports.0..=self.ports.1).contains(&addr.port())
    }

    pub(crate) fn within(&self, outer: &Range) -> bool {
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
    pub(crate) fn parse(s: &str) -> Option<Result<HostPorts, Invalid>> {
        let (host, ports) = s.rsplit_once(':')?;
        let host = host_name(host)?;
        Some(
            parse_ports(ports)?
                .map(|ports| HostPorts { host, ports })
                .map_err(|e| e.within(s)),
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
    pub fn parse(spec: &str) -> Result<NetGrant, Invalid> {
        let mut grant = NetGrant::default();
        for entry in spec.split(',') {
            match Range::parse(entry) {
                Ok(r) => grant.ranges.push(r),
                Err(e) => match HostPorts::parse(entry) {
                    Some(h) => grant.hosts.push(h?),
                    None if entry.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                        return Err(Invalid::form(
                            entry,
                            "ADDRESS[/PREFIX]:PORT[-PORT] or HOST:PORT[-PORT] \
                             (e.g. 127.0.0.1:8080, example.com:443)",
                        ))
                    }
                    None => return Err(e),
                },
            }
        }
        Ok(grant)
    }

    /// Parses a connect or UDP grant, whose ranges name peers: a range
    /// no peer can ever be in (only the unspecified address, an
    /// IPv4-mapped IPv6 network, only port 0) is refused, rather than
    /// granted and then never matched.
    pub fn parse_peers(spec: &str) -> Result<NetGrant, Invalid> {
        let grant = NetGrant::parse(spec)?;
        let mapped = IpNet::V6(
            "::ffff:0:0/96"
                .parse()
                .expect("the IPv4-mapped network is a network"),
        );
        for r in &grant.ranges {
            let why =
                if r.net.prefix_len() == r.net.max_prefix_len() && r.net.addr().is_unspecified() {
                    "the unspecified address is never a peer"
                } else if mapped.contains(&r.net) {
                    "an IPv4-mapped IPv6 address is never a peer: grant the IPv4 address"
                } else if r.ports == (0, 0) {
                    "port 0 is never a peer's port"
                } else {
                    continue;
                };
            return Err(Invalid::Nothing(why).within(&r.to_string()));
        }
        Ok(grant)
    }

    /// Parses a listen grant: addresses only.
    pub fn parse_listen(spec: &str) -> Result<NetGrant, Invalid> {
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
pub(crate) fn listen_host(h: &HostPorts) -> Invalid {
    Invalid::form(
        &h.to_string(),
        "ADDRESS[/PREFIX]:PORT[-PORT]: a listen grant takes addresses, not host names",
    )
}
