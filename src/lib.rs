//! AMC Sync core library: receive audience membership events, hash PII on the
//! device, queue durably, upload to the Amazon Ads AMC Audiences API.
//!
//! Layers (each depends only on those below it): `mapping` → `pii` → `store`;
//! `model` holds the shared, hash-only vocabulary. See ARCHITECTURE.md.

pub mod agent;
pub mod amazon;
pub mod config;
pub mod ingest;
pub mod mapping;
pub mod model;
pub mod pii;
pub mod sandbox;
pub mod secrets;
pub mod store;
pub mod sync;
