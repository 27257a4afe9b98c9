//! loadtest: the load generator for ringlock, the reference `lockserver` server and Redis. One
//! tool, one core, the same workloads against all three, so their numbers compare.
//!
//! # Layout
//! In the order a run uses them:
//! - [`cli`]: the command line, and the validated [`cli::Plan`] of a run;
//! - [`run`]: connections on one current-thread runtime, closed and open loop, progress;
//! - [`workload`]: each connection's [`workload::Script`] of requests (pure);
//! - [`schedule`]: the open loop's intended send times (pure);
//! - [`rng`]: the seeded SplitMix64 stream that picks names;
//! - [`proto`]: requests to bytes and bytes to replies: [`proto::http`], [`proto::redis`];
//! - [`stats`]: counters, `hdrhistogram` latencies, the progress line and the report;
//! - [`cpu`]: CPU time of the server and of the generator from `/proc/PID/stat`;
//! - [`responder`]: the trivial server that measures the generator itself.

pub mod cli;
pub mod cpu;
pub mod proto;
pub mod responder;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod workload;
