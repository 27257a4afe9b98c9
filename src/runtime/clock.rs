//! A core's clocks: the monotonic millisecond clock the shard runs on (the same epoch on every
//! core, read once per batch of work), and the `Date` header's value, formatted once a second
//! so that answering costs no clock reading.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime};

/// Milliseconds since the server started, as read by the last [`Clock::tick`].
pub(super) struct Clock {
    epoch: Instant,
    now: Cell<u64>,
}

impl Clock {
    pub fn new(epoch: Instant) -> Clock {
        Clock { epoch, now: Cell::new(0) }
    }

    /// The tick read by the last [`Clock::tick`].
    pub fn now(&self) -> u64 {
        self.now.get()
    }

    /// Reads the clock (it never goes back). One reading serves a whole batch of work: every
    /// request in it arrived before the reading, so a lease computed from it (rounded up, see
    /// [`crate::shard`]) still never ends before the request's arrival plus its length.
    pub fn tick(&self) -> u64 {
        let now = (self.epoch.elapsed().as_millis() as u64).max(self.now.get());
        self.now.set(now);
        now
    }

    /// The moment tick `at` begins.
    pub fn instant(&self, at: u64) -> Instant {
        self.epoch + Duration::from_millis(at)
    }
}

/// The `Date` header value (29 bytes, RFC 9110's IMF-fixdate).
pub(super) struct DateCache(Cell<[u8; 29]>);

impl Default for DateCache {
    fn default() -> Self {
        let cache = DateCache(Cell::new([b' '; 29]));
        cache.refresh();
        cache
    }
}

impl DateCache {
    pub fn get(&self) -> [u8; 29] {
        self.0.get()
    }

    pub fn refresh(&self) {
        let mut value = [0u8; 29];
        value.copy_from_slice(&httpdate::fmt_http_date(SystemTime::now()).as_bytes()[..29]);
        self.0.set(value);
    }

    /// How long until just after the wall clock's next second.
    pub fn until_next_second() -> Duration {
        let into = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        Duration::from_nanos(1_000_000_000 - u64::from(into) + 1_000)
    }
}
