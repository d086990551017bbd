//! Uploading queued changes to Amazon (DESIGN.md 4.6): the pure [`planner`]
//! and the [`engine`] (scheduler, per-audience backoff, job poller).

pub mod engine;
pub mod planner;
