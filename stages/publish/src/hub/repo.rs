//! Creating the repository (`POST /api/repos/create`); 409 means it exists already.

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use super::client::Hub;
use super::error::HubError;

impl Hub<'_> {
    /// Creates the repository if it is missing. An existing one keeps its visibility.
    pub fn ensure_repo(&self, private: bool) -> Result<(), HubError> {
        let url = format!("{}/api/repos/create", self.config.endpoint);
        // Current clients send `visibility`, older ones `private`; the hub reads either.
        let body = json!({
            "name": self.repo.name,
            "organization": self.repo.owner,
            "type": self.kind.type_name(),
            "private": private,
            "visibility": if private { "private" } else { "public" },
        })
        .to_string();
        let response = self.send(&url, || {
            Ok(self
                .request(Method::POST, &url)?
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone()))
        })?;
        match response.status().as_u16() {
            409 => Ok(()),
            s if (200..300).contains(&s) => Ok(()),
            _ => Err(self.status_error(&url, response, 1)),
        }
    }
}
