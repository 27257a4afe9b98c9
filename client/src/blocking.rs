//! The client without async: each call blocks until its reply (or its timeout). The
//! connection's tasks run on a small runtime of their own, on one background thread, so
//! replies and lost-lease notices are read even while the caller does something else.
//! [`Client::lock`] returns a [`Guard`] that releases the lock when dropped, and whose
//! [`LostSignal`] tells when the lock can no longer be counted on.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{broadcast, oneshot};

use crate::{AcquireOptions, Config, Error, Lease, LockInfo, Lost, LostReason};

/// A blocking connection to a ringlock server. See [`crate::Client`] for what each call does.
pub struct Client {
    inner: Option<crate::Client>,
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    /// Connects and presents the secret (see [`crate::Client::connect`]).
    pub fn connect(config: &Config) -> Result<Client, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("ringlock-client".into()).spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            })
        })?;
        let mut client = Client { inner: None, handle, stop: Some(stop), thread: Some(thread) };
        client.inner = Some(client.handle.block_on(crate::Client::connect(config))?);
        Ok(client)
    }

    fn inner(&self) -> &crate::Client {
        self.inner.as_ref().expect("connected")
    }

    /// The owner name this client acquires and releases as.
    pub fn owner(&self) -> &str {
        self.inner().owner()
    }

    /// Session locks lost from now on (see [`crate::Client::lost`]).
    pub fn lost(&self) -> broadcast::Receiver<Lost> {
        self.inner().lost()
    }

    pub fn acquire(&self, resource: &str, opts: AcquireOptions) -> Result<Lease, Error> {
        self.handle.block_on(self.inner().acquire(resource, opts))
    }

    /// Acquires, and returns a guard that releases the lock when dropped (see
    /// [`crate::Client::lock`]).
    pub fn lock(&self, resource: &str, opts: AcquireOptions) -> Result<Guard<'_>, Error> {
        let guard = self.handle.block_on(self.inner().lock(resource, opts))?;
        Ok(Guard { client: self, inner: Some(guard) })
    }

    pub fn release(&self, resource: &str, token: Option<u64>) -> Result<(), Error> {
        self.handle.block_on(self.inner().release(resource, token))
    }

    pub fn extend(&self, resource: &str, token: Option<u64>, ttl: Option<Duration>) -> Result<(), Error> {
        self.handle.block_on(self.inner().extend(resource, token, ttl))
    }

    pub fn inspect(&self, resource: &str) -> Result<Option<LockInfo>, Error> {
        self.handle.block_on(self.inner().inspect(resource))
    }

    pub fn ping(&self) -> Result<(), Error> {
        self.handle.block_on(self.inner().ping())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Dropping the async client closes the connection once what was queued on it (and,
        // with version 2, the release of the session's locks) has been written: wait for that,
        // at most the call timeout, before the runtime's thread ends and takes its tasks along.
        if let Some(inner) = self.inner.take() {
            let (mut done, limit) = (inner.done(), inner.call_timeout());
            drop(inner);
            let _ = self.handle.block_on(async { tokio::time::timeout(limit, done.wait_for(|&d| d)).await });
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A held lock that is released (token-checked) when dropped. See [`crate::Guard`].
pub struct Guard<'a> {
    client: &'a Client,
    inner: Option<crate::Guard>,
}

impl<'a> Guard<'a> {
    fn inner(&self) -> &crate::Guard {
        self.inner.as_ref().expect("held until dropped")
    }

    /// The lease: resource and fencing token.
    pub fn lease(&self) -> &Lease {
        self.inner().lease()
    }

    /// The fencing token to hand to the storage being written.
    pub fn token(&self) -> u64 {
        self.inner().token()
    }

    /// The moment, on this process's clock, that the lease cannot have ended at the server
    /// before (`None`: no expiry).
    pub fn expires(&self) -> Option<Instant> {
        self.inner().expires()
    }

    /// A signal that fires when the lock can no longer be counted on.
    pub fn lost(&self) -> LostSignal<'a> {
        LostSignal { inner: self.inner().lost(), client: self.client }
    }

    /// Renews the lease: it now ends `ttl` from now (a refused or failed renewal makes the
    /// guard lost).
    pub fn extend(&self, ttl: Option<Duration>) -> Result<(), Error> {
        self.client.handle.block_on(self.inner().extend(ttl))
    }

    /// Releases now, reporting the outcome (dropping releases too, but says nothing).
    pub fn release(mut self) -> Result<(), Error> {
        let guard = self.inner.take().expect("held until dropped");
        self.client.handle.block_on(guard.release())
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let Some(guard) = self.inner.take() else { return };
        if guard.lost().check().is_none() {
            // Waits for the answer, so that the lock is free when the drop returns.
            let _ = self.client.handle.block_on(guard.release());
        }
        // A lost lock is released without waiting (dropping the async guard): its server
        // may not answer at all.
    }
}

/// [`crate::LostSignal`] for code without async: it blocks on the client's runtime.
#[derive(Clone)]
pub struct LostSignal<'a> {
    inner: crate::LostSignal,
    client: &'a Client,
}

impl LostSignal<'_> {
    /// Blocks until the lock is lost; returns why.
    pub fn wait(&mut self) -> LostReason {
        self.client.handle.block_on(self.inner.wait())
    }

    /// Blocks until the lock is lost or `timeout` has passed; returns why, if it was lost.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<LostReason> {
        let inner = &mut self.inner;
        self.client.handle.block_on(async { tokio::time::timeout(timeout, inner.wait()).await.ok() })
    }

    /// Why the lock is lost, if it is, now.
    pub fn check(&self) -> Option<LostReason> {
        self.inner.check()
    }

    /// When the signal fires if nothing else comes first (`None`: no expiry).
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline()
    }

    /// The async signal, to `select!` on.
    pub fn into_async(self) -> crate::LostSignal {
        self.inner
    }
}
