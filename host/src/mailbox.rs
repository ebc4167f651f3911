//! The `mailbox` interface: a process's side of the messages it exchanges
//! with its parent.

use tokio::sync::mpsc;

use crate::bindings::capbroker::caps::mailbox::Host;
use crate::ctx::BrokerCtxView;
use crate::types::{Error, HostResult};

/// The two queues between a child and its parent.
pub struct Mailbox {
    from_parent: mpsc::Receiver<Vec<u8>>,
    to_parent: mpsc::Sender<Vec<u8>>,
}

impl Mailbox {
    pub fn new(from_parent: mpsc::Receiver<Vec<u8>>, to_parent: mpsc::Sender<Vec<u8>>) -> Self {
        Mailbox {
            from_parent,
            to_parent,
        }
    }
}

impl Host for BrokerCtxView<'_> {
    async fn receive(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(match self.ctx.mailbox.as_mut() {
            Some(m) => m.from_parent.recv().await,
            None => None,
        })
    }

    async fn send(&mut self, message: Vec<u8>) -> HostResult<()> {
        let Some(m) = self.ctx.mailbox.as_ref() else {
            return Err(Error::Invalid("this process has no parent to send to".into()).into());
        };
        let tx = m.to_parent.clone();
        tx.send(message)
            .await
            .map_err(|_| Error::Invalid("the parent no longer listens".into()).into())
    }
}
