//! The `spawn` interface's host functions, over the spawners in the
//! store's table.

use std::sync::atomic::Ordering;

use wasmtime::component::Resource;

use super::spawner::SpawnerHandle;
use super::wit::spawn::{Budget, Host, HostSpawner};
use super::SpawnCtx;
use crate::core::lineage::RevokerHandle;
use crate::core::{Error, HostResult, View};

impl View<'_, SpawnCtx> {
    fn on_spawner<T>(
        &mut self,
        handle: &Resource<SpawnerHandle>,
        op: &str,
        f: impl FnOnce(&SpawnerHandle) -> Result<T, Error>,
    ) -> HostResult<T> {
        let sp = self.table.get(handle)?;
        sp.lineage.check().and_then(|()| f(sp)).map_err(|e| {
            self.core
                .audit
                .refused(op, "spawner", "", crate::core::Rights::empty(), &e);
            e.into()
        })
    }
}

impl Host for View<'_, SpawnCtx> {}

impl HostSpawner for View<'_, SpawnCtx> {
    fn budget(&mut self, spawner: Resource<SpawnerHandle>) -> wasmtime::Result<Budget> {
        Ok(self.table.get(&spawner)?.budget.clone())
    }

    fn running(&mut self, spawner: Resource<SpawnerHandle>) -> wasmtime::Result<u32> {
        Ok(self
            .table
            .get(&spawner)?
            .counter
            .live
            .load(Ordering::Acquire))
    }

    fn attenuate(
        &mut self,
        spawner: Resource<SpawnerHandle>,
        budget: Budget,
    ) -> HostResult<Resource<SpawnerHandle>> {
        let derived = self.on_spawner(&spawner, "spawner.attenuate", |s| s.attenuate(budget))?;
        let pushed = self.table.push(derived)?;
        self.core.audit.derived(
            "spawner.attenuate",
            "spawner",
            "spawner",
            crate::core::Rights::empty(),
        );
        Ok(pushed)
    }

    fn revocable(
        &mut self,
        spawner: Resource<SpawnerHandle>,
    ) -> HostResult<(Resource<SpawnerHandle>, Resource<RevokerHandle>)> {
        let (copy, revoker) = self.on_spawner(&spawner, "spawner.revocable", |s| {
            let (lineage, revoker) = s.lineage.revocable()?;
            Ok((
                SpawnerHandle {
                    lineage,
                    ..s.copy_within(&s.budget.limits)
                },
                revoker,
            ))
        })?;
        let copy = self.table.push(copy)?;
        match self.table.push(revoker) {
            Ok(r) => {
                self.core.audit.derived(
                    "spawner.revocable",
                    "spawner",
                    "revocable copy",
                    crate::core::Rights::empty(),
                );
                Ok((copy, r))
            }
            Err(e) => {
                self.table.delete(copy)?;
                Err(e.into())
            }
        }
    }

    fn drop(&mut self, spawner: Resource<SpawnerHandle>) -> wasmtime::Result<()> {
        self.table.delete(spawner)?;
        self.core.audit.dropped("spawner");
        Ok(())
    }
}
