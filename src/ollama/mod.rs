//! Client of the Ollama API.

use crate::config::OllamaConfig;

#[derive(Clone)]
pub struct OllamaClient {
    http: reqwest::Client,
    base_url: String,
}

impl OllamaClient {
    pub fn new(config: &OllamaConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().connect_timeout(config.connect_timeout).build()?;
        Ok(Self { http, base_url: config.base_url.clone() })
    }
}
