//! The kernel side: everything that speaks FUSE. The fuser shim
//! ([`fuse`]), kernel passthrough at open ([`passthrough`]), the hidden
//! `.offline` view ([`offline`]), what the kernel is told after a sync
//! ([`notify`]) and `musicfs unmount` ([`unmount`]).

pub mod fuse;
pub mod notify;
pub mod offline;
pub mod passthrough;
pub mod unmount;
