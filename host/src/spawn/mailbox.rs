//! The `mailbox` interface: a process's side of the messages it exchanges
//! with its parent, and the link both sides share.
//!
//! One link per child holds both queues, the parent's kill and the child's
//! memory account: a spawn allocates it once, where channels would cost an
//! allocation each for mailboxes most per-request children never use.
//!
//! The host holds a message from its sending until it is read, so its bytes
//! count against the sender's memory, beside its linear memory (see
//! [`MemoryAccount`]): what one process can make the host hold in its
//! mailboxes is bounded by its own `max-memory`, in whichever direction it
//! sends. A child that has ended keeps its place in its spawners'
//! `max-children` until its parent has read what it sent, or let go of it,
//! so that ended children cannot pile up memory beside live ones.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::spawner::Slot;
use super::wit::mailbox::Host;
use super::SpawnCtx;
use crate::core::limits::{Account, MemoryAccount};
use crate::core::{Error, HostResult, Rights, View};

/// How many messages wait in a mailbox before the sender waits.
pub const DEPTH: usize = 64;

/// Which end of a link.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Parent,
    Child,
}

/// Indices into [`Queues::dirs`].
const TO_CHILD: usize = 0;
const TO_PARENT: usize = 1;

/// The messages in one direction, and whether their sender is gone.
#[derive(Default)]
struct Queue {
    messages: VecDeque<Vec<u8>>,
    sender_gone: bool,
    receiver_gone: bool,
}

#[derive(Default)]
struct Queues {
    /// `[to child, to parent]`.
    dirs: [Queue; 2],
    /// The `max-children` slot of a child that ended before its parent read
    /// every message it sent.
    parked: Option<Slot>,
    /// The slot of a child whose large result its parent's process handle
    /// still holds: given back when the handle is dropped.
    held: Option<Slot>,
}

/// Wakes the receiver when a message arrives, the sender when space frees.
#[derive(Default)]
struct Signals {
    message: Notify,
    space: Notify,
}

struct Link {
    queues: Mutex<Queues>,
    signals: [Signals; 2],
    /// Set, and `kill` notified, when the parent kills the child or lets
    /// go of it.
    killed: AtomicBool,
    kill: Notify,
    /// The child's memory: what it sends to the parent counts here.
    child_memory: MemoryAccount,
    /// The parent's: what it sends to the child counts there.
    parent_memory: Account,
}

impl AsRef<MemoryAccount> for Link {
    fn as_ref(&self) -> &MemoryAccount {
        &self.child_memory
    }
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // The queues hold plain data: a panic elsewhere leaves them whole.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The account of whoever sends in direction `dir`.
    fn sender_memory(&self, dir: usize) -> &MemoryAccount {
        if dir == TO_CHILD {
            &self.parent_memory
        } else {
            &self.child_memory
        }
    }
}

/// Why a message was not sent.
#[derive(Debug)]
pub enum Unsent {
    /// The other side is gone; the message comes back.
    Gone(Vec<u8>),
    /// The message does not fit in the sender's memory even with this
    /// mailbox empty.
    TooBig(Error),
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
            Side::Parent => (TO_CHILD, TO_PARENT),
            Side::Child => (TO_PARENT, TO_CHILD),
        }
    }

    /// Queues `message`, counting its bytes against the sender's memory.
    /// Waits while the mailbox is full: it holds [`DEPTH`] messages, or the
    /// message would fit in the sender's memory only once some of those
    /// queued are read. Fails when it would not fit even then.
    pub async fn send(&self, message: Vec<u8>) -> Result<(), Unsent> {
        let (out, _) = self.directions();
        let signals = &self.link.signals[out];
        let memory = self.link.sender_memory(out);
        loop {
            // Registered before looking, so that a wake-up in between counts.
            let mut space = pin!(signals.space.notified());
            space.as_mut().enable();
            {
                let mut queues = self.link.lock();
                let q = &mut queues.dirs[out];
                if q.receiver_gone {
                    return Err(Unsent::Gone(message));
                }
                if q.messages.len() < DEPTH {
                    match memory.charge(message.len()) {
                        Ok(()) => {
                            q.messages.push_back(message);
                            drop(queues);
                            signals.message.notify_one();
                            return Ok(());
                        }
                        // Nothing here to wait for: reading frees no room.
                        Err(e) if q.messages.is_empty() => return Err(Unsent::TooBig(e)),
                        Err(_) => {}
                    }
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
                let q = &mut queues.dirs[inbound];
                if let Some(m) = q.messages.pop_front() {
                    let slot = if inbound == TO_PARENT && q.messages.is_empty() {
                        queues.parked.take()
                    } else {
                        None
                    };
                    drop(queues);
                    self.link.sender_memory(inbound).release(m.len());
                    drop(slot);
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

    /// Gives back an ended child's `max-children` slot once its parent has
    /// read every message it sent, or let go of it: until then the host
    /// holds those messages for it.
    pub fn release_when_read(&self, slot: Slot) {
        let mut queues = self.link.lock();
        let q = &queues.dirs[TO_PARENT];
        if !q.messages.is_empty() && !q.receiver_gone {
            queues.parked = Some(slot);
        }
    }

    /// Keeps an ended child's slot while its parent holds the process
    /// handle, whose exit status carries a result the host holds for it:
    /// results then count like children, within the spawner's budget.
    pub fn release_when_dropped(&self, slot: Slot) {
        let mut queues = self.link.lock();
        if !queues.dirs[TO_PARENT].receiver_gone {
            queues.held = Some(slot);
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

    /// The memory account of the child, whose end this is.
    pub fn child_memory(&self) -> Account {
        Account::within(self.0.link.clone())
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
        let (unread, slot, other_gone) = {
            let mut queues = link.lock();
            queues.dirs[out].sender_gone = true;
            let q = &mut queues.dirs[inbound];
            q.receiver_gone = true;
            // Only the other side's `End` sets this, when it is dropped.
            let other_gone = q.sender_gone;
            // No one will read them: the sender gets their room back now.
            let unread = std::mem::take(&mut q.messages);
            (
                unread,
                (queues.parked.take(), queues.held.take()),
                other_gone,
            )
        };
        let bytes = unread.iter().map(Vec::len).sum();
        link.sender_memory(inbound).release(bytes);
        drop((unread, slot));
        if other_gone {
            // The other side's end went first: the child's with its store
            // (so the child's run, and its wait for a kill, are over), or
            // the parent's with its process handle (so no call of the
            // parent's is on this link). No one is left to wake: a spawned
            // child that ended before its parent dropped its handle, the
            // usual case, costs no wake-ups here.
            if self.0.side == Side::Parent {
                self.0.link.killed.store(true, Ordering::Release);
            }
            return;
        }
        link.signals[out].message.notify_waiters();
        link.signals[inbound].space.notify_waiters();
        // No process outlives its parent's last handle to it.
        self.kill();
    }
}

/// A new link: the parent's end and the child's. The parent's messages
/// count against `parent_memory`; the child's against an account in the
/// link, whose limit its store sets.
pub fn link(parent_memory: Account) -> (End, End) {
    let link = Arc::new(Link {
        queues: Mutex::default(),
        signals: Default::default(),
        killed: AtomicBool::new(false),
        kill: Notify::new(),
        child_memory: MemoryAccount::new(0),
        parent_memory,
    });
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

impl Host for View<'_, SpawnCtx> {
    async fn receive(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(match self.kind.mailbox.as_ref() {
            Some(m) => m.port().receive().await,
            None => None,
        })
    }

    async fn send(&mut self, message: Vec<u8>) -> HostResult<()> {
        let Some(m) = self.kind.mailbox.as_ref() else {
            return Err(Error::Invalid("this process has no parent to send to".into()).into());
        };
        match m.port().send(message).await {
            Ok(()) => Ok(()),
            Err(Unsent::Gone(_)) => {
                Err(Error::Invalid("the parent no longer listens".into()).into())
            }
            Err(Unsent::TooBig(e)) => {
                self.core
                    .audit
                    .refused("mailbox.send", "mailbox", "", Rights::empty(), &e);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link whose parent and child each have 1 MiB.
    fn pair() -> (End, End) {
        let (parent, child) = link(Account::new(1 << 20));
        child.child_memory().set_max(1 << 20);
        (parent, child)
    }

    #[tokio::test]
    async fn messages_arrive_in_order_both_ways() {
        let (parent, child) = pair();
        parent.port().send(b"a".to_vec()).await.unwrap();
        parent.port().send(b"b".to_vec()).await.unwrap();
        child.port().send(b"c".to_vec()).await.unwrap();
        assert_eq!(child.port().receive().await.unwrap(), b"a");
        assert_eq!(child.port().receive().await.unwrap(), b"b");
        assert_eq!(parent.port().receive().await.unwrap(), b"c");
    }

    #[tokio::test]
    async fn a_full_mailbox_makes_the_sender_wait() {
        let (parent, child) = pair();
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
        let (parent, child) = pair();
        child.port().send(b"last".to_vec()).await.unwrap();
        let port = parent.port();
        drop(child);
        assert_eq!(port.receive().await.unwrap(), b"last");
        assert_eq!(port.receive().await, None);
        assert!(matches!(port.send(b"x".to_vec()).await, Err(Unsent::Gone(m)) if m == b"x"));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_when_the_sender_goes() {
        let (parent, child) = pair();
        let port = parent.port();
        let waiting = tokio::spawn(async move { port.receive().await });
        tokio::task::yield_now().await;
        drop(child);
        assert_eq!(waiting.await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_child_hears_a_kill_and_the_parent_letting_go() {
        let (parent, child) = pair();
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

        let (parent, child) = pair();
        drop(parent);
        child.port().killed().await;
    }

    #[tokio::test]
    async fn a_waiting_sender_wakes_when_the_receiver_goes() {
        let (parent, child) = pair();
        for _ in 0..DEPTH {
            parent.port().send(vec![0]).await.unwrap();
        }
        let port = parent.port();
        let waiting = tokio::spawn(async move { port.send(vec![1]).await });
        tokio::task::yield_now().await;
        drop(child);
        assert!(matches!(waiting.await.unwrap(), Err(Unsent::Gone(m)) if m == [1]));
    }

    #[tokio::test]
    async fn queued_bytes_count_against_the_senders_memory() {
        let (parent, child) = pair();
        let memory = child.child_memory();
        child.port().send(vec![0; 600 << 10]).await.unwrap();
        assert_eq!(memory.queued(), 600 << 10);
        // Would fit once the first is read: the sender waits.
        let port = child.port();
        let blocked = tokio::spawn(async move { port.send(vec![1; 600 << 10]).await });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished(), "queued past the sender's memory");
        assert_eq!(parent.port().receive().await.unwrap().len(), 600 << 10);
        blocked.await.unwrap().unwrap();
        assert_eq!(memory.queued(), 600 << 10);
        assert_eq!(parent.port().receive().await.unwrap()[0], 1);
        assert_eq!(memory.queued(), 0);
        // The parent's messages count against the parent, not the child.
        parent.port().send(vec![2; 900 << 10]).await.unwrap();
        assert_eq!(memory.queued(), 0);
        assert_eq!(parent.0.link.parent_memory.queued(), 900 << 10);
    }

    #[tokio::test]
    async fn a_message_that_can_never_fit_is_refused() {
        let (parent, child) = pair();
        let memory = child.child_memory();
        let mut limiter = crate::core::limits::MemoryLimiter::new(memory.clone());
        assert!(
            wasmtime::ResourceLimiter::memory_growing(&mut limiter, 0, 512 << 10, None).unwrap()
        );
        let refused = child.port().send(vec![0; 600 << 10]).await;
        assert!(
            matches!(&refused, Err(Unsent::TooBig(Error::LimitExceeded(m))) if m.contains("max-memory")),
            "{refused:?}"
        );
        assert_eq!(memory.queued(), 0);
        assert!(parent.0.link.lock().dirs[TO_PARENT].messages.is_empty());
    }

    #[tokio::test]
    async fn unread_messages_are_given_back_when_the_receiver_goes() {
        let (parent, child) = pair();
        let parent_memory = parent.0.link.parent_memory.clone();
        parent.port().send(vec![0; 100 << 10]).await.unwrap();
        parent.port().send(vec![0; 100 << 10]).await.unwrap();
        assert_eq!(parent_memory.queued(), 200 << 10);
        drop(child);
        assert_eq!(parent_memory.queued(), 0);
    }
}
