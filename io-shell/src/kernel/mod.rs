//! The kernel side: everything that speaks FUSE. The mount and its session
//! ([`session`]), the fuser shim ([`fuse`]), kernel passthrough at open ([`passthrough`]), the hidden
//! `.offline` view ([`offline`]), what the kernel is told after a sync
//! ([`notify`]), the guard that aborts the connection if the daemon dies
//! ([`guard`]) and `musicfs unmount` ([`unmount`]).

pub mod fuse;
pub mod guard;
pub mod notify;
pub mod offline;
pub mod passthrough;
pub mod session;
pub mod unmount;
