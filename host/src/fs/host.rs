//! The `fs` interface's host functions, over the handles in the store's
//! table.

use wasmtime::component::Resource;

use super::handle::*;
use super::FsCtx;
use crate::core::lineage::RevokerHandle;
use crate::core::View;
use crate::core::{Error, HostError, HostResult, Rights};
use crate::fs::authority::{decide, Op, Subject};
use crate::fs::wit::fs::{Entry, Host, HostDir, HostFile, OpenFlags, Stat};

impl View<'_, FsCtx> {
    /// Runs `f` on the directory behind `handle`; a failure becomes an error
    /// for the guest and, unless the authority core recorded it already, a
    /// line in the audit trail.
    fn on_dir<T>(
        &mut self,
        handle: &Resource<DirHandle>,
        op: &str,
        path: &str,
        f: impl FnOnce(&DirHandle, &Caller<'_>) -> Result<T, Fail>,
    ) -> HostResult<T> {
        let dir = self.table.get(handle)?;
        let caller = Caller {
            pledges: &self.core.pledges,
            audit: &self.core.audit,
            room: self.core.memory.room(),
        };
        f(dir, &caller).map_err(|fail| {
            if !fail.audited {
                self.core
                    .audit
                    .refused(op, &dir.label, path, dir.rights, &fail.err);
            }
            HostError::Guest(fail.err)
        })
    }

    /// Runs `f` on the file behind `handle`, once the authority core let
    /// `op` through (the file's own rights, its lineage, the pledges).
    fn on_file<T>(
        &mut self,
        handle: &Resource<FileHandle>,
        name: &str,
        op: Option<Op>,
        f: impl FnOnce(&mut FileHandle) -> Result<T, Error>,
    ) -> HostResult<T> {
        let file = self.table.get_mut(handle)?;
        let held = file.rights;
        if let Some(op) = op {
            let who = Subject {
                label: &file.label,
                lineage: &file.lineage,
                held,
                pledges: &self.core.pledges,
                holders: &file.holders,
                audit: &self.core.audit,
            };
            decide(&who, name, op, "", || Ok(((), held)), |_| {})?;
        } else {
            file.lineage.check()?;
        }
        f(file).map_err(|e| {
            self.core.audit.refused(name, &file.label, "", held, &e);
            HostError::Guest(e)
        })
    }

    /// Puts a handle derived by `op` from `parent` into the table, or reports
    /// why it cannot (a full table is the guest's `limit-exceeded`).
    fn push_derived<T: Send + 'static>(
        &mut self,
        parent: &Resource<DirHandle>,
        op: &str,
        path: &str,
        derived: T,
        describe: impl Fn(&T) -> (String, Rights),
    ) -> HostResult<Resource<T>> {
        let (to, rights) = describe(&derived);
        match self.table.push(derived) {
            Ok(r) => {
                let from = self.table.get(parent)?.label.clone();
                self.core.audit.derived(op, &from, &to, rights);
                Ok(r)
            }
            Err(e) => {
                let err = HostError::from(e);
                if let HostError::Guest(g) = &err {
                    let dir = self.table.get(parent)?;
                    self.core.audit.refused(op, &dir.label, path, dir.rights, g);
                }
                Err(err)
            }
        }
    }
}

impl Host for View<'_, FsCtx> {}

impl HostDir for View<'_, FsCtx> {
    fn rights(&mut self, dir: Resource<DirHandle>) -> wasmtime::Result<Rights> {
        Ok(self.table.get(&dir)?.rights)
    }

    fn open_dir(
        &mut self,
        dir: Resource<DirHandle>,
        path: String,
        rights: Rights,
    ) -> HostResult<Resource<DirHandle>> {
        let derived = self.on_dir(&dir, "open-dir", &path, |d, c| {
            d.derive(c, "open-dir", &path, rights)
        })?;
        self.push_derived(&dir, "open-dir", &path, derived, |d| {
            (d.label.to_string(), d.rights)
        })
    }

    fn attenuate(
        &mut self,
        dir: Resource<DirHandle>,
        rights: Rights,
    ) -> HostResult<Resource<DirHandle>> {
        let derived = self.on_dir(&dir, "attenuate", ".", |d, c| {
            d.derive(c, "attenuate", ".", rights)
        })?;
        self.push_derived(&dir, "attenuate", ".", derived, |d| {
            (d.label.to_string(), d.rights)
        })
    }

    fn revocable(
        &mut self,
        dir: Resource<DirHandle>,
    ) -> HostResult<(Resource<DirHandle>, Resource<RevokerHandle>)> {
        let (copy, revoker) = self.on_dir(&dir, "revocable", ".", |d, c| {
            d.derive(c, "revocable", ".", d.rights)?;
            let (lineage, revoker) = d.lineage.revocable()?;
            Ok((
                DirHandle {
                    lineage,
                    ..d.copy(&d.label)
                },
                revoker,
            ))
        })?;
        let copy = self.push_derived(&dir, "revocable", ".", copy, |d| {
            (d.label.to_string(), d.rights)
        })?;
        match self.table.push(revoker) {
            Ok(r) => Ok((copy, r)),
            Err(e) => {
                self.table.delete(copy)?;
                Err(e.into())
            }
        }
    }

    fn read_file(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<Vec<u8>> {
        self.on_dir(&dir, "read-file", &path, |d, c| d.read_file(c, &path))
    }

    fn write_file(
        &mut self,
        dir: Resource<DirHandle>,
        path: String,
        contents: Vec<u8>,
    ) -> HostResult<()> {
        self.on_dir(&dir, "write-file", &path, |d, c| {
            d.write_file(c, &path, &contents)
        })
    }

    fn open_file(
        &mut self,
        dir: Resource<DirHandle>,
        path: String,
        flags: OpenFlags,
    ) -> HostResult<Resource<FileHandle>> {
        let file = self.on_dir(&dir, "open-file", &path, |d, c| {
            d.open_file(c, &path, flags)
        })?;
        self.push_derived(&dir, "open-file", &path, file, |f| {
            (f.label.to_string(), f.rights)
        })
    }

    fn list(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<Vec<Entry>> {
        self.on_dir(&dir, "list", &path, |d, c| d.list(c, &path))
    }

    fn stat(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<Stat> {
        self.on_dir(&dir, "stat", &path, |d, c| d.stat(c, &path))
    }

    fn create_dir(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<()> {
        self.on_dir(&dir, "create-dir", &path, |d, c| d.create_dir(c, &path))
    }

    fn remove_file(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<()> {
        self.on_dir(&dir, "remove-file", &path, |d, c| d.remove_file(c, &path))
    }

    fn remove_dir(&mut self, dir: Resource<DirHandle>, path: String) -> HostResult<()> {
        self.on_dir(&dir, "remove-dir", &path, |d, c| d.remove_dir(c, &path))
    }

    fn rename(&mut self, dir: Resource<DirHandle>, from: String, to: String) -> HostResult<()> {
        let path = format!("{from} -> {to}");
        self.on_dir(&dir, "rename", &path, |d, c| d.rename(c, &from, &to))
    }

    fn drop(&mut self, dir: Resource<DirHandle>) -> wasmtime::Result<()> {
        let dir = self.table.delete(dir)?;
        self.core.audit.dropped(&dir.label);
        Ok(())
    }
}

impl HostFile for View<'_, FsCtx> {
    fn read(&mut self, file: Resource<FileHandle>, len: u32) -> HostResult<Vec<u8>> {
        self.on_file(&file, "file.read", Some(Op::Read), |f| f.read(len))
    }

    fn write(&mut self, file: Resource<FileHandle>, data: Vec<u8>) -> HostResult<()> {
        self.on_file(&file, "file.write", Some(Op::Write), |f| f.write(&data))
    }

    fn seek(&mut self, file: Resource<FileHandle>, offset: u64) -> HostResult<()> {
        self.on_file(&file, "file.seek", Some(Op::Hold), |f| f.seek(offset))
    }

    fn stat(&mut self, file: Resource<FileHandle>) -> HostResult<Stat> {
        self.on_file(&file, "file.stat", Some(Op::Stat), |f| f.stat())
    }

    fn drop(&mut self, file: Resource<FileHandle>) -> wasmtime::Result<()> {
        let file = self.table.delete(file)?;
        self.core.audit.dropped(&file.label);
        Ok(())
    }
}
