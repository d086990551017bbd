//! Uploading queued changes to Amazon (DESIGN.md 4.6): the pure [`planner`];
//! the scheduler and job poller arrive with the rest of issue 4.

pub mod planner;
