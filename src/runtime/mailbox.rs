//! Mailboxes: where a core leaves what it has for a connection (answers that came later than
//! the request, and pushes about its session locks), and the registry of the core's open
//! connections. The core only ever pushes into a mailbox and wakes it; the connection takes
//! its mail in its own task, so delivering never runs a connection's code, and a connection's
//! state is never borrowed by anyone but the connection.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use hashbrown::HashMap;
use tokio::sync::Notify;

use crate::api::Reply;

use super::ticket::ConnId;

/// One piece of mail. `after`: the log batch it may be sent after (0: at once), as
/// [`super::Core::durable`] counts them.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The answer (or a later word) for the request the connection keeps in `slot`.
    Reply { slot: usize, reply: Reply, after: u64 },
    /// News about the connection's session locks (a lease that ran out).
    Push { news: Reply, after: u64 },
    /// Close the connection now, sending nothing more (what it was owed may never be true:
    /// the core stopped leading the cluster).
    Close,
}

/// A connection's mailbox.
#[derive(Default)]
pub struct Mailbox {
    mail: RefCell<VecDeque<Delivery>>,
    ready: Notify,
}

impl Mailbox {
    pub(super) fn post(&self, delivery: Delivery) {
        self.mail.borrow_mut().push_back(delivery);
        self.wake();
    }

    /// Takes the oldest piece of mail.
    pub fn pop(&self) -> Option<Delivery> {
        self.mail.borrow_mut().pop_front()
    }

    /// Wakes the one who waits for mail (the connection's writer): as mail is posted, and when
    /// the connection has answers of its own to send, or is ending.
    pub fn wake(&self) {
        self.ready.notify_one();
    }

    /// Waits until mail has come, or [`Mailbox::wake`] was called (at once if either happened
    /// since the last wait).
    pub async fn arrived(&self) {
        self.ready.notified().await
    }
}

/// The open connections of a core, by id.
#[derive(Default)]
pub(super) struct Registry {
    conns: RefCell<HashMap<ConnId, Rc<Mailbox>>>,
    last: Cell<Option<ConnId>>,
    /// Wakes [`Registry::drained`] when a connection closes.
    changed: Notify,
}

impl Registry {
    pub fn open(&self) -> (ConnId, Rc<Mailbox>) {
        let conns = self.conns.borrow();
        let mut id = self.last.get().unwrap_or(ConnId::START).next();
        while conns.contains_key(&id) {
            id = id.next();
        }
        drop(conns);
        self.last.set(Some(id));
        let mailbox = Rc::new(Mailbox::default());
        self.conns.borrow_mut().insert(id, mailbox.clone());
        (id, mailbox)
    }

    pub fn close(&self, id: ConnId) {
        self.conns.borrow_mut().remove(&id);
        self.changed.notify_waiters();
    }

    pub fn get(&self, id: ConnId) -> Option<Rc<Mailbox>> {
        self.conns.borrow().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Tells every connection to close at once.
    pub fn close_all(&self) {
        for mailbox in self.conns.borrow().values() {
            mailbox.post(Delivery::Close);
        }
    }

    /// Waits until every connection has closed, or `timeout` has passed; returns how many
    /// are still open.
    pub async fn drained(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            let open = self.len();
            if open == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return open;
            }
        }
    }
}
