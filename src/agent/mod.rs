//! The agent's runtime pieces that sit above the library layers: the intake
//! [`pipeline`] and the data-dir [`state`] (write key, admin token, where the
//! running agent listens).

pub mod admin;
pub mod audiences;
pub mod credentials;
pub mod login;
pub mod pipeline;
pub mod runtime;
pub mod settings;
pub mod state;
