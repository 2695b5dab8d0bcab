//! Model names: `[host/][namespace/]model[:tag]`, tag `latest` by default, matched
//! case-insensitively.

const DEFAULT_HOST: &str = "registry.ollama.ai/";
const DEFAULT_NAMESPACE: &str = "library/";

/// Whether `name` parses as a model name (non-empty model part, sane characters, a non-empty
/// tag if there is a `:`).
pub(crate) fn is_valid(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    let (model, tag) = match last.split_once(':') {
        Some((model, tag)) => (model, Some(tag)),
        None => (last, None),
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let host_ok = name.split('/').rev().skip(1).all(|part| !part.is_empty() && part.chars().all(|c| allowed(c) || c == ':'));
    !model.is_empty()
        && model.chars().all(allowed)
        && tag.is_none_or(|t| !t.is_empty() && t.len() <= 128 && t.chars().all(allowed))
        && host_ok
}

/// The name with `:latest` added when it has no tag (`/api/show` reports names like this).
pub(crate) fn with_default_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The key two names are compared by: lower case, default host and namespace removed, tag added.
pub(crate) fn key(name: &str) -> String {
    let lower = with_default_tag(name.trim()).to_lowercase();
    let short = lower.strip_prefix(DEFAULT_HOST).unwrap_or(&lower);
    short.strip_prefix(DEFAULT_NAMESPACE).unwrap_or(short).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_like_ollama() {
        assert_eq!(key("Llama3.2:1B"), "llama3.2:1b");
        assert_eq!(key("tinyllama"), "tinyllama:latest");
        assert_eq!(key("registry.ollama.ai/library/qwen3:0.6b"), "qwen3:0.6b");
        assert_eq!(with_default_tag("foo"), "foo:latest");
        assert_eq!(with_default_tag("foo:1b"), "foo:1b");
    }

    #[test]
    fn validates_names() {
        for ok in ["llama3.2", "llama3.2:1b", "library/llama3.2:latest", "host:5000/ns/model:tag"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", ":1b", "foo:", "a b", "foo:bar:baz", "/foo", "ns//foo"] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
