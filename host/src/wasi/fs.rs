//! Standard `wasi:filesystem` for plain WASI programs, through capbroker's
//! rights, `pledge` and `unveil`.
//!
//! wasmtime-wasi does the file-system work; this layer stands in front of
//! every `wasi:filesystem/types` call and decides first. Each descriptor the
//! guest holds is a node: the preopen (root) it descends from, its path
//! below that root, and a [`Gate`] with the capbroker rights it still has.
//! Streams and directory listings opened from a descriptor share its gate,
//! so narrowing the descriptor narrows them too. Gates are only ever
//! narrowed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::fs::join_below as join;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::{Descriptor, Dir as WasiDir, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::preopens;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsResult};
use wasmtime_wasi::{FsPerms, OpenMode};

use super::streams::guard;
use super::WasiParts;
use crate::fs::{DirGrant, DirHandle};
use crate::revoke::Lineage;
use crate::types::{rights_from_bits, rights_to_bits, Rights};

/// Rights shared by a descriptor and everything opened from it, and the
/// revocable capbroker handles it descends from, if any.
#[derive(Clone, Debug)]
pub struct Gate {
    bits: Arc<AtomicU8>,
    lineage: Lineage,
}

impl Gate {
    pub fn new(rights: Rights) -> Gate {
        Gate::with_lineage(rights, Lineage::default())
    }

    pub fn with_lineage(rights: Rights, lineage: Lineage) -> Gate {
        Gate {
            bits: Arc::new(AtomicU8::new(rights_to_bits(rights))),
            lineage,
        }
    }

    /// A gate of its own for something opened from this gate's descriptor:
    /// its rights for now, and the same lineage.
    fn derive(&self) -> Gate {
        Gate::with_lineage(self.rights(), self.lineage.clone())
    }

    pub fn rights(&self) -> Rights {
        rights_from_bits(self.bits.load(Ordering::Acquire))
    }

    /// Keeps only `keep`. Nothing widens a gate.
    pub fn narrow(&self, keep: Rights) {
        self.bits.fetch_and(rights_to_bits(keep), Ordering::AcqRel);
    }

    /// `Ok` if the gate holds `need`, or any right at all when `need` is
    /// empty (metadata calls), and nothing it descends from was revoked;
    /// otherwise `EACCES`.
    pub fn check(&self, need: Rights) -> Result<(), ErrorCode> {
        let held = self.rights();
        if held.contains(need) && held != Rights::empty() && self.lineage.check().is_ok() {
            Ok(())
        } else {
            Err(ErrorCode::Access)
        }
    }
}

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
}

/// The part of a root left visible by `unveil`.
struct Unveiled {
    /// Below the root.
    path: PathBuf,
    /// A descriptor for `path`, kept in the table (never given to the
    /// guest): paths from descriptors above it resolve through it, so that
    /// nothing inside can lead out.
    rep: u32,
}

/// A descriptor the guest holds.
struct Node {
    root: usize,
    path: PathBuf,
    gate: Gate,
}

/// The file-system state of one instance.
#[derive(Default)]
pub struct WasiFs {
    roots: Vec<Root>,
    nodes: HashMap<u32, Node>,
    listings: HashMap<u32, Gate>,
}

impl WasiFs {
    /// Adds a preopen at `guest_path` for the operator's grant.
    pub fn preopen(&mut self, guest_path: &str, grant: &DirGrant) -> wasmtime::Result<()> {
        self.roots.push(Root {
            guest_path: Some(guest_path.to_string()),
            dir: grant.open()?,
            gate: Gate::new(grant.rights),
            unveiled: None,
        });
        Ok(())
    }

    /// Takes every right from every descriptor, stream and listing, and
    /// from the preopens themselves.
    pub fn renounce(&mut self) {
        for root in &self.roots {
            root.gate.narrow(Rights::empty());
        }
        for node in self.nodes.values() {
            node.gate.narrow(Rights::empty());
        }
        for gate in self.listings.values() {
            gate.narrow(Rights::empty());
        }
    }

    fn node(&self, fd: &Resource<Descriptor>) -> Result<&Node, ErrorCode> {
        self.nodes.get(&fd.rep()).ok_or(ErrorCode::BadDescriptor)
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
}

impl WasiFs {
    /// Checks `need` on `fd` and the unveil rules for `path`, and says
    /// which descriptor and path to use.
    fn route(&self, fd: &Resource<Descriptor>, path: &str, need: Rights) -> FsResult<Route> {
        let node = self.node(fd)?;
        node.gate.check(need)?;
        let full = join(&node.path, path).ok_or(ErrorCode::NotPermitted)?;
        let root = &self.roots[node.root];
        let via = match &root.unveiled {
            None => (fd.rep(), path.to_string()),
            Some(u) => {
                if !full.starts_with(&u.path) {
                    return Err(ErrorCode::Access.into());
                }
                if node.path.starts_with(&u.path) {
                    (fd.rep(), path.to_string())
                } else {
                    let rel = full.strip_prefix(&u.path).expect("checked above");
                    (u.rep, path_str(rel))
                }
            }
        };
        Ok(Route {
            fd: via.0,
            path: via.1,
            full,
            root: node.root,
        })
    }

    fn gate_of(&self, fd: &Resource<Descriptor>, need: Rights) -> FsResult<Gate> {
        let node = self.node(fd)?;
        node.gate.check(need)?;
        Ok(node.gate.clone())
    }

    /// Narrows the root at `guest_path` to `sub` and `rights`: see the WIT
    /// `pledge.unveil`.
    pub fn unveil(
        &mut self,
        table: &mut wasmtime::component::ResourceTable,
        guest_path: &str,
        sub: &str,
        rights: Rights,
    ) -> Result<(), crate::types::Error> {
        use crate::types::Error;
        let i = self
            .roots
            .iter()
            .position(|r| r.guest_path.as_deref() == Some(guest_path))
            .ok_or_else(|| Error::NotFound(guest_path.to_string()))?;
        let root = &self.roots[i];
        let missing = rights & !root.gate.rights();
        if missing != Rights::empty() {
            return Err(Error::Denied(missing));
        }
        let base = root
            .unveiled
            .as_ref()
            .map(|u| u.path.clone())
            .unwrap_or_default();
        let path = join(&base, sub)
            .filter(|p| p.starts_with(&base))
            .ok_or_else(|| Error::Escape(sub.to_string()))?;
        let dir = if path.as_os_str().is_empty() {
            root.dir.try_clone()
        } else {
            root.dir.open_dir(&path)
        }
        .map_err(|e| Error::from_io(&e, &path_str(&path)))?;
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
        let root = &mut self.roots[i];
        if let Some(old) = root.unveiled.replace(Unveiled {
            path: path.clone(),
            rep,
        }) {
            let _ = table.delete(Resource::<Descriptor>::new_own(old.rep));
        }
        root.gate.narrow(rights);
        for (rep, node) in &self.nodes {
            if node.root != i {
                continue;
            }
            if node.path.starts_with(&path) && same_object(table, *rep, &dir, &node.path, &path) {
                node.gate.narrow(rights);
            } else if !path.starts_with(&node.path) {
                // Outside the unveiled part, or reached there through a
                // link that leads out: closed.
                node.gate.narrow(Rights::empty());
            } else {
                // Above it: still usable, through the unveiled descriptor.
                node.gate.narrow(rights);
            }
        }
        Ok(())
    }
}

/// Whether the descriptor `rep`, opened at `node_path`, is the same file
/// as `node_path` reached inside `unveiled` (opened as `dir`): a descriptor
/// opened through a symbolic link that leads out of the unveiled part is
/// not.
fn same_object(
    table: &mut wasmtime::component::ResourceTable,
    rep: u32,
    dir: &cap_std::fs::Dir,
    node_path: &Path,
    unveiled: &Path,
) -> bool {
    use cap_std::fs::MetadataExt as _;
    use std::os::unix::fs::MetadataExt as _;
    let Ok(descriptor) = table.get(&Resource::<Descriptor>::new_borrow(rep)) else {
        return false;
    };
    let held = match descriptor {
        Descriptor::File(f) => f.file.metadata(),
        Descriptor::Dir(d) => d.dir.metadata(),
    };
    let rel = node_path.strip_prefix(unveiled).unwrap_or(node_path);
    let there = if rel.as_os_str().is_empty() {
        dir.dir_metadata()
    } else {
        dir.metadata(rel)
    };
    match (held, there) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
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

/// The rights an `open-at` needs.
fn open_needs(oflags: types::OpenFlags, flags: types::DescriptorFlags) -> Rights {
    let mut need = Rights::empty();
    if flags.contains(types::DescriptorFlags::READ) {
        // Reading a directory is listing it.
        need |= if oflags.contains(types::OpenFlags::DIRECTORY) {
            Rights::LIST
        } else {
            Rights::READ
        };
    }
    if flags.contains(types::DescriptorFlags::WRITE) || oflags.contains(types::OpenFlags::TRUNCATE)
    {
        need |= Rights::WRITE;
    }
    if oflags.contains(types::OpenFlags::CREATE) {
        need |= Rights::CREATE;
    }
    need
}

/// The guarded view the `wasi:filesystem` host functions work through.
pub struct FsView<'a> {
    pub(super) wasi: WasiParts<'a>,
    pub(super) fs: &'a mut WasiFs,
}

fn borrow(rep: u32) -> Resource<Descriptor> {
    Resource::new_borrow(rep)
}

impl preopens::Host for FsView<'_> {
    fn get_directories(&mut self) -> wasmtime::Result<Vec<(Resource<Descriptor>, String)>> {
        let mut out = Vec::with_capacity(self.fs.roots.len());
        for (i, root) in self.fs.roots.iter().enumerate() {
            let Some(guest_path) = &root.guest_path else {
                continue;
            };
            let rights = root.gate.rights();
            let dir = root.dir.try_clone()?.into_std_file();
            let fd = self.wasi.table.push(Descriptor::Dir(WasiDir::new(
                dir,
                perms(rights),
                open_mode(rights),
                false,
            )))?;
            self.fs.nodes.insert(
                fd.rep(),
                Node {
                    root: i,
                    path: PathBuf::new(),
                    gate: root.gate.derive(),
                },
            );
            out.push((fd, guest_path.clone()));
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
        self.fs.gate_of(&fd, Rights::empty())?;
        self.wasi.filesystem().advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.fs.gate_of(&fd, Rights::empty())?;
        self.wasi.filesystem().sync_data(fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorFlags> {
        self.fs.gate_of(&fd, Rights::empty())?;
        self.wasi.filesystem().get_flags(fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        self.fs.gate_of(&fd, Rights::empty())?;
        self.wasi.filesystem().get_type(fd).await
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        self.fs.gate_of(&fd, Rights::WRITE)?;
        self.wasi.filesystem().set_size(fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.gate_of(&fd, Rights::WRITE)?;
        self.wasi.filesystem().set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.fs.gate_of(&fd, Rights::READ)?;
        self.wasi.filesystem().read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        self.fs.gate_of(&fd, Rights::WRITE)?;
        self.wasi.filesystem().write(fd, buf, offset).await
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        let gate = self.fs.gate_of(&fd, Rights::LIST)?;
        let stream = self.wasi.filesystem().read_directory(fd).await?;
        self.fs.listings.insert(stream.rep(), gate);
        Ok(stream)
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.fs.gate_of(&fd, Rights::empty())?;
        self.wasi.filesystem().sync(fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let r = self.fs.route(&fd, &path, Rights::CREATE)?;
        self.wasi
            .filesystem()
            .create_directory_at(borrow(r.fd), r.path)
            .await
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        self.fs.gate_of(&fd, Rights::empty())?;
        self.wasi.filesystem().stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        let r = self.fs.route(&fd, &path, Rights::empty())?;
        self.wasi
            .filesystem()
            .stat_at(borrow(r.fd), path_flags, r.path)
            .await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        let r = self.fs.route(&fd, &path, Rights::WRITE)?;
        self.wasi
            .filesystem()
            .set_times_at(borrow(r.fd), path_flags, r.path, atim, mtim)
            .await
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let from = self.fs.route(&fd, &old_path, Rights::READ)?;
        let to = self.fs.route(&new_fd, &new_path, Rights::CREATE)?;
        self.wasi
            .filesystem()
            .link_at(
                borrow(from.fd),
                old_path_flags,
                from.path,
                borrow(to.fd),
                to.path,
            )
            .await
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let r = self.fs.route(&fd, &path, open_needs(oflags, flags))?;
        let gate = self.fs.node(&fd)?.gate.derive();
        let opened = self
            .wasi
            .filesystem()
            .open_at(borrow(r.fd), path_flags, r.path, oflags, flags)
            .await?;
        self.fs.nodes.insert(
            opened.rep(),
            Node {
                root: r.root,
                path: r.full,
                gate,
            },
        );
        Ok(opened)
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        self.fs.nodes.remove(&fd.rep());
        HostDescriptor::drop(&mut self.wasi.filesystem(), fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        let r = self.fs.route(&fd, &path, Rights::READ)?;
        self.wasi
            .filesystem()
            .readlink_at(borrow(r.fd), r.path)
            .await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let r = self.fs.route(&fd, &path, Rights::REMOVE)?;
        self.wasi
            .filesystem()
            .remove_directory_at(borrow(r.fd), r.path)
            .await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        let from = self.fs.route(&fd, &old_path, Rights::REMOVE)?;
        let to = self.fs.route(&new_fd, &new_path, Rights::CREATE)?;
        self.wasi
            .filesystem()
            .rename_at(borrow(from.fd), from.path, borrow(to.fd), to.path)
            .await
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let r = self.fs.route(&fd, &dest_path, Rights::CREATE)?;
        self.wasi
            .filesystem()
            .symlink_at(borrow(r.fd), src_path, r.path)
            .await
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let r = self.fs.route(&fd, &path, Rights::REMOVE)?;
        self.wasi
            .filesystem()
            .unlink_file_at(borrow(r.fd), r.path)
            .await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        let gate = self.fs.gate_of(&fd, Rights::READ)?;
        let stream = self.wasi.filesystem().read_via_stream(fd, offset)?;
        guard(self.wasi.table, &stream, &gate, Rights::READ)?;
        Ok(stream)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let gate = self.fs.gate_of(&fd, Rights::WRITE)?;
        let stream = self.wasi.filesystem().write_via_stream(fd, offset)?;
        guard(self.wasi.table, &stream, &gate, Rights::WRITE)?;
        Ok(stream)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let gate = self.fs.gate_of(&fd, Rights::WRITE)?;
        let stream = self.wasi.filesystem().append_via_stream(fd)?;
        guard(self.wasi.table, &stream, &gate, Rights::WRITE)?;
        Ok(stream)
    }

    async fn is_same_object(
        &mut self,
        fd: Resource<Descriptor>,
        other: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        // This call cannot fail; without rights on both, nothing is the same.
        if self.fs.gate_of(&fd, Rights::empty()).is_err()
            || self.fs.gate_of(&other, Rights::empty()).is_err()
        {
            return Ok(false);
        }
        self.wasi.filesystem().is_same_object(fd, other).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.gate_of(&fd, Rights::empty())?;
        self.wasi.filesystem().metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        let r = self.fs.route(&fd, &path, Rights::empty())?;
        self.wasi
            .filesystem()
            .metadata_hash_at(borrow(r.fd), path_flags, r.path)
            .await
    }
}

impl HostDirectoryEntryStream for FsView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        match self.fs.listings.get(&stream.rep()) {
            Some(gate) => gate.check(Rights::LIST)?,
            None => return Err(ErrorCode::BadDescriptor.into()),
        }
        self.wasi.filesystem().read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        self.fs.listings.remove(&stream.rep());
        HostDirectoryEntryStream::drop(&mut self.wasi.filesystem(), stream)
    }
}

impl WasiFs {
    /// A descriptor for a capbroker directory handle, with `rights` (which
    /// it must hold): a root of its own, under the same revocations.
    pub fn descriptor_for(
        &mut self,
        table: &mut wasmtime::component::ResourceTable,
        dir: &DirHandle,
        rights: Rights,
    ) -> Result<Resource<Descriptor>, crate::types::Error> {
        use crate::types::Error;
        dir.lineage().check()?;
        crate::types::require(dir.rights(), rights)?;
        if dir.is_scoped() {
            // A WASI descriptor resolves paths itself, around the scope.
            return Err(Error::Refused(
                "a handle narrowed to some paths cannot become a WASI descriptor".into(),
            ));
        }
        let file = dir.dir().try_clone().map_err(|e| Error::from_io(&e, "."))?;
        let gate = Gate::with_lineage(rights, dir.lineage().clone());
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
        self.roots.push(Root {
            guest_path: None,
            dir: file,
            gate: gate.clone(),
            unveiled: None,
        });
        self.nodes.insert(
            fd.rep(),
            Node {
                root: self.roots.len() - 1,
                path: PathBuf::new(),
                gate,
            },
        );
        Ok(fd)
    }
}

impl crate::bindings::capbroker::caps::wasi_fs::Host for crate::ctx::BrokerCtxView<'_> {
    fn to_descriptor(
        &mut self,
        dir: Resource<DirHandle>,
        rights: Rights,
    ) -> crate::types::HostResult<Resource<Descriptor>> {
        let handle = self.table.get(&dir)?;
        let label = handle.label().to_string();
        let handle = DirHandle::copy(handle, &label);
        let result = self.ctx.wasi.fs.descriptor_for(self.table, &handle, rights);
        match &result {
            Ok(_) => self
                .ctx
                .audit
                .derived("to-descriptor", &label, "wasi descriptor", rights),
            Err(e) => self
                .ctx
                .audit
                .refused("to-descriptor", &label, ".", handle.rights(), e),
        }
        Ok(result?)
    }
}
