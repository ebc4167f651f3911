//! `wasi:sockets/tcp` for plain WASI programs, until they pledge the
//! network away.
//!
//! Which addresses a socket may bind or connect to is wasmtime-wasi's
//! `socket_addr_check`, set from the operator's ranges (see the parent
//! module). This layer adds what that check cannot: after a pledge, every
//! call on a socket opened earlier fails with `access-denied`, and the
//! streams of connections made earlier fail with `EACCES`.

use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::sockets::network::{
    self, ErrorCode, IpAddressFamily, IpSocketAddress, Network,
};
use wasmtime_wasi::p2::bindings::sockets::tcp::{self, HostTcpSocket, ShutdownType};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, DynPollable, SocketError, SocketResult, TcpSocket,
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
pub struct WasiTcp {
    /// Made at the first connection, so that the many instances that never
    /// touch a socket (every child process) do not pay for it.
    gate: Option<Gate>,
}

impl WasiTcp {
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

/// The guarded view the `wasi:sockets/tcp` host functions work through.
pub type TcpView<'a> = WasiFace<'a, WasiTcp>;

type Streams = (Resource<DynInputStream>, Resource<DynOutputStream>);

impl TcpView<'_> {
    /// Puts the streams of a new connection behind the network gate.
    fn guard(&mut self, (input, output): Streams) -> SocketResult<Streams> {
        let gate = self.kind.gate().clone();
        guard(self.wasi.table, &input, &gate, Rights::empty())?;
        guard(self.wasi.table, &output, &gate, Rights::empty())?;
        Ok((input, output))
    }
}

impl tcp::Host for TcpView<'_> {}

// Every `wasi:sockets` face (TCP, name lookup) shares wasmtime-wasi's
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

/// Methods that check the network gate, then do what wasmtime-wasi does.
macro_rules! guarded {
    ($(fn $name:ident(this $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(
            fn $name(&mut self, this: Resource<TcpSocket> $(, $arg: $ty)*) -> $ret {
                self.kind.open()?;
                self.wasi.sockets().$name(this $(, $arg)*)
            }
        )*
    };
}

impl HostTcpSocket for TcpView<'_> {
    async fn start_bind(
        &mut self,
        this: Resource<TcpSocket>,
        network: Resource<Network>,
        local_address: IpSocketAddress,
    ) -> SocketResult<()> {
        self.kind.open()?;
        self.wasi
            .sockets()
            .start_bind(this, network, local_address)
            .await
    }

    async fn start_listen(&mut self, this: Resource<TcpSocket>) -> SocketResult<()> {
        self.kind.open()?;
        self.wasi.sockets().start_listen(this).await
    }

    fn finish_connect(&mut self, this: Resource<TcpSocket>) -> SocketResult<Streams> {
        self.kind.open()?;
        let streams = self.wasi.sockets().finish_connect(this)?;
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
        let (socket, input, output) = self.wasi.sockets().accept(this)?;
        let (input, output) = self.guard((input, output))?;
        Ok((socket, input, output))
    }

    fn is_listening(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<bool> {
        self.wasi.sockets().is_listening(this)
    }

    fn address_family(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<IpAddressFamily> {
        self.wasi.sockets().address_family(this)
    }

    fn subscribe(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<Resource<DynPollable>> {
        self.wasi.sockets().subscribe(this)
    }

    fn drop(&mut self, this: Resource<TcpSocket>) -> wasmtime::Result<()> {
        HostTcpSocket::drop(&mut self.wasi.sockets(), this)
    }

    // Everything else is refused once the network is pledged away.
    guarded! {
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

/// The check wasmtime-wasi asks before every bind, listen, connect and
/// accept of a plain program's socket: within the operator's ranges, and
/// only until the network is pledged away. Every refusal is recorded.
pub fn addr_check(
    listen: Arc<[Reach]>,
    connect: Arc<[Reach]>,
    pledges: Pledges,
    audit: Audit,
) -> impl Fn(SocketAddr, SocketAddrUse) -> Pin<Box<dyn Future<Output = bool> + Send + Sync>>
       + Send
       + Sync
       + 'static {
    move |addr, use_| {
        let pledged = pledges.renounced().contains(Authority::NETWORK);
        let allowed = !pledged && allows(&listen, &connect, &addr, use_);
        if allowed {
            learn(&listen, &connect, &addr, use_);
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

/// Whether the operator's ranges allow one use of an address. A connect
/// first asks to bind the unspecified address to port 0, which the OS then
/// does implicitly; that needs a connect grant, not a listen one. Accepted
/// peers may be anyone: the listener's address was checked.
fn allows(listen: &[Reach], connect: &[Reach], addr: &SocketAddr, use_: SocketAddrUse) -> bool {
    let within = |ranges: &[Reach]| ranges.iter().any(|r| r.admits(addr).is_ok());
    match use_ {
        SocketAddrUse::TcpBind => {
            within(listen)
                || (addr.ip().is_unspecified() && addr.port() == 0 && !connect.is_empty())
        }
        SocketAddrUse::TcpListen => within(listen),
        SocketAddrUse::TcpConnect => within(connect),
        SocketAddrUse::TcpAccept => true,
        _ => false,
    }
}

/// Notes, for learning mode, an allowed use under the grant whose ranges
/// hold it: an address bound or listened on, a peer connected to. The bind
/// a connect makes first (the unspecified address, port 0) and an accepted
/// peer are not uses of a grant of their own.
fn learn(listen: &[Reach], connect: &[Reach], addr: &SocketAddr, use_: SocketAddrUse) {
    let grants = match use_ {
        SocketAddrUse::TcpBind | SocketAddrUse::TcpListen => listen,
        SocketAddrUse::TcpConnect => connect,
        _ => return,
    };
    if let Some(reach) = grants.iter().find(|r| r.admits(addr).is_ok()) {
        // Without an IPv6 scope id, which no grant spells.
        reach.learned(|| SocketAddr::new(addr.ip(), addr.port()).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::learn::Learner;
    use crate::net::NetGrant;

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
        for (addr, use_) in [
            ("127.0.0.1:8080", SocketAddrUse::TcpBind),
            ("127.0.0.1:8080", SocketAddrUse::TcpListen),
            ("0.0.0.0:0", SocketAddrUse::TcpBind),
            ("127.0.0.1:9000", SocketAddrUse::TcpConnect),
            ("127.0.0.1:9001", SocketAddrUse::TcpAccept),
            ("10.0.0.1:9000", SocketAddrUse::TcpConnect),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            if allows(&listen, &connect, &addr, use_) {
                learn(&listen, &connect, &addr, use_);
            }
        }
        let net = learner.seen(|u| u.net.clone());
        let addrs = |grant: &str| net[grant].iter().cloned().collect::<Vec<_>>();
        assert_eq!(net.len(), 2, "{net:?}");
        assert_eq!(addrs("web"), ["127.0.0.1:8080"]);
        assert_eq!(addrs("api"), ["127.0.0.1:9000"]);
    }
}
