//! The io-shell.
