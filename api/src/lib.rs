//! flotilla's HTTP surface: the public REST API (`/v1/...`), the agent
//! endpoints beside it, and the typed client used by the CLI and the agent.
//!
//! Nothing is implemented here yet; the crate exists so that the workspace
//! has the shape the design describes.
