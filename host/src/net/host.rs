//! The `net` interface's host functions, over the rights and sockets in
//! the store's table.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wasmtime::component::Resource;

use super::handle::*;
use super::NetCtx;
use crate::core::lineage::RevokerHandle;
use crate::core::View;
use crate::core::{Error, HostError, HostResult, Rights};
pub use crate::net::wit::net::AddressRange;
use crate::net::wit::net::{
    Host, HostConnectRight, HostListenRight, HostTcpListener, HostTcpStream, HostUdpRight,
    HostUdpSocket,
};

/// `tcp-stream.read` returns at most this many bytes per call.
const MAX_READ: u32 = 1 << 20;

/// A `connect` gives up after this long, over all the addresses it tries:
/// an address that drops SYNs would otherwise hold the guest for the
/// system's own timeout (minutes).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
impl View<'_, NetCtx> {
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
            Ok(narrow) => {
                let detail = narrow.detail();
                let pushed = self.table.push(R::wrap(narrow))?;
                let op = format!("{}.attenuate", R::KIND);
                self.core
                    .audit
                    .derived(&op, R::KIND, &detail, Rights::empty());
                Ok(pushed)
            }
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
        let revoker = self.table.push(revoker)?;
        let op = format!("{}.revocable", R::KIND);
        self.core
            .audit
            .derived(&op, R::KIND, "revocable copy", Rights::empty());
        Ok((copy, revoker))
    }
}

impl View<'_, NetCtx> {
    fn refuse<T>(&self, op: &str, what: &str, e: Error) -> HostResult<T> {
        self.core
            .audit
            .refused(op, "net", what, Rights::empty(), &e);
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

impl Host for View<'_, NetCtx> {}

impl HostListenRight for View<'_, NetCtx> {
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
        self.core.audit.dropped("listen-right");
        Ok(())
    }
}

impl HostConnectRight for View<'_, NetCtx> {
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
        self.core.audit.dropped("connect-right");
        Ok(())
    }
}

/// Connects to the first of `address`'s targets (see [`Reach::targets`])
/// that answers within `timeout`, all tries together. cap-std's pool checks
/// each address; tokio connects, so that giving up cancels the attempt and
/// no thread waits on it.
pub(crate) async fn connect(
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

impl HostTcpListener for View<'_, NetCtx> {
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
        self.core.audit.dropped("tcp-listener");
        Ok(())
    }
}

/// How much of a `tcp-stream.write` goes out before the stream's right is
/// checked again.
const WRITE_PIECE: usize = 64 << 10;

impl HostTcpStream for View<'_, NetCtx> {
    fn peer_address(&mut self, s: Resource<TcpStreamHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&s)?.peer.to_string())
    }

    async fn read(&mut self, s: Resource<TcpStreamHandle>, len: u32) -> HostResult<Vec<u8>> {
        let life = self.table.get(&s)?.life.clone();
        self.alive("read", &life)?;
        // The buffer is the host's while the read waits: no larger than
        // what the guest's memory has room for.
        let room = self.core.memory.room().max(1);
        let mut buf = vec![0; (len.min(MAX_READ) as usize).min(room)];
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
        // In pieces, each only while the stream's right lasts: a revoke or
        // a pledge stops a long write within a piece, not at its end.
        for piece in data.chunks(WRITE_PIECE) {
            self.alive("write", &life)?;
            let s = self.table.get_mut(&s)?;
            s.stream.write_all(piece).await.map_err(io)?;
        }
        Ok(())
    }

    async fn shutdown(&mut self, s: Resource<TcpStreamHandle>) -> HostResult<()> {
        let life = self.table.get(&s)?.life.clone();
        self.alive("shutdown", &life)?;
        let s = self.table.get_mut(&s)?;
        Ok(s.stream.shutdown().await.map_err(io)?)
    }

    fn drop(&mut self, s: Resource<TcpStreamHandle>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        self.core.audit.dropped("tcp-stream");
        Ok(())
    }
}

/// The largest UDP payload over IPv4, the most `udp-socket.send` takes and
/// `udp-socket.receive` returns.
pub const MAX_DATAGRAM: usize = 65507;

impl HostUdpRight for View<'_, NetCtx> {
    fn ranges(&mut self, r: Resource<UdpRight>) -> wasmtime::Result<Vec<AddressRange>> {
        self.ranges_of(r)
    }

    fn attenuate(
        &mut self,
        r: Resource<UdpRight>,
        ranges: Vec<AddressRange>,
    ) -> HostResult<Resource<UdpRight>> {
        self.attenuate_right(r, ranges)
    }

    fn revocable(
        &mut self,
        r: Resource<UdpRight>,
    ) -> HostResult<(Resource<UdpRight>, Resource<RevokerHandle>)> {
        self.revocable_right(r)
    }

    fn bind(
        &mut self,
        r: Resource<UdpRight>,
        local_address: String,
    ) -> HostResult<Resource<UdpSocketHandle>> {
        let reach = self.table.get(&r)?.0.clone();
        match bind_udp(&reach, &local_address) {
            Ok(s) => Ok(self.table.push(s)?),
            Err(e) => self.refuse("udp-bind", &local_address, e),
        }
    }

    fn drop(&mut self, r: Resource<UdpRight>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        self.core.audit.dropped("udp-right");
        Ok(())
    }
}

/// A socket of `reach` bound to `local`, which must be the unspecified
/// address with port 0: a UDP right names peers, not local addresses, and
/// a chosen local address is a listen right's to grant.
fn bind_udp(reach: &Reach, local: &str) -> Result<UdpSocketHandle, Error> {
    reach.life.check()?;
    let addr = parse_addr(local)?;
    if !addr.ip().is_unspecified() || addr.port() != 0 {
        return Err(Error::Refused(format!(
            "{addr}: a UDP socket binds only 0.0.0.0:0 or [::]:0 (the system picks the port)"
        )));
    }
    let std = std::net::UdpSocket::bind(addr).map_err(io)?;
    std.set_nonblocking(true).map_err(io)?;
    let socket = tokio::net::UdpSocket::from_std(std).map_err(io)?;
    Ok(UdpSocketHandle {
        socket,
        reach: reach.clone(),
    })
}

/// Where one datagram may go: the first of `to`'s targets (see
/// [`Reach::targets`]), never the unspecified address, which the system
/// would take for a local one.
fn udp_peer(reach: &Reach, to: &str) -> Result<SocketAddr, Error> {
    reach.life.check()?;
    let (candidates, learned) = reach.targets(to)?;
    let peer = candidates
        .into_iter()
        .find(|a| !a.ip().is_unspecified())
        .ok_or_else(|| Error::Refused(format!("{to}: not an address to send to")))?;
    reach.learned(|| learned);
    Ok(peer)
}

impl HostUdpSocket for View<'_, NetCtx> {
    fn local_address(&mut self, s: Resource<UdpSocketHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&s)?.socket.local_addr()?.to_string())
    }

    async fn send(
        &mut self,
        s: Resource<UdpSocketHandle>,
        to: String,
        data: Vec<u8>,
    ) -> HostResult<()> {
        let reach = self.table.get(&s)?.reach.clone();
        let peer = match udp_peer(&reach, &to) {
            Ok(_) if data.len() > MAX_DATAGRAM => Err(Error::Invalid(format!(
                "{} bytes: a datagram holds at most {MAX_DATAGRAM}",
                data.len()
            ))),
            other => other,
        };
        let peer = match peer {
            Ok(p) => p,
            Err(e) => return self.refuse("udp-send", &to, e),
        };
        let socket = &self.table.get(&s)?.socket;
        socket.send_to(&data, peer).await.map_err(io)?;
        Ok(())
    }

    async fn receive(&mut self, s: Resource<UdpSocketHandle>) -> HostResult<(Vec<u8>, String)> {
        let reach = self.table.get(&s)?.reach.clone();
        self.alive("udp-receive", &reach.life)?;
        // The buffer is the host's while the receive waits: no larger than
        // what the guest's memory has room for.
        let mut buf = vec![0; MAX_DATAGRAM.min(self.core.memory.room().max(1))];
        loop {
            let (n, from) = self
                .table
                .get(&s)?
                .socket
                .recv_from(&mut buf)
                .await
                .map_err(io)?;
            // What arrived after the right ended is not handed over.
            self.alive("udp-receive", &reach.life)?;
            // The kernel takes datagrams from anyone on an unconnected
            // socket: those from outside the right are dropped here.
            match reach.check(&from) {
                Ok(()) => return Ok((buf[..n].to_vec(), from.to_string())),
                Err(e) => {
                    self.core.audit.refused(
                        "udp-receive",
                        "net",
                        &from.to_string(),
                        Rights::empty(),
                        &e,
                    );
                }
            }
        }
    }

    fn drop(&mut self, s: Resource<UdpSocketHandle>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        self.core.audit.dropped("udp-socket");
        Ok(())
    }
}
