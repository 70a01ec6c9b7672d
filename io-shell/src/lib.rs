//! # musicfs (the io-shell)
//!
//! Binds the pure [`musicfs_core`] state machine to the world: FUSE (fuser),
//! the tokio runtime, origins, the on-disk chunk cache (sled and chunk
//! files), tag reading (lofty), signals and logging. The `musicfs` binary
//! lives here.
//!
//! - [`cli`]: the command line, `--config`, logging, the client commands.
//! - [`mount`]: `musicfs mount`, from arguments to a running mount and back.
//! - [`kernel`]: FUSE: the fuser shim, passthrough, `.offline`, unmount.
//! - [`exec`]: the daemon that executes the engine's decisions.
//! - [`library`]: tags, scans, delta syncs, watchers, change notices.
//! - [`origin`]: where the bytes come from.
//! - [`store`]: chunk files and the sled database.
//! - [`search`]: the full-text index of the tags (tantivy).
//! - [`pins`]: `musicfs pin`, the daemon's side.
//! - [`service`]: control socket, supervisor, systemd, metrics.
//! - [`sys`]: the system calls, the mount table, memory.
//! - [`errors`]: errors shown with their causes.

/// What `musicfs --version` prints after the name: the version, the git
/// commit it was built from ("unknown" outside a checkout) and the enabled
/// cargo features, e.g. `0.1.0 (commit 1a2b3c4; features: none)`. Made by
/// build.rs.
pub const VERSION: &str = env!("MUSICFS_VERSION");

pub mod cli;
pub mod errors;
pub mod exec;
pub mod kernel;
pub mod library;
pub mod mount;
pub mod origin;
pub mod pins;
pub mod search;
pub mod service;
pub mod store;
pub mod sys;
