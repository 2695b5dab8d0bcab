//! Whether an answer may start: the model's policy (403), then the user's and the key's quotas
//! (429). Every way in (chats, `/ollama/chat`, `/v1`) asks here, once per answer.

use super::model_access::ModelAccess;
use super::quotas::Quotas;
use super::ServiceResult;
use crate::ollama::ChatRequest;
use crate::store::api_keys::ApiKeyRecord;
use crate::store::users::User;

/// The checks before an answer starts. Cheap to clone.
#[derive(Clone)]
pub struct Admission {
    pub models: ModelAccess,
    pub quotas: Quotas,
}

/// An admitted answer may start, with at most this many of the user's answers running at once
/// (`None`: no limit).
pub struct Admitted {
    pub max_running: Option<usize>,
}

impl Admission {
    /// Checks the model and the quotas, and gives the request the model's defaults.
    pub async fn admit(&self, user: &User, key: Option<&ApiKeyRecord>, request: &mut ChatRequest) -> ServiceResult<Admitted> {
        self.models.admit(user, request).await?;
        let max_running = self.quotas.admit(user, key).await?;
        Ok(Admitted { max_running })
    }
}
