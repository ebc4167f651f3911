//! Standard WASI, from the operator's grants, under the guest's pledges.
//!
//! wasmtime-wasi implements WASI; capbroker decides what it may reach. The
//! operator's grants for a plain `wasi:cli` program ([`WasiGrants`]:
//! preopened directories with capbroker rights, environment variables,
//! stdin, listen and connect ranges) become a [`WasiCtx`] plus capbroker's
//! own guards in front of `wasi:filesystem` ([`fs`]), `wasi:sockets/tcp`
//! ([`tcp`]) and `wasi:cli/environment`. Those guards are also where
//! `pledge` takes authority away for good.

pub mod fs;
pub mod streams;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::p2::bindings::{cli, filesystem, sockets};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::audit::Audit;
use crate::fs::DirGrant;
use crate::net::Reach;
use crate::pledge::{Authority, Pledges};

/// The most random bytes one `wasi:random` call makes: the host makes them
/// before the guest's memory is asked for room.
pub const MAX_RANDOM: u64 = 1 << 20;

/// What the operator grants a plain WASI program. Nothing by default.
#[derive(Clone, Default)]
pub struct WasiGrants {
    /// Directories, by the guest path they are preopened at.
    pub dirs: Vec<(String, DirGrant)>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Whether the program reads the host's stdin.
    pub stdin: bool,
    /// Addresses it may bind and listen on.
    pub listen: Vec<Reach>,
    /// Addresses it may connect to.
    pub connect: Vec<Reach>,
}

/// The WASI state capbroker keeps for one instance.
#[derive(Default)]
pub struct WasiState {
    pub fs: fs::WasiFs,
    env: Vec<(String, String)>,
    tcp: tcp::WasiTcp,
}

impl WasiGrants {
    /// The wasmtime-wasi context for these grants (stdout and stderr are
    /// always the host's; sockets only within the ranges, and only until
    /// the network is pledged away) and capbroker's own state beside it.
    pub fn build(
        &self,
        args: &[String],
        pledges: &Pledges,
        audit: &Audit,
    ) -> wasmtime::Result<(WasiCtx, WasiState)> {
        let mut b = WasiCtx::builder();
        b.max_random_size(MAX_RANDOM);
        b.inherit_stdout().inherit_stderr().args(args);
        if self.stdin {
            b.inherit_stdin();
        }
        let networked = !self.listen.is_empty() || !self.connect.is_empty();
        b.allow_tcp(networked)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if networked {
            let listen: Arc<[Reach]> = self.listen.clone().into();
            let connect: Arc<[Reach]> = self.connect.clone().into();
            let pledges = pledges.clone();
            let audit = audit.clone();
            b.socket_addr_check(move |addr, use_| {
                let pledged = pledges.renounced().contains(Authority::NETWORK);
                let allowed = !pledged && allows(&listen, &connect, &addr, use_);
                if !allowed {
                    // Every denial is recorded, the socket guard's too.
                    let err = crate::types::Error::Refused(if pledged {
                        "the network was pledged away".into()
                    } else {
                        format!("{addr} is not within the network grants")
                    });
                    let op = format!("{use_:?}").to_lowercase();
                    let none = crate::types::Rights::empty();
                    audit.refused(&op, "wasi socket", &addr.to_string(), none, &err);
                }
                Box::pin(async move { allowed })
            });
        }
        let mut state = WasiState {
            env: self.env.clone(),
            ..WasiState::default()
        };
        let grants: Vec<&DirGrant> = self.dirs.iter().map(|(_, g)| g).collect();
        for ((guest, grant), beside) in self.dirs.iter().zip(crate::fs::beside(&grants)) {
            state.fs.preopen(guest, grant, beside)?;
        }
        Ok((b.build(), state))
    }
}

/// Whether the operator's ranges allow one use of an address. A connect
/// first asks to bind the unspecified address to port 0, which the OS then
/// does implicitly; that needs a connect grant, not a listen one. Accepted
/// peers may be anyone: the listener's address was checked.
fn allows(listen: &[Reach], connect: &[Reach], addr: &SocketAddr, use_: SocketAddrUse) -> bool {
    let within = |ranges: &[Reach]| ranges.iter().any(|r| r.check(addr).is_ok());
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

impl WasiState {
    /// Gives up `authority` in everything this state guards.
    pub fn renounce(&mut self, authority: Authority) {
        if authority.contains(Authority::FILESYSTEM) {
            self.fs.renounce();
        }
        if authority.contains(Authority::NETWORK) {
            self.tcp.renounce();
        }
        if authority.contains(Authority::ENVIRONMENT) {
            self.env.clear();
        }
    }
}

/// The WASI context and the table, as wasmtime-wasi's own host code wants
/// them.
pub struct WasiParts<'a> {
    pub ctx: &'a mut WasiCtx,
    pub table: &'a mut ResourceTable,
}

impl WasiView for WasiParts<'_> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.ctx,
            table: self.table,
        }
    }
}

/// Implemented by store data that holds capbroker's WASI guards.
pub trait GuardedWasiView: WasiView {
    fn guarded(&mut self) -> GuardedView<'_>;
}

/// Borrowed access to the guards and to wasmtime-wasi's state.
pub struct GuardedView<'a> {
    pub wasi: WasiParts<'a>,
    pub state: &'a mut WasiState,
    /// The instance's audit trail and pledges, which the authority core
    /// consults for the file system.
    pub audit: &'a Audit,
    pub pledges: &'a Pledges,
    pub memory: &'a crate::limits::Account,
}

struct GuardedFs;
impl HasData for GuardedFs {
    type Data<'a> = fs::FsView<'a>;
}

struct GuardedTcp;
impl HasData for GuardedTcp {
    type Data<'a> = tcp::TcpView<'a>;
}

struct GuardedEnv;
impl HasData for GuardedEnv {
    type Data<'a> = GuardedView<'a>;
}

/// Adds WASI to `linker`, with capbroker's guards in front of the file
/// system, TCP sockets and the environment.
pub fn add_to_linker<T: GuardedWasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    // The guarded interfaces replace wasmtime-wasi's own.
    linker.allow_shadowing(true);
    filesystem::types::add_to_linker::<T, GuardedFs>(linker, |t| fs_view(t))?;
    filesystem::preopens::add_to_linker::<T, GuardedFs>(linker, |t| fs_view(t))?;
    sockets::tcp::add_to_linker::<T, GuardedTcp>(linker, |t| tcp_view(t))?;
    cli::environment::add_to_linker::<T, GuardedEnv>(linker, |t| t.guarded())?;
    linker.allow_shadowing(false);
    Ok(())
}

fn fs_view<T: GuardedWasiView>(t: &mut T) -> fs::FsView<'_> {
    let GuardedView {
        wasi,
        state,
        audit,
        pledges,
        memory,
    } = t.guarded();
    fs::FsView {
        wasi,
        fs: &mut state.fs,
        audit,
        pledges,
        memory,
    }
}

fn tcp_view<T: GuardedWasiView>(t: &mut T) -> tcp::TcpView<'_> {
    let GuardedView { wasi, state, .. } = t.guarded();
    tcp::TcpView {
        wasi,
        tcp: &mut state.tcp,
    }
}

impl cli::environment::Host for GuardedView<'_> {
    fn get_environment(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.state.env.clone())
    }

    fn get_arguments(&mut self) -> wasmtime::Result<Vec<String>> {
        use wasmtime_wasi::cli::WasiCliView;
        cli::environment::Host::get_arguments(&mut self.wasi.cli())
    }

    fn initial_cwd(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
}
