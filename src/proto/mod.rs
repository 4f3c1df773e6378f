//! Sans-IO core: wire messages, identifiers, name sanitizing, the job state machines and
//! the policy for getting back to signaling.
//! Nothing in here touches sockets, files, clocks or tokio; inputs are messages, bytes
//! and "now" values, outputs are decisions.

pub mod batch;
pub mod code;
pub mod control;
pub mod download;
pub mod group;
pub mod hash;
pub mod ids;
pub mod names;
pub mod pake;
pub mod rejoin;
pub mod resume;
pub mod upload;
