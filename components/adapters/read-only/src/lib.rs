//! An adapter composed in front of a capbroker app: every directory the app
//! gets is read-only (at most `read` and `list`), and every call it makes on
//! one is logged to standard error.
//!
//! The adapter imports every capbroker interface that carries a handle
//! (`fs`, `net`, `spawn`, `grants`, `process`, `wasi-fs`) from the host and
//! exports its own versions of them, so that an app composed behind it
//! (`wac plug APP --plug read-only.wasm`) reaches the host only through it:
//! a membrane. Handles other than directories pass through unchanged but
//! logged. Each directory it hands out wraps a host handle
//! that it narrowed with the host's own `attenuate` before the app ever saw
//! it: the host enforces the narrowing, so a handle the app passes on (to a
//! child process, or as a WASI descriptor) stays read-only too.

wit_bindgen::generate!({
    path: "../../../wit",
    inline: "
        package capbroker:adapters@0.1.0;
        world read-only {
            import capbroker:caps/fs@0.1.0;
            import capbroker:caps/net@0.1.0;
            import capbroker:caps/spawn@0.1.0;
            import capbroker:caps/grants@0.1.0;
            import capbroker:caps/process@0.1.0;
            import capbroker:caps/wasi-fs@0.1.0;
            export capbroker:caps/fs@0.1.0;
            export capbroker:caps/net@0.1.0;
            export capbroker:caps/spawn@0.1.0;
            export capbroker:caps/grants@0.1.0;
            export capbroker:caps/process@0.1.0;
            export capbroker:caps/wasi-fs@0.1.0;
        }
    ",
    world: "capbroker:adapters/read-only@0.1.0",
    generate_all,
});

use capbroker::caps::types::{Error, Revoker, Rights};
use capbroker::caps::{
    fs as host_fs, grants as host_grants, net as host_net, process as host_process,
    spawn as host_spawn,
};
use exports::capbroker::caps::{fs, grants, net, process, spawn, wasi_fs};
use wasi::filesystem::types::Descriptor;

/// The most a directory handed to the app may do.
const ALLOWED: Rights = Rights::READ.union(Rights::LIST);

/// Logs one call and its outcome.
fn log<T>(handle: &str, call: &str, result: &Result<T, Error>) {
    match result {
        Ok(_) => eprintln!("[read-only] {handle}: {call} -> ok"),
        Err(e) => eprintln!("[read-only] {handle}: {call} -> {}", describe(e)),
    }
}

fn describe(e: &Error) -> String {
    match e {
        Error::Denied(r) => format!("denied({})", rights(*r)),
        Error::Revoked => "revoked".into(),
        Error::Escape(s) => format!("escape({s})"),
        Error::NotFound(s) => format!("not-found({s})"),
        Error::Exists(s) => format!("exists({s})"),
        Error::NotDirectory(s) => format!("not-directory({s})"),
        Error::IsDirectory(s) => format!("is-directory({s})"),
        Error::NotEmpty(s) => format!("not-empty({s})"),
        Error::Invalid(s) => format!("invalid({s})"),
        Error::LimitExceeded(s) => format!("limit-exceeded({s})"),
        Error::Io(s) => format!("io({s})"),
        Error::Refused(s) => format!("refused({s})"),
    }
}

fn rights(r: Rights) -> String {
    let names = [
        (Rights::READ, "read"),
        (Rights::WRITE, "write"),
        (Rights::CREATE, "create"),
        (Rights::LIST, "list"),
        (Rights::REMOVE, "remove"),
    ];
    let held: Vec<&str> = names
        .iter()
        .filter(|(f, _)| r.contains(*f))
        .map(|(_, n)| *n)
        .collect();
    held.join(",")
}

/// A directory as the app sees it: a host handle with at most `ALLOWED`.
struct ReadOnlyDir {
    inner: host_fs::Dir,
    label: String,
}

impl ReadOnlyDir {
    /// Narrows a host handle and wraps it; the wider handle is dropped.
    fn wrap(dir: host_fs::Dir, label: String) -> Result<fs::Dir, Error> {
        let inner = dir.attenuate(dir.rights() & ALLOWED)?;
        Ok(fs::Dir::new(ReadOnlyDir { inner, label }))
    }

    fn sub(&self, path: &str) -> String {
        format!("{}/{}", self.label, path.trim_start_matches("./"))
    }
}

struct LoggedFile {
    inner: host_fs::File,
    label: String,
}

fn kind(k: host_fs::EntryKind) -> fs::EntryKind {
    match k {
        host_fs::EntryKind::File => fs::EntryKind::File,
        host_fs::EntryKind::Directory => fs::EntryKind::Directory,
        host_fs::EntryKind::Symlink => fs::EntryKind::Symlink,
        host_fs::EntryKind::Other => fs::EntryKind::Other,
    }
}

fn stat(s: host_fs::Stat) -> fs::Stat {
    fs::Stat {
        kind: kind(s.kind),
        size: s.size,
        modified_ns: s.modified_ns,
    }
}

struct Adapter;

impl fs::Guest for Adapter {
    type Dir = ReadOnlyDir;
    type File = LoggedFile;
}

impl fs::GuestDir for ReadOnlyDir {
    fn rights(&self) -> Rights {
        self.inner.rights()
    }

    fn open_dir(&self, path: String, rights: Rights) -> Result<fs::Dir, Error> {
        let label = self.sub(&path);
        let r = self
            .inner
            .open_dir(&path, rights)
            .and_then(|d| ReadOnlyDir::wrap(d, label));
        log(&self.label, &format!("open-dir {path}"), &r);
        r
    }

    fn attenuate(&self, rights: Rights) -> Result<fs::Dir, Error> {
        let r = self
            .inner
            .attenuate(rights)
            .and_then(|d| ReadOnlyDir::wrap(d, self.label.clone()));
        log(
            &self.label,
            &format!("attenuate {}", self::rights(rights)),
            &r,
        );
        r
    }

    fn revocable(&self) -> Result<(fs::Dir, Revoker), Error> {
        let r = self
            .inner
            .revocable()
            .and_then(|(d, revoker)| Ok((ReadOnlyDir::wrap(d, self.label.clone())?, revoker)));
        log(&self.label, "revocable", &r);
        r
    }

    fn read_file(&self, path: String) -> Result<Vec<u8>, Error> {
        let r = self.inner.read_file(&path);
        log(&self.label, &format!("read-file {path}"), &r);
        r
    }

    fn write_file(&self, path: String, contents: Vec<u8>) -> Result<(), Error> {
        let r = self.inner.write_file(&path, &contents);
        log(&self.label, &format!("write-file {path}"), &r);
        r
    }

    fn open_file(&self, path: String, flags: fs::OpenFlags) -> Result<fs::File, Error> {
        let host_flags = host_fs::OpenFlags::from_bits_retain(flags.bits());
        let label = self.sub(&path);
        let r = self
            .inner
            .open_file(&path, host_flags)
            .map(|inner| fs::File::new(LoggedFile { inner, label }));
        log(&self.label, &format!("open-file {path}"), &r);
        r
    }

    fn list(&self, path: String) -> Result<Vec<fs::Entry>, Error> {
        let r = self.inner.list(&path).map(|entries| {
            entries
                .into_iter()
                .map(|e| fs::Entry {
                    name: e.name,
                    kind: kind(e.kind),
                })
                .collect()
        });
        log(&self.label, &format!("list {path}"), &r);
        r
    }

    fn stat(&self, path: String) -> Result<fs::Stat, Error> {
        let r = self.inner.stat(&path).map(stat);
        log(&self.label, &format!("stat {path}"), &r);
        r
    }

    fn create_dir(&self, path: String) -> Result<(), Error> {
        let r = self.inner.create_dir(&path);
        log(&self.label, &format!("create-dir {path}"), &r);
        r
    }

    fn remove_file(&self, path: String) -> Result<(), Error> {
        let r = self.inner.remove_file(&path);
        log(&self.label, &format!("remove-file {path}"), &r);
        r
    }

    fn remove_dir(&self, path: String) -> Result<(), Error> {
        let r = self.inner.remove_dir(&path);
        log(&self.label, &format!("remove-dir {path}"), &r);
        r
    }

    fn rename(&self, from: String, to: String) -> Result<(), Error> {
        let r = self.inner.rename(&from, &to);
        log(&self.label, &format!("rename {from} {to}"), &r);
        r
    }
}

impl fs::GuestFile for LoggedFile {
    fn read(&self, len: u32) -> Result<Vec<u8>, Error> {
        let r = self.inner.read(len);
        log(&self.label, &format!("read {len}"), &r);
        r
    }

    fn write(&self, data: Vec<u8>) -> Result<(), Error> {
        let r = self.inner.write(&data);
        log(&self.label, &format!("write {}", data.len()), &r);
        r
    }

    fn seek(&self, offset: u64) -> Result<(), Error> {
        self.inner.seek(offset)
    }

    fn stat(&self) -> Result<fs::Stat, Error> {
        self.inner.stat().map(stat)
    }
}

impl grants::Guest for Adapter {
    /// The host's grants, each directory narrowed before the app sees it.
    fn granted() -> Vec<grants::Grant> {
        let mut out = Vec::new();
        for g in host_grants::granted() {
            let handle = match g.handle {
                host_grants::Handle::Dir(d) => match ReadOnlyDir::wrap(d, g.name.clone()) {
                    Ok(d) => grants::Handle::Dir(d),
                    Err(e) => {
                        eprintln!("[read-only] {}: withheld: {}", g.name, describe(&e));
                        continue;
                    }
                },
                host_grants::Handle::Spawner(inner) => {
                    grants::Handle::Spawner(spawn::Spawner::new(LoggedSpawner { inner }))
                }
                host_grants::Handle::Listen(inner) => {
                    grants::Handle::Listen(net::ListenRight::new(LoggedListen { inner }))
                }
                host_grants::Handle::Connect(inner) => {
                    grants::Handle::Connect(net::ConnectRight::new(LoggedConnect { inner }))
                }
                host_grants::Handle::TcpStream(inner) => {
                    grants::Handle::TcpStream(net::TcpStream::new(LoggedStream { inner }))
                }
                host_grants::Handle::Udp(inner) => {
                    grants::Handle::Udp(net::UdpRight::new(LoggedUdp { inner }))
                }
            };
            eprintln!("[read-only] granted {}", g.name);
            out.push(grants::Grant {
                name: g.name,
                handle,
            });
        }
        out
    }
}

impl wasi_fs::Guest for Adapter {
    fn to_descriptor(dir: fs::DirBorrow<'_>, rights: Rights) -> Result<Descriptor, Error> {
        let dir = dir.get::<ReadOnlyDir>();
        let r = capbroker::caps::wasi_fs::to_descriptor(&dir.inner, rights);
        log(&dir.label, "to-descriptor", &r);
        r
    }
}

/// A child process the app started: the host's process handle.
struct Child {
    inner: host_process::Process,
}

fn exit_status(s: host_process::ExitStatus) -> process::ExitStatus {
    use host_process::ExitStatus as H;
    use process::ExitStatus as A;
    match s {
        H::Finished(out) => A::Finished(out),
        H::Failed(msg) => A::Failed(msg),
        H::Trapped(msg) => A::Trapped(msg),
        H::OutOfMemory => A::OutOfMemory,
        H::OutOfCpu => A::OutOfCpu,
        H::TimedOut => A::TimedOut,
        H::Killed => A::Killed,
    }
}

impl process::Guest for Adapter {
    type Process = Child;

    /// Spawns with the host's handles behind the app's: the child gets
    /// copies of the narrowed handles, never wider ones.
    fn spawn(
        spawner: spawn::SpawnerBorrow<'_>,
        component: String,
        entry: Option<String>,
        grants: Vec<grants::Share<'_>>,
        limits: spawn::Limits,
        input: Vec<u8>,
    ) -> Result<process::Process, Error> {
        let shares: Vec<host_grants::Share<'_>> = grants
            .iter()
            .map(|s| host_grants::Share {
                name: s.name.clone(),
                handle: match &s.handle {
                    grants::Shared::Dir(d) => {
                        host_grants::Shared::Dir(&d.get::<ReadOnlyDir>().inner)
                    }
                    grants::Shared::Spawner(x) => {
                        host_grants::Shared::Spawner(&x.get::<LoggedSpawner>().inner)
                    }
                    grants::Shared::Listen(x) => {
                        host_grants::Shared::Listen(&x.get::<LoggedListen>().inner)
                    }
                    grants::Shared::Connect(x) => {
                        host_grants::Shared::Connect(&x.get::<LoggedConnect>().inner)
                    }
                    grants::Shared::TcpStream(x) => {
                        host_grants::Shared::TcpStream(&x.get::<LoggedStream>().inner)
                    }
                    grants::Shared::Udp(x) => host_grants::Shared::Udp(&x.get::<LoggedUdp>().inner),
                },
            })
            .collect();
        let r = host_process::spawn(
            &spawner.get::<LoggedSpawner>().inner,
            &component,
            entry.as_deref(),
            &shares,
            host_limits(limits),
            &input,
        )
        .map(|inner| process::Process::new(Child { inner }));
        let names: Vec<&str> = grants.iter().map(|s| s.name.as_str()).collect();
        log(
            "process",
            &format!("spawn {component} sharing {}", names.join(",")),
            &r,
        );
        r
    }
}

impl process::GuestProcess for Child {
    fn id(&self) -> u64 {
        self.inner.id()
    }

    fn send(&self, message: Vec<u8>) -> Result<(), Error> {
        self.inner.send(&message)
    }

    fn receive(&self) -> Option<Vec<u8>> {
        self.inner.receive()
    }

    fn wait(&self) -> process::ExitStatus {
        exit_status(self.inner.wait())
    }

    fn try_wait(&self) -> Option<process::ExitStatus> {
        self.inner.try_wait().map(exit_status)
    }

    fn kill(&self) {
        self.inner.kill()
    }
}

/// A spawner, passed through.
struct LoggedSpawner {
    inner: host_spawn::Spawner,
}

fn host_limits(l: spawn::Limits) -> host_spawn::Limits {
    host_spawn::Limits {
        max_memory: l.max_memory,
        max_fuel: l.max_fuel,
        timeout_ms: l.timeout_ms,
    }
}

fn limits(l: host_spawn::Limits) -> spawn::Limits {
    spawn::Limits {
        max_memory: l.max_memory,
        max_fuel: l.max_fuel,
        timeout_ms: l.timeout_ms,
    }
}

impl spawn::Guest for Adapter {
    type Spawner = LoggedSpawner;
}

impl spawn::GuestSpawner for LoggedSpawner {
    fn budget(&self) -> spawn::Budget {
        let b = self.inner.budget();
        spawn::Budget {
            limits: limits(b.limits),
            max_children: b.max_children,
            components: b.components,
        }
    }

    fn running(&self) -> u32 {
        self.inner.running()
    }

    fn attenuate(&self, budget: spawn::Budget) -> Result<spawn::Spawner, Error> {
        let r = self
            .inner
            .attenuate(&host_spawn::Budget {
                limits: host_limits(budget.limits),
                max_children: budget.max_children,
                components: budget.components,
            })
            .map(|inner| spawn::Spawner::new(LoggedSpawner { inner }));
        log("spawner", "attenuate", &r);
        r
    }

    fn revocable(&self) -> Result<(spawn::Spawner, Revoker), Error> {
        let r = self
            .inner
            .revocable()
            .map(|(inner, rev)| (spawn::Spawner::new(LoggedSpawner { inner }), rev));
        log("spawner", "revocable", &r);
        r
    }
}

/// Network handles, passed through.
struct LoggedListen {
    inner: host_net::ListenRight,
}

struct LoggedConnect {
    inner: host_net::ConnectRight,
}

struct LoggedListener {
    inner: host_net::TcpListener,
}

struct LoggedStream {
    inner: host_net::TcpStream,
}

struct LoggedUdp {
    inner: host_net::UdpRight,
}

struct LoggedUdpSocket {
    inner: host_net::UdpSocket,
}

fn ranges(r: Vec<host_net::AddressRange>) -> Vec<net::AddressRange> {
    r.into_iter()
        .map(|r| net::AddressRange {
            network: r.network,
            first_port: r.first_port,
            last_port: r.last_port,
        })
        .collect()
}

fn host_ranges(r: Vec<net::AddressRange>) -> Vec<host_net::AddressRange> {
    r.into_iter()
        .map(|r| host_net::AddressRange {
            network: r.network,
            first_port: r.first_port,
            last_port: r.last_port,
        })
        .collect()
}

impl net::Guest for Adapter {
    type ListenRight = LoggedListen;
    type ConnectRight = LoggedConnect;
    type TcpListener = LoggedListener;
    type TcpStream = LoggedStream;
    type UdpRight = LoggedUdp;
    type UdpSocket = LoggedUdpSocket;
}

impl net::GuestListenRight for LoggedListen {
    fn ranges(&self) -> Vec<net::AddressRange> {
        ranges(self.inner.ranges())
    }

    fn attenuate(&self, r: Vec<net::AddressRange>) -> Result<net::ListenRight, Error> {
        let r = self
            .inner
            .attenuate(&host_ranges(r))
            .map(|inner| net::ListenRight::new(LoggedListen { inner }));
        log("listen", "attenuate", &r);
        r
    }

    fn revocable(&self) -> Result<(net::ListenRight, Revoker), Error> {
        let r = self
            .inner
            .revocable()
            .map(|(inner, rev)| (net::ListenRight::new(LoggedListen { inner }), rev));
        log("listen", "revocable", &r);
        r
    }

    fn listen(&self, address: String) -> Result<net::TcpListener, Error> {
        let r = self
            .inner
            .listen(&address)
            .map(|inner| net::TcpListener::new(LoggedListener { inner }));
        log("listen", &format!("listen {address}"), &r);
        r
    }
}

impl net::GuestConnectRight for LoggedConnect {
    fn ranges(&self) -> Vec<net::AddressRange> {
        ranges(self.inner.ranges())
    }

    fn attenuate(&self, r: Vec<net::AddressRange>) -> Result<net::ConnectRight, Error> {
        let r = self
            .inner
            .attenuate(&host_ranges(r))
            .map(|inner| net::ConnectRight::new(LoggedConnect { inner }));
        log("connect", "attenuate", &r);
        r
    }

    fn revocable(&self) -> Result<(net::ConnectRight, Revoker), Error> {
        let r = self
            .inner
            .revocable()
            .map(|(inner, rev)| (net::ConnectRight::new(LoggedConnect { inner }), rev));
        log("connect", "revocable", &r);
        r
    }

    fn connect(&self, address: String) -> Result<net::TcpStream, Error> {
        let r = self
            .inner
            .connect(&address)
            .map(|inner| net::TcpStream::new(LoggedStream { inner }));
        log("connect", &format!("connect {address}"), &r);
        r
    }
}

impl net::GuestTcpListener for LoggedListener {
    fn local_address(&self) -> String {
        self.inner.local_address()
    }

    fn accept(&self) -> Result<net::TcpStream, Error> {
        let r = self
            .inner
            .accept()
            .map(|inner| net::TcpStream::new(LoggedStream { inner }));
        log("listener", "accept", &r);
        r
    }
}

impl net::GuestTcpStream for LoggedStream {
    fn peer_address(&self) -> String {
        self.inner.peer_address()
    }

    fn read(&self, len: u32) -> Result<Vec<u8>, Error> {
        self.inner.read(len)
    }

    fn write(&self, data: Vec<u8>) -> Result<(), Error> {
        self.inner.write(&data)
    }

    fn shutdown(&self) -> Result<(), Error> {
        self.inner.shutdown()
    }
}

impl net::GuestUdpRight for LoggedUdp {
    fn ranges(&self) -> Vec<net::AddressRange> {
        ranges(self.inner.ranges())
    }

    fn attenuate(&self, r: Vec<net::AddressRange>) -> Result<net::UdpRight, Error> {
        let r = self
            .inner
            .attenuate(&host_ranges(r))
            .map(|inner| net::UdpRight::new(LoggedUdp { inner }));
        log("udp", "attenuate", &r);
        r
    }

    fn revocable(&self) -> Result<(net::UdpRight, Revoker), Error> {
        let r = self
            .inner
            .revocable()
            .map(|(inner, rev)| (net::UdpRight::new(LoggedUdp { inner }), rev));
        log("udp", "revocable", &r);
        r
    }

    fn bind(&self, local_address: String) -> Result<net::UdpSocket, Error> {
        let r = self
            .inner
            .bind(&local_address)
            .map(|inner| net::UdpSocket::new(LoggedUdpSocket { inner }));
        log("udp", &format!("bind {local_address}"), &r);
        r
    }
}

impl net::GuestUdpSocket for LoggedUdpSocket {
    fn local_address(&self) -> String {
        self.inner.local_address()
    }

    fn send(&self, to: String, data: Vec<u8>) -> Result<(), Error> {
        self.inner.send(&to, &data)
    }

    fn receive(&self) -> Result<(Vec<u8>, String), Error> {
        self.inner.receive()
    }
}

export!(Adapter);
