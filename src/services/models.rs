//! Models in the Ollama providers: pulled and deleted by admins, on one named provider or on
//! every enabled one. The change happens in Ollama, outside our transactions: it is recorded in
//! the audit log once Ollama reports it done (a failure to record it, since the change cannot
//! be undone, is logged as an error with the event), and the provider's model list is read
//! again before the caller hears it is done.

use std::sync::Arc;

use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};

use super::audit::ActionContext;
use super::{ServiceError, ServiceResult};
use crate::ollama::OllamaError;
use crate::store::audit::{AuditAction, AuditTarget, NewAuditEvent};
use crate::store::Store;
use crate::upstream::{PullTarget, Upstreams};

/// One line of a pull's progress and the provider it comes from.
pub type PullLine = (Arc<str>, Result<Value, OllamaError>);

/// The providers a pull or delete acts on; 404 for an unknown provider, 400 for one that is
/// not an Ollama.
fn targets(upstreams: &Upstreams, provider: Option<&str>) -> ServiceResult<Vec<PullTarget>> {
    match upstreams.pull_targets(provider) {
        Ok(targets) if targets.is_empty() => {
            Err(ServiceError::Upstream(OllamaError::NoProvider("No Ollama provider is enabled".into())))
        }
        Ok(targets) => Ok(targets),
        Err(None) => Err(ServiceError::NotFound("Provider not found")),
        Err(Some(name)) => {
            Err(ServiceError::Refused(format!("Provider {name} is not an Ollama: its models cannot be pulled or deleted")))
        }
    }
}

/// Starts pulling `model` on the named provider or every enabled Ollama provider; yields the
/// progress lines of all as they arrive, each with its provider. With one provider, a refusal
/// at the start is the answer; with several, it is that provider's last line.
pub async fn pull(
    store: &Store,
    upstreams: &Upstreams,
    context: &ActionContext,
    model: &str,
    provider: Option<&str>,
) -> ServiceResult<(usize, impl Stream<Item = PullLine> + Send + 'static)> {
    let targets = targets(upstreams, provider)?;
    tracing::info!(admin_id = ?context.user_id(), model = %model, providers = targets.len(), "admin pulls a model");
    let count = targets.len();
    let mut progresses: Vec<BoxStream<'static, PullLine>> = Vec::with_capacity(count);
    for target in targets {
        let name: Arc<str> = Arc::from(target.name.as_str());
        let progress = match target.client.pull(model).await {
            Ok(progress) => progress.boxed(),
            Err(err) if count == 1 => return Err(err.into()),
            Err(err) => stream::once(async move { Err(err) }).boxed(),
        };
        let (store, context, model, target) = (store.clone(), context.clone(), model.to_owned(), Arc::new(target));
        let labelled = progress.then(move |line| {
            let finished = matches!(&line, Ok(value) if value["status"] == "success");
            let event = finished.then(|| {
                context.event(AuditAction::ModelPulled, Some(AuditTarget::model(&model)), json!({"provider": target.name}))
            });
            let (store, target, name) = (store.clone(), target.clone(), name.clone());
            async move {
                if let Some(event) = event {
                    record(&store, &event).await;
                    target.refresh().await;
                }
                (name, line)
            }
        });
        progresses.push(labelled.boxed());
    }
    Ok((count, stream::select_all(progresses)))
}

/// Deletes `model` from the named provider, or from every enabled Ollama provider that lists
/// it (every one when none does, so that the answer is Ollama's "not found").
pub async fn delete(
    store: &Store,
    upstreams: &Upstreams,
    context: &ActionContext,
    model: &str,
    provider: Option<&str>,
) -> ServiceResult<()> {
    let mut targets = targets(upstreams, provider)?;
    if provider.is_none() {
        let providers = upstreams.providers();
        let listing =
            |target: &PullTarget| providers.iter().any(|p| p.name == target.name && p.status().models.iter().any(|m| m == model));
        if targets.iter().any(listing) {
            targets.retain(listing);
        }
    }
    let mut first_error = None;
    let mut deleted = 0;
    for target in &targets {
        match target.client.delete(model).await {
            Ok(()) => {
                deleted += 1;
                tracing::info!(admin_id = ?context.user_id(), model = %model, provider = %target.name, "admin deleted a model");
                let details = json!({"provider": target.name});
                record(store, &context.event(AuditAction::ModelDeleted, Some(AuditTarget::model(model)), details)).await;
                target.refresh().await;
            }
            Err(err) => {
                let err = match (targets.len(), err) {
                    (1, err) => err,
                    (_, OllamaError::Upstream { status, message }) => {
                        OllamaError::Upstream { status, message: format!("{}: {message}", target.name) }
                    }
                    (_, err) => OllamaError::NoProvider(format!("{}: {err}", target.name)),
                };
                first_error.get_or_insert(err);
            }
        }
    }
    match (deleted, first_error) {
        (0, Some(err)) => Err(err.into()),
        _ => Ok(()),
    }
}

async fn record(store: &Store, event: &NewAuditEvent) {
    if let Err(err) = store.record_audit(event).await {
        tracing::error!(error = %err, action = event.action.as_str(), target = ?event.target, "a change made in Ollama could not be recorded in the audit log");
    }
}
