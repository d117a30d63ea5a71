//! Operating the process: `/metrics` counters, health flags, systemd's readiness protocol.

pub(crate) mod health;
pub(crate) mod metrics;
pub mod systemd;
