//! Intake edges (DESIGN.md 4.1, 4.2): today the file formats shared by the
//! drop folder and `amc-sync ingest`; the HTTP endpoint and the folder watcher
//! arrive with their issue.

pub mod file;
pub mod folder;
pub mod http;
