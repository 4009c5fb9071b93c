//! The client's calls about git sources (`flotilla sync`).

use flotilla_proto::sync::{SourceInfo, SourceList, SourcePut};
use reqwest::Method;

use super::{Client, ClientError};

impl Client {
    /// `GET /v1/sync`: every source and what it last did.
    pub async fn list_sync_sources(&self) -> Result<Vec<SourceInfo>, ClientError> {
        let list: SourceList = self.get_json(&["v1", "sync"], Vec::new()).await?;
        Ok(list.sources)
    }

    /// `GET /v1/sync/{name}`.
    pub async fn get_sync_source(&self, name: &str) -> Result<SourceInfo, ClientError> {
        self.get_json(&["v1", "sync", name], Vec::new()).await
    }

    /// `PUT /v1/sync/{name}`: makes or changes a source.
    pub async fn put_sync_source(
        &self,
        name: &str,
        put: &SourcePut,
    ) -> Result<SourceInfo, ClientError> {
        let path = ["v1", "sync", name];
        self.send_json(self.call_with_body(Method::PUT, &path, put)?)
            .await
    }

    /// `POST /v1/sync/{name}/pause` (`true`) or `/resume` (`false`).
    pub async fn pause_sync_source(
        &self,
        name: &str,
        pause: bool,
    ) -> Result<SourceInfo, ClientError> {
        let verb = if pause { "pause" } else { "resume" };
        let path = ["v1", "sync", name, verb];
        self.send_json(self.call(Method::POST, &path)).await
    }

    /// `DELETE /v1/sync/{name}`: removes a source; its units stay.
    pub async fn delete_sync_source(&self, name: &str) -> Result<SourceInfo, ClientError> {
        let path = ["v1", "sync", name];
        self.send_json(self.call(Method::DELETE, &path)).await
    }
}
