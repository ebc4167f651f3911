//! `wasi:sockets/ip-name-lookup` for plain WASI programs, answered from the
//! grants alone.
//!
//! A lookup never reaches a resolver: the guest's text sent to DNS is an
//! exfiltration channel, and the answer would tell the guest what names
//! resolve to. The answers are fixed when the instance starts, from the host
//! names the operator put in the grants and the addresses their one lookup
//! returned then ([`Reach::connect`]), so a name that resolves differently
//! later widens nothing. What a name is answered with:
//!
//! - a host name a grant names, compared as [`host_name`] spells it
//!   (case-insensitive, without a trailing dot): the addresses it resolved
//!   to at start that its grant covers;
//! - an IP address written in full (`127.0.0.1`, `::1`, `[::1]`): itself, if
//!   a granted range (connect or listen) holds it. wasi-libc's
//!   `getaddrinfo` passes such text on unchanged and `wasmtime run` answers
//!   it without a lookup, so a program that names its peer by address
//!   still works;
//! - anything else, including the short numeric forms a system resolver
//!   reads as addresses (`127.1`, `0x7f.1`, `2130706433`), and every lookup
//!   once the network is pledged away, even on a stream taken before:
//!   `access-denied`, recorded as refused.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, Network};
use wasmtime_wasi::p2::{DynPollable, Pollable, SocketError, SocketResult};

use super::spec::{host_name, Range};
use super::wit::wasi_lookup::ip_name_lookup::{Host, HostResolveAddressStream};
use super::Reach;
use crate::core::pledges::Authority;
use crate::core::view::WasiFace;
use crate::core::{Error, HostError, Rights};

/// What one instance's lookups may be answered with, fixed at start.
#[derive(Clone, Default)]
pub struct Lookup {
    /// Each granted host name, with the addresses its grants reach.
    names: Arc<BTreeMap<String, Answer>>,
    /// Every granted range: an address written in full is answered if one
    /// of them holds it.
    ranges: Arc<[Range]>,
}

impl Lookup {
    /// The answers `reaches` give: the host names they were granted, each
    /// with the addresses its start-up lookup returned that the reach
    /// covers, and their ranges for addresses. A plain program's are its
    /// connect and listen grants.
    pub fn new<'a>(reaches: impl IntoIterator<Item = &'a Reach>) -> Lookup {
        let mut names: BTreeMap<String, Answer> = BTreeMap::new();
        let mut ranges: Vec<Range> = Vec::new();
        for reach in reaches {
            ranges.extend(reach.ranges.iter().copied());
            for named in reach.names.iter() {
                let covered: Vec<IpAddr> = named
                    .addrs
                    .iter()
                    .copied()
                    .filter(|ip| reach.ranges.iter().any(|r| r.net.contains(ip)))
                    .collect();
                if covered.is_empty() {
                    continue;
                }
                let answer = names.entry(named.host.host.clone()).or_default();
                for ip in covered {
                    if !answer.addrs.contains(&ip) {
                        answer.addrs.push(ip);
                    }
                }
                answer.grants.push((reach.clone(), named.host.to_string()));
            }
        }
        Lookup {
            names: Arc::new(names),
            ranges: ranges.into(),
        }
    }

    /// The addresses `name` is answered with, or why it is refused.
    pub fn resolve(&self, name: &str) -> Result<Arc<[IpAddr]>, Error> {
        if let Some(ip) = address(name) {
            return self.holds(ip).map(|()| Arc::from([ip]));
        }
        let Some(host) = host_name(name) else {
            return Err(Error::Refused(format!(
                "`{}` is neither a host name nor an IP address written in full \
                 (short numeric forms such as 127.1 are not read as addresses)",
                shown(name)
            )));
        };
        let Some(answer) = self.names.get(&host) else {
            let granted: Vec<&str> = self.names.keys().map(String::as_str).collect();
            return Err(Error::Refused(format!(
                "`{host}` is not a host name the grants name ({}); \
                 the broker looks up only the names the operator grants",
                if granted.is_empty() {
                    "they name none".to_string()
                } else {
                    format!("they name {}", granted.join(", "))
                }
            )));
        };
        // A learning run keeps the name (`localhost:8080`), not only the
        // address the program then connects to, so that the learned grant
        // answers the same lookup.
        for (reach, host_ports) in &answer.grants {
            reach.learned(|| host_ports.clone());
        }
        Ok(answer.addrs.clone().into())
    }

    /// Whether a granted range holds `ip`; an IPv4-mapped IPv6 address is
    /// refused, as at connect.
    fn holds(&self, ip: IpAddr) -> Result<(), Error> {
        if let IpAddr::V6(v6) = ip {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Err(Error::Refused(format!(
                    "{ip} is an IPv4-mapped IPv6 address: use {v4} if it is granted"
                )));
            }
        }
        if self.ranges.iter().any(|r| r.net.contains(&ip)) {
            Ok(())
        } else {
            Err(Error::Refused(format!(
                "{ip} is outside the network grants"
            )))
        }
    }
}

/// What a granted host name is answered with.
#[derive(Default)]
struct Answer {
    addrs: Vec<IpAddr>,
    /// The grants that name it, and how (`localhost:8080`).
    grants: Vec<(Reach, String)>,
}

/// `name` as an IP address written in full, IPv6 with or without brackets;
/// Rust's parser takes no short or octal forms.
fn address(name: &str) -> Option<IpAddr> {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => name.parse().ok(),
    }
}

/// The most of a refused name an error repeats: a host name is at most
/// 253 bytes.
const SHOWN: usize = 256;

/// `name`, cut to [`SHOWN`] characters.
fn shown(name: &str) -> String {
    match name.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &name[..end]),
        None => name.to_string(),
    }
}

/// The answers to one lookup, handed out one at a time.
pub struct ResolveAddressStream {
    name: Box<str>,
    addrs: Arc<[IpAddr]>,
    next: usize,
}

// The answers are known when the stream is made: it is always ready.
#[async_trait::async_trait]
impl Pollable for ResolveAddressStream {
    async fn ready(&mut self) {}
}

/// The guarded view the `wasi:sockets/ip-name-lookup` host functions work
/// through.
pub type LookupView<'a> = WasiFace<'a, Lookup>;

impl LookupView<'_> {
    /// Refused once the network is pledged away.
    fn open(&self) -> Result<(), Error> {
        self.core.pledges.check(Authority::NETWORK, "the network")
    }

    /// Records a refused lookup of `name` and makes it the guest's error.
    fn refused(&self, name: &str, err: &Error) -> SocketError {
        let what = shown(name);
        self.core
            .audit
            .refused("lookup", "wasi ip-name-lookup", &what, Rights::empty(), err);
        match err {
            Error::LimitExceeded(_) => ErrorCode::OutOfMemory.into(),
            _ => ErrorCode::AccessDenied.into(),
        }
    }
}

impl Host for LookupView<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> SocketResult<Resource<ResolveAddressStream>> {
        // The network handle stands for the right to ask at all; what is
        // answered is the grants' to say.
        self.wasi.table.get(&network)?;
        let addrs = self
            .open()
            .and_then(|()| self.kind.resolve(&name))
            .map_err(|e| self.refused(&name, &e))?;
        let stream = ResolveAddressStream {
            name: name.as_str().into(),
            addrs,
            next: 0,
        };
        // Streams are held in the table, so the handle limit bounds them;
        // a full table is the guest's limit, an error value.
        self.wasi
            .table
            .push(stream)
            .map_err(|e| match HostError::from(e) {
                HostError::Guest(err) => self.refused(&name, &err),
                HostError::Trap(trap) => SocketError::trap(trap),
            })
    }
}

impl HostResolveAddressStream for LookupView<'_> {
    fn resolve_next_address(
        &mut self,
        this: Resource<ResolveAddressStream>,
    ) -> SocketResult<Option<IpAddress>> {
        if let Err(e) = self.open() {
            let name = self.wasi.table.get(&this)?.name.clone();
            return Err(self.refused(&name, &e));
        }
        let stream = self.wasi.table.get_mut(&this)?;
        let next = stream.addrs.get(stream.next).copied();
        stream.next += usize::from(next.is_some());
        Ok(next.map(IpAddress::from))
    }

    fn subscribe(
        &mut self,
        this: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(self.wasi.table, this)
    }

    fn drop(&mut self, this: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        self.wasi.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{NetGrant, Resolve};

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver whose answer can change, counting its lookups.
    #[derive(Default)]
    struct Moving {
        answer: std::sync::Mutex<Vec<IpAddr>>,
        lookups: AtomicUsize,
    }

    impl Resolve for Moving {
        fn lookup(&self, _host: &str) -> std::io::Result<Vec<IpAddr>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok(self.answer.lock().unwrap().clone())
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn connect(spec: &str, resolver: &Moving) -> Reach {
        Reach::connect_with(&NetGrant::parse(spec).unwrap(), resolver).unwrap()
    }

    fn refused(lookup: &Lookup, name: &str) -> String {
        match lookup.resolve(name) {
            Err(Error::Refused(why)) => why,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn a_granted_name_is_answered_with_what_it_resolved_to_at_start() {
        let resolver = Moving::default();
        *resolver.answer.lock().unwrap() = ips(&["10.0.0.1", "::ffff:10.0.0.2", "10.0.0.1"]);
        let api = connect("api.test:443", &resolver);
        let lookup = Lookup::new([&api]);
        // The resolver's answer changes later: the lookup does not move.
        *resolver.answer.lock().unwrap() = ips(&["192.0.2.66"]);
        for name in ["api.test", "API.Test.", "api.test."] {
            assert_eq!(
                &*lookup.resolve(name).unwrap(),
                ips(&["10.0.0.1", "10.0.0.2"]),
                "{name}"
            );
        }
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);
        for other in ["x.api.test", "api.test.evil", "localhost", "api"] {
            let why = refused(&lookup, other);
            assert!(
                why.contains("not a host name the grants name"),
                "{other}: {why}"
            );
        }
        assert!(refused(&lookup, "").contains("neither a host name"));
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_name_is_answered_only_with_addresses_its_grant_still_covers() {
        let resolver = Moving::default();
        *resolver.answer.lock().unwrap() = ips(&["10.0.0.1", "10.0.0.2"]);
        let api = connect("api.test:443,10.0.0.9:443", &resolver);
        let narrowed = api
            .attenuate(&[Range::parse("10.0.0.2:443").unwrap().to_wit()])
            .unwrap();
        let lookup = Lookup::new([&narrowed]);
        assert_eq!(&*lookup.resolve("api.test").unwrap(), ips(&["10.0.0.2"]));
        let gone = api
            .attenuate(&[Range::parse("10.0.0.9:443").unwrap().to_wit()])
            .unwrap();
        let why = refused(&Lookup::new([&gone]), "api.test");
        assert!(why.contains("they name none"), "{why}");
    }

    #[test]
    fn an_address_is_answered_as_itself_only_inside_a_granted_range() {
        let resolver = Moving::default();
        let connect = connect("10.1.0.0/16:80", &resolver);
        let listen = Reach::listen(&NetGrant::parse("[::1]:8000").unwrap()).unwrap();
        let lookup = Lookup::new([&connect, &listen]);
        assert_eq!(&*lookup.resolve("10.1.2.3").unwrap(), ips(&["10.1.2.3"]));
        assert_eq!(&*lookup.resolve("::1").unwrap(), ips(&["::1"]));
        assert_eq!(&*lookup.resolve("[::1]").unwrap(), ips(&["::1"]));
        for outside in ["10.2.0.1", "::2", "[::2]", "127.0.0.1"] {
            let why = refused(&lookup, outside);
            assert!(
                why.contains("outside the network grants"),
                "{outside}: {why}"
            );
        }
        let why = refused(&lookup, "::ffff:10.1.2.3");
        assert!(why.contains("IPv4-mapped"), "{why}");
        // What a system resolver reads as 10.1.2.3, or as an octal address:
        // never read, never looked up.
        for numeric in [
            "10.1.515",
            "0xa.1.2.3",
            "167838211",
            "012.1.2.3",
            "[10.1.2.3]",
        ] {
            let why = refused(&lookup, numeric);
            assert!(why.contains("written in full"), "{numeric}: {why}");
        }
        assert_eq!(resolver.lookups.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_learning_run_keeps_the_name_looked_up() {
        let resolver = Moving::default();
        *resolver.answer.lock().unwrap() = ips(&["10.0.0.1"]);
        let learner = crate::core::learn::Learner::new();
        let api = connect("api.test:443-444", &resolver).learned_by(Some(learner.clone()), "api");
        let lookup = Lookup::new([&api]);
        lookup.resolve("10.0.0.1").unwrap();
        assert!(learner.seen(|u| u.net.is_empty()));
        lookup.resolve("API.test").unwrap();
        let used = learner.seen(|u| u.net.get("api").cloned());
        assert_eq!(
            used.unwrap().into_iter().collect::<Vec<_>>(),
            ["api.test:443-444"]
        );
    }

    #[test]
    fn a_long_refused_name_is_cut_in_the_error() {
        let long = "a".repeat(100_000);
        let why = refused(&Lookup::default(), &long);
        assert!(why.len() < 1_000, "{}", why.len());
    }
}
