//! ringlock's integration suite: one binary; every test starts real servers on free ports
//! and talks to them over TCP, asserting exact bytes.

/// Starting servers, raw HTTP clients, installing the SDKs.
mod support;

/// The binary's configuration: command line, environment, `.env`, defaults.
mod config;

/// The HTTP API: the reference server's table row by row, framing, pipelining, waits.
mod http;

/// The mutual-exclusion checker: many clients, few locks, no two holders ever.
mod exclusion;

/// The fuzzers' seeds and past crashes, replayed.
mod fuzzed;

/// Hostile and broken clients: limits, timeouts, caps, garbage.
mod hostile;

/// Running the server: metrics, graceful shutdown, secret files, protected mode, logs.
mod ops;

/// Crashes and restarts: nothing acknowledged lost, leases and tokens across the downtime,
/// torn and damaged logs, a second server, a full disk, memory-only mode.
mod durability;

/// The binary protocol: golden vectors, the Rust client, sessions, the `lock` command.
mod wire;

/// Resumable sessions (protocol version 2): resumed in time, ended after it, across restarts.
mod sessions;

/// The Rust client's reconnects and `ringlock lock` across server restarts and outages.
mod resume;

/// The operator's tools: forced releases (`LOST` pushed, logged, counted), `ringlock locks`
/// and `ringlock release`, the wait and hold histograms.
mod admin;
/// Clusters of three processes: any member serves, locks outlive their leader, a minority
/// grants nothing, a member that was down catches up; faults under load (killed, stopped,
/// cut off, restarted members) checked by the mutual-exclusion history across members.
mod cluster;

/// TLS and mTLS on the shared port, from clients and between cluster members.
mod tls;

/// The reference server's real SDKs (Python, Node, Rust), unmodified, against ringlock.
mod sdk;
