//! Intake edges (DESIGN.md 4.1, 4.2): the Segment-compatible HTTP endpoint
//! ([`http`]), the watched drop folder and one-shot file ingest ([`folder`]),
//! and the file formats they share ([`file`]). All of them hand Segment
//! messages to [`crate::agent::pipeline::Pipeline`].

pub mod file;
pub mod folder;
pub mod http;
