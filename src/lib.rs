//! AMC Sync core library.
pub mod model;
pub mod pii;
