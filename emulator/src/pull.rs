//! `POST /api/pull`: progress in NDJSON (or only the last status with `stream: false`), on a
//! fast clock (a line every 5 ms instead of every ~60 ms).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::ModelSpec;
use crate::names;
use crate::pace::Pacer;
use crate::state::Shared;
use crate::text::hex_digest;
use crate::tracker::Tracker;
use crate::wire::{
    error_line, go_rfc3339, json_response, local_now, ndjson_line, parse_body, with_content_type, ApiError, NDJSON,
};

/// Time between two progress lines.
const STEP: Duration = Duration::from_millis(5);
/// What the registry says about a model it does not have.
const MANIFEST_MISSING: &str = "pull model manifest: file does not exist";
/// Progress lines of a large layer after the first one (which has no `completed`).
const PROGRESS_LINES: u64 = 4;

#[derive(Deserialize)]
struct PullRequest {
    model: Option<String>,
    name: Option<String>,
    stream: Option<bool>,
}

/// `ProgressResponse`; zero values are left out.
#[derive(Clone, Debug, Serialize)]
struct Progress {
    status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    digest: String,
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
    #[serde(skip_serializing_if = "is_zero")]
    completed: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl Progress {
    fn status(status: &str) -> Self {
        Progress { status: status.to_string(), digest: String::new(), total: 0, completed: 0 }
    }

    fn layer(digest: &str, total: u64, completed: u64) -> Self {
        Progress {
            status: format!("pulling {}", &digest[..12.min(digest.len())]),
            digest: format!("sha256:{digest}"),
            total,
            completed,
        }
    }
}

/// What a pull will report.
struct PullPlan {
    /// The model to install at the end; `None` for an unknown model.
    spec: Option<ModelSpec>,
    lines: Vec<Progress>,
}

impl PullPlan {
    fn new(shared: &Shared, name: &str) -> Self {
        let Some(spec) = shared.pullable(name) else {
            return PullPlan { spec: None, lines: vec![Progress::status("pulling manifest")] };
        };
        let on_disk = shared.installed(name).is_some();
        let mut lines = vec![Progress::status("pulling manifest")];
        for (digest, size) in layers(&spec) {
            if on_disk {
                lines.push(Progress::layer(&digest, size, size));
            } else {
                let steps = if size > 1_000_000 { PROGRESS_LINES } else { 1 };
                lines.push(Progress::layer(&digest, size, 0));
                lines.extend((1..=steps).map(|k| Progress::layer(&digest, size, size * k / steps)));
            }
        }
        lines.extend(["verifying sha256 digest", "writing manifest", "success"].map(Progress::status));
        PullPlan { spec: Some(spec), lines }
    }
}

/// The model's blobs: the weights (digest = the model's digest), a template and parameters.
fn layers(spec: &ModelSpec) -> Vec<(String, u64)> {
    let template = (hex_digest(&format!("{}/template", spec.name)), 1_429);
    let params = (hex_digest(&format!("{}/params", spec.name)), 96);
    let weights = spec.size.saturating_sub(template.1 + params.1).max(1);
    vec![(spec.digest.clone(), weights), template, params]
}

fn install(shared: &Shared, spec: &ModelSpec) {
    let mut spec = spec.clone();
    spec.name = names::with_default_tag(&spec.name);
    if shared.installed(&spec.name).is_none() {
        spec.modified_at = go_rfc3339(&local_now());
    }
    shared.install(spec);
}

pub(crate) async fn pull(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: PullRequest = match parse_body(&body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let name = request.model.filter(|m| !m.is_empty()).or(request.name).unwrap_or_default();
    if !names::is_valid(&name) {
        return ApiError::bad_request("invalid model name").into_response();
    }
    let plan = PullPlan::new(&shared, &name);
    let tracker = Tracker::new(&shared, "/api/pull", &name);
    if request.stream.unwrap_or(true) {
        stream_pull(shared, plan, tracker)
    } else {
        pull_to_end(shared, plan, tracker).await
    }
}

/// Streams the progress lines; an unknown model ends with an error line (status 200).
fn stream_pull(shared: Arc<Shared>, plan: PullPlan, tracker: Tracker) -> Response {
    let state =
        PullStream { shared, spec: plan.spec, lines: plan.lines.into_iter(), tracker, pacer: Pacer::new(STEP), finished: false };
    let body = futures_util::stream::unfold(state, |mut state| async move {
        if state.finished {
            return None;
        }
        state.pacer.next().await;
        let line = state.next_line();
        Some((Ok::<_, std::io::Error>(line), state))
    });
    with_content_type(StatusCode::OK, NDJSON, Body::from_stream(body))
}

struct PullStream {
    shared: Arc<Shared>,
    spec: Option<ModelSpec>,
    lines: std::vec::IntoIter<Progress>,
    tracker: Tracker,
    pacer: Pacer,
    finished: bool,
}

impl PullStream {
    fn next_line(&mut self) -> Bytes {
        let Some(progress) = self.lines.next() else {
            // Only an unknown model runs out of lines before `success`.
            self.finished = true;
            self.tracker.end();
            return error_line(MANIFEST_MISSING);
        };
        self.tracker.count_sent();
        if progress.status == "success" {
            if let Some(spec) = &self.spec {
                install(&self.shared, spec);
            }
            self.tracker.complete();
            self.finished = true;
        }
        ndjson_line(&progress)
    }
}

/// `stream: false`: the same work, then only `{"status":"success"}`, or a 500.
async fn pull_to_end(shared: Arc<Shared>, plan: PullPlan, mut tracker: Tracker) -> Response {
    let mut pacer = Pacer::new(STEP);
    for _ in &plan.lines {
        pacer.next().await;
        tracker.count_sent();
    }
    match plan.spec {
        Some(spec) => {
            install(&shared, &spec);
            tracker.complete();
            json_response(StatusCode::OK, &Progress::status("success"))
        }
        None => {
            tracker.end();
            ApiError::internal(MANIFEST_MISSING).into_response()
        }
    }
}
