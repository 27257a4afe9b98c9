//! The mutual-exclusion history and its check, shared by the single server's checker and the
//! cluster's fault suite: clients (on one server or spread over a cluster's members) record
//! every grant they got, with its token and a conservative hold interval on this process's
//! clock; per resource, no two holds may overlap and tokens must rise in grant order.
//!
//! A hold starts when the client has the grant in hand and ends at the earliest moment any
//! server could have let the lock go: when the client sent its release (or dropped its
//! connection, for a lock that goes with it), or when the lease ran out counted from when the
//! client *sent* its acquire (the server granted later, so its lease ends later). A request
//! whose answer never came (a member killed, stopped or cut off) is recorded as nothing: its
//! client does not believe it holds anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One grant as its client saw it.
#[derive(Clone, Copy, Debug)]
pub struct Hold {
    pub token: u64,
    pub start: Instant,
    pub end: Instant,
}

/// Every client's grants, by resource; clones share it.
#[derive(Clone, Default)]
pub struct History(Arc<Mutex<HashMap<String, Vec<Hold>>>>);

impl History {
    /// Records a grant of `resource`.
    pub fn record(&self, resource: &str, hold: Hold) {
        self.0.lock().unwrap().entry(resource.to_owned()).or_default().push(hold);
    }

    /// The grants recorded, over every resource.
    pub fn grants(&self) -> usize {
        self.0.lock().unwrap().values().map(Vec::len).sum()
    }

    /// The grants whose client had them in hand after `at`.
    pub fn granted_after(&self, at: Instant) -> usize {
        self.0.lock().unwrap().values().flatten().filter(|h| h.start > at).count()
    }

    /// Panics, naming the resource and the tokens, unless no two holds of a resource overlap
    /// and each resource's tokens rise in the order its grants were in hand.
    pub fn check(&self) {
        for (resource, holds) in self.0.lock().unwrap().iter() {
            check_resource(resource, holds);
        }
    }
}

fn check_resource(resource: &str, holds: &[Hold]) {
    let mut holds = holds.to_vec();
    holds.sort_by_key(|h| h.token);
    for pair in holds.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(a.token < b.token, "{resource}: token {} granted twice", a.token);
        assert!(
            a.end <= b.start,
            "{resource}: token {} held until {:?} after token {} was granted",
            a.token,
            a.end - b.start,
            b.token
        );
        // A grant that arrived after its own lease had run out (counted from the acquire's
        // sending, as its client must count it) was never held: its answer waited for the
        // log while the lease ran, and the lock went on. Its order says nothing.
        if a.end > a.start {
            assert!(a.start <= b.start, "{resource}: token {} granted after token {}", a.token, b.token);
        }
    }
}
