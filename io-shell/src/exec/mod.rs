//! Carries out the engine's decisions: [`daemon::Daemon`] feeds the core
//! its inputs and executes its outputs (fetches, serves, stores).

pub mod daemon;
