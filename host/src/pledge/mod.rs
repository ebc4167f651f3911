//! The `pledge` interface: giving up standard WASI authority for good.
//!
//! What is given up is recorded in the instance's [`Pledges`], which every
//! kind's checks (and the socket address check inside wasmtime-wasi)
//! consult on every call. `renounce` also has every kind narrow what the
//! instance already holds (descriptors, streams, sockets, the environment),
//! and `unveil` narrows a preopen: both through [`Pledgeable`], which the
//! broker implements over the kinds, so this room imports none of them.

use wasmtime::component::{Linker, ResourceTable};

use crate::core::pledges::{names, Authority};
use crate::core::view::HasView;
use crate::core::wit::capbroker::caps::pledge::{self as wit, Host};
use crate::core::{Core, Error, HostResult, Rights, View};

/// What pledging acts on, besides the [`Pledges`] record: the kinds'
/// own state.
pub trait Pledgeable: Send {
    /// Gives up `authority` in everything the instance holds.
    fn renounce(&mut self, authority: Authority);

    /// Narrows the preopen `preopen` to `sub_path` with `rights`.
    fn unveil(
        &mut self,
        table: &mut ResourceTable,
        core: &Core,
        preopen: &str,
        sub_path: &str,
        rights: Rights,
    ) -> Result<(), Error>;
}

/// The pledge room's context: the kinds, as they pledge.
pub type PledgeCtx = dyn Pledgeable;

/// Adds the `pledge` interface to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> View<'_, PledgeCtx>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasView<PledgeCtx>>(linker, get)
}

impl Host for View<'_, PledgeCtx> {
    fn renounce(&mut self, authority: Authority) -> wasmtime::Result<()> {
        self.core.pledges.renounce(authority);
        self.kind.renounce(authority);
        self.core.audit.pledged(&names(authority));
        Ok(())
    }

    fn renounced(&mut self) -> wasmtime::Result<Authority> {
        Ok(self.core.pledges.renounced())
    }

    fn unveil(&mut self, preopen: String, sub_path: String, rights: Rights) -> HostResult<()> {
        let result = self
            .kind
            .unveil(self.table, self.core, &preopen, &sub_path, rights);
        match &result {
            Ok(()) => self
                .core
                .audit
                .derived("unveil", &preopen, &sub_path, rights),
            Err(e) => self
                .core
                .audit
                .refused("unveil", &preopen, &sub_path, rights, e),
        }
        Ok(result?)
    }
}
