//! flotilla's HTTP surface: the public REST API (`/v1/...`), the agent
//! endpoints beside it, and the typed client used by the CLI and the agent.
//!
//! - [`server`] (feature `server`): an axum [`Router`](axum::Router) over any
//!   [`ControlPlane`](flotilla_scheduler::control::ControlPlane), and
//!   [`serve`](server::serve) with graceful shutdown. Handlers only parse the
//!   request, check its HTTP shape and call one control-plane method; every
//!   error, axum's own rejections included, is a JSON
//!   [`ErrorBody`](flotilla_proto::wire::ErrorBody).
//! - [`client`] (feature `client`): [`Client`](client::Client), typed async
//!   methods for every route, with failover between several servers.
//! - [`daemon`] (feature `server`): one whole server assembled: the
//!   embedded store, the API, the election and the reconcile loop.
//! - [`files`]: secrets written whole, with their mode.
//! - [`peer`] (feature `server`): the mutual-TLS transport between the
//!   servers of a cluster, for the raft-replicated store.
//! - [`tls`]: the cluster CA, server and client certificates, and how
//!   clients trust servers.
//! - [`version`]: which versions of clients, agents and servers talk to
//!   each other (the `Flotilla-Version` header).
//! - [`wire`]: the one JSON shape of the API that `flotilla-proto` does not
//!   define yet.
//!
//! The routes, their methods and their documentation are listed once, in
//! [`server::ROUTES`], and described by the OpenAPI document served at
//! `/v1/openapi.json` ([`OPENAPI`]); a test keeps the three in step.

#[cfg(feature = "server")]
mod caps;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod daemon;
#[cfg(feature = "tls")]
pub mod files;
#[cfg(feature = "server")]
pub mod peer;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;
pub mod version;
pub mod wire;

/// The OpenAPI 3 document of every route, served at `GET /v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");
