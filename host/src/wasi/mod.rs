//! Standard WASI, from the operator's grants, under the guest's pledges.
//!
//! wasmtime-wasi implements WASI; capbroker decides what it may reach. The
//! operator's grants for a plain `wasi:cli` program ([`WasiGrants`]:
//! preopened directories with capbroker rights, environment variables,
//! stdin, listen, connect and UDP ranges) become a [`WasiCtx`] plus each room's
//! guard in front of its part of WASI: [`crate::fs::wasi`] for
//! `wasi:filesystem`, [`crate::net::wasi`] for `wasi:sockets`, and the
//! environment here. This module only builds and links them.

pub mod p1;

use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi::p2::bindings::{cli, filesystem, sockets};
pub use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiView};

use crate::core::audit::Audit;
use crate::core::learn::Learner;
use crate::core::pledges::Pledges;
use crate::core::view::{HasWasiFace, WasiFace, WasiParts};
use crate::core::Core;
use crate::fs::{DirGrant, FsCtx};
use crate::net::http::Outgoing;
use crate::net::wasi::NetGrants;
use crate::net::wit::wasi_lookup::ip_name_lookup;
use crate::net::{Lookup, NetCtx, Reach};

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
    /// Addresses it may bind and listen on, by grant name.
    pub listen: Vec<(String, Reach)>,
    /// Addresses it may connect to, by grant name.
    pub connect: Vec<(String, Reach)>,
    /// Peers it may exchange UDP datagrams with, by grant name.
    pub udp: Vec<(String, Reach)>,
    /// Where the program's stdout goes: the host's (`None`), or this pipe
    /// (an embedding that reads what the program printed).
    pub stdout: Option<MemoryOutputPipe>,
}

/// The environment a program sees: what the operator granted, until it
/// pledges the environment away.
pub type EnvCtx = Vec<(String, String)>;

/// The WASI state of each room, for one instance.
#[derive(Default)]
pub struct WasiState {
    pub fs: FsCtx,
    pub sockets: NetCtx,
    pub env: EnvCtx,
    /// What name lookups are answered with.
    pub lookup: Lookup,
    /// Outgoing `wasi:http` requests, within the connect grants.
    pub http: Outgoing,
}

impl WasiGrants {
    /// Notes every use of the network grants in `learner`, under each
    /// grant's name (the directories are learned from in the filesystem
    /// guard).
    pub fn learn_with(&mut self, learner: Option<&Arc<Learner>>) {
        let nets = self.listen.iter_mut().chain(&mut self.connect);
        for (name, reach) in nets.chain(&mut self.udp) {
            *reach = reach.clone().learned_by(learner.cloned(), name);
        }
    }

    /// What the grants reach, in a line: `/uploads=create; api=…`, or
    /// `nothing`.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for (guest, d) in &self.dirs {
            let rights = crate::core::RightsList(d.rights).to_string();
            parts.push(format!("dir {guest}={}:{rights}", d.host_path.display()));
        }
        for (name, reach) in &self.connect {
            parts.push(format!("connect {name}={}", reach.detail()));
        }
        for (name, reach) in &self.udp {
            parts.push(format!("udp {name}={}", reach.detail()));
        }
        for (key, _) in &self.env {
            parts.push(format!("env {key}"));
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join("; ")
        }
    }

    /// Records each grant in `audit`, as an app's grants are.
    pub fn audit(&self, audit: &Audit) {
        for (guest, d) in &self.dirs {
            let rights = crate::core::RightsList(d.rights).to_string();
            audit.granted(guest, &d.host_path.display().to_string(), &rights);
        }
        for (kind, grants) in [
            ("listen", &self.listen),
            ("connect", &self.connect),
            ("udp", &self.udp),
        ] {
            for (name, reach) in grants {
                audit.granted(name, kind, &reach.detail());
            }
        }
    }

    /// The wasmtime-wasi context for these grants (stderr is always the
    /// host's, stdout too unless a pipe is given; sockets only within the
    /// ranges, and only until the network is pledged away) and each room's
    /// state beside it.
    pub fn build(
        &self,
        args: &[String],
        pledges: &Pledges,
        audit: &Audit,
    ) -> wasmtime::Result<(WasiCtx, WasiState)> {
        let mut b = WasiCtx::builder();
        b.max_random_size(MAX_RANDOM);
        match &self.stdout {
            Some(pipe) => b.stdout(pipe.clone()),
            None => b.inherit_stdout(),
        };
        b.inherit_stderr().args(args);
        if self.stdin {
            b.inherit_stdin();
        }
        let reaches = |grants: &[(String, Reach)]| grants.iter().map(|(_, r)| r.clone()).collect();
        let net = NetGrants {
            listen: reaches(&self.listen),
            connect: reaches(&self.connect),
            udp: reaches(&self.udp),
        };
        // Lookups are capbroker's own (`net::lookup`); wasmtime-wasi's,
        // shadowed, would refuse them all.
        b.allow_tcp(!self.listen.is_empty() || !self.connect.is_empty())
            .allow_udp(!self.udp.is_empty())
            .allow_ip_name_lookup(false);
        if net.any() {
            b.socket_addr_check(crate::net::wasi::addr_check(
                net,
                pledges.clone(),
                audit.clone(),
            ));
        }
        let mut state = WasiState {
            env: self.env.clone(),
            lookup: Lookup::new(
                self.connect
                    .iter()
                    .chain(&self.listen)
                    .chain(&self.udp)
                    .map(|(_, r)| r),
            ),
            http: Outgoing {
                connect: self.connect.iter().map(|(_, r)| r.clone()).collect(),
                pledges: pledges.clone(),
                audit: Some(audit.clone()),
                chunk: 0,
            },
            ..WasiState::default()
        };
        let grants: Vec<&DirGrant> = self.dirs.iter().map(|(_, g)| g).collect();
        for ((guest, grant), beside) in self.dirs.iter().zip(crate::fs::beside(&grants)) {
            state.fs.preopen(guest, grant, beside)?;
        }
        Ok((b.build(), state))
    }
}

/// Implemented by store data that holds capbroker's WASI guards.
pub trait GuardedWasiView: WasiView {
    fn guarded(&mut self) -> GuardedView<'_>;
}

/// Borrowed access to wasmtime-wasi's state, the core state and each
/// room's WASI context.
pub struct GuardedView<'a> {
    pub wasi: WasiParts<'a>,
    pub core: &'a Core,
    pub fs: &'a mut FsCtx,
    pub net: &'a mut NetCtx,
    pub env: &'a mut EnvCtx,
    pub lookup: &'a mut Lookup,
}

/// Adds WASI to `linker`, with each room's guard in front of its part.
pub fn add_to_linker<T: GuardedWasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    // The guarded interfaces replace wasmtime-wasi's own.
    linker.allow_shadowing(true);
    type Fs = HasWasiFace<FsCtx>;
    type Net = HasWasiFace<NetCtx>;
    type Env = HasWasiFace<EnvCtx>;
    type Names = HasWasiFace<Lookup>;
    filesystem::types::add_to_linker::<T, Fs>(linker, |t| face(t, |g| g.fs))?;
    filesystem::preopens::add_to_linker::<T, Fs>(linker, |t| face(t, |g| g.fs))?;
    sockets::tcp::add_to_linker::<T, Net>(linker, |t| face(t, |g| g.net))?;
    ip_name_lookup::add_to_linker::<T, Names>(linker, |t| face(t, |g| g.lookup))?;
    sockets::udp::add_to_linker::<T, Net>(linker, |t| face(t, |g| g.net))?;
    sockets::udp_create_socket::add_to_linker::<T, Net>(linker, |t| face(t, |g| g.net))?;
    cli::environment::add_to_linker::<T, Env>(linker, |t| face(t, |g| g.env))?;
    linker.allow_shadowing(false);
    Ok(())
}

/// One room's WASI face of the store's data.
fn face<'a, T: GuardedWasiView, K: ?Sized>(
    t: &'a mut T,
    kind: impl FnOnce(GuardedViewParts<'a>) -> &'a mut K,
) -> WasiFace<'a, K> {
    let GuardedView {
        wasi,
        core,
        fs,
        net,
        env,
        lookup,
    } = t.guarded();
    WasiFace {
        wasi,
        core,
        kind: kind(GuardedViewParts {
            fs,
            net,
            env,
            lookup,
        }),
    }
}

/// The rooms' contexts, to pick one from.
struct GuardedViewParts<'a> {
    fs: &'a mut FsCtx,
    net: &'a mut NetCtx,
    env: &'a mut EnvCtx,
    lookup: &'a mut Lookup,
}

impl cli::environment::Host for WasiFace<'_, EnvCtx> {
    fn get_environment(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.kind.clone())
    }

    fn get_arguments(&mut self) -> wasmtime::Result<Vec<String>> {
        use wasmtime_wasi::cli::WasiCliView;
        cli::environment::Host::get_arguments(&mut self.wasi.cli())
    }

    fn initial_cwd(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
}
