//! Work in progress (DESIGN.md, issue 3).
