//! Adding capbroker's interfaces to a linker: each room's, then the
//! process runner's.

use wasmtime::component::{HasData, Linker};

use super::ctx::{BrokerCtxView, BrokerView};
use crate::grants::GrantsCtx;

/// The process runner's own interface, `process`, sees the whole state.
struct Broker;

impl HasData for Broker {
    type Data<'a> = BrokerCtxView<'a>;
}

/// Adds every capbroker interface to `linker`: each room's, then the
/// process runner's.
pub fn add_to_linker<T: BrokerView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use crate::core::view::HasView;
    use crate::core::wit::capbroker::caps::types;
    types::add_to_linker::<T, HasView<GrantsCtx>>(linker, |t| t.broker().grants())?;
    crate::fs::add_to_linker(linker, |t| t.broker().fs())?;
    crate::net::add_to_linker(linker, |t| t.broker().net())?;
    crate::spawn::add_to_linker(linker, |t| t.broker().spawn())?;
    crate::grants::add_to_linker(linker, |t| t.broker().grants())?;
    crate::pledge::add_to_linker(linker, |t| t.broker().pledge())?;
    super::wit::process::add_to_linker::<T, Broker>(linker, T::broker)?;
    Ok(())
}
