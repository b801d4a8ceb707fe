//! The client verifier a licensed deployment embeds (feature `client`; builds without the
//! server). Built up in stages: today the policy that decides what an instance may collect and
//! send, and the collector's counters; the verifier, latency sketches, local store and
//! phone-home follow.

pub mod collector;
pub mod exchange;
mod local_cache;
pub mod policy;
pub mod requests;
pub mod status;
pub mod telemetry;
