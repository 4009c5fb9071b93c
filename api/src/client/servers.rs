//! The client's calls that change the raft group's membership.

use flotilla_proto::wire::{ServerAdd, ServerMembership};
use reqwest::Method;

use super::{Client, ClientError};

impl Client {
    /// `POST /v1/servers`: adds server `id`, reached by its peers at
    /// `peer_address` (`https://HOST:PORT`), to the raft group (admin);
    /// the members once the change is committed.
    pub async fn add_server(
        &self,
        id: u64,
        peer_address: &str,
    ) -> Result<ServerMembership, ClientError> {
        let body = ServerAdd {
            id,
            peer_address: peer_address.to_owned(),
        };
        self.send_json(self.call_with_body(Method::POST, &["v1", "servers"], &body)?)
            .await
    }

    /// `DELETE /v1/servers/{id}`: removes server `id` from the raft group
    /// (admin); the members once the change is committed.
    pub async fn remove_server(&self, id: u64) -> Result<ServerMembership, ClientError> {
        let id = id.to_string();
        self.send_json(self.call(Method::DELETE, &["v1", "servers", &id]))
            .await
    }
}
