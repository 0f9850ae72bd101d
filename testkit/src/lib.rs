//! `udphub-testkit`: the harness udphub's integration tests (`tests/`) and its benchmark
//! examples (`examples/bench.rs`, `examples/loss_sweep.rs`) share, so that starting a hub,
//! reading its ports and running a binary with a deadline are written once.
//!
//! - [`process`]: run a child process to its end with a deadline (killed past it), its
//!   stdout and stderr collected on threads of their own and its CPU time taken from
//!   `wait4`;
//! - [`hub`]: a `hub` process on OS-chosen loopback ports: started, its bound addresses read
//!   from its `hub: … listening on …` lines up to `hub: ready`, stopped with SIGINT or
//!   SIGTERM and killed if it does not exit in time;
//! - [`frames`]: the benchmark frames written to disk, for `img-client --jpeg`;
//! - [`broker`]: a Mosquitto broker of a test's own, on a loopback port;
//! - [`libjpeg`]: libjpeg-turbo's entropy decode, the yardstick `examples/jpeg_walk_speed`
//!   times the hub's JPEG walk against.
//!
//! Why a crate of its own and not a module of the library: these helpers start processes,
//! send signals and give up after deadlines; none of it belongs in the API a
//! device program links. As a workspace member and a dev-dependency of `udphub` it is built
//! only for tests and examples.
//!
//! Every wait here is bounded, and every error is a `String` that says what was being
//! waited for and what the child printed: the callers are tests (which panic with it) and
//! benchmark drivers (which report it per case).

pub mod broker;
pub mod frames;
pub mod hub;
pub mod libjpeg;
pub mod process;

pub use hub::{HubProcess, Ports, Signal, Stopped};
pub use process::{run, Finished, Running};
