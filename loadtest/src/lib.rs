//! loadtest: the load generator for ringlock, the reference `lockserver` server, Redis and
//! etcd. One tool, one core, the same workloads against all of them, so their numbers compare.
//!
//! # Layout
//! In the order a run uses them:
//! - [`cli`]: the command line, and the validated [`cli::Plan`] of a run;
//! - [`run`]: picks each connection's protocol by target, opens the connections (each with its
//!   protocol's handshake) on one current-thread runtime, drives them in a closed or open
//!   loop (etcd's over gRPC with a driver of its own), prints progress and gathers the report;
//!   or times a cluster's failover;
//! - [`workload`]: each connection's [`workload::Script`] of requests (pure);
//! - [`schedule`]: the open loop's intended send times (pure);
//! - [`rng`]: the seeded SplitMix64 stream that picks names;
//! - [`proto`]: handshakes and requests to bytes, bytes to replies: [`proto::http`],
//!   [`proto::wire`], [`proto::redis`]; and [`proto::etcd`], etcd's lock as the transactions
//!   `etcd-client` sends;
//! - [`op`]: what the workloads, the protocols and the statistics all speak: a request
//!   ([`op::Op`]) and how it went ([`op::Outcome`]);
//! - [`stats`]: counters, `hdrhistogram` latencies, the progress line and the report;
//! - [`cpu`]: CPU time of the server and of the generator from `/proc/PID/stat`;
//! - [`responder`]: the trivial server that measures the generator itself;
//! - [`fsync`]: the storage's floor, one small append and its sync, for durable servers.

pub mod cli;
pub mod cpu;
pub mod fsync;
pub mod op;
pub mod proto;
pub mod responder;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod workload;
