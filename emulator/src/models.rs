//! Model management endpoints: `/`, `/api/version`, `/api/tags`, `/api/show`, `/api/delete`,
//! `/api/ps`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ModelSpec;
use crate::names;
use crate::scheduler;
use crate::state::Shared;
use crate::wire::{go_rfc3339, json_response, parse_body, with_content_type, ApiError};

/// The version `/api/version` reports.
pub const OLLAMA_VERSION: &str = "0.9.0";

pub(crate) async fn root() -> Response {
    with_content_type(StatusCode::OK, "text/plain; charset=utf-8", Body::from("Ollama is running"))
}

#[derive(Serialize)]
struct VersionResponse {
    version: &'static str,
}

pub(crate) async fn version() -> Response {
    json_response(StatusCode::OK, &VersionResponse { version: OLLAMA_VERSION })
}

/// `details` of tags, show and ps.
#[derive(Serialize)]
struct Details<'a> {
    parent_model: &'a str,
    format: &'a str,
    family: &'a str,
    families: [&'a str; 1],
    parameter_size: &'a str,
    quantization_level: &'a str,
}

impl<'a> Details<'a> {
    fn of(spec: &'a ModelSpec) -> Self {
        Details {
            parent_model: "",
            format: "gguf",
            family: &spec.family,
            families: [&spec.family],
            parameter_size: &spec.parameter_size,
            quantization_level: &spec.quantization_level,
        }
    }
}

#[derive(Serialize)]
struct ModelList<T> {
    models: Vec<T>,
}

#[derive(Serialize)]
struct TagsEntry<'a> {
    name: &'a str,
    model: &'a str,
    modified_at: &'a str,
    size: u64,
    digest: &'a str,
    details: Details<'a>,
}

pub(crate) async fn tags(State(shared): State<Arc<Shared>>) -> Response {
    let installed = shared.lock().installed.clone();
    let models = installed
        .iter()
        .map(|spec| TagsEntry {
            name: &spec.name,
            model: &spec.name,
            modified_at: &spec.modified_at,
            size: spec.size,
            digest: &spec.digest,
            details: Details::of(spec),
        })
        .collect();
    json_response(StatusCode::OK, &ModelList { models })
}

#[derive(Serialize)]
struct PsEntry<'a> {
    name: &'a str,
    model: &'a str,
    size: u64,
    digest: &'a str,
    details: Details<'a>,
    expires_at: String,
    size_vram: u64,
    context_length: u64,
}

pub(crate) async fn ps(State(shared): State<Arc<Shared>>) -> Response {
    let loaded = scheduler::loaded_models(&shared);
    let models = loaded
        .iter()
        .map(|m| PsEntry {
            name: &m.spec.name,
            model: &m.spec.name,
            size: m.spec.size,
            digest: &m.spec.digest,
            details: Details::of(&m.spec),
            expires_at: go_rfc3339(&m.expires_at),
            size_vram: m.spec.size,
            context_length: m.context_length,
        })
        .collect();
    json_response(StatusCode::OK, &ModelList { models })
}

/// `{"model": ...}`, or the legacy `{"name": ...}`.
#[derive(Deserialize)]
struct ModelRequest {
    model: Option<String>,
    name: Option<String>,
}

impl ModelRequest {
    fn model(self) -> String {
        self.model.filter(|m| !m.is_empty()).or(self.name).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct ShowResponse<'a> {
    modelfile: String,
    parameters: String,
    template: &'static str,
    details: Details<'a>,
    model_info: BTreeMap<String, Value>,
    capabilities: &'a [String],
    modified_at: &'a str,
}

pub(crate) async fn show(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let model = match parse_body::<ModelRequest>(&body) {
        Ok(request) => request.model(),
        Err(error) => return error.into_response(),
    };
    if model.is_empty() {
        return ApiError::bad_request("model is required").into_response();
    }
    let Some(spec) = shared.installed(&model) else {
        let shown = names::with_default_tag(&model);
        return ApiError::not_found(format!("model '{shown}' not found")).into_response();
    };
    let template = chat_template(&spec.family);
    let parameters = parameters(&spec.family);
    let response = ShowResponse {
        modelfile: modelfile(&spec, template, &parameters),
        parameters: parameters.iter().map(|(k, v)| format!("{k:<30} {v}")).collect::<Vec<_>>().join("\n"),
        template,
        details: Details::of(&spec),
        model_info: model_info(&spec),
        capabilities: &spec.capabilities,
        modified_at: &spec.modified_at,
    };
    json_response(StatusCode::OK, &response)
}

pub(crate) async fn delete(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let model = match parse_body::<ModelRequest>(&body) {
        Ok(request) => request.model(),
        Err(error) => return error.into_response(),
    };
    if !names::is_valid(&model) {
        return ApiError::bad_request(format!("name {model:?} is invalid")).into_response();
    }
    if shared.remove(&model) {
        // Ollama answers 200 with an empty body.
        StatusCode::OK.into_response()
    } else {
        ApiError::not_found(format!("model '{model}' not found")).into_response()
    }
}

const LLAMA3_TEMPLATE: &str = "<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n";
const CHATML_TEMPLATE: &str = "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n";

fn chat_template(family: &str) -> &'static str {
    if family == "llama" {
        LLAMA3_TEMPLATE
    } else {
        CHATML_TEMPLATE
    }
}

/// Modelfile parameters, in order.
fn parameters(family: &str) -> Vec<(&'static str, &'static str)> {
    if family == "llama" {
        vec![("stop", "\"<|start_header_id|>\""), ("stop", "\"<|end_header_id|>\""), ("stop", "\"<|eot_id|>\"")]
    } else {
        vec![
            ("repeat_penalty", "1"),
            ("stop", "\"<|im_start|>\""),
            ("stop", "\"<|im_end|>\""),
            ("temperature", "0.6"),
            ("top_k", "20"),
            ("top_p", "0.95"),
        ]
    }
}

fn modelfile(spec: &ModelSpec, template: &str, parameters: &[(&str, &str)]) -> String {
    let mut text = format!(
        "# Modelfile generated by \"ollama show\"\n# To build a new Modelfile based on this, replace FROM with:\n# FROM {name}\n\nFROM /root/.ollama/models/blobs/sha256-{digest}\nTEMPLATE \"\"\"{template}\"\"\"\n",
        name = spec.name,
        digest = spec.digest,
    );
    for (key, value) in parameters {
        text.push_str(&format!("PARAMETER {key} {value}\n"));
    }
    text
}

/// GGUF metadata, with keys sorted as Go writes maps.
fn model_info(spec: &ModelSpec) -> BTreeMap<String, Value> {
    let arch = spec.family.as_str();
    let base = spec.name.rsplit('/').next().unwrap_or(&spec.name);
    let base = base.split(':').next().unwrap_or(base);
    let file_type = match spec.quantization_level.as_str() {
        "F32" => 0,
        "F16" => 1,
        "Q4_0" => 2,
        "Q8_0" => 7,
        "Q4_K_S" => 14,
        "Q5_K_M" => 17,
        "Q6_K" => 18,
        _ => 15, // Q4_K_M
    };
    let mut info = BTreeMap::new();
    info.insert("general.architecture".into(), arch.into());
    info.insert("general.basename".into(), base.into());
    info.insert("general.file_type".into(), file_type.into());
    info.insert("general.parameter_count".into(), spec.parameter_count.into());
    info.insert("general.quantization_version".into(), 2.into());
    info.insert(format!("{arch}.context_length"), spec.context_length.into());
    if spec.embedding_length > 0 {
        info.insert(format!("{arch}.embedding_length"), spec.embedding_length.into());
    }
    if spec.block_count > 0 {
        info.insert(format!("{arch}.block_count"), spec.block_count.into());
    }
    info
}
