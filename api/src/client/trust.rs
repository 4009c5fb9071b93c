//! The client's calls about credentials, machines and the audit log.

use flotilla_proto::MachineId;
use flotilla_proto::trust::{
    AuditPage, CertCreate, CertIssued, CredentialInfo, CredentialList, JoinRequest, TokenCreate,
    TokenCreated, WhoAmI,
};
use reqwest::Method;

use super::{Client, ClientError, PageQuery, page_query};

impl Client {
    /// `GET /v1/whoami`: the credential this client calls with.
    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.get_json(&["v1", "whoami"], Vec::new()).await
    }

    /// `GET /v1/tokens`: every credential (admin).
    pub async fn list_credentials(&self) -> Result<Vec<CredentialInfo>, ClientError> {
        let list: CredentialList = self.get_json(&["v1", "tokens"], Vec::new()).await?;
        Ok(list.credentials)
    }

    /// `POST /v1/tokens`: makes a token (admin); its secret is in the
    /// answer only.
    pub async fn create_token(&self, create: &TokenCreate) -> Result<TokenCreated, ClientError> {
        let path = ["v1", "tokens"];
        self.send_json(self.call_with_body(Method::POST, &path, create)?)
            .await
    }

    /// `DELETE /v1/tokens/{id}`: revokes a token or a client certificate
    /// (admin).
    pub async fn revoke_credential(&self, id: &str) -> Result<CredentialInfo, ClientError> {
        let path = ["v1", "tokens", id];
        self.send_json(self.call(Method::DELETE, &path)).await
    }

    /// `POST /v1/certs`: signs a client certificate for a signing request
    /// (admin).
    pub async fn create_certificate(&self, create: &CertCreate) -> Result<CertIssued, ClientError> {
        let path = ["v1", "certs"];
        self.send_json(self.call_with_body(Method::POST, &path, create)?)
            .await
    }

    /// `POST /v1/agent/join`: exchanges this client's join token for the
    /// credential of `machine`.
    pub async fn join(&self, machine: &MachineId) -> Result<TokenCreated, ClientError> {
        let path = ["v1", "agent", "join"];
        let body = JoinRequest {
            machine_id: machine.clone(),
        };
        self.send_json(self.call_with_body(Method::POST, &path, &body)?)
            .await
    }

    /// `DELETE /v1/machines/{id}`: removes a machine and revokes its
    /// credential (admin).
    pub async fn remove_machine(&self, id: &MachineId) -> Result<(), ClientError> {
        let path = ["v1", "machines", id.as_str()];
        self.send(self.call(Method::DELETE, &path)).await?;
        Ok(())
    }

    /// `GET /v1/audit`: one page of the audit log, oldest first (admin).
    pub async fn audit(
        &self,
        since_ms: Option<u64>,
        page: &PageQuery,
    ) -> Result<AuditPage, ClientError> {
        let mut query = page_query(page);
        if let Some(since) = since_ms {
            query.push(("sinceMs", since.to_string()));
        }
        self.get_json(&["v1", "audit"], query).await
    }

    /// `GET /v1/ca`: the cluster CA's certificate, PEM.
    pub async fn ca(&self) -> Result<String, ClientError> {
        let (_, _, body) = self.send(self.call(Method::GET, &["v1", "ca"])).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}
