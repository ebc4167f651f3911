//! Standard `wasi:filesystem` for plain WASI programs, through capbroker's
//! rights, `pledge` and `unveil`.
//!
//! wasmtime-wasi does the file-system work; this layer stands in front of
//! every `wasi:filesystem/types` call and asks the authority core
//! ([`crate::fs::authority::decide`]) first, as capbroker's own `fs` interface
//! does. Each descriptor the guest holds is a node: the root (a preopen, or
//! a capbroker handle turned into a descriptor) it descends from, its path
//! below that root, and a [`Gate`] with the capbroker rights it still has.
//! Streams and listings opened from a descriptor share its gate, so
//! narrowing the descriptor narrows them too, whatever became of the
//! descriptor. Gates are only ever narrowed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_primitives::fs::FollowSymlinks;
use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::{Descriptor, Dir as WasiDir, File as WasiFile, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::preopens;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult};
use wasmtime_wasi::{FsPerms, OpenMode};

use crate::core::audit::Audit;
use crate::core::gate::Gate;
use crate::core::pledges::{Holders, Pledges};
use crate::core::streams::guard;
use crate::core::view::WasiFace;
use crate::core::{Error, Rights};
use crate::fs::authority::{decide, wasi_code, Allowed, Op, OpenIntent, Subject};
use crate::fs::join_below as join;
use crate::fs::{location, open_scope, DirGrant, DirHandle, ScopeEntry};
use wasmtime::error::Context as _;

/// A directory descriptors descend from: a preopen the operator granted,
/// or a capbroker handle turned into a descriptor.
struct Root {
    /// The guest path of a preopen; `None` for a converted handle, which
    /// `get-directories` does not list and `unveil` cannot name.
    guest_path: Option<String>,
    dir: cap_std::fs::Dir,
    /// The most any descriptor under this root may hold from now on.
    gate: Gate,
    unveiled: Option<Unveiled>,
    /// `[dir.NAME.paths]`: the only paths below the root that may be
    /// reached, each through a descriptor of its own.
    scope: Option<Scope>,
    /// For a converted handle, the most any handle of its grant may hold
    /// (the guest may keep a stronger one); a preopen's is its gate.
    ceiling: Option<Rights>,
    /// The rights of other grants whose directories overlap this one's.
    beside: Rights,
    /// Descriptors that descend from it; a converted handle's root is
    /// closed with its last one.
    users: usize,
    /// Descriptors of it that `get-directories` handed out and the guest
    /// still holds; once they are all dropped, it is not handed out again.
    handed: usize,
    given_up: bool,
}

/// A preopen narrowed to some paths: the entries, opened at grant time
/// without following links (see [`crate::fs::ScopeEntry`]), and for each a
/// descriptor in the table, made when the guest first asks for preopens.
struct Scope {
    entries: Arc<[ScopeEntry]>,
    reps: Vec<u32>,
}

impl Scope {
    /// The deepest entry containing `full`, if any.
    fn entry(&self, full: &Path) -> Option<usize> {
        (0..self.entries.len())
            .filter(|&i| full.starts_with(&self.entries[i].path))
            .max_by_key(|&i| self.entries[i].path.components().count())
    }

    /// What the entries give, together.
    fn rights_of_all(&self) -> Rights {
        self.entries
            .iter()
            .fold(Rights::empty(), |r, e| r | e.rights)
    }

    /// Whether `full` lies on the way to an entry.
    fn above(&self, full: &Path) -> bool {
        self.entries.iter().any(|e| e.path.starts_with(full))
    }
}

/// The part of a root left visible by `unveil`.
struct Unveiled {
    /// Below the root.
    path: PathBuf,
    /// The directory itself, opened through the view before it (so that a
    /// link inside the old view cannot lead the new one out).
    dir: cap_std::fs::Dir,
    /// A descriptor for `dir`, kept in the table (never given to the
    /// guest): paths from descriptors above it resolve through it.
    rep: u32,
}

/// A descriptor the guest holds.
struct Node {
    root: usize,
    path: PathBuf,
    gate: Gate,
    /// Above an unveiled part: only a way to reach into it by path; its
    /// own contents and metadata are hidden.
    transit: bool,
    /// Handed out by `get-directories`.
    preopen: bool,
}

/// What is left of a dropped descriptor whose streams or listings live on:
/// where it was and what it was, so that `unveil` still reaches them.
struct Orphan {
    root: usize,
    path: PathBuf,
    gate: Gate,
    id: Option<(u64, u64)>,
}

/// The file-system state of one instance.
#[derive(Default)]
pub struct WasiFs {
    roots: HashMap<usize, Root>,
    next_root: usize,
    nodes: HashMap<u32, Node>,
    /// Each listing's gate, and the bytes of its entries the host holds,
    /// counted against the instance's memory.
    listings: HashMap<u32, (Gate, usize)>,
    orphans: Vec<Orphan>,
}

impl WasiFs {
    fn add_root(&mut self, root: Root) -> usize {
        let id = self.next_root;
        self.next_root += 1;
        self.roots.insert(id, root);
        id
    }

    /// Adds a preopen at `guest_path` for the operator's grant. With
    /// `[dir.NAME.paths]`, each listed path is opened now and every path
    /// the guest uses resolves through one of them. `beside` are the rights
    /// of other grants that overlap this one (see [`crate::fs::beside`]).
    pub fn preopen(
        &mut self,
        guest_path: &str,
        grant: &DirGrant,
        beside: Rights,
    ) -> wasmtime::Result<()> {
        // Two preopens by one name (`/data`, `/data/`, `data` and `./data`
        // too, as wasi-libc reads them) would leave which one a path, or an
        // `unveil`, means to the order of a map.
        let same = |other: &str| libc_name(other) == libc_name(guest_path);
        if self
            .roots
            .values()
            .any(|r| r.guest_path.as_deref().is_some_and(same))
        {
            wasmtime::bail!("two directories are granted at the guest path `{guest_path}`");
        }
        let dir = grant.open()?;
        let scope = match &grant.paths {
            None => None,
            Some(paths) => Some(Scope {
                entries: open_scope(&dir, paths)
                    .with_context(|| format!("grant `{guest_path}`"))?,
                reps: Vec::new(),
            }),
        };
        self.add_root(Root {
            guest_path: Some(guest_path.to_string()),
            dir,
            gate: Gate::new(grant.rights),
            unveiled: None,
            scope,
            ceiling: None,
            beside,
            users: 0,
            handed: 0,
            given_up: false,
        });
        Ok(())
    }

    /// Takes every right from every descriptor, stream and listing, and
    /// from the preopens themselves. (The pledge itself already closes
    /// every gate that answers to it; this makes it hold without it.)
    pub fn renounce(&mut self) {
        for root in self.roots.values() {
            root.gate.narrow(Rights::empty());
        }
        for node in self.nodes.values() {
            node.gate.narrow(Rights::empty());
        }
        for (gate, _) in self.listings.values() {
            gate.narrow(Rights::empty());
        }
        for orphan in &self.orphans {
            orphan.gate.narrow(Rights::empty());
        }
    }

    /// Narrows root `id`, every descriptor from it and what their streams
    /// and listings share, to `keep`.
    fn narrow_root(&mut self, id: usize, keep: Rights) {
        if let Some(root) = self.roots.get(&id) {
            root.gate.narrow(keep);
        }
        for node in self.nodes.values().filter(|n| n.root == id) {
            node.gate.narrow(keep);
        }
        for orphan in self.orphans.iter().filter(|o| o.root == id) {
            orphan.gate.narrow(keep);
        }
    }

    /// The most any descriptor or handle of root `root`'s grant may hold at
    /// `full`: what a file linked or renamed there could be used with.
    fn ceiling(&self, root: usize, _full: &Path) -> Rights {
        let Some(root) = self.roots.get(&root) else {
            return Rights::all();
        };
        let most = root.ceiling.unwrap_or_else(|| root.gate.rights());
        // Any of a scope's paths: a renamed directory or a link can make a
        // path that reads as one entry's land in another's directory.
        let own = match &root.scope {
            Some(scope) => scope.rights_of_all() & most,
            None => most,
        };
        own | root.beside
    }

    /// The name a root goes by in the audit trail.
    fn label(&self, root: usize) -> &str {
        self.roots
            .get(&root)
            .and_then(|r| r.guest_path.as_deref())
            .unwrap_or("wasi descriptor")
    }

    fn node(&self, fd: &Resource<Descriptor>) -> Result<&Node, ErrorCode> {
        self.nodes.get(&fd.rep()).ok_or(ErrorCode::BadDescriptor)
    }

    fn insert_node(&mut self, rep: u32, node: Node) {
        if let Some(root) = self.roots.get_mut(&node.root) {
            root.users += 1;
            root.handed += usize::from(node.preopen);
        }
        self.nodes.insert(rep, node);
    }

    /// Forgets descriptor `rep`, which the guest dropped; keeps what
    /// `unveil` needs while its streams or listings live; closes a
    /// converted handle's root with its last descriptor.
    fn forget(&mut self, rep: u32, id: Option<(u64, u64)>) {
        let Some(node) = self.nodes.remove(&rep) else {
            return;
        };
        self.orphans.retain(|o| o.gate.shared());
        if node.gate.shared() {
            self.orphans.push(Orphan {
                root: node.root,
                path: node.path,
                gate: node.gate,
                id,
            });
        }
        if let Some(root) = self.roots.get_mut(&node.root) {
            root.users -= 1;
            if node.preopen {
                root.handed -= 1;
                // Dropped for good: asking again gets nothing back.
                root.given_up |= root.handed == 0;
            }
            if root.users == 0 && root.guest_path.is_none() {
                self.roots.remove(&node.root);
            }
        }
    }
}

fn path_str(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        ".".to_string()
    } else {
        p.to_string_lossy().into_owned()
    }
}

/// Where a path operation really goes: a descriptor and a path below it.
struct Route {
    fd: u32,
    path: String,
    /// The guest-visible path below the root, for the new node.
    full: PathBuf,
    root: usize,
    /// A scope entry's own name: its last component is never followed.
    exact: bool,
    /// On the way to a scope's paths, not in one: a descriptor opened
    /// there only leads on.
    transit: bool,
}

/// The device and inode of a descriptor in the table.
fn identity(table: &wasmtime::component::ResourceTable, rep: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match table.get(&Resource::<Descriptor>::new_borrow(rep)).ok()? {
        Descriptor::File(f) => f.file.metadata(),
        Descriptor::Dir(d) => d.dir.metadata(),
    };
    meta.ok().map(|m| (m.dev(), m.ino()))
}

impl WasiFs {
    /// Where a path from `node` lands and the rights held there, or why it
    /// may not go there: outside an unveiled part or a scope it is refused.
    fn route_of(&self, rep: u32, node: &Node, path: &str) -> Result<(Route, Rights), Error> {
        let full = join(&node.path, path).ok_or_else(|| Error::Escape(path.into()))?;
        let root = self.roots.get(&node.root).ok_or(Error::Revoked)?;
        if let Some(scope) = &root.scope {
            return scope_route(scope, rep, node, path, full);
        }
        let via = match &root.unveiled {
            None => (rep, path.to_string()),
            Some(u) => {
                if !full.starts_with(&u.path) {
                    return Err(Error::Refused(format!(
                        "`{path}` lies outside what was unveiled"
                    )));
                }
                if node.path.starts_with(&u.path) && !node.transit {
                    (rep, path.to_string())
                } else {
                    let rel = full.strip_prefix(&u.path).expect("checked above");
                    (u.rep, path_str(rel))
                }
            }
        };
        Ok((
            Route {
                fd: via.0,
                path: via.1,
                full,
                root: node.root,
                exact: false,
                transit: false,
            },
            Rights::all(),
        ))
    }

    /// Narrows the root at `guest_path` to `sub` and `rights`: see the WIT
    /// `pledge.unveil`.
    pub fn unveil(
        &mut self,
        table: &mut wasmtime::component::ResourceTable,
        guest_path: &str,
        sub: &str,
        rights: Rights,
    ) -> Result<(), Error> {
        let (&i, root) = self
            .roots
            .iter()
            .find(|(_, r)| {
                r.guest_path
                    .as_deref()
                    .is_some_and(|p| libc_name(p) == libc_name(guest_path))
            })
            .ok_or_else(|| Error::NotFound(guest_path.to_string()))?;
        let missing = rights & !root.gate.rights();
        if missing != Rights::empty() {
            return Err(Error::Denied(missing));
        }
        if root.scope.is_some() {
            return Err(Error::Refused(format!(
                "`{guest_path}` is narrowed to some paths by the operator; unveil one of \
                 them through a preopen of its own"
            )));
        }
        let (base, view) = match &root.unveiled {
            Some(u) => (u.path.clone(), &u.dir),
            None => (PathBuf::new(), &root.dir),
        };
        let path = join(&base, sub)
            .filter(|p| p.starts_with(&base))
            .ok_or_else(|| Error::Escape(sub.to_string()))?;
        // Opened through the current view: nothing inside it, a link
        // included, leads the new view out of the old one.
        let rel = path.strip_prefix(&base).expect("checked above");
        let dir = if rel.as_os_str().is_empty() {
            view.try_clone()
        } else {
            view.open_dir(rel)
        }
        .map_err(|e| Error::from_io(&e, sub))?;
        let descriptor = Descriptor::Dir(WasiDir::new(
            dir.try_clone()
                .map_err(|e| Error::from_io(&e, sub))?
                .into_std_file(),
            perms(rights),
            open_mode(rights),
            false,
        ));
        let rep = table
            .push(descriptor)
            .map_err(|e| Error::LimitExceeded(e.to_string()))?
            .rep();
        let inside = |node_path: &Path, id: Option<(u64, u64)>| -> bool {
            use cap_std::fs::MetadataExt as _;
            let Ok(rel) = node_path.strip_prefix(&path) else {
                return false;
            };
            let there = if rel.as_os_str().is_empty() {
                dir.dir_metadata()
            } else {
                dir.metadata(rel)
            };
            matches!((id, there), (Some(a), Ok(b)) if a == (b.dev(), b.ino()))
        };
        for (node_rep, node) in self.nodes.iter_mut().filter(|(_, n)| n.root == i) {
            let id = identity(table, *node_rep);
            if inside(&node.path, id) {
                node.gate.narrow(rights);
            } else if path.starts_with(&node.path) {
                // Above the new view: from now on only a way into it. Its
                // old gate, and listings that share it, close.
                node.gate.narrow(Rights::empty());
                node.gate = node.gate.derive(rights);
                node.transit = true;
            } else {
                // Outside it, or reached there through a link that leads
                // out: closed.
                node.gate.narrow(Rights::empty());
            }
        }
        self.orphans.retain(|o| o.gate.shared());
        for orphan in self.orphans.iter().filter(|o| o.root == i) {
            if inside(&orphan.path, orphan.id) {
                orphan.gate.narrow(rights);
            } else {
                orphan.gate.narrow(Rights::empty());
            }
        }
        // Other preopens of directories inside this one reach its files
        // too (a nested guest path like `/data/secret` resolves through
        // them): those inside the new view keep at most `rights`, the
        // others close. Compared as the host resolves them; what cannot
        // be resolved closes.
        let id_of = |d: &cap_std::fs::Dir| {
            use cap_std::fs::MetadataExt as _;
            d.dir_metadata().ok().map(|m| (m.dev(), m.ino()))
        };
        let (root_id, view_id) = (id_of(&self.roots[&i].dir), id_of(&dir));
        // And by place in the file system, which a bind mount's `..` hides
        // from the walk up (see `crate::fs::location`).
        let (root_place, view_place) = (location(&self.roots[&i].dir), location(&dir));
        // The guest paths the program names these places by: a preopen at
        // `/data/cache` (or `data/cache`) is one of `/data`'s paths,
        // wherever its directory.
        let guest_root = libc_name(guest_path);
        let guest_view = guest_root.join(&path);
        let others: Vec<(usize, Rights)> = self
            .roots
            .iter()
            .filter(|(&o, r)| o != i && r.guest_path.is_some())
            .filter_map(|(&o, r)| {
                let name = libc_name(r.guest_path.as_deref().unwrap_or(""));
                let named_inside = name.starts_with(&guest_root);
                // Where the other preopen's directory is now, by identity.
                let chain = ancestry_of(&r.dir);
                let under = |id: Option<(u64, u64)>| id.is_some_and(|id| chain.contains(&id));
                let place = location(&r.dir);
                let placed = |outer: &Option<(u64, PathBuf)>| match (outer, &place) {
                    (Some((d, outer)), Some((e, p))) => d == e && p.starts_with(outer),
                    _ => false,
                };
                let lies_inside = chain.is_empty() || under(root_id) || placed(&root_place);
                if !named_inside && !lies_inside {
                    return None;
                }
                let in_view = (!named_inside || name.starts_with(&guest_view))
                    && (!lies_inside || under(view_id) || placed(&view_place));
                Some((o, if in_view { rights } else { Rights::empty() }))
            })
            .collect();
        for (o, keep) in others {
            self.narrow_root(o, keep);
        }
        let root = self.roots.get_mut(&i).expect("found above");
        root.gate.narrow(rights);
        if let Some(old) = root.unveiled.replace(Unveiled {
            path: path.clone(),
            dir,
            rep,
        }) {
            let _ = table.delete(Resource::<Descriptor>::new_own(old.rep));
        }
        Ok(())
    }
}

/// Where `full` (reached from `node` by `path`) goes in a scoped root: the
/// deepest entry containing it decides the descriptor and the rights; a
/// path on the way to an entry holds no rights (it may only be opened as a
/// directory to go on); anything else is refused.
fn scope_route(
    scope: &Scope,
    rep: u32,
    node: &Node,
    path: &str,
    full: PathBuf,
) -> Result<(Route, Rights), Error> {
    let route = |fd, path, exact, transit| Route {
        fd,
        path,
        full: full.clone(),
        root: node.root,
        exact,
        transit,
    };
    let Some(i) = scope.entry(&full) else {
        if scope.above(&full) {
            // By the text the scope judged (`..` taken by its text), so that
            // no name the path passes on the way is looked up: a hidden
            // `secret` in `secret/../a` must not tell by its error that it
            // is there.
            let text = match full.strip_prefix(&node.path) {
                Ok(rest) => path_str(rest),
                Err(_) => path.to_string(),
            };
            return Ok((route(rep, text, false, true), Rights::empty()));
        }
        return Err(Error::Denied(Rights::all()));
    };
    let entry = &scope.entries[i];
    let fd = *scope
        .reps
        .get(i)
        .ok_or_else(|| Error::Refused("the preopens were not asked for yet".into()))?;
    let rest = full.strip_prefix(&entry.path).expect("a prefix");
    let to = match &entry.name {
        None => route(fd, path_str(rest), false, false),
        Some(name) if rest.as_os_str().is_empty() => {
            route(fd, name.to_string_lossy().into_owned(), true, false)
        }
        // Below a path listed as a file (or not made at grant time).
        Some(_) => return Err(Error::Denied(Rights::all())),
    };
    Ok((to, entry.rights))
}

fn perms(rights: Rights) -> FsPerms {
    if rights & (Rights::WRITE | Rights::CREATE | Rights::REMOVE) != Rights::empty() {
        FsPerms::ReadWrite
    } else {
        FsPerms::ReadOnly
    }
}

fn open_mode(rights: Rights) -> OpenMode {
    if rights & (Rights::WRITE | Rights::CREATE | Rights::REMOVE) != Rights::empty() {
        OpenMode::READ | OpenMode::WRITE
    } else {
        OpenMode::READ
    }
}

/// What an `open-at` asks for. wasmtime opens a file it may create for
/// writing, so `create` counts as a write.
fn open_intent(oflags: types::OpenFlags, flags: types::DescriptorFlags) -> Op {
    use types::{DescriptorFlags as D, OpenFlags as O};
    // Changes through a directory descriptor are decided one by one.
    let write = flags.contains(D::WRITE) || oflags.intersects(O::TRUNCATE | O::CREATE);
    if oflags.contains(O::DIRECTORY) && !write {
        // A directory descriptor is a way in; listing it needs `list`.
        return Op::Hold;
    }
    Op::Open(OpenIntent {
        // Opened neither way, wasmtime opens a file for reading.
        read: flags.contains(D::READ) || !write,
        write,
        create: oflags.contains(O::CREATE),
        exclusive: oflags.contains(O::EXCLUSIVE),
    })
}

/// The guarded view the `wasi:filesystem` host functions work through.
pub type FsView<'a> = WasiFace<'a, WasiFs>;

fn borrow(rep: u32) -> Resource<Descriptor> {
    Resource::new_borrow(rep)
}

/// wasmtime-wasi traps when it cannot put a new descriptor, stream or
/// listing in a full table; for the guest that is a limit it reached, and
/// a limit is an error value, never a trap.
fn full_is_error(e: FsError) -> FsError {
    match e.downcast() {
        Ok(code) => code.into(),
        Err(trap) => match trap.downcast_ref::<wasmtime::component::ResourceTableError>() {
            Some(wasmtime::component::ResourceTableError::Full) => {
                ErrorCode::InsufficientMemory.into()
            }
            _ => FsError::trap(trap),
        },
    }
}

/// The identities of an open directory and of those above it now (see
/// [`crate::fs::ancestry`]).
fn ancestry_of(dir: &cap_std::fs::Dir) -> Vec<(u64, u64)> {
    use std::os::unix::io::AsRawFd;
    crate::fs::ancestry(Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())))
}

/// The directory of descriptor `rep`, for calls capbroker makes itself.
fn dir_of(
    table: &wasmtime::component::ResourceTable,
    rep: u32,
) -> Result<cap_std::fs::Dir, ErrorCode> {
    match table.get(&borrow(rep)) {
        Ok(Descriptor::Dir(d)) => Ok(cap_std::fs::Dir::from_std_file(
            d.dir.try_clone().map_err(ErrorCode::from)?,
        )),
        Ok(Descriptor::File(_)) => Err(ErrorCode::NotDirectory),
        Err(_) => Err(ErrorCode::BadDescriptor),
    }
}

/// A preopen's name as wasi-libc matches paths against it: leading `/`
/// and `./` dropped, `.` the empty name, so that `/data`, `data/`, `./data`
/// are one name and `/` and `.` are the prefix of every path.
pub(crate) fn libc_name(guest_path: &str) -> PathBuf {
    Path::new(guest_path)
        .components()
        .filter(|c| {
            !matches!(
                c,
                std::path::Component::RootDir | std::path::Component::CurDir
            )
        })
        .collect()
}

/// The directory behind the descriptor `rep`, and the perms it was
/// preopened with.
fn parent_dir(
    table: &wasmtime::component::ResourceTable,
    rep: u32,
) -> Result<(Arc<std::fs::File>, FsPerms), ErrorCode> {
    match table.get(&borrow(rep)) {
        Ok(Descriptor::Dir(d)) => Ok((d.dir.clone(), d.perms)),
        Ok(Descriptor::File(_)) => Err(ErrorCode::NotDirectory),
        Err(_) => Err(ErrorCode::BadDescriptor),
    }
}

/// Opens `path` below the directory `parent` as wasmtime-wasi's
/// `open-at` does, except that it can never block: a FIFO or a device
/// known beforehand is not even opened (opening a device can act), and one
/// swapped in after that look is opened with `O_NONBLOCK` and then
/// refused, so that only a regular file or a directory is kept. Either
/// would otherwise hold a host thread in the kernel's open for good (and, a
/// few hundred times over, every thread the runtime has for file I/O).
///
/// The look, the open and the check of what was opened run in one trip to
/// a blocking thread, relative to `parent` itself (both confined as
/// cap-std confines every path).
///
/// (`O_NONBLOCK` changes nothing for a regular file or a directory on
/// Linux, so what is kept is used as wasmtime-wasi would use its own.)
async fn open_nonblocking(
    (parent, perms): (Arc<std::fs::File>, FsPerms),
    path_flags: types::PathFlags,
    path: String,
    oflags: types::OpenFlags,
    flags: types::DescriptorFlags,
) -> Result<Descriptor, ErrorCode> {
    use cap_std::fs::OpenOptionsExt as _;
    use types::{DescriptorFlags as D, OpenFlags as O, PathFlags as P};
    let mut opts = cap_std::fs::OpenOptions::new();
    opts._cap_fs_ext_maybe_dir(true);
    let mut mode = OpenMode::empty();
    if oflags.contains(O::CREATE) {
        if oflags.contains(O::EXCLUSIVE) {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        opts.write(true);
        mode |= OpenMode::WRITE;
    }
    if oflags.contains(O::TRUNCATE) {
        opts.truncate(true).write(true);
        mode |= OpenMode::WRITE;
    }
    if flags.contains(D::READ) {
        opts.read(true);
        mode |= OpenMode::READ;
    }
    if flags.contains(D::WRITE) {
        opts.write(true);
        mode |= OpenMode::WRITE;
    } else {
        // Opened for reading, as wasmtime-wasi does; the perms decide use.
        opts.read(true);
        mode |= OpenMode::READ;
    }
    let follow = if path_flags.contains(P::SYMLINK_FOLLOW) {
        FollowSymlinks::Yes
    } else {
        opts._cap_fs_ext_follow(FollowSymlinks::No);
        FollowSymlinks::No
    };
    // Checked after the look for a FIFO or a device, as they were when
    // that look was a call of its own.
    let valid = if flags
        .intersects(D::FILE_INTEGRITY_SYNC | D::DATA_INTEGRITY_SYNC | D::REQUESTED_WRITE_SYNC)
    {
        Err(ErrorCode::Unsupported)
    } else if oflags.contains(O::DIRECTORY)
        && oflags.intersects(O::CREATE | O::EXCLUSIVE | O::TRUNCATE)
    {
        Err(ErrorCode::Invalid)
    } else if perms.write_not_permitted() && mode.contains(OpenMode::WRITE) {
        Err(ErrorCode::NotPermitted)
    } else {
        Ok(())
    };
    opts.custom_flags(libc::O_NONBLOCK);
    let want_dir = oflags.contains(O::DIRECTORY);
    let opened = tokio::task::spawn_blocking(move || {
        let path = Path::new(&path);
        if let Ok(st) = cap_primitives::fs::stat(&parent, path, follow) {
            let kind = st.file_type();
            if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
                return Err(ErrorCode::Invalid);
            }
        }
        valid?;
        let io = |e: std::io::Error| ErrorCode::from(&e);
        let file = cap_primitives::fs::open(&parent, path, &opts).map_err(io)?;
        let kind = file.metadata().map_err(io)?.file_type();
        if !kind.is_dir() && !kind.is_file() {
            return Err(ErrorCode::Invalid);
        }
        Ok((file, kind.is_dir()))
    })
    .await
    .map_err(|_| ErrorCode::Io)?;
    let (file, is_dir) = opened?;
    if is_dir {
        Ok(Descriptor::Dir(WasiDir::new(file, perms, mode, false)))
    } else if want_dir {
        Err(ErrorCode::NotDirectory)
    } else {
        Ok(Descriptor::File(WasiFile::new(file, perms, mode, false)))
    }
}

/// A scope entry's own name is never followed if it is a link: the link
/// would resolve in the entry's parent, where the scope may hide things.
fn follow_unless_exact(flags: types::PathFlags, route: &Route) -> types::PathFlags {
    if route.exact {
        flags & !types::PathFlags::SYMLINK_FOLLOW
    } else {
        flags
    }
}

/// The one right of `held` that gives the least: names before contents,
/// contents before changes.
fn least(held: Rights) -> Rights {
    [
        Rights::LIST,
        Rights::READ,
        Rights::CREATE,
        Rights::WRITE,
        Rights::REMOVE,
    ]
    .into_iter()
    .find(|r| held.contains(*r))
    .unwrap_or(Rights::empty())
}

/// A decision on one descriptor: where its path goes (for path calls) and
/// what was allowed.
struct Decided {
    route: Option<Route>,
    allowed: Allowed,
}

impl FsView<'_> {
    /// Asks the authority core about `op` through `fd`, on `path` or (for
    /// `None`) on the descriptor itself. A refusal comes back as the error
    /// code wasmtime would give for it.
    fn decide(
        &self,
        name: &str,
        fd: &Resource<Descriptor>,
        op: Op,
        path: Option<&str>,
    ) -> Result<Decided, ErrorCode> {
        let node = self.kind.node(fd)?;
        let label = self.kind.label(node.root);
        // Paths through a scoped preopen go by the scope alone (they all
        // resolve through its own descriptors); what the descriptor itself
        // may do is its own.
        let held = match (path, self.kind.roots.get(&node.root)) {
            (Some(_), Some(root)) if root.scope.is_some() => root.gate.rights(),
            _ => node.gate.rights(),
        };
        let who = Subject {
            label,
            lineage: &node.gate.lineage,
            held,
            pledges: &self.core.pledges,
            holders: &node.gate.holders,
            audit: &self.core.audit,
        };
        let (route, allowed) = decide(
            &who,
            name,
            op,
            path.unwrap_or("."),
            || match path {
                Some(path) => {
                    let (route, there) = self.kind.route_of(fd.rep(), node, path)?;
                    // On the way to a scope's paths: only as a way in.
                    let there = if route.transit && op == Op::Hold {
                        Rights::all()
                    } else {
                        there
                    };
                    Ok((Some(route), there))
                }
                // Holding it (its type, its flags, a sync) shows nothing
                // below: the preview 1 adapter asks each preopen's type.
                None if node.transit && op == Op::Hold => Ok((None, Rights::all())),
                None if node.transit => Err(Error::Refused(
                    "the directory lies above what was unveiled".into(),
                )),
                None => Ok((None, Rights::all())),
            },
            |_| {},
        )
        .map_err(|e| wasi_code(op, &e))?;
        // Holding a descriptor uses none of its rights: a descriptor's own
        // calls (`get-type`, `get-flags`, `sync`, which the preview 1
        // adapter makes on every file it opens and every preopen) learn
        // nothing, and a directory opened as a way in is learned with the
        // least right that opens it again.
        let used = match (op, path) {
            (Op::Hold, None) => Rights::empty(),
            (Op::Hold, Some(_)) => least(allowed.held),
            _ => allowed.used,
        };
        self.learn(node, route.as_ref(), path, used);
        Ok(Decided { route, allowed })
    }

    /// Notes, for learning mode, that `used` was used on what `path` (or
    /// the descriptor itself) names, below its preopen. A path with `..` is
    /// not learned: the host resolved it through whatever links lie before
    /// it, so its text may not name what was used (the next run then
    /// refuses it, rather than grant another file).
    fn learn(&self, node: &Node, route: Option<&Route>, path: Option<&str>, used: Rights) {
        let Some(learner) = &self.core.learner else {
            return;
        };
        let climbs = path.is_some_and(|p| {
            std::path::Path::new(p)
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        });
        let root = self.kind.roots.get(&node.root);
        let Some(grant) = root.and_then(|r| r.guest_path.as_deref()) else {
            return;
        };
        if climbs || node.transit {
            return;
        }
        let at = route.map_or_else(|| node.path.clone(), |r| r.full.clone());
        // The root itself can only be listed and looked at: a write,
        // create or remove through its own name never succeeds (a write
        // to `/uploads` is "is a directory"), and learning it would grant
        // them over the whole folder.
        let used = if at.as_os_str().is_empty() || at == std::path::Path::new(".") {
            used & (Rights::READ | Rights::LIST)
        } else {
            used
        };
        learner.dir(grant, at, used);
    }

    fn on_path(
        &self,
        name: &str,
        fd: &Resource<Descriptor>,
        op: Op,
        path: &str,
    ) -> Result<Route, ErrorCode> {
        let d = self.decide(name, fd, op, Some(path))?;
        Ok(d.route.expect("a path call has a route"))
    }

    /// Records, as refused, a path call that capbroker's check let
    /// through and the host's own resolution then refused as not
    /// permitted: a link leading out of the grant (cap-std stops it
    /// beneath the preopen) or the system's own permissions.
    fn host_refused<T>(
        &self,
        name: &str,
        fd: &Resource<Descriptor>,
        path: &str,
        result: FsResult<T>,
    ) -> FsResult<T> {
        if let Err(e) = &result {
            if e.downcast_ref() == Some(&ErrorCode::NotPermitted) {
                if let Ok(node) = self.kind.node(fd) {
                    let err = Error::Refused(
                        "the host refused it: a link out of the grant, or the system's \
                         own permissions"
                            .into(),
                    );
                    let label = self.kind.label(node.root);
                    self.core
                        .audit
                        .refused(name, label, path, node.gate.rights(), &err);
                }
            }
        }
        result
    }

    /// About what the host holds for a listing of `fd`: each entry's name
    /// and the few words beside it. Counted only as far as the memory left
    /// allows, so the count itself is bounded.
    fn listing_bytes(&self, fd: &Resource<Descriptor>) -> Result<usize, ErrorCode> {
        let room = self.core.memory.room();
        let dir = dir_of(self.wasi.table, fd.rep())?;
        let mut bytes = 0usize;
        for entry in dir.entries().map_err(ErrorCode::from)? {
            let entry = entry.map_err(ErrorCode::from)?;
            bytes = bytes.saturating_add(entry.file_name().len() + 64);
            if bytes > room {
                break;
            }
        }
        Ok(bytes)
    }

    /// Refuses a link or rename from a revocable descriptor: either keeps
    /// the file itself, which other handles reaching the new name (the
    /// guest's, a child's) would go on seeing and changing after the
    /// revoke, wherever the name is.
    fn not_from_revocable(
        &self,
        name: &str,
        from: &Resource<Descriptor>,
        path: &str,
    ) -> Result<(), ErrorCode> {
        let a = self.kind.node(from)?;
        if a.gate.lineage.is_empty() {
            return Ok(());
        }
        let err =
            Error::Refused("the file would stay reachable after its handle is revoked".into());
        self.core
            .audit
            .refused(name, self.kind.label(a.root), path, a.gate.rights(), &err);
        Err(ErrorCode::NotPermitted)
    }

    fn on_self(&self, name: &str, fd: &Resource<Descriptor>, op: Op) -> Result<Gate, ErrorCode> {
        self.decide(name, fd, op, None)?;
        Ok(self.kind.node(fd)?.gate.clone())
    }
}

impl preopens::Host for FsView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let mut out = Vec::with_capacity(self.kind.roots.len());
        let mut ids: Vec<usize> = self.kind.roots.keys().copied().collect();
        ids.sort_unstable();
        for i in ids {
            let root = self.kind.roots.get_mut(&i).expect("listed above");
            if let Some(scope) = root.scope.as_mut().filter(|s| s.reps.is_empty()) {
                // The scope's descriptors, never handed to the guest: paths
                // resolve through them.
                for entry in scope.entries.iter() {
                    let dir = entry.dir.try_clone()?.into_std_file();
                    let fd = self.wasi.table.push(Descriptor::Dir(WasiDir::new(
                        dir,
                        perms(entry.rights),
                        open_mode(entry.rights),
                        false,
                    )))?;
                    scope.reps.push(fd.rep());
                }
            }
            let root = &self.kind.roots[&i];
            let Some(guest_path) = root.guest_path.clone().filter(|_| !root.given_up) else {
                continue;
            };
            // A scoped preopen holds what a `.` entry gives it, if any.
            let rights = match &root.scope {
                Some(scope) => scope.entry(Path::new("")).map_or(root.gate.rights(), |e| {
                    scope.entries[e].rights & root.gate.rights()
                }),
                None => root.gate.rights(),
            };
            let dir = root.dir.try_clone()?.into_std_file();
            let gate = root
                .gate
                .derive(rights)
                .held_by(Holders::default().with(&self.core.pledges))
                .recorded(&self.core.audit, &guest_path);
            let transit = root
                .unveiled
                .as_ref()
                .is_some_and(|u| !u.path.as_os_str().is_empty())
                || root
                    .scope
                    .as_ref()
                    .is_some_and(|s| s.entry(Path::new("")).is_none());
            let fd = self.wasi.table.push(Descriptor::Dir(WasiDir::new(
                dir,
                perms(rights),
                open_mode(rights),
                false,
            )))?;
            self.kind.insert_node(
                fd.rep(),
                Node {
                    root: i,
                    path: PathBuf::new(),
                    gate,
                    transit,
                    preopen: true,
                },
            );
            out.push((fd, guest_path));
        }
        Ok(out)
    }
}

impl types::Host for FsView<'_> {
    fn convert_error_code(
        &mut self,
        err: wasmtime_wasi::p2::FsError,
    ) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.wasi.filesystem(), err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.wasi.filesystem(), err)
    }
}

impl HostDescriptor for FsView<'_> {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.on_self("advise", &fd, Op::Hold)?;
        self.wasi.filesystem().advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.on_self("sync-data", &fd, Op::Hold)?;
        self.wasi.filesystem().sync_data(fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorFlags> {
        self.on_self("get-flags", &fd, Op::Hold)?;
        self.wasi.filesystem().get_flags(fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        self.on_self("get-type", &fd, Op::Hold)?;
        self.wasi.filesystem().get_type(fd).await
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        self.on_self("set-size", &fd, Op::Write)?;
        self.wasi.filesystem().set_size(fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.on_self("set-times", &fd, Op::Write)?;
        self.wasi.filesystem().set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.on_self("read", &fd, Op::Read)?;
        self.wasi.filesystem().read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        self.on_self("write", &fd, Op::Write)?;
        self.wasi.filesystem().write(fd, buf, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        let gate = self.on_self("read-directory", &fd, Op::List)?;
        // wasmtime-wasi reads the whole directory into the host at once:
        // what that holds must fit the instance's memory budget, as the
        // guest's own copy would, and counts against it until dropped.
        let bytes = self.listing_bytes(&fd)?;
        if let Err(e) = self.core.memory.charge(bytes) {
            self.core.audit.refused(
                "read-directory",
                self.kind.label(self.kind.node(&fd)?.root),
                ".",
                gate.rights(),
                &e,
            );
            return Err(ErrorCode::InsufficientMemory.into());
        }
        let stream = match self.wasi.filesystem().read_directory(fd).await {
            Ok(stream) => stream,
            Err(e) => {
                self.core.memory.release(bytes);
                return Err(full_is_error(e));
            }
        };
        self.kind.listings.insert(stream.rep(), (gate, bytes));
        Ok(stream)
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.on_self("sync", &fd, Op::Hold)?;
        self.wasi.filesystem().sync(fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let r = self.on_path("create-directory-at", &fd, Op::Create, &path)?;
        self.wasi
            .filesystem()
            .create_directory_at(borrow(r.fd), r.path)
            .await
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        self.on_self("stat", &fd, Op::Stat)?;
        self.wasi.filesystem().stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        let r = self.on_path("stat-at", &fd, Op::Stat, &path)?;
        let path_flags = follow_unless_exact(path_flags, &r);
        let result = self
            .wasi
            .filesystem()
            .stat_at(borrow(r.fd), path_flags, r.path)
            .await;
        self.host_refused("stat-at", &fd, &path, result)
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let r = self.on_path("set-times-at", &fd, Op::Write, &path)?;
        let path_flags = follow_unless_exact(path_flags, &r);
        let result = self
            .wasi
            .filesystem()
            .set_times_at(borrow(r.fd), path_flags, r.path, atim, mtim)
            .await;
        self.host_refused("set-times-at", &fd, &path, result)
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        // The file becomes reachable with whatever any handle of the
        // destination's grant may hold there (the guest may keep a stronger
        // handle than `new_fd`): the source must already give all of it.
        let to = self.on_path("link-at", &new_fd, Op::LinkTo, &new_path)?;
        let dest = self.kind.ceiling(to.root, &to.full);
        let from = self.on_path("link-at", &fd, Op::LinkFrom { dest }, &old_path)?;
        self.not_from_revocable("link-at", &fd, &old_path)?;
        let old_path_flags = follow_unless_exact(old_path_flags, &from);
        let result = self
            .wasi
            .filesystem()
            .link_at(
                borrow(from.fd),
                old_path_flags,
                from.path,
                borrow(to.fd),
                to.path,
            )
            .await;
        self.host_refused("link-at", &fd, &old_path, result)
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        mut oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let op = open_intent(oflags, flags);
        let d = self.decide("open-at", &fd, op, Some(&path))?;
        let r = d.route.expect("a path call has a route");
        let path_flags = follow_unless_exact(path_flags, &r);
        // A FIFO or a device would block the host's thread in the open
        // itself: only regular files and directories are opened, as on
        // capbroker's own face (`open_nonblocking` looks first, and checks
        // what it opened).
        let asked_exclusive = oflags.contains(types::OpenFlags::EXCLUSIVE);
        if d.allowed.new_only {
            oflags |= types::OpenFlags::EXCLUSIVE;
        }
        let parent = self.kind.node(&fd)?.gate.clone();
        let at = parent_dir(self.wasi.table, r.fd)?;
        let opened = match open_nonblocking(at, path_flags, r.path, oflags, flags).await {
            Ok(opened) => self
                .wasi
                .table
                .push(opened)
                .map_err(|_| FsError::from(ErrorCode::InsufficientMemory))?,
            Err(ErrorCode::Exist) if d.allowed.new_only && !asked_exclusive => {
                // An existing file, which a drop box may not reach.
                let err = Error::Denied(Rights::WRITE);
                let label = self.kind.label(r.root);
                self.core
                    .audit
                    .refused("open-at", label, &path, d.allowed.held, &err);
                return Err(wasi_code(op, &err).into());
            }
            Err(e) => return self.host_refused("open-at", &fd, &path, Err(e.into())),
        };
        // The descriptor holds what was held where it was opened; what the
        // guest made, it may fill: a new file in a drop box is writable
        // through the descriptor that made it.
        let rights = if d.allowed.new_only && !d.allowed.held.contains(Rights::WRITE) {
            (d.allowed.held & Rights::READ) | Rights::WRITE
        } else {
            d.allowed.held
        };
        self.kind.insert_node(
            opened.rep(),
            Node {
                root: r.root,
                path: r.full,
                gate: parent.derive(rights),
                transit: r.transit,
                preopen: false,
            },
        );
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        let shared = self
            .kind
            .nodes
            .get(&fd.rep())
            .is_some_and(|n| n.gate.shared());
        let id = if shared {
            identity(self.wasi.table, fd.rep())
        } else {
            None
        };
        self.kind.forget(fd.rep(), id);
        HostDescriptor::drop(&mut self.wasi.filesystem(), fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        let r = self.on_path("readlink-at", &fd, Op::Read, &path)?;
        let result = self
            .wasi
            .filesystem()
            .readlink_at(borrow(r.fd), r.path)
            .await;
        self.host_refused("readlink-at", &fd, &path, result)
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let r = self.on_path("remove-directory-at", &fd, Op::Remove, &path)?;
        let result = self
            .wasi
            .filesystem()
            .remove_directory_at(borrow(r.fd), r.path)
            .await;
        self.host_refused("remove-directory-at", &fd, &path, result)
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        // What the new name is held with decides what the source needs;
        // replacing something there needs `write` too.
        let first = self.decide(
            "rename-at",
            &new_fd,
            Op::RenameTo { replaces: false },
            Some(&new_path),
        )?;
        let mut to = first.route.expect("a path call has a route");
        let dest = self.kind.ceiling(to.root, &to.full);
        if !first.allowed.held.contains(Rights::WRITE) {
            let replaces = self
                .wasi
                .filesystem()
                .stat_at(borrow(to.fd), types::PathFlags::empty(), to.path.clone())
                .await
                .is_ok();
            if replaces {
                to = self.on_path("rename-at", &new_fd, Op::RenameTo { replaces }, &new_path)?;
            }
        }
        let from = self.on_path("rename-at", &fd, Op::RenameFrom { dest }, &old_path)?;
        self.not_from_revocable("rename-at", &fd, &old_path)?;
        if first.allowed.held.contains(Rights::WRITE) {
            let result = self
                .wasi
                .filesystem()
                .rename_at(borrow(from.fd), from.path, borrow(to.fd), to.path)
                .await;
            return self.host_refused("rename-at", &fd, &old_path, result);
        }
        // Without `write` there, nothing may be replaced, not even what
        // appeared since the check above: the kernel checks and renames in
        // one step.
        let (from_dir, to_dir) = (
            dir_of(self.wasi.table, from.fd)?,
            dir_of(self.wasi.table, to.fd)?,
        );
        let (from_path, to_path) = (PathBuf::from(from.path), PathBuf::from(to.path));
        let moved = tokio::task::spawn_blocking(move || {
            crate::fs::rename_noreplace(&from_dir, &from_path, &to_dir, &to_path)
        })
        .await
        .map_err(|e| wasmtime_wasi::p2::FsError::trap(wasmtime::Error::msg(e.to_string())))?;
        match moved {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let err = Error::Denied(Rights::WRITE);
                let label = self.kind.label(to.root);
                self.core
                    .audit
                    .refused("rename-at", label, &new_path, first.allowed.held, &err);
                Err(wasi_code(Op::RenameTo { replaces: true }, &err).into())
            }
            Err(e) => {
                self.host_refused("rename-at", &fd, &old_path, Err(ErrorCode::from(e).into()))
            }
        }
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let r = self.on_path("symlink-at", &fd, Op::Create, &dest_path)?;
        let result = self
            .wasi
            .filesystem()
            .symlink_at(borrow(r.fd), src_path, r.path)
            .await;
        self.host_refused("symlink-at", &fd, &dest_path, result)
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let r = self.on_path("unlink-file-at", &fd, Op::Remove, &path)?;
        let result = self
            .wasi
            .filesystem()
            .unlink_file_at(borrow(r.fd), r.path)
            .await;
        self.host_refused("unlink-file-at", &fd, &path, result)
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        let gate = self.on_self("read-via-stream", &fd, Op::Read)?;
        let stream = self
            .wasi
            .filesystem()
            .read_via_stream(fd, offset)
            .map_err(full_is_error)?;
        guard(self.wasi.table, &stream, &gate, Rights::READ)?;
        Ok(stream)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let gate = self.on_self("write-via-stream", &fd, Op::Write)?;
        let stream = self
            .wasi
            .filesystem()
            .write_via_stream(fd, offset)
            .map_err(full_is_error)?;
        guard(self.wasi.table, &stream, &gate, Rights::WRITE)?;
        Ok(stream)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let gate = self.on_self("append-via-stream", &fd, Op::Write)?;
        let stream = self
            .wasi
            .filesystem()
            .append_via_stream(fd)
            .map_err(full_is_error)?;
        guard(self.wasi.table, &stream, &gate, Rights::WRITE)?;
        Ok(stream)
    }

    async fn is_same_object(
        &mut self,
        fd: Resource<Descriptor>,
        other: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        // This call cannot fail; without metadata rights on both, nothing
        // is the same.
        if self.on_self("is-same-object", &fd, Op::Stat).is_err()
            || self.on_self("is-same-object", &other, Op::Stat).is_err()
        {
            return Ok(false);
        }
        self.wasi.filesystem().is_same_object(fd, other).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.on_self("metadata-hash", &fd, Op::Stat)?;
        self.wasi.filesystem().metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        let r = self.on_path("metadata-hash-at", &fd, Op::Stat, &path)?;
        let path_flags = follow_unless_exact(path_flags, &r);
        let result = self
            .wasi
            .filesystem()
            .metadata_hash_at(borrow(r.fd), path_flags, r.path)
            .await;
        self.host_refused("metadata-hash-at", &fd, &path, result)
    }
}

impl HostDirectoryEntryStream for FsView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        match self.kind.listings.get(&stream.rep()) {
            Some((gate, _)) => gate.check(Rights::LIST).inspect_err(|_| {
                gate.refused("read-directory-entry", Rights::LIST);
            })?,
            None => return Err(ErrorCode::BadDescriptor.into()),
        }
        self.wasi.filesystem().read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        if let Some((_, bytes)) = self.kind.listings.remove(&stream.rep()) {
            self.core.memory.release(bytes);
        }
        HostDirectoryEntryStream::drop(&mut self.wasi.filesystem(), stream)
    }
}

impl WasiFs {
    /// A descriptor for a capbroker directory handle, with `rights` (which
    /// it must hold): a root of its own, under the same revocations and
    /// pledges, closed with the last descriptor that descends from it.
    fn descriptor_for(
        &mut self,
        table: &mut wasmtime::component::ResourceTable,
        dir: &DirHandle,
        rights: Rights,
        pledges: &Pledges,
        audit: &Audit,
    ) -> Result<Resource<Descriptor>, Error> {
        let Some(whole) = dir.whole_dir() else {
            // A WASI descriptor resolves paths itself, around the scope.
            return Err(Error::Refused(
                "a handle narrowed to some paths cannot become a WASI descriptor".into(),
            ));
        };
        let file = whole.try_clone().map_err(|e| Error::from_io(&e, "."))?;
        let gate = Gate::with_lineage(rights, dir.lineage().clone())
            .held_by(dir.holders().with(pledges))
            .recorded(audit, dir.label());
        let descriptor = Descriptor::Dir(WasiDir::new(
            file.try_clone()
                .map_err(|e| Error::from_io(&e, "."))?
                .into_std_file(),
            perms(rights),
            open_mode(rights),
            false,
        ));
        let fd = table
            .push(descriptor)
            .map_err(|e| Error::LimitExceeded(e.to_string()))?;
        let root = self.add_root(Root {
            guest_path: None,
            dir: file,
            gate: gate.clone(),
            unveiled: None,
            scope: None,
            ceiling: Some(dir.ceiling_at(".")),
            beside: Rights::empty(),
            users: 0,
            handed: 0,
            given_up: false,
        });
        self.insert_node(
            fd.rep(),
            Node {
                root,
                path: PathBuf::new(),
                gate,
                transit: false,
                preopen: false,
            },
        );
        Ok(fd)
    }
}

impl crate::fs::wit::wasi_fs::Host for crate::core::View<'_, WasiFs> {
    fn to_descriptor(
        &mut self,
        dir: Resource<DirHandle>,
        rights: Rights,
    ) -> crate::core::HostResult<Resource<Descriptor>> {
        let handle = self.table.get(&dir)?;
        let who = Subject {
            label: handle.label(),
            lineage: handle.lineage(),
            held: handle.rights(),
            pledges: &self.core.pledges,
            holders: handle.holders(),
            audit: &self.core.audit,
        };
        decide(
            &who,
            "to-descriptor",
            Op::Derive { rights },
            ".",
            || Ok(((), Rights::all())),
            |_| {},
        )?;
        let label = handle.label().to_string();
        let handle = DirHandle::copy(handle, &label);
        let result = self.kind.descriptor_for(
            self.table,
            &handle,
            rights,
            &self.core.pledges,
            &self.core.audit,
        );
        match &result {
            Ok(_) => self
                .core
                .audit
                .derived("to-descriptor", &label, "wasi descriptor", rights),
            Err(e) => self
                .core
                .audit
                .refused("to-descriptor", &label, ".", handle.rights(), e),
        }
        Ok(result?)
    }
}
