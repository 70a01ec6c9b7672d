//! # musicfs-core
//!
//! The whole of MusicFS's decision making, as a deterministic state machine
//! in the style of `quinn-proto`: the io-shell (or the simulator) feeds it
//! inputs stamped with the current [`Time`] and drains the outputs it queues.
//! Nothing in this crate touches a file, a socket, a clock, a thread or a
//! random number generator of its own; that is what lets `sim/` replay any
//! run from a seed.
//!
//! - [`tags`], [`layout`], [`naming`]: from a file's tags to a valid, stable name.
//! - [`tree`]: the virtual `Artist/Album/NN - Title.ext` tree and its inodes.
//! - [`playlist`]: playlists rewritten to paths of the mount.
//! - [`chunk`], [`manifest`]: content-defined chunking and per-file chunk maps.
//! - [`engine`]: the state machine that answers FUSE requests, plans reads,
//!   fills the cache and decides evictions.
//! - [`exec`]: the executor that turns the engine's outputs into primitive
//!   I/O and decides every ordering between them (requests in flight, group
//!   commit, index after durable, stores versus deletes).
//!
//! The promise is checked, not only written: no `unsafe` here, and
//! `core/clippy.toml` forbids the calls that would reach for the world
//! (clocks, threads, the environment, files, sockets).

#![forbid(unsafe_code)]

pub mod catalog;
pub mod chunk;
pub mod engine;
pub mod exec;
pub mod fs;
pub mod ids;
pub mod layout;
pub mod manifest;
pub mod naming;
pub mod playlist;
pub mod sync;
pub mod tags;
pub mod time;
pub mod tree;

pub use catalog::{CatalogEntry, FileKind, SourceFile};
pub use chunk::{ChunkId, Chunker};
pub use ids::{Ino, OriginId, OriginPath};
pub use layout::{Layout, LayoutError, TrackView};
pub use manifest::{Extent, FileVersion, Kept, Manifest};
pub use tags::TrackTags;
pub use time::Time;
