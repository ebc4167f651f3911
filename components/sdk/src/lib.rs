//! Write capbroker components in Rust.
//!
//! ```ignore
//! use std::io::{BufRead, BufReader};
//! use capbroker_sdk::{export, Grants, Guest, Request, Rights};
//!
//! struct App;
//! impl Guest for App {
//!     fn requests() -> Vec<Request> {
//!         vec![Request::dir("data", Rights::READ | Rights::LIST, "what it is for")]
//!     }
//!     fn run(args: Vec<String>) -> Result<(), String> {
//!         let mut grants = Grants::granted();
//!         let data = grants.dir("data")?; // "no directory granted as `data`"
//!         let text = data.read_to_string("hello.txt")?;
//!         for line in BufReader::new(data.open("list.txt")?).lines() {
//!             println!("{}", line.map_err(|e| e.to_string())?);
//!         }
//!         capbroker_sdk::pledge::filesystem(); // no file access from here on
//!         Ok(())
//!     }
//! }
//! export!(App);
//! ```
//!
//! [`Dir`] and [`File`] (in [`fs`]) are shaped like `std::fs`, as cap-std's
//! are: `AsRef<Path>` paths, `File: Read + Write + Seek`, and an [`Error`]
//! that is `Display + std::error::Error` and becomes a `std::io::Error`
//! with the matching `ErrorKind`. Handles are RAII: dropping a `Dir` or
//! `File` gives it up for good. What the layer does not cover is in
//! [`bindings`] (and [`raw`] names the generated handle types).

/// The bindings wit-bindgen generates for the `app` world, and the types
/// of every capbroker interface. They sit in a module of their own: at the
/// crate root, the exported macro for world-level exports would clash with
/// its own re-export.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "app",
        // wasi:filesystem and what it uses, for `wasi-fs` descriptors.
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "capbroker_sdk::bindings",
    });
}

/// Bindings for another world over the same interfaces, so that its
/// resources are the very types of [`bindings`].
macro_rules! world_bindings {
    ($world:literal, $export:literal, $module:literal) => {
        wit_bindgen::generate!({
            path: "../../wit",
            world: $world,
            pub_export_macro: true,
            export_macro_name: $export,
            default_bindings_module: $module,
            with: {
                "capbroker:caps/types@0.1.0": crate::bindings::capbroker::caps::types,
                "capbroker:caps/fs@0.1.0": crate::bindings::capbroker::caps::fs,
                "capbroker:caps/net@0.1.0": crate::bindings::capbroker::caps::net,
                "capbroker:caps/spawn@0.1.0": crate::bindings::capbroker::caps::spawn,
                "capbroker:caps/grants@0.1.0": crate::bindings::capbroker::caps::grants,
                "capbroker:caps/process@0.1.0": crate::bindings::capbroker::caps::process,
                "capbroker:caps/mailbox@0.1.0": crate::bindings::capbroker::caps::mailbox,
                "capbroker:caps/pledge@0.1.0": crate::bindings::capbroker::caps::pledge,
                "capbroker:caps/wasi-fs@0.1.0": crate::bindings::capbroker::caps::wasi_fs,
                "wasi:filesystem/types@0.2.12": crate::bindings::wasi::filesystem::types,
                "wasi:io/error@0.2.12": crate::bindings::wasi::io::error,
                "wasi:io/poll@0.2.12": crate::bindings::wasi::io::poll,
                "wasi:io/streams@0.2.12": crate::bindings::wasi::io::streams,
                "wasi:clocks/wall-clock@0.2.12": crate::bindings::wasi::clocks::wall_clock,
            },
        });
    };
}

/// The `child` world: `export_child!(T)` for a component that only runs as
/// a child process (`impl child::Guest for T`).
pub mod child {
    world_bindings!("child", "export_child", "capbroker_sdk::child");
}

/// The `service` world: `export_service!(T)` for a component that is run by
/// the operator and also spawns itself (`impl service::Guest for T`).
pub mod service {
    world_bindings!("service", "export_service", "capbroker_sdk::service");
}

/// Giving up standard WASI authority for good, OpenBSD-style: one call
/// each, e.g. `capbroker_sdk::pledge::filesystem()`. Afterwards `std::fs`
/// (or `std::net`, `std::env`) returns permission errors; nothing traps and
/// nothing restores the authority. See the WIT `pledge` interface.
pub mod pledge {
    pub use crate::bindings::capbroker::caps::pledge::{renounce, renounced, unveil, Authority};
    use crate::{Error, Rights};

    /// Gives up every preopened directory and every open file.
    pub fn filesystem() {
        renounce(Authority::FILESYSTEM)
    }

    /// Gives up opening sockets and every socket already open.
    pub fn network() {
        renounce(Authority::NETWORK)
    }

    /// Gives up the environment variables.
    pub fn environment() {
        renounce(Authority::ENVIRONMENT)
    }

    /// Gives up spawning child processes.
    pub fn spawn() {
        renounce(Authority::SPAWN)
    }

    /// Narrows the preopen `preopen` to `sub_path` below it, with at most
    /// `rights`, for good.
    pub fn unveil_dir(preopen: &str, sub_path: &str, rights: Rights) -> Result<(), Error> {
        Ok(unveil(preopen, sub_path, rights)?)
    }
}

/// Standard `wasi:filesystem` descriptors made from capbroker handles:
/// `to_descriptor(dir.as_raw(), rights)` gives code written against the
/// WASI API a descriptor with at most `dir`'s rights. There is no way back.
pub mod wasi_fs {
    pub use crate::bindings::capbroker::caps::wasi_fs::to_descriptor;
    pub use crate::bindings::wasi::filesystem::types::{
        Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags,
    };
}

pub mod error;
pub mod fs;

/// The handle and error types exactly as wit-bindgen generates them, for
/// code that talks to the bindings directly (the std-shaped [`fs::Dir`],
/// [`fs::File`] and [`Error`] wrap these, and `as_raw` / `into_raw` / `From`
/// go between the two).
pub mod raw {
    pub use crate::bindings::capbroker::caps::fs::{Dir, Entry, EntryKind, File, OpenFlags, Stat};
    pub use crate::bindings::capbroker::caps::types::Error;
}

pub use bindings::capbroker::caps::fs::{Entry, EntryKind, OpenFlags, Stat};
pub use bindings::capbroker::caps::grants::{granted, Grant, Handle, Share, Shared};
pub use bindings::capbroker::caps::mailbox;
pub use bindings::capbroker::caps::net::{
    AddressRange, ConnectRight, ListenRight, TcpListener, TcpStream, UdpRight, UdpSocket,
};
pub use bindings::capbroker::caps::process::{spawn, ExitStatus, Process};
pub use bindings::capbroker::caps::spawn::{Budget, Limits, Spawner};
pub use bindings::capbroker::caps::types::{Error as WitError, Request, Revoker, Rights, Wants};
pub use bindings::{export, Guest};
pub use child::export_child;
pub use error::Error;
pub use fs::{Dir, File, OpenOptions};
pub use service::export_service;

impl Request {
    /// A request for a directory with at most `rights`.
    pub fn dir(name: &str, rights: Rights, about: &str) -> Request {
        Request {
            name: name.into(),
            wants: Wants::Dir(rights),
            optional: false,
            about: about.into(),
        }
    }

    /// A request for a listen right.
    pub fn listen(name: &str, about: &str) -> Request {
        Request {
            name: name.into(),
            wants: Wants::Listen,
            optional: false,
            about: about.into(),
        }
    }

    /// A request for a connect right.
    pub fn connect(name: &str, about: &str) -> Request {
        Request {
            name: name.into(),
            wants: Wants::Connect,
            optional: false,
            about: about.into(),
        }
    }

    /// A request for a UDP right.
    pub fn udp(name: &str, about: &str) -> Request {
        Request {
            name: name.into(),
            wants: Wants::Udp,
            optional: false,
            about: about.into(),
        }
    }

    /// A request for a spawner.
    pub fn spawner(name: &str, about: &str) -> Request {
        Request {
            name: name.into(),
            wants: Wants::Spawner,
            optional: false,
            about: about.into(),
        }
    }

    /// The same request, marked optional.
    pub fn optional(mut self) -> Request {
        self.optional = true;
        self
    }
}

/// The handles granted to this component, to take out by name.
pub struct Grants(Vec<Grant>);

impl Grants {
    /// Takes over the handles granted to this component (see the WIT
    /// `grants.granted`): the first call gets them all, later calls none.
    pub fn granted() -> Grants {
        Grants(granted())
    }
}

impl From<Vec<Grant>> for Grants {
    fn from(g: Vec<Grant>) -> Self {
        Grants(g)
    }
}

impl Grants {
    /// Takes the handle granted as `name`, if it was granted.
    pub fn take(&mut self, name: &str) -> Option<Handle> {
        let i = self.0.iter().position(|g| g.name == name)?;
        Some(self.0.swap_remove(i).handle)
    }

    /// Takes the handle granted as `name` if `pick` accepts its kind; a
    /// handle of another kind stays for a later taker. Failing with an
    /// error that names the grant, rather than `None`, lets `run` be a
    /// chain of `?` whose failure already says which grant was missing.
    fn take_as<T>(
        &mut self,
        name: &str,
        kind: &'static str,
        pick: impl FnOnce(Handle) -> Result<T, Handle>,
    ) -> Result<T, Error> {
        let missing = || Error::not_granted(name, kind);
        match pick(self.take(name).ok_or_else(missing)?) {
            Ok(t) => Ok(t),
            Err(other) => {
                self.0.push(Grant {
                    name: name.into(),
                    handle: other,
                });
                Err(missing())
            }
        }
    }

    /// Takes the directory granted as `name`; fails with "no directory
    /// granted as `name`" otherwise.
    pub fn dir(&mut self, name: &str) -> Result<Dir, Error> {
        self.take_as(name, "directory", |h| match h {
            Handle::Dir(d) => Ok(Dir::from_raw(d)),
            other => Err(other),
        })
    }

    /// Takes the listen right granted as `name`.
    pub fn listen(&mut self, name: &str) -> Result<ListenRight, Error> {
        self.take_as(name, "listen right", |h| match h {
            Handle::Listen(l) => Ok(l),
            other => Err(other),
        })
    }

    /// Takes the connect right granted as `name`.
    pub fn connect(&mut self, name: &str) -> Result<ConnectRight, Error> {
        self.take_as(name, "connect right", |h| match h {
            Handle::Connect(c) => Ok(c),
            other => Err(other),
        })
    }

    /// Takes the UDP right granted as `name`.
    pub fn udp(&mut self, name: &str) -> Result<UdpRight, Error> {
        self.take_as(name, "UDP right", |h| match h {
            Handle::Udp(u) => Ok(u),
            other => Err(other),
        })
    }

    /// Takes the TCP stream shared as `name`.
    pub fn tcp_stream(&mut self, name: &str) -> Result<TcpStream, Error> {
        self.take_as(name, "TCP stream", |h| match h {
            Handle::TcpStream(s) => Ok(s),
            other => Err(other),
        })
    }

    /// Takes the spawner granted as `name`.
    pub fn spawner(&mut self, name: &str) -> Result<Spawner, Error> {
        self.take_as(name, "spawner", |h| match h {
            Handle::Spawner(s) => Ok(s),
            other => Err(other),
        })
    }

    /// The names of the grants not yet taken.
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|g| g.name.as_str()).collect()
    }
}

impl WitError {
    /// The WIT case name, e.g. `denied`.
    pub fn code(&self) -> &'static str {
        match self {
            WitError::Denied(_) => "denied",
            WitError::Escape(_) => "escape",
            WitError::NotFound(_) => "not-found",
            WitError::Exists(_) => "exists",
            WitError::NotDirectory(_) => "not-directory",
            WitError::IsDirectory(_) => "is-directory",
            WitError::NotEmpty(_) => "not-empty",
            WitError::Invalid(_) => "invalid",
            WitError::LimitExceeded(_) => "limit-exceeded",
            WitError::Io(_) => "io",
            WitError::Revoked => "revoked",
            WitError::Refused(_) => "refused",
        }
    }

    /// The payload as text: the missing rights, the path or the message;
    /// empty for `revoked`.
    pub fn detail(&self) -> String {
        match self {
            WitError::Denied(r) => rights_list(*r),
            WitError::Escape(s)
            | WitError::NotFound(s)
            | WitError::Exists(s)
            | WitError::NotDirectory(s)
            | WitError::IsDirectory(s)
            | WitError::NotEmpty(s)
            | WitError::Invalid(s)
            | WitError::LimitExceeded(s)
            | WitError::Io(s)
            | WitError::Refused(s) => s.clone(),
            WitError::Revoked => String::new(),
        }
    }

    /// The error as a sentence, e.g. "denied: the handle lacks write".
    /// (wit-bindgen's `Display` for it is its `Debug` form.)
    pub fn message(&self) -> String {
        match self {
            WitError::Denied(r) => format!("denied: the handle lacks {}", rights_list(*r)),
            WitError::Escape(p) => format!("escape: `{p}` leads outside the handle"),
            WitError::NotFound(p) => format!("not found: `{p}`"),
            WitError::Exists(p) => format!("exists: `{p}`"),
            WitError::NotDirectory(p) => format!("not a directory: `{p}`"),
            WitError::IsDirectory(p) => format!("is a directory: `{p}`"),
            WitError::NotEmpty(p) => format!("directory not empty: `{p}`"),
            WitError::Invalid(m) => format!("invalid: {m}"),
            WitError::LimitExceeded(m) => format!("limit exceeded: {m}"),
            WitError::Io(m) => format!("i/o error: {m}"),
            WitError::Revoked => "revoked: the handle was revoked".to_string(),
            WitError::Refused(m) => format!("refused: {m}"),
        }
    }
}

impl Spawner {
    /// Starts `component` with `input`, sharing copies of `grants`.
    pub fn spawn(
        &self,
        component: &str,
        grants: &[Share<'_>],
        limits: Limits,
        input: &[u8],
    ) -> Result<Process, Error> {
        Ok(spawn(self, component, None, grants, limits, input)?)
    }
}

/// Every right with the name the WIT and the command line give it.
pub const RIGHT_NAMES: [(Rights, &str); 5] = [
    (Rights::READ, "read"),
    (Rights::WRITE, "write"),
    (Rights::CREATE, "create"),
    (Rights::LIST, "list"),
    (Rights::REMOVE, "remove"),
];

/// Describes rights as the command line spells them, e.g. `read,list`.
pub fn rights_list(r: Rights) -> String {
    let v: Vec<&str> = RIGHT_NAMES
        .iter()
        .filter(|(x, _)| r.contains(*x))
        .map(|(_, n)| *n)
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}
