//! The client without async: each call blocks until its reply. The connection's tasks run on
//! a small runtime of their own, on one background thread, so replies and lost-lease notices
//! are read even while the caller does something else. [`Client::lock`] returns a [`Guard`]
//! that releases the lock when dropped.

use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{broadcast, oneshot};

use crate::{AcquireOptions, Config, Error, Lease, LockInfo, Lost};

/// A blocking connection to a ringlock server. See [`crate::Client`] for what each call does.
pub struct Client {
    inner: Option<crate::Client>,
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    /// Connects and presents the secret.
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

    /// Session locks whose lease ran out from now on.
    pub fn lost(&self) -> broadcast::Receiver<Lost> {
        self.inner().lost()
    }

    pub fn acquire(&self, resource: &str, opts: AcquireOptions) -> Result<Lease, Error> {
        self.handle.block_on(self.inner().acquire(resource, opts))
    }

    /// Acquires, and returns a guard that releases the lock when dropped.
    pub fn lock(&self, resource: &str, opts: AcquireOptions) -> Result<Guard<'_>, Error> {
        let lease = self.acquire(resource, opts)?;
        Ok(Guard { client: self, lease: Some(lease) })
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
        // Dropping the async client closes the connection; then the runtime's thread ends.
        self.inner = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A held lock that is released (token-checked) when dropped.
pub struct Guard<'a> {
    client: &'a Client,
    lease: Option<Lease>,
}

impl Guard<'_> {
    /// The lease: resource and fencing token.
    pub fn lease(&self) -> &Lease {
        self.lease.as_ref().expect("held until dropped")
    }

    /// The fencing token to hand to the storage being written.
    pub fn token(&self) -> u64 {
        self.lease().token
    }

    /// Renews the lease: it now ends `ttl` from now.
    pub fn extend(&self, ttl: Option<Duration>) -> Result<(), Error> {
        let lease = self.lease();
        self.client.extend(&lease.resource, Some(lease.token), ttl)
    }

    /// Releases now, reporting the outcome (dropping releases too, but says nothing).
    pub fn release(mut self) -> Result<(), Error> {
        let lease = self.lease.take().expect("held until dropped");
        self.client.release(&lease.resource, Some(lease.token))
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let _ = self.client.release(&lease.resource, Some(lease.token));
        }
    }
}
