//! Models in Ollama: pulled and deleted by admins. The change happens in Ollama, outside our
//! transactions: it is recorded in the audit log once Ollama reports it done, and a failure to
//! record it (the change cannot be undone) is logged as an error with the event.

use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};

use super::audit::ActionContext;
use super::ServiceResult;
use crate::ollama::{OllamaClient, OllamaError};
use crate::store::audit::{AuditAction, AuditTarget, NewAuditEvent};
use crate::store::Store;

/// Starts pulling `model`; yields Ollama's progress lines. The pull is recorded when its
/// `success` line passes.
pub async fn pull(
    store: &Store,
    ollama: &OllamaClient,
    context: &ActionContext,
    model: &str,
) -> ServiceResult<impl Stream<Item = Result<Value, OllamaError>> + Send + 'static> {
    tracing::info!(admin_id = ?context.user_id(), model = %model, "admin pulls a model");
    let progress = ollama.pull(model).await?;
    let (store, context, model) = (store.clone(), context.clone(), model.to_owned());
    Ok(progress.then(move |line| {
        let finished = matches!(&line, Ok(value) if value["status"] == "success");
        let event = finished.then(|| context.event(AuditAction::ModelPulled, Some(AuditTarget::model(&model)), json!({})));
        let store = store.clone();
        async move {
            if let Some(event) = event {
                record(&store, &event).await;
            }
            line
        }
    }))
}

/// Deletes `model` from Ollama.
pub async fn delete(store: &Store, ollama: &OllamaClient, context: &ActionContext, model: &str) -> ServiceResult<()> {
    ollama.delete(model).await?;
    tracing::info!(admin_id = ?context.user_id(), model = %model, "admin deleted a model");
    record(store, &context.event(AuditAction::ModelDeleted, Some(AuditTarget::model(model)), json!({}))).await;
    Ok(())
}

async fn record(store: &Store, event: &NewAuditEvent) {
    if let Err(err) = store.record_audit(event).await {
        tracing::error!(error = %err, action = event.action.as_str(), target = ?event.target, "a change made in Ollama could not be recorded in the audit log");
    }
}
