//! The library: what the origins hold. Tags ([`tags`]), the first scan of a
//! local ([`scan`]) or remote ([`remote_scan`]) origin, delta syncs
//! ([`sync`]) started by watchers and pollers ([`watch`]), and telling media
//! servers what changed ([`changes`]).

pub mod changes;
pub mod folder_watch;
pub mod keep;
pub mod remote_scan;
pub mod scan;
pub mod sync;
pub mod tags;
pub mod watch;
