//! Operating the process: `/metrics` counters, health flags, systemd's readiness protocol, the
//! logger (escaping, folding of repeats).

pub(crate) mod health;
pub mod logging;
pub(crate) mod metrics;
pub mod systemd;
