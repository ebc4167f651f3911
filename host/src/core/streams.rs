//! Streams that stop working when their descriptor or socket loses its
//! rights: after a pledge, reads and writes on a stream opened earlier fail
//! with `EACCES`.

use bytes::Bytes;
use wasmtime::component::{Resource, ResourceTable, ResourceTableError};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, InputStream, OutputStream, Pollable};
use wasmtime_wasi::p2::{StreamError, StreamResult};

use super::gate::Gate;
use super::Rights;

/// A stream that needs `need` on its gate for every operation.
pub struct Guarded<S> {
    /// `None` only while the stream is being moved in.
    inner: Option<S>,
    gate: Gate,
    need: Rights,
}

impl<S> Guarded<S> {
    fn inner(&mut self) -> StreamResult<&mut S> {
        match &mut self.inner {
            Some(s) if self.gate.check(self.need).is_ok() => Ok(s),
            _ => {
                let op = if self.need == Rights::READ {
                    "stream read"
                } else {
                    "stream write"
                };
                self.gate.refused(op, self.need);
                Err(StreamError::LastOperationFailed(
                    std::io::Error::from_raw_os_error(libc::EACCES).into(),
                ))
            }
        }
    }

    fn placeholder() -> Self {
        Guarded {
            inner: None,
            gate: Gate::new(Rights::empty()),
            need: Rights::all(),
        }
    }
}

/// Puts the stream at `r` in `table` behind `gate`, in place: its handle,
/// and its place among its parent's children, stay as they are.
pub fn guard<S>(
    table: &mut ResourceTable,
    r: &Resource<Box<S>>,
    gate: &Gate,
    need: Rights,
) -> Result<(), ResourceTableError>
where
    S: ?Sized + Send + 'static,
    Guarded<Box<S>>: IntoBox<S>,
{
    let entry = table.get_mut(r)?;
    let inner = std::mem::replace(entry, Guarded::placeholder().into_box());
    *entry = Guarded {
        inner: Some(inner),
        gate: gate.clone(),
        need,
    }
    .into_box();
    Ok(())
}

/// Boxes a guarded stream as the trait object the table holds.
pub trait IntoBox<S: ?Sized> {
    fn into_box(self) -> Box<S>;
}

impl IntoBox<dyn InputStream> for Guarded<DynInputStream> {
    fn into_box(self) -> DynInputStream {
        Box::new(self)
    }
}

impl IntoBox<dyn OutputStream> for Guarded<DynOutputStream> {
    fn into_box(self) -> DynOutputStream {
        Box::new(self)
    }
}

#[async_trait::async_trait]
impl Pollable for Guarded<DynInputStream> {
    async fn ready(&mut self) {
        // A denied stream is ready at once: its next read fails (and is
        // recorded then).
        if self.gate.check(self.need).is_ok() {
            if let Some(s) = &mut self.inner {
                s.ready().await
            }
        }
    }
}

#[async_trait::async_trait]
impl InputStream for Guarded<DynInputStream> {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.inner()?.read(size)
    }

    async fn blocking_read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.inner()?.blocking_read(size).await
    }

    fn skip(&mut self, n: usize) -> StreamResult<usize> {
        self.inner()?.skip(n)
    }

    async fn blocking_skip(&mut self, n: usize) -> StreamResult<usize> {
        self.inner()?.blocking_skip(n).await
    }

    async fn cancel(&mut self) {
        if let Some(s) = &mut self.inner {
            s.cancel().await
        }
    }
}

#[async_trait::async_trait]
impl Pollable for Guarded<DynOutputStream> {
    async fn ready(&mut self) {
        if self.gate.check(self.need).is_ok() {
            if let Some(s) = &mut self.inner {
                s.ready().await
            }
        }
    }
}

#[async_trait::async_trait]
impl OutputStream for Guarded<DynOutputStream> {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.inner()?.write(bytes)
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.inner()?.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner()?.check_write()
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.inner()?.blocking_write_and_flush(bytes).await
    }

    fn write_zeroes(&mut self, n: usize) -> StreamResult<()> {
        self.inner()?.write_zeroes(n)
    }

    async fn write_ready(&mut self) -> StreamResult<usize> {
        self.inner()?.write_ready().await
    }

    async fn cancel(&mut self) {
        if let Some(s) = &mut self.inner {
            s.cancel().await
        }
    }
}
