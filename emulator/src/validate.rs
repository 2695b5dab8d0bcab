//! Checks shared by `/api/chat` and `/api/generate`, with Ollama's messages.

use crate::base64;
use crate::config::ModelSpec;
use crate::names;
use crate::state::Shared;
use crate::wire::ApiError;

/// Every image must be standard base64 (Ollama fails this while decoding the body).
pub(crate) fn images<'a>(images: impl IntoIterator<Item = &'a String>) -> Result<(), ApiError> {
    images
        .into_iter()
        .try_for_each(|image| base64::validate(image).map_err(|offset| ApiError::bad_request(base64::error_message(offset))))
}

/// A valid name (else 400 `model is required`) of an installed model (else the scheduler's 404).
pub(crate) fn installed_model(shared: &Shared, model: &str) -> Result<ModelSpec, ApiError> {
    if !names::is_valid(model) {
        return Err(ApiError::bad_request("model is required"));
    }
    shared.installed(model).ok_or_else(|| ApiError::not_found(format!("model {model:?} not found, try pulling it first")))
}

/// 400 `"<model>" does not support <what>` unless the model has `capability`.
pub(crate) fn capability(spec: &ModelSpec, model: &str, capability: &str, what: &str) -> Result<(), ApiError> {
    if spec.has_capability(capability) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("{model:?} does not support {what}")))
    }
}
