//! # musicfs (the io-shell)
//!
//! Binds the pure [`musicfs_core`] state machine to the world: FUSE (fuser),
//! the tokio runtime, origins, the on-disk chunk cache (sled and chunk
//! files), tag reading (lofty), signals and logging. The `musicfs` binary
//! lives here.
//!
//! - [`cli`], [`mount`], [`unmount`]: the command line and the mount's life.
//! - [`changes`]: telling media servers what changed (`--on-change`, `--notify-mpd`).
//! - [`config`]: `musicfs mount --config FILE` (TOML settings under the command line).
//! - [`fuse`]: the thin fuser shim.
//! - [`daemon`]: executes the engine's decisions.
//! - [`origin`]: where the bytes come from.
//! - [`scan`], [`tags`]: the catalog of an origin.
//! - [`store`]: chunk files and the sled database.
//! - [`search`]: the full-text index of the tags (tantivy).
//! - [`offline`]: the hidden `.offline` folder (only what plays offline).
//! - [`pins`]: `musicfs pin`: tracks kept for offline play, and their fetch.
//! - [`sys`]: the mount table and umount(2).

pub mod changes;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fuse;
pub mod kernel_passthrough;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod mount;
pub mod offline;
pub mod origin;
pub mod pins;
pub mod scan;
pub mod search;
pub mod store;
pub mod supervisor;
pub mod sync;
pub mod sys;
pub mod systemd;
pub mod tags;
pub mod unmount;
pub mod watch;
