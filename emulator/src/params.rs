//! Request fields with Ollama-specific decoding rules: `think`, `keep_alive` and `options`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::wire::ApiError;

/// Whether thinking was asked for: `None` when `think` is missing or null (a thinking model
/// then thinks anyway), `Some(true)` for `true` or a level, `Some(false)` for `false`.
pub(crate) fn parse_think(value: Option<&Value>) -> Result<Option<bool>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(level)) if matches!(level.as_str(), "low" | "medium" | "high" | "max") => Ok(Some(true)),
        Some(Value::String(other)) => Err(ApiError::bad_request(format!(
            "invalid think value: {other:?} (must be \"high\", \"medium\", \"low\", \"max\", true, or false)"
        ))),
        Some(_) => Err(ApiError::bad_request("think must be a boolean or string")),
    }
}

/// How long a model stays loaded after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeepAlive {
    /// Not given: five minutes (`OLLAMA_KEEP_ALIVE` default).
    Default,
    /// A negative value: keep loaded forever.
    Forever,
    /// This long; zero unloads right after the request.
    For(Duration),
}

impl KeepAlive {
    const DEFAULT: Duration = Duration::from_secs(5 * 60);

    /// Decodes a Go duration string (`"5m"`, `"1h30m"`, `"0"`) or a number of seconds.
    pub fn parse(value: Option<&Value>) -> Result<Self, ApiError> {
        let seconds = match value {
            None | Some(Value::Null) => return Ok(KeepAlive::Default),
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
            Some(Value::String(s)) => parse_go_duration(s).map_err(ApiError::bad_request)?,
            Some(other) => return Err(ApiError::bad_request(format!("Unsupported type: '{}'", go_type_name(other)))),
        };
        Ok(if seconds < 0.0 { KeepAlive::Forever } else { KeepAlive::For(Duration::from_secs_f64(seconds.min(1e12))) })
    }

    /// `keep_alive: 0`: unload the model when the request is over.
    pub fn unloads(&self) -> bool {
        *self == KeepAlive::For(Duration::ZERO)
    }

    /// How long the model stays loaded; `None` means forever.
    pub fn duration(&self) -> Option<Duration> {
        match self {
            KeepAlive::Default => Some(Self::DEFAULT),
            KeepAlive::Forever => None,
            KeepAlive::For(d) => Some(*d),
        }
    }
}

fn go_type_name(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "bool",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        _ => "interface {}",
    }
}

/// Go's `time.ParseDuration`, returning seconds (negative allowed) or Go's error message.
fn parse_go_duration(input: &str) -> Result<f64, String> {
    let invalid = || format!("time: invalid duration {input:?}");
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_seconds = 0.0;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "" => return Err(format!("time: missing unit in duration {input:?}")),
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("time: unknown unit {other:?} in duration {input:?}")),
        };
        total_seconds += value * scale;
    }
    Ok(if negative { -total_seconds } else { total_seconds })
}

/// The model options the emulator acts on. All known options are type-checked like Ollama does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ModelOptions {
    /// `num_predict` > 0: stop after this many tokens with `done_reason: "length"`.
    pub num_predict: Option<usize>,
    /// `num_ctx`, shown by `/api/ps` as `context_length`.
    pub num_ctx: Option<u64>,
}

const INTEGER_OPTIONS: &[&str] = &[
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "repeat_last_n",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "draft_num_predict",
];
const FLOAT_OPTIONS: &[&str] =
    &["temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty", "frequency_penalty"];
const BOOL_OPTIONS: &[&str] = &["use_mmap", "numa", "low_vram", "vocab_only", "use_mlock"];

impl ModelOptions {
    /// Checks option types (a wrong type is a 500, as in Ollama) and extracts what we use.
    /// Unknown keys and null values are ignored.
    pub fn parse(options: Option<&Map<String, Value>>) -> Result<Self, ApiError> {
        let mut parsed = ModelOptions::default();
        let Some(options) = options else {
            return Ok(parsed);
        };
        for (key, value) in options.iter().filter(|(_, v)| !v.is_null()) {
            let key = key.as_str();
            let wrong = |kind: &str| ApiError::internal(format!("option {key:?} must be of {kind}"));
            if INTEGER_OPTIONS.contains(&key) {
                let n = value.as_f64().ok_or_else(|| wrong("type integer"))? as i64;
                match key {
                    "num_predict" if n > 0 => parsed.num_predict = Some(n as usize),
                    "num_ctx" if n > 0 => parsed.num_ctx = Some(n as u64),
                    _ => {}
                }
            } else if FLOAT_OPTIONS.contains(&key) && !value.is_number() {
                return Err(wrong("type float32"));
            } else if BOOL_OPTIONS.contains(&key) && !value.is_boolean() {
                return Err(wrong("type boolean"));
            } else if key == "stop" {
                let items = value.as_array().ok_or_else(|| wrong("type array"))?;
                if !items.iter().all(Value::is_string) {
                    return Err(wrong("an array of strings"));
                }
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("0"), Ok(0.0));
        assert_eq!(parse_go_duration("5m"), Ok(300.0));
        assert_eq!(parse_go_duration("1h30m"), Ok(5400.0));
        assert_eq!(parse_go_duration("-1m"), Ok(-60.0));
        assert_eq!(parse_go_duration("1.5s"), Ok(1.5));
        assert_eq!(parse_go_duration("10"), Err("time: missing unit in duration \"10\"".into()));
        assert_eq!(parse_go_duration("abc"), Err("time: invalid duration \"abc\"".into()));
        assert!(parse_go_duration("3d").unwrap_err().starts_with("time: unknown unit \"d\""));
    }

    #[test]
    fn keep_alive_values() {
        assert_eq!(KeepAlive::parse(None), Ok(KeepAlive::Default));
        assert!(KeepAlive::parse(Some(&json!(0))).unwrap().unloads());
        assert!(KeepAlive::parse(Some(&json!("0"))).unwrap().unloads());
        assert_eq!(KeepAlive::parse(Some(&json!(-1))), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse(Some(&json!("10m"))), Ok(KeepAlive::For(Duration::from_secs(600))));
        assert!(KeepAlive::parse(Some(&json!(true))).is_err());
    }

    #[test]
    fn think_values() {
        assert_eq!(parse_think(Some(&json!(null))), Ok(None));
        assert_eq!(parse_think(Some(&json!("high"))), Ok(Some(true)));
        assert_eq!(parse_think(Some(&json!(false))), Ok(Some(false)));
        assert!(parse_think(Some(&json!("very"))).is_err());
        assert!(parse_think(Some(&json!(1))).is_err());
    }

    #[test]
    fn option_types() {
        let opts = json!({"num_predict": 3, "temperature": 0.2, "stop": ["x"], "nope": {}});
        let parsed = ModelOptions::parse(opts.as_object()).unwrap();
        assert_eq!(parsed.num_predict, Some(3));
        let bad = json!({"temperature": "hot"});
        let err = ModelOptions::parse(bad.as_object()).unwrap_err();
        assert_eq!(err.message, "option \"temperature\" must be of type float32");
        assert_eq!(err.status.as_u16(), 500);
    }
}
