//! The kernel side: everything that speaks FUSE. The fuser shim
//! ([`fuse`]), kernel passthrough at open ([`passthrough`]), the hidden
//! `.offline` view ([`offline`]) and `musicfs unmount` ([`unmount`]).

pub mod fuse;
pub mod offline;
pub mod passthrough;
pub mod unmount;
