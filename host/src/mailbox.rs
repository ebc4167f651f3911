//! The `mailbox` interface: a process's side of the messages it exchanges
//! with its parent, and the link both sides share.
//!
//! One link per child holds both queues and the parent's kill: a spawn
//! allocates it once, where channels would cost an allocation each for
//! mailboxes most per-request children never use.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::bindings::capbroker::caps::mailbox::Host;
use crate::ctx::BrokerCtxView;
use crate::types::{Error, HostResult};

/// How many messages wait in a mailbox before the sender waits.
pub const DEPTH: usize = 64;

/// Which end of a link.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Parent,
    Child,
}

/// The messages in one direction, and whether their sender is gone.
#[derive(Default)]
struct Queue {
    messages: VecDeque<Vec<u8>>,
    sender_gone: bool,
    receiver_gone: bool,
}

/// Wakes the receiver when a message arrives, the sender when space frees.
#[derive(Default)]
struct Signals {
    message: Notify,
    space: Notify,
}

#[derive(Default)]
struct Link {
    /// `[to child, to parent]`.
    queues: Mutex<[Queue; 2]>,
    signals: [Signals; 2],
    /// Set, and `kill` notified, when the parent kills the child or lets
    /// go of it.
    killed: AtomicBool,
    kill: Notify,
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, [Queue; 2]> {
        // The queues hold plain data: a panic elsewhere leaves them whole.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One side's access to a link; cheap to clone, so that a call can wait
/// without holding the handle it came from.
#[derive(Clone)]
pub struct Port {
    link: Arc<Link>,
    side: Side,
}

impl Port {
    /// The direction this side sends in, and the one it receives from.
    fn directions(&self) -> (usize, usize) {
        match self.side {
            Side::Parent => (0, 1),
            Side::Child => (1, 0),
        }
    }

    /// Queues `message`, waiting while the queue is full. Gives the message
    /// back if the other side is gone.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), Vec<u8>> {
        let (out, _) = self.directions();
        let signals = &self.link.signals[out];
        loop {
            // Registered before looking, so that a wake-up in between counts.
            let mut space = pin!(signals.space.notified());
            space.as_mut().enable();
            {
                let mut queues = self.link.lock();
                let q = &mut queues[out];
                if q.receiver_gone {
                    return Err(message);
                }
                if q.messages.len() < DEPTH {
                    q.messages.push_back(message);
                    drop(queues);
                    signals.message.notify_one();
                    return Ok(());
                }
            }
            space.await;
        }
    }

    /// The next message, waiting for one; `None` once the other side is
    /// gone and every message it sent has been read.
    pub async fn receive(&self) -> Option<Vec<u8>> {
        let (_, inbound) = self.directions();
        let signals = &self.link.signals[inbound];
        loop {
            let mut arrived = pin!(signals.message.notified());
            arrived.as_mut().enable();
            {
                let mut queues = self.link.lock();
                let q = &mut queues[inbound];
                if let Some(m) = q.messages.pop_front() {
                    drop(queues);
                    signals.space.notify_one();
                    return Some(m);
                }
                if q.sender_gone {
                    return None;
                }
            }
            arrived.await;
        }
    }

    /// Resolves once the parent has killed the child or let go of it.
    pub async fn killed(&self) {
        let mut kill = pin!(self.link.kill.notified());
        kill.as_mut().enable();
        if !self.link.killed.load(Ordering::Acquire) {
            kill.await;
        }
    }
}

/// A side of a link that tells the other when it is dropped: the parent's
/// is in its process handle, the child's in its `BrokerCtx`.
pub struct End(Port);

impl End {
    pub fn port(&self) -> Port {
        self.0.clone()
    }

    /// Ends the child (from the parent's end; a child cannot kill itself
    /// this way).
    pub fn kill(&self) {
        if self.0.side == Side::Parent {
            self.0.link.killed.store(true, Ordering::Release);
            self.0.link.kill.notify_waiters();
        }
    }
}

impl Drop for End {
    fn drop(&mut self) {
        let (out, inbound) = self.0.directions();
        let link = &self.0.link;
        {
            let mut queues = link.lock();
            queues[out].sender_gone = true;
            queues[inbound].receiver_gone = true;
        }
        link.signals[out].message.notify_waiters();
        link.signals[inbound].space.notify_waiters();
        // No process outlives its parent's last handle to it.
        self.kill();
    }
}

/// A new link: the parent's end and the child's.
pub fn link() -> (End, End) {
    let link = Arc::new(Link::default());
    (
        End(Port {
            link: link.clone(),
            side: Side::Parent,
        }),
        End(Port {
            link,
            side: Side::Child,
        }),
    )
}

impl Host for BrokerCtxView<'_> {
    async fn receive(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(match self.ctx.mailbox.as_ref() {
            Some(m) => m.port().receive().await,
            None => None,
        })
    }

    async fn send(&mut self, message: Vec<u8>) -> HostResult<()> {
        let Some(m) = self.ctx.mailbox.as_ref() else {
            return Err(Error::Invalid("this process has no parent to send to".into()).into());
        };
        m.port()
            .send(message)
            .await
            .map_err(|_| Error::Invalid("the parent no longer listens".into()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_arrive_in_order_both_ways() {
        let (parent, child) = link();
        parent.port().send(b"a".to_vec()).await.unwrap();
        parent.port().send(b"b".to_vec()).await.unwrap();
        child.port().send(b"c".to_vec()).await.unwrap();
        assert_eq!(child.port().receive().await.unwrap(), b"a");
        assert_eq!(child.port().receive().await.unwrap(), b"b");
        assert_eq!(parent.port().receive().await.unwrap(), b"c");
    }

    #[tokio::test]
    async fn a_full_mailbox_makes_the_sender_wait() {
        let (parent, child) = link();
        for i in 0..DEPTH {
            parent.port().send(vec![i as u8]).await.unwrap();
        }
        let port = parent.port();
        let blocked = tokio::spawn(async move { port.send(vec![255]).await });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished(), "sent into a full mailbox");
        assert_eq!(child.port().receive().await.unwrap(), vec![0]);
        blocked.await.unwrap().unwrap();
        for i in 1..DEPTH {
            assert_eq!(child.port().receive().await.unwrap(), vec![i as u8]);
        }
        assert_eq!(child.port().receive().await.unwrap(), vec![255]);
    }

    #[tokio::test]
    async fn a_gone_side_ends_receiving_after_what_it_sent() {
        let (parent, child) = link();
        child.port().send(b"last".to_vec()).await.unwrap();
        let port = parent.port();
        drop(child);
        assert_eq!(port.receive().await.unwrap(), b"last");
        assert_eq!(port.receive().await, None);
        assert_eq!(port.send(b"x".to_vec()).await, Err(b"x".to_vec()));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_when_the_sender_goes() {
        let (parent, child) = link();
        let port = parent.port();
        let waiting = tokio::spawn(async move { port.receive().await });
        tokio::task::yield_now().await;
        drop(child);
        assert_eq!(waiting.await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_child_hears_a_kill_and_the_parent_letting_go() {
        let (parent, child) = link();
        let port = child.port();
        let waiting = tokio::spawn(async move { port.killed().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "killed before any kill");
        child.kill();
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a child killed itself");
        parent.kill();
        waiting.await.unwrap();
        // Heard even by a child that starts listening afterwards.
        child.port().killed().await;

        let (parent, child) = link();
        drop(parent);
        child.port().killed().await;
    }

    #[tokio::test]
    async fn a_waiting_sender_wakes_when_the_receiver_goes() {
        let (parent, child) = link();
        for _ in 0..DEPTH {
            parent.port().send(vec![0]).await.unwrap();
        }
        let port = parent.port();
        let waiting = tokio::spawn(async move { port.send(vec![1]).await });
        tokio::task::yield_now().await;
        drop(child);
        assert_eq!(waiting.await.unwrap(), Err(vec![1]));
    }
}
