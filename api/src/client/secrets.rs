//! The client's calls about secrets.

use flotilla_proto::MachineId;
use flotilla_proto::secret::{
    SecretInfo, SecretList, SecretPut, UnitSecrets, decode_value, encode_value,
};
use reqwest::Method;

use super::{Client, ClientError};

/// A secret's value as an agent receives it.
pub struct OpenedSecret {
    pub name: String,
    pub version: u64,
    pub value: Vec<u8>,
}

impl std::fmt::Debug for OpenedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedSecret")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl Client {
    /// `GET /v1/secrets`: every secret, never a value.
    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>, ClientError> {
        let list: SecretList = self.get_json(&["v1", "secrets"], Vec::new()).await?;
        Ok(list.secrets)
    }

    /// `PUT /v1/secrets/{name}`: makes a secret, or with `replace` gives
    /// it a new value.
    pub async fn put_secret(
        &self,
        name: &str,
        value: &[u8],
        replace: bool,
    ) -> Result<SecretInfo, ClientError> {
        let path = ["v1", "secrets", name];
        let body = SecretPut {
            value: encode_value(value),
            replace,
        };
        self.send_json(self.call_with_body(Method::PUT, &path, &body)?)
            .await
    }

    /// `DELETE /v1/secrets/{name}`: removes a secret.
    pub async fn delete_secret(&self, name: &str) -> Result<SecretInfo, ClientError> {
        let path = ["v1", "secrets", name];
        self.send_json(self.call(Method::DELETE, &path)).await
    }

    /// `GET /v1/agent/machines/{id}/units/{unit}/secrets`: the values of
    /// the secrets a unit placed on this machine uses (its agent only).
    pub async fn unit_secrets(
        &self,
        machine: &MachineId,
        unit: &str,
    ) -> Result<Vec<OpenedSecret>, ClientError> {
        let path = [
            "v1",
            "agent",
            "machines",
            machine.as_str(),
            "units",
            unit,
            "secrets",
        ];
        let got: UnitSecrets = self.get_json(&path, Vec::new()).await?;
        got.secrets
            .into_iter()
            .map(|s| {
                let value = decode_value(&s.value).map_err(|e| ClientError::Protocol {
                    endpoint: "the server".to_owned(),
                    message: format!("secret {}: {e}", s.name),
                })?;
                Ok(OpenedSecret {
                    name: s.name,
                    version: s.version,
                    value,
                })
            })
            .collect()
    }
}
