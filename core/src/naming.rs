//! Naming: see the helper.
