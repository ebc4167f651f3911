//! `wasi:sockets/tcp` and `wasi:sockets/udp` for plain WASI programs, until
//! they pledge the network away.
//!
//! Which addresses a socket may bind, connect to, send to or receive from
//! is wasmtime-wasi's `socket_addr_check`, set from the operator's ranges
//! ([`addr_check`]). wasmtime-wasi asks it for every UDP bind (explicit, or
//! the implicit one before a first send or connect), every datagram sent
//! (connected or not), every UDP connect (as a send and a receive), and
//! every datagram received, which it drops unseen when refused. This layer
//! adds what that check cannot: after a pledge, every call on a socket
//! opened earlier fails with `access-denied`, and the streams of
//! connections made earlier fail with `EACCES`.

use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::sockets::network::{
    self, ErrorCode, IpAddressFamily, IpSocketAddress, Network,
};
use wasmtime_wasi::p2::bindings::sockets::tcp::{self, HostTcpSocket, ShutdownType};
use wasmtime_wasi::p2::bindings::sockets::udp::{
    self, HostIncomingDatagramStream, HostOutgoingDatagramStream, HostUdpSocket, IncomingDatagram,
    IncomingDatagramStream, OutgoingDatagram, OutgoingDatagramStream,
};
use wasmtime_wasi::p2::bindings::sockets::udp_create_socket;
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, DynPollable, SocketError, SocketResult, TcpSocket, UdpSocket,
};
use wasmtime_wasi::sockets::WasiSocketsView;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use wasmtime_wasi::sockets::SocketAddrUse;

use super::Reach;
use crate::core::audit::Audit;
use crate::core::gate::Gate;
use crate::core::pledges::{Authority, Pledges};
use crate::core::streams::guard;
use crate::core::view::WasiFace;
use crate::core::Error;
use crate::core::Rights;

/// The network state of one instance: open until pledged away.
#[derive(Default)]
pub struct WasiSockets {
    /// Made at the first connection, so that the many instances that never
    /// touch a socket (every child process) do not pay for it.
    gate: Option<Gate>,
}

impl WasiSockets {
    fn gate(&mut self) -> &Gate {
        self.gate.get_or_insert_with(|| Gate::new(Rights::all()))
    }

    pub fn renounce(&mut self) {
        self.gate().narrow(Rights::empty());
    }

    fn open(&self) -> SocketResult<()> {
        match &self.gate {
            Some(gate) => gate
                .check(Rights::empty())
                .map_err(|_| ErrorCode::AccessDenied.into()),
            None => Ok(()),
        }
    }
}

/// The guarded view the `wasi:sockets/tcp` and `wasi:sockets/udp` host
/// functions work through.
pub type SocketsView<'a> = WasiFace<'a, WasiSockets>;

type Streams = (Resource<DynInputStream>, Resource<DynOutputStream>);

impl SocketsView<'_> {
    /// Puts the streams of a new connection behind the network gate.
    fn guard(&mut self, (input, output): Streams) -> SocketResult<Streams> {
        let gate = self.kind.gate().clone();
        guard(self.wasi.table, &input, &gate, Rights::empty())?;
        guard(self.wasi.table, &output, &gate, Rights::empty())?;
        Ok((input, output))
    }
}

impl tcp::Host for SocketsView<'_> {}

// Every `wasi:sockets` face (TCP and UDP, name lookup) shares wasmtime-wasi's
// `network` resource and its error conversions.
impl<K: ?Sized + Send> network::HostNetwork for WasiFace<'_, K> {
    fn drop(&mut self, this: Resource<Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.wasi.sockets(), this)
    }
}

impl<K: ?Sized + Send> network::Host for WasiFace<'_, K> {
    fn convert_error_code(&mut self, err: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.wasi.sockets(), err)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.wasi.sockets(), err)
    }
}

/// Socket methods that check the network gate, then do what wasmtime-wasi
/// does (`$host`: its trait for the `$socket` resource).
macro_rules! guarded {
    ($socket:ty, $host:ident; $(fn $name:ident(this $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(
            fn $name(&mut self, this: Resource<$socket> $(, $arg: $ty)*) -> $ret {
                self.kind.open()?;
                $host::$name(&mut self.wasi.sockets(), this $(, $arg)*)
            }
        )*
    };
}

impl HostTcpSocket for SocketsView<'_> {
    async fn start_bind(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        local_address: IpSocketAddress,
    ) -> SocketResult<()> {
        self.kind.open()?;
        HostTcpSocket::start_bind(&mut self.wasi.sockets(), this, network, local_address).await
    }

    async fn start_listen(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        self.kind.open()?;
        HostTcpSocket::start_listen(&mut self.wasi.sockets(), this).await
    }

    fn finish_connect(&mut self, this: Resource<TcpSocket>) -> SocketResult<Streams> {
        self.kind.open()?;
        let streams = HostTcpSocket::finish_connect(&mut self.wasi.sockets(), this)?;
        self.guard(streams)
    }

    fn accept(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> SocketResult<(
        Resource<TcpSocket>,
        Resource<DynInputStream>,
        Resource<DynOutputStream>,
    )> {
        self.kind.open()?;
        let (socket, input, output) = HostTcpSocket::accept(&mut self.wasi.sockets(), this)?;
        let (input, output) = self.guard((input, output))?;
        Ok((socket, input, output))
    }

    fn is_listening(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<bool> {
        HostTcpSocket::is_listening(&mut self.wasi.sockets(), this)
    }

    fn address_family(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<IpAddressFamily> {
        HostTcpSocket::address_family(&mut self.wasi.sockets(), this)
    }

    fn subscribe(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<Resource<DynPollable>> {
        HostTcpSocket::subscribe(&mut self.wasi.sockets(), this)
    }

    fn drop(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<()> {
        HostTcpSocket::drop(&mut self.wasi.sockets(), this)
    }

    // Everything else is refused once the network is pledged away.
    guarded! {
        TcpSocket, HostTcpSocket;
        fn finish_bind(this) -> SocketResult<()>;
        fn start_connect(this, network: Resource<Network>, remote_address: IpSocketAddress) -> SocketResult<()>;
        fn finish_listen(this) -> SocketResult<()>;
        fn local_address(this) -> SocketResult<IpSocketAddress>;
        fn remote_address(this) -> SocketResult<IpSocketAddress>;
        fn set_listen_backlog_size(this, value: u64) -> SocketResult<()>;
        fn keep_alive_enabled(this) -> SocketResult<bool>;
        fn set_keep_alive_enabled(this, value: bool) -> SocketResult<()>;
        fn keep_alive_idle_time(this) -> SocketResult<u64>;
        fn set_keep_alive_idle_time(this, value: u64) -> SocketResult<()>;
        fn keep_alive_interval(this) -> SocketResult<u64>;
        fn set_keep_alive_interval(this, value: u64) -> SocketResult<()>;
        fn keep_alive_count(this) -> SocketResult<u32>;
        fn set_keep_alive_count(this, value: u32) -> SocketResult<()>;
        fn hop_limit(this) -> SocketResult<u8>;
        fn set_hop_limit(this, value: u8) -> SocketResult<()>;
        fn receive_buffer_size(this) -> SocketResult<u64>;
        fn set_receive_buffer_size(this, value: u64) -> SocketResult<()>;
        fn send_buffer_size(this) -> SocketResult<u64>;
        fn set_send_buffer_size(this, value: u64) -> SocketResult<()>;
        fn shutdown(this, shutdown_type: ShutdownType) -> SocketResult<()>;
    }
}

impl udp_create_socket::Host for SocketsView<'_> {
    async fn create_udp_socket(
        &mut self,
        family: IpAddressFamily,
    ) -> SocketResult<Resource<UdpSocket>> {
        self.kind.open()?;
        udp_create_socket::Host::create_udp_socket(&mut self.wasi.sockets(), family).await
    }
}

impl udp::Host for SocketsView<'_> {}

impl HostUdpSocket for SocketsView<'_> {
    async fn start_bind(
        &mut self,
        this: Resource<UdpSocket>,
        network: Resource<Network>,
        local_address: IpSocketAddress,
    ) -> SocketResult<()> {
        self.kind.open()?;
        HostUdpSocket::start_bind(&mut self.wasi.sockets(), this, network, local_address).await
    }

    async fn stream(
        &mut self,
        this: Resource<UdpSocket>,
        remote_address: Option<IpSocketAddress>,
    ) -> SocketResult<(
        Resource<IncomingDatagramStream>,
        Resource<OutgoingDatagramStream>,
    )> {
        self.kind.open()?;
        HostUdpSocket::stream(&mut self.wasi.sockets(), this, remote_address).await
    }

    fn address_family(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<IpAddressFamily> {
        HostUdpSocket::address_family(&mut self.wasi.sockets(), this)
    }

    fn subscribe(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<Resource<DynPollable>> {
        HostUdpSocket::subscribe(&mut self.wasi.sockets(), this)
    }

    fn drop(&mut self, this: Resource<UdpSocket>) -> wasmtime::Result<()> {
        HostUdpSocket::drop(&mut self.wasi.sockets(), this)
    }

    // Everything else is refused once the network is pledged away.
    guarded! {
        UdpSocket, HostUdpSocket;
        fn finish_bind(this) -> SocketResult<()>;
        fn local_address(this) -> SocketResult<IpSocketAddress>;
        fn remote_address(this) -> SocketResult<IpSocketAddress>;
        fn unicast_hop_limit(this) -> SocketResult<u8>;
        fn set_unicast_hop_limit(this, value: u8) -> SocketResult<()>;
        fn receive_buffer_size(this) -> SocketResult<u64>;
        fn set_receive_buffer_size(this, value: u64) -> SocketResult<()>;
        fn send_buffer_size(this) -> SocketResult<u64>;
        fn set_send_buffer_size(this, value: u64) -> SocketResult<()>;
    }
}

impl HostIncomingDatagramStream for SocketsView<'_> {
    fn receive(
        &mut self,
        this: Resource<IncomingDatagramStream>,
        max_results: u64,
    ) -> SocketResult<Vec<IncomingDatagram>> {
        self.kind.open()?;
        HostIncomingDatagramStream::receive(&mut self.wasi.sockets(), this, max_results)
    }

    fn subscribe(
        &mut self,
        this: Resource<IncomingDatagramStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        HostIncomingDatagramStream::subscribe(&mut self.wasi.sockets(), this)
    }

    fn drop(&mut self, this: Resource<IncomingDatagramStream>) -> wasmtime::Result<()> {
        HostIncomingDatagramStream::drop(&mut self.wasi.sockets(), this)
    }
}

impl HostOutgoingDatagramStream for SocketsView<'_> {
    fn check_send(&mut self, this: Resource<OutgoingDatagramStream>) -> SocketResult<u64> {
        self.kind.open()?;
        HostOutgoingDatagramStream::check_send(&mut self.wasi.sockets(), this)
    }

    fn send(
        &mut self,
        this: Resource<OutgoingDatagramStream>,
        datagrams: Vec<OutgoingDatagram>,
    ) -> SocketResult<u64> {
        self.kind.open()?;
        HostOutgoingDatagramStream::send(&mut self.wasi.sockets(), this, datagrams)
    }

    fn subscribe(
        &mut self,
        this: Resource<OutgoingDatagramStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        HostOutgoingDatagramStream::subscribe(&mut self.wasi.sockets(), this)
    }

    async fn drop(&mut self, this: Resource<OutgoingDatagramStream>) -> wasmtime::Result<()> {
        HostOutgoingDatagramStream::drop(&mut self.wasi.sockets(), this).await
    }
}

/// The check wasmtime-wasi asks before every bind, listen, connect and
/// accept of a plain program's TCP socket, and every bind, send and receive
/// of its UDP sockets: within the operator's ranges, and only until the
/// network is pledged away. Every refusal is recorded (a dropped incoming
/// datagram too, under the audit trail's rate limit); every use allowed is
/// noted for learning by the grant that allowed it ([`Reach::check`]).
pub fn addr_check(
    grants: NetGrants,
    pledges: Pledges,
    audit: Audit,
) -> impl Fn(SocketAddr, SocketAddrUse) -> Pin<Box<dyn Future<Output = bool> + Send + Sync>>
       + Send
       + Sync
       + 'static {
    move |addr, use_| {
        let pledged = pledges.renounced().contains(Authority::NETWORK);
        let allowed = !pledged && grants.allows(&addr, use_);
        if allowed {
            grants.learn(&addr, use_);
        } else {
            let err = Error::Refused(if pledged {
                "the network was pledged away".into()
            } else {
                format!("{addr} is not within the network grants")
            });
            let op = format!("{use_:?}").to_lowercase();
            audit.refused(&op, "wasi socket", &addr.to_string(), Rights::empty(), &err);
        }
        Box::pin(async move { allowed })
    }
}

/// A plain program's network grants: the ranges it may listen on (and so
/// bind), connect to over TCP, and exchange UDP datagrams with.
#[derive(Clone, Default)]
pub struct NetGrants {
    pub listen: Arc<[Reach]>,
    pub connect: Arc<[Reach]>,
    pub udp: Arc<[Reach]>,
}

impl NetGrants {
    /// Whether the operator's ranges allow one use of an address. A TCP
    /// connect first asks to bind the unspecified address to port 0, which
    /// the OS then does implicitly; that needs a connect grant, not a
    /// listen one, and a UDP socket's implicit or explicit bind to it needs
    /// a UDP grant. Any other bind needs a listen grant: it is what names
    /// the addresses a program may bind. Accepted TCP peers may be anyone:
    /// the listener's address was checked. UDP peers, sent to or received
    /// from, must be within a UDP grant, and never the unspecified address.
    pub fn allows(&self, addr: &SocketAddr, use_: SocketAddrUse) -> bool {
        let within = |ranges: &[Reach]| ranges.iter().any(|r| r.admits(addr).is_ok());
        let ephemeral = addr.ip().is_unspecified() && addr.port() == 0;
        match use_ {
            SocketAddrUse::TcpBind => {
                within(&self.listen) || (ephemeral && !self.connect.is_empty())
            }
            SocketAddrUse::TcpListen => within(&self.listen),
            SocketAddrUse::TcpConnect => within(&self.connect),
            SocketAddrUse::TcpAccept => true,
            SocketAddrUse::UdpBind => (ephemeral && !self.udp.is_empty()) || within(&self.listen),
            SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => {
                !addr.ip().is_unspecified() && within(&self.udp)
            }
        }
    }

    /// Whether any socket at all may be made.
    pub fn any(&self) -> bool {
        !self.listen.is_empty() || !self.connect.is_empty() || !self.udp.is_empty()
    }

    /// Notes, for learning mode, an allowed use under the grant whose
    /// ranges hold it: an address bound or listened on, a TCP peer
    /// connected to, a UDP peer sent to or heard from. The ephemeral bind a
    /// connect or a first send makes and an accepted TCP peer are not uses
    /// of a grant of their own.
    pub fn learn(&self, addr: &SocketAddr, use_: SocketAddrUse) {
        let grants = match use_ {
            SocketAddrUse::TcpBind | SocketAddrUse::TcpListen | SocketAddrUse::UdpBind => {
                &self.listen
            }
            SocketAddrUse::TcpConnect => &self.connect,
            SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => &self.udp,
            SocketAddrUse::TcpAccept => return,
        };
        if let Some(reach) = grants.iter().find(|r| r.admits(addr).is_ok()) {
            // Without an IPv6 scope id, which no grant spells.
            reach.learned(|| SocketAddr::new(addr.ip(), addr.port()).to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::learn::Learner;
    use crate::net::NetGrant;

    fn reaches(specs: &[&str]) -> Arc<[Reach]> {
        specs
            .iter()
            .map(|s| Reach::connect(&NetGrant::parse(s).unwrap()).unwrap())
            .collect()
    }

    fn allowed(g: &NetGrants, addr: &str, use_: SocketAddrUse) -> bool {
        g.allows(&addr.parse().unwrap(), use_)
    }

    #[test]
    fn udp_peers_and_binds_follow_the_grants() {
        use SocketAddrUse::{UdpBind, UdpReceive, UdpSend};
        let udp = NetGrants {
            udp: reaches(&["127.0.0.1:53", "[::1]:53"]),
            ..NetGrants::default()
        };
        for use_ in [UdpSend, UdpReceive] {
            assert!(allowed(&udp, "127.0.0.1:53", use_));
            assert!(allowed(&udp, "[::1]:53", use_));
            for outside in ["127.0.0.1:54", "127.0.0.2:53", "[::ffff:127.0.0.1]:53"] {
                assert!(!allowed(&udp, outside, use_), "{outside} {use_:?}");
            }
        }
        // A bind: the ephemeral port of the unspecified address only.
        assert!(allowed(&udp, "0.0.0.0:0", UdpBind));
        assert!(allowed(&udp, "[::]:0", UdpBind));
        assert!(!allowed(&udp, "0.0.0.0:53", UdpBind));
        assert!(!allowed(&udp, "127.0.0.1:0", UdpBind));
        // A grant of everything still never names the unspecified peer.
        let wide = NetGrants {
            udp: reaches(&["0.0.0.0/0:0-65535"]),
            ..NetGrants::default()
        };
        assert!(!allowed(&wide, "0.0.0.0:53", UdpSend));
        assert!(allowed(&wide, "10.1.2.3:53", UdpSend));
        // A listen grant names the addresses a UDP socket may bind; TCP
        // grants alone allow no UDP at all.
        let listen = NetGrants {
            listen: reaches(&["127.0.0.1:5353"]),
            connect: reaches(&["127.0.0.1:53"]),
            ..NetGrants::default()
        };
        assert!(allowed(&listen, "127.0.0.1:5353", UdpBind));
        assert!(!allowed(&listen, "0.0.0.0:0", UdpBind));
        assert!(!allowed(&listen, "127.0.0.1:53", UdpSend));
    }

    /// What `addr_check` does with an allowed use, for each TCP use: noted
    /// under the grant that allowed it, and only the uses a grant stands for.
    #[test]
    fn each_allowed_use_is_learned_under_its_grant() {
        let learner = Learner::new();
        let listen = [
            Reach::listen(&NetGrant::parse_listen("127.0.0.1:8080").unwrap())
                .unwrap()
                .learned_by(Some(learner.clone()), "web"),
        ];
        let connect = [
            Reach::connect(&NetGrant::parse("127.0.0.0/8:1-65535").unwrap())
                .unwrap()
                .learned_by(Some(learner.clone()), "api"),
        ];
        let udp = [Reach::connect(&NetGrant::parse("127.0.0.1:53-54").unwrap())
            .unwrap()
            .learned_by(Some(learner.clone()), "dns")];
        let grants = NetGrants {
            listen: listen.into(),
            connect: connect.into(),
            udp: udp.into(),
        };
        for (addr, use_) in [
            ("127.0.0.1:8080", SocketAddrUse::TcpBind),
            ("127.0.0.1:8080", SocketAddrUse::TcpListen),
            ("0.0.0.0:0", SocketAddrUse::TcpBind),
            ("127.0.0.1:9000", SocketAddrUse::TcpConnect),
            ("127.0.0.1:9001", SocketAddrUse::TcpAccept),
            ("10.0.0.1:9000", SocketAddrUse::TcpConnect),
            ("0.0.0.0:0", SocketAddrUse::UdpBind),
            ("127.0.0.1:53", SocketAddrUse::UdpSend),
            ("127.0.0.1:54", SocketAddrUse::UdpReceive),
            ("127.0.0.1:55", SocketAddrUse::UdpSend),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            if grants.allows(&addr, use_) {
                grants.learn(&addr, use_);
            }
        }
        let net = learner.seen(|u| u.net.clone());
        let addrs = |grant: &str| net[grant].iter().cloned().collect::<Vec<_>>();
        assert_eq!(net.len(), 3, "{net:?}");
        assert_eq!(addrs("web"), ["127.0.0.1:8080"]);
        assert_eq!(addrs("api"), ["127.0.0.1:9000"]);
        assert_eq!(addrs("dns"), ["127.0.0.1:53", "127.0.0.1:54"]);
    }
}
