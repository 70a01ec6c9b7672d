//! What runs around the daemon: the control socket ([`control`]), the
//! supervisor of background tasks ([`supervisor`]), systemd's notify and
//! watchdog protocol ([`systemd`]) and Prometheus metrics ([`metrics`]).

pub mod control;
pub mod metrics;
pub mod supervisor;
pub mod systemd;
