//! Request validation at the edge, answered in the FastAPI/Pydantic 2 shape the SPA parses:
//! `422 {"detail":[{"type","loc","msg","input","ctx"?}]}`.
//!
//! Request types implement [`FromFields`] by reading their fields through a [`Fields`] reader,
//! which collects every problem (not only the first) like Pydantic does. Extractors turn bodies,
//! forms, query strings and path segments into such readers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use bytes::BytesMut;
use futures_util::{stream, StreamExt};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::error::ApiError;

/// One entry of a 422 `detail` list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValidationIssue {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub loc: Vec<Value>,
    pub msg: String,
    pub input: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

/// What is wrong with one value, before it is placed at a location.
#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: &'static str,
    pub msg: String,
    pub ctx: Option<Value>,
}

impl Problem {
    pub fn new(kind: &'static str, msg: impl Into<String>) -> Self {
        Self { kind, msg: msg.into(), ctx: None }
    }
    pub fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(ctx);
        self
    }

    /// The entry of a 422 `detail` list for this problem with `input` at `loc` (the echoed input
    /// cut to [`ECHOED_INPUT_CHARS`]).
    pub fn at(self, loc: Vec<Value>, input: &Value) -> ValidationIssue {
        ValidationIssue { kind: self.kind, loc, msg: self.msg, input: echoed(input), ctx: self.ctx }
    }
}

/// A field that may be absent, explicitly null, or set: partial updates apply only what was sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<T> Patch<T> {
    /// `None` when absent; `Some(None)` when null; `Some(Some(v))` when set.
    pub fn into_update(self) -> Option<Option<T>> {
        match self {
            Patch::Absent => None,
            Patch::Null => Some(None),
            Patch::Value(v) => Some(Some(v)),
        }
    }
    pub fn value(self) -> Option<T> {
        match self {
            Patch::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// Reads the fields of one object at a location (`["body"]`, `["query"]`, `["body","messages",0]`).
pub struct Fields<'a> {
    loc: Vec<Value>,
    whole: &'a Value,
    issues: Vec<ValidationIssue>,
}

impl<'a> Fields<'a> {
    pub fn new(loc: Vec<Value>, whole: &'a Value) -> Self {
        Self { loc, whole, issues: Vec::new() }
    }

    /// The field `name`, borrowed from the whole input (never copied: a body may be large).
    fn field(&self, name: &str) -> Option<&'a Value> {
        let whole: &'a Value = self.whole;
        whole.as_object().and_then(|object| object.get(name))
    }

    /// Records a problem; the echoed `input` is cut to [`ECHOED_INPUT_CHARS`].
    fn push(&mut self, name: &str, input: &Value, problem: Problem) {
        let mut loc = self.loc.clone();
        loc.push(json!(name));
        self.issues.push(problem.at(loc, input));
    }

    /// A field that must be present (and, unless the parser accepts it, not null).
    pub fn required<T>(&mut self, name: &str, parse: impl FnOnce(&Value) -> Result<T, Problem>) -> Option<T> {
        match self.field(name) {
            None => {
                self.push(name, self.whole, Problem::new("missing", "Field required"));
                None
            }
            Some(value) => self.check(name, value, parse),
        }
    }

    /// A field that may be absent or null (both give `None`).
    pub fn optional<T>(&mut self, name: &str, parse: impl FnOnce(&Value) -> Result<T, Problem>) -> Option<T> {
        match self.field(name) {
            None | Some(Value::Null) => None,
            Some(value) => self.check(name, value, parse),
        }
    }

    /// A field of a partial update: absent, null or a value. An invalid value is recorded and
    /// reported as `Absent` (the whole request fails anyway).
    pub fn patch<T>(&mut self, name: &str, parse: impl FnOnce(&Value) -> Result<T, Problem>) -> Patch<T> {
        match self.field(name) {
            None => Patch::Absent,
            Some(Value::Null) => Patch::Null,
            Some(value) => self.check(name, value, parse).map_or(Patch::Absent, Patch::Value),
        }
    }

    /// An optional nested object (absent or null give `None`), read by `item` at `loc + [name]`.
    pub fn optional_object<T>(&mut self, name: &str, item: impl FnOnce(&mut Fields<'_>) -> Option<T>) -> Option<T> {
        let value = match self.field(name) {
            None | Some(Value::Null) => return None,
            Some(value) => value,
        };
        if !value.is_object() {
            self.push(name, value, Problem::new("dict_type", "Input should be a valid dictionary"));
            return None;
        }
        let mut loc = self.loc.clone();
        loc.push(json!(name));
        let mut nested = Fields::new(loc, value);
        let parsed = item(&mut nested);
        let ok = nested.issues.is_empty();
        self.issues.append(&mut nested.issues);
        parsed.filter(|_| ok)
    }

    /// The fields present, in order (for objects whose keys are data, such as model options).
    pub fn entries(&self) -> Vec<(&'a str, &'a Value)> {
        let whole: &'a Value = self.whole;
        whole.as_object().map(|object| object.iter().map(|(k, v)| (k.as_str(), v)).collect()).unwrap_or_default()
    }

    /// A list of objects, each read by `item` at `loc + [name, index]`.
    pub fn list_of<T>(&mut self, name: &str, required: bool, item: impl Fn(&mut Fields<'_>) -> Option<T>) -> Option<Vec<T>> {
        let value = match self.field(name) {
            None if required => {
                self.push(name, self.whole, Problem::new("missing", "Field required"));
                return None;
            }
            None => return None,
            Some(Value::Null) if !required => return None,
            Some(v) => v,
        };
        let Value::Array(items) = value else {
            self.push(name, value, Problem::new("list_type", "Input should be a valid list"));
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, element) in items.iter().enumerate() {
            let mut loc = self.loc.clone();
            loc.push(json!(name));
            loc.push(json!(index));
            if !element.is_object() {
                self.issues.push(ValidationIssue {
                    kind: "model_attributes_type",
                    loc,
                    msg: "Input should be a valid dictionary or object to extract fields from".into(),
                    input: echoed(element),
                    ctx: None,
                });
                ok = false;
                continue;
            }
            let mut nested = Fields::new(loc, element);
            let parsed = item(&mut nested);
            ok &= nested.issues.is_empty();
            self.issues.append(&mut nested.issues);
            if let Some(p) = parsed {
                out.push(p);
            }
        }
        ok.then_some(out)
    }

    fn check<T>(&mut self, name: &str, value: &Value, parse: impl FnOnce(&Value) -> Result<T, Problem>) -> Option<T> {
        match parse(value) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.push(name, value, problem);
                None
            }
        }
    }

    /// Records a problem found by a cross-field check.
    pub fn fail(&mut self, name: &str, input: &Value, problem: Problem) {
        self.push(name, input, problem);
    }

    pub fn into_issues(self) -> Vec<ValidationIssue> {
        self.issues
    }
}

/// A request type read from named fields.
pub trait FromFields: Sized {
    /// How large a body carrying this type may be.
    const BODY_SIZE: BodySize = BodySize::Small;

    fn from_fields(fields: &mut Fields<'_>) -> Option<Self>;
}

/// Characters of a refused value echoed back in a 422's `input`: enough to recognise it, never
/// a copy of a large body.
pub const ECHOED_INPUT_CHARS: usize = 1_000;

/// `value` for a 422's `input`: itself when small, otherwise cut to about
/// [`ECHOED_INPUT_CHARS`] (long strings end in `…`, long lists and objects lose their tail).
fn echoed(value: &Value) -> Value {
    let mut budget = ECHOED_INPUT_CHARS;
    echo_within(value, &mut budget)
}

fn echo_within(value: &Value, budget: &mut usize) -> Value {
    match value {
        Value::String(s) => {
            let kept: String = s.chars().take(*budget).collect();
            *budget = budget.saturating_sub(kept.chars().count());
            if kept.len() < s.len() {
                Value::String(kept + "…")
            } else {
                Value::String(kept)
            }
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                if *budget == 0 {
                    break;
                }
                *budget = budget.saturating_sub(1);
                out.push(echo_within(item, budget));
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, item) in map {
                if *budget <= key.len() {
                    break;
                }
                *budget -= key.len();
                out.insert(key.clone(), echo_within(item, budget));
            }
            Value::Object(out)
        }
        scalar => {
            *budget = budget.saturating_sub(scalar.to_string().len().min(*budget));
            scalar.clone()
        }
    }
}

fn finish<T: FromFields>(loc: Vec<Value>, whole: &Value) -> Result<T, ApiError> {
    parse_fields(loc, whole).map_err(|issues| match issues {
        Some(issues) => ApiError::Validation(issues),
        None => ApiError::internal(anyhow::anyhow!("request type refused input without saying why")),
    })
}

/// Reads `whole` into `T` as a request would be (the command line reads its input so too): the
/// issues found, or `None` when `T` refused the input without saying why.
pub fn parse_fields<T: FromFields>(loc: Vec<Value>, whole: &Value) -> Result<T, Option<Vec<ValidationIssue>>> {
    let mut fields = Fields::new(loc, whole);
    let parsed = T::from_fields(&mut fields);
    let issues = fields.into_issues();
    match parsed {
        Some(value) if issues.is_empty() => Ok(value),
        _ if !issues.is_empty() => Err(Some(issues)),
        _ => Err(None),
    }
}

// ---- value parsers ---------------------------------------------------------------------------

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Declares an enum of fixed strings once: its variants with their wire names, `as_str`,
/// `parse`, `NAMES` (what the OpenAPI document and the 422 message list) and `from_value`,
/// the field parser.
#[macro_export]
macro_rules! text_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        $vis enum $name {
            $($variant),+
        }

        impl $name {
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Reads a field: one of [`Self::NAMES`], or the 422 listing them.
            pub fn from_value(value: &serde_json::Value) -> Result<Self, $crate::validation::Problem> {
                $crate::validation::literal(Self::NAMES)(value).map(|text| Self::parse(&text).expect("one of NAMES"))
            }
        }
    };
}

/// An integer query parameter in `MIN..=MAX` (`MAX = i64::MAX`: no upper bound), `DEFAULT` when
/// absent: parser and OpenAPI schema read the same three numbers. Fields name it with
/// `#[param(inline, value_type = ...)]`.
pub struct QueryInt<const MIN: i64, const MAX: i64, const DEFAULT: i64>;

impl<const MIN: i64, const MAX: i64, const DEFAULT: i64> QueryInt<MIN, MAX, DEFAULT> {
    pub fn read(fields: &mut Fields<'_>, name: &str) -> i64 {
        fields.optional(name, query_int(MIN, (MAX < i64::MAX).then_some(MAX))).unwrap_or(DEFAULT)
    }
}

impl<const MIN: i64, const MAX: i64, const DEFAULT: i64> utoipa::PartialSchema for QueryInt<MIN, MAX, DEFAULT> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
            .minimum(Some(MIN as f64))
            .maximum((MAX < i64::MAX).then_some(MAX as f64))
            .default(Some(DEFAULT.into()))
            .into()
    }
}

impl<const MIN: i64, const MAX: i64, const DEFAULT: i64> utoipa::ToSchema for QueryInt<MIN, MAX, DEFAULT> {}

/// `?skip=` of the paged lists.
pub type Skip = QueryInt<0, { i64::MAX }, 0>;

/// A string of `MIN..=MAX` characters: the bounds are part of the type, so the parser
/// ([`Text::parse`]) and the OpenAPI schema (its `PartialSchema`) read the same two numbers.
/// `MAX = usize::MAX` means no upper bound. Fields of this type need `#[schema(inline)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<const MIN: usize, const MAX: usize>(String);

impl<const MIN: usize, const MAX: usize> Text<MIN, MAX> {
    pub fn parse(value: &Value) -> Result<Self, Problem> {
        string(MIN, MAX)(value).map(Text)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MIN: usize, const MAX: usize> std::ops::Deref for Text<MIN, MAX> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MIN: usize, const MAX: usize> utoipa::PartialSchema for Text<MIN, MAX> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length((MIN > 0).then_some(MIN))
            .max_length((MAX < usize::MAX).then_some(MAX))
            .into()
    }
}

impl<const MIN: usize, const MAX: usize> utoipa::ToSchema for Text<MIN, MAX> {}

/// A string of `min..=max` characters (Unicode scalar values, as Python counts).
pub fn string(min: usize, max: usize) -> impl Fn(&Value) -> Result<String, Problem> {
    move |value| {
        let Value::String(s) = value else {
            return Err(Problem::new("string_type", "Input should be a valid string"));
        };
        let len = s.chars().count();
        if len < min {
            return Err(Problem::new("string_too_short", format!("String should have at least {}", plural(min, "character")))
                .with_ctx(json!({ "min_length": min })));
        }
        if len > max {
            return Err(Problem::new("string_too_long", format!("String should have at most {}", plural(max, "character")))
                .with_ctx(json!({ "max_length": max })));
        }
        Ok(s.clone())
    }
}

pub fn any_string(value: &Value) -> Result<String, Problem> {
    string(0, usize::MAX)(value)
}

pub fn boolean(value: &Value) -> Result<bool, Problem> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => Ok(n.as_i64() == Some(1)),
        Value::String(s) => parse_bool_str(s).ok_or_else(bool_parsing),
        _ => Err(Problem::new("bool_type", "Input should be a valid boolean")),
    }
}

fn bool_parsing() -> Problem {
    Problem::new("bool_parsing", "Input should be a valid boolean, unable to interpret input")
}

/// Pydantic's accepted spellings of a boolean.
fn parse_bool_str(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "on" | "t" => Some(true),
        "false" | "0" | "no" | "n" | "off" | "f" => Some(false),
        _ => None,
    }
}

pub fn object(value: &Value) -> Result<Map<String, Value>, Problem> {
    value.as_object().cloned().ok_or_else(|| Problem::new("dict_type", "Input should be a valid dictionary"))
}

pub fn any_json(value: &Value) -> Result<Value, Problem> {
    Ok(value.clone())
}

pub fn integer(value: &Value) -> Result<i64, Problem> {
    match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            Problem::new("int_from_float", "Input should be a valid integer, got a number with a fractional part")
        }),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| Problem::new("int_parsing", "Input should be a valid integer, unable to parse string as an integer")),
        _ => Err(Problem::new("int_type", "Input should be a valid integer")),
    }
}

/// A number (integer or not; a numeric string too, as Pydantic's lax mode), finite.
pub fn number(value: &Value) -> Result<f64, Problem> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => return Err(Problem::new("float_type", "Input should be a valid number")),
    };
    match parsed {
        Some(n) if n.is_finite() => Ok(n),
        Some(_) => Err(Problem::new("finite_number", "Input should be a finite number")),
        None => Err(Problem::new("float_parsing", "Input should be a valid number, unable to parse string as a number")),
    }
}

pub fn greater_than_equal(min: impl Into<Value> + std::fmt::Display) -> Problem {
    let text = min.to_string();
    Problem::new("greater_than_equal", format!("Input should be greater than or equal to {text}"))
        .with_ctx(json!({ "ge": min.into() }))
}

pub fn less_than_equal(max: impl Into<Value> + std::fmt::Display) -> Problem {
    let text = max.to_string();
    Problem::new("less_than_equal", format!("Input should be less than or equal to {text}")).with_ctx(json!({ "le": max.into() }))
}

/// Pydantic's refusal of a list longer than `max`.
pub fn too_long_list(max: usize, actual: usize) -> Problem {
    Problem::new("too_long", format!("List should have at most {max} items after validation"))
        .with_ctx(json!({"field_type": "List", "max_length": max, "actual_length": actual}))
}

pub fn string_list(value: &Value) -> Result<Vec<String>, Problem> {
    let Value::Array(items) = value else {
        return Err(Problem::new("list_type", "Input should be a valid list"));
    };
    items
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| Problem::new("string_type", "Input should be a valid string")))
        .collect()
}

pub fn uuid_any(value: &Value) -> Result<Uuid, Problem> {
    let Value::String(s) = value else {
        return Err(Problem::new("uuid_type", "UUID input should be a string, bytes or UUID object"));
    };
    parse_uuid(s)
}

pub fn uuid_v4(value: &Value) -> Result<Uuid, Problem> {
    let id = uuid_any(value)?;
    if id.get_version_num() != 4 {
        return Err(Problem::new("uuid_version", "UUID version 4 expected").with_ctx(json!({ "expected_version": 4 })));
    }
    Ok(id)
}

/// Parses a UUID; failures are described in pydantic-core's words (it uses an older `uuid`
/// crate whose messages the SPA shows).
pub fn parse_uuid(s: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(s).map_err(|_| {
        let reason = uuid_error_reason(s);
        Problem::new("uuid_parsing", format!("Input should be a valid UUID, {reason}")).with_ctx(json!({ "error": reason }))
    })
}

fn uuid_error_reason(s: &str) -> String {
    let body = s.strip_prefix("urn:uuid:").unwrap_or(s);
    let offset = s.len() - body.len();
    if let Some((index, c)) = body.char_indices().find(|(_, c)| !(c.is_ascii_hexdigit() || *c == '-')) {
        return format!(
            "invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `{c}` at {}",
            offset + index + 1
        );
    }
    if !body.contains('-') {
        return format!("invalid length: expected length 32 for simple format, found {}", body.len());
    }
    let groups: Vec<&str> = body.split('-').collect();
    if groups.len() != 5 {
        return format!("invalid group count: expected 5, found {}", groups.len());
    }
    for (index, (group, expected)) in groups.iter().zip([8, 4, 4, 4, 12]).enumerate() {
        if group.len() != expected {
            return format!("invalid group length in group {index}: expected {expected}, found {}", group.len());
        }
    }
    "invalid UUID".into()
}

/// One of a fixed set of strings.
pub fn literal(allowed: &'static [&'static str]) -> impl Fn(&Value) -> Result<String, Problem> {
    move |value| match value.as_str() {
        Some(s) if allowed.contains(&s) => Ok(s.to_owned()),
        _ => {
            let expected = match allowed {
                [] => String::new(),
                [only] => format!("'{only}'"),
                [init @ .., last] => {
                    format!("{} or '{last}'", init.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(", "))
                }
            };
            Err(Problem::new("literal_error", format!("Input should be {expected}")).with_ctx(json!({ "expected": expected })))
        }
    }
}

/// An e-mail address, normalised like `email-validator`: the domain is lower-cased.
pub fn email(value: &Value) -> Result<String, Problem> {
    let s = any_string(value)?;
    let invalid = |reason: &str| {
        Problem::new("value_error", format!("value is not a valid email address: {reason}")).with_ctx(json!({ "reason": reason }))
    };
    let Some((local, domain)) = s.rsplit_once('@') else {
        return Err(invalid("An email address must have an @-sign."));
    };
    if local.is_empty() {
        return Err(invalid("There must be something before the @-sign."));
    }
    if domain.is_empty() {
        return Err(invalid("There must be something after the @-sign."));
    }
    if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err(invalid("The part after the @-sign is not valid. It should have a period."));
    }
    let normalised = format!("{local}@{}", domain.to_lowercase());
    if normalised.len() > 255 || !email_address::EmailAddress::is_valid(&normalised) {
        return Err(invalid("The email address is not valid."));
    }
    Ok(normalised)
}

/// A query-string integer within bounds.
pub fn query_int(min: i64, max: Option<i64>) -> impl Fn(&Value) -> Result<i64, Problem> {
    move |value| {
        let n = integer(value)?;
        if n < min {
            return Err(greater_than_equal(min));
        }
        if let Some(max) = max.filter(|max| n > *max) {
            return Err(less_than_equal(max));
        }
        Ok(n)
    }
}

// ---- extractors ------------------------------------------------------------------------------

/// A JSON body read into `T`. A missing body, malformed JSON or a non-object answer 422.
pub struct ValidJson<T>(pub T);

/// Like [`ValidJson`] but an empty body gives `None` (endpoints whose body is optional).
pub struct OptionalJson<T>(pub Option<T>);

fn json_body(bytes: &Bytes) -> Result<Option<Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| json_invalid(e.valid_up_to(), "Invalid UTF-8 in request body"))?;
    match serde_json::from_str::<Value>(text) {
        Ok(value) => Ok(Some(value)),
        // Python reports the offset where parsing stopped: past the end for a truncated body.
        Err(err) if err.is_eof() => Err(json_invalid(text.chars().count(), &err.to_string())),
        Err(err) => Err(json_invalid(char_offset(text, err.line(), err.column()), &err.to_string())),
    }
}

fn char_offset(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split('\n').enumerate() {
        if i + 1 == line {
            return offset + l.chars().take(column.saturating_sub(1)).count();
        }
        offset += l.chars().count() + 1;
    }
    offset
}

fn json_invalid(offset: usize, error: &str) -> ApiError {
    ApiError::Validation(vec![ValidationIssue {
        kind: "json_invalid",
        loc: vec![json!("body"), json!(offset)],
        msg: "JSON decode error".into(),
        input: json!({}),
        ctx: Some(json!({ "error": error })),
    }])
}

/// Where a string (or object key) holds a NUL character, which PostgreSQL cannot store.
fn find_nul(value: &Value, loc: &mut Vec<Value>) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
            loc.push(json!(i));
            let found = find_nul(v, loc);
            if !found {
                loc.pop();
            }
            found
        }),
        Value::Object(map) => map.iter().any(|(k, v)| {
            loc.push(json!(k));
            let found = k.contains('\0') || find_nul(v, loc);
            if !found {
                loc.pop();
            }
            found
        }),
        _ => false,
    }
}

fn refuse_nul(root: &'static str, value: &Value) -> Result<(), ApiError> {
    let mut loc = vec![json!(root)];
    if find_nul(value, &mut loc) {
        return Err(ApiError::Validation(vec![ValidationIssue {
            kind: "string_nul",
            loc,
            msg: "String should not contain NUL characters".into(),
            input: Value::Null,
            ctx: None,
        }]));
    }
    Ok(())
}

fn body_from_value<T: FromFields>(value: &Value) -> Result<T, ApiError> {
    refuse_nul("body", value)?;
    if !value.is_object() {
        return Err(ApiError::Validation(vec![ValidationIssue {
            kind: "model_attributes_type",
            loc: vec![json!("body")],
            msg: "Input should be a valid dictionary or object to extract fields from".into(),
            input: echoed(value),
            ctx: None,
        }]));
    }
    finish(vec![json!("body")], value)
}

fn missing_body() -> ApiError {
    ApiError::Validation(vec![ValidationIssue {
        kind: "missing",
        loc: vec![json!("body")],
        msg: "Field required".into(),
        input: Value::Null,
        ctx: None,
    }])
}

/// How large a request body may be. Each request type declares its class
/// ([`FromFields::BODY_SIZE`]); `MAX_BODY_BYTES` caps them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySize {
    /// Credentials, profile and chat fields.
    Small,
    /// Settings documents and lists of ids.
    Medium,
    /// What carries a message or a conversation (text and base64 images): `MAX_BODY_BYTES`.
    Message,
    /// An uploaded file of up to `MAX_BODY_BYTES`, with room for a form's envelope.
    Upload,
}

pub const SMALL_BODY_BYTES: usize = 16 * 1024;
pub const MEDIUM_BODY_BYTES: usize = 256 * 1024;
/// JSON values (strings, numbers, lists, objects, ...) one body may hold. A parsed value takes
/// several times the bytes of its text; this keeps a body of empty lists from costing gigabytes.
pub const MAX_JSON_VALUES: usize = 20_000;

/// The limits that apply while reading bodies, shared by every request of a server.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    max_bytes: usize,
    read_timeout: Duration,
    /// Bytes of message-sized bodies held at once, in KiB permits: many large uploads at once
    /// wait for each other instead of adding up.
    in_flight: Arc<Semaphore>,
}

impl BodyLimits {
    pub fn new(max_bytes: usize, in_flight_bytes: usize, read_timeout: Duration) -> Self {
        let permits = (in_flight_bytes / 1024).max(max_bytes / 1024 + 1).min(Semaphore::MAX_PERMITS);
        BodyLimits { max_bytes, read_timeout, in_flight: Arc::new(Semaphore::new(permits)) }
    }

    pub fn bytes_for(&self, size: BodySize) -> usize {
        match size {
            BodySize::Small => SMALL_BODY_BYTES.min(self.max_bytes),
            BodySize::Medium => MEDIUM_BODY_BYTES.min(self.max_bytes),
            BodySize::Message => self.max_bytes,
            BodySize::Upload => self.max_bytes.saturating_add(SMALL_BODY_BYTES),
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads a body of at most `size`'s bytes within the read timeout. A declared length over the
/// limit is refused before anything is read; message-sized bodies wait for their share of the
/// in-flight budget. The permit is held while the caller parses the bytes.
async fn read_body(req: Request, limits: &BodyLimits, size: BodySize) -> Result<(Bytes, Option<OwnedSemaphorePermit>), ApiError> {
    let limit = limits.bytes_for(size);
    let declared = declared_length(req.headers());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::PayloadTooLarge);
    }
    let reading = async {
        let permit = if matches!(size, BodySize::Message | BodySize::Upload) {
            let kib = (declared.unwrap_or(limit) / 1024 + 1) as u32;
            Some(
                limits
                    .in_flight
                    .clone()
                    .acquire_many_owned(kib)
                    .await
                    .map_err(|_| ApiError::Unavailable("The server is shutting down"))?,
            )
        } else {
            None
        };
        let mut body = req.into_body().into_data_stream();
        let mut bytes = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|_| ApiError::BadRequest("Could not read the request body".into()))?;
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes.freeze(), permit))
    };
    tokio::time::timeout(limits.read_timeout, reading).await.map_err(|_| ApiError::Unavailable("Request timed out"))?
}

/// An upper bound of the number of JSON values in `text`: every value but the first follows a
/// `,` `[` or `:` outside a string. Counting needs no allocation, unlike parsing.
fn json_values_at_most(text: &[u8]) -> usize {
    let mut count = 1;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b',' | b'[' | b':' => count += 1,
                _ => {}
            }
        }
    }
    count
}

fn too_many_values() -> ApiError {
    ApiError::Validation(vec![ValidationIssue {
        kind: "too_many_values",
        loc: vec![json!("body")],
        msg: format!("The body holds too many JSON values (at most {MAX_JSON_VALUES})"),
        input: Value::Null,
        ctx: Some(json!({ "max_values": MAX_JSON_VALUES })),
    }])
}

/// Reads and parses a JSON body for `T`; `None` when the body is empty.
async fn json_for<T: FromFields>(req: Request, limits: &BodyLimits) -> Result<Option<Value>, ApiError> {
    read_json(req, limits, T::BODY_SIZE).await
}

/// Reads and parses a JSON body of at most `size`'s bytes and [`MAX_JSON_VALUES`] values;
/// `None` when the body is empty.
pub async fn read_json(req: Request, limits: &BodyLimits, size: BodySize) -> Result<Option<Value>, ApiError> {
    let (bytes, _permit) = read_body(req, limits, size).await?;
    if json_values_at_most(&bytes) > MAX_JSON_VALUES {
        return Err(too_many_values());
    }
    json_body(&bytes)
}

impl<S: Send + Sync, T: FromFields> FromRequest<S> for ValidJson<T>
where
    BodyLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match json_for::<T>(req, &BodyLimits::from_ref(state)).await? {
            None => Err(missing_body()),
            Some(value) => body_from_value(&value).map(ValidJson),
        }
    }
}

impl<S: Send + Sync, T: FromFields> FromRequest<S> for OptionalJson<T>
where
    BodyLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match json_for::<T>(req, &BodyLimits::from_ref(state)).await? {
            None | Some(Value::Null) => Ok(OptionalJson(None)),
            Some(value) => body_from_value(&value).map(|v| OptionalJson(Some(v))),
        }
    }
}

/// An `application/x-www-form-urlencoded` body read into `T`. Any other content type reads as
/// an empty form (as FastAPI's form parsing does), so its fields are reported missing.
pub struct ValidForm<T>(pub T);

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"))
}

impl<S: Send + Sync, T: FromFields> FromRequest<S> for ValidForm<T>
where
    BodyLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let form = is_form(req.headers());
        let (bytes, _permit) = read_body(req, &BodyLimits::from_ref(state), T::BODY_SIZE).await?;
        let mut map = Map::new();
        if form {
            for (key, value) in url::form_urlencoded::parse(&bytes) {
                map.entry(key.into_owned()).or_insert(Value::String(value.into_owned()));
            }
        }
        // FastAPI reports missing form fields with `input: null`, not the whole form.
        let whole = if map.is_empty() { Value::Null } else { Value::Object(map) };
        refuse_nul("body", &whole)?;
        finish(vec![json!("body")], &whole).map(ValidForm)
    }
}

/// An uploaded file: the field `file` of a `multipart/form-data` body, or else the whole body.
/// It may have `MAX_BODY_BYTES` (413 beyond) and counts against `MAX_BODY_BYTES_IN_FLIGHT`
/// while it is held.
pub struct UploadedFile {
    pub bytes: Bytes,
    _in_flight: Option<OwnedSemaphorePermit>,
}

/// The name of the form field that carries an uploaded file.
pub const UPLOAD_FIELD: &str = "file";

fn form_boundary(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    content_type.to_ascii_lowercase().starts_with("multipart/form-data").then(|| multer::parse_boundary(content_type).ok())?
}

fn invalid_form(err: multer::Error) -> ApiError {
    ApiError::Validation(vec![
        Problem::new("multipart_invalid", format!("The form could not be read: {err}")).at(vec![json!("body")], &Value::Null)
    ])
}

impl<S: Send + Sync> FromRequest<S> for UploadedFile
where
    BodyLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limits = BodyLimits::from_ref(state);
        let Some(boundary) = form_boundary(req.headers()) else {
            let (bytes, permit) = read_body(req, &limits, BodySize::Message).await?;
            return Ok(UploadedFile { bytes, _in_flight: permit });
        };
        let (body, permit) = read_body(req, &limits, BodySize::Upload).await?;
        let mut form = multer::Multipart::new(stream::once(async move { Ok::<_, std::convert::Infallible>(body) }), boundary);
        while let Some(field) = form.next_field().await.map_err(invalid_form)? {
            if field.name() == Some(UPLOAD_FIELD) {
                let bytes = field.bytes().await.map_err(invalid_form)?;
                if bytes.len() > limits.bytes_for(BodySize::Message) {
                    return Err(ApiError::PayloadTooLarge);
                }
                return Ok(UploadedFile { bytes, _in_flight: permit });
            }
        }
        Err(ApiError::Validation(vec![
            Problem::new("missing", "Field required").at(vec![json!("body"), json!(UPLOAD_FIELD)], &Value::Null)
        ]))
    }
}

/// Query parameters read into `T` (values arrive as strings).
pub struct ValidQuery<T>(pub T);

impl<S: Send + Sync, T: FromFields> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut map = Map::new();
        for (key, value) in url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes()) {
            map.insert(key.into_owned(), Value::String(value.into_owned()));
        }
        let query = Value::Object(map);
        refuse_nul("query", &query)?;
        finish(vec![json!("query")], &query).map(ValidQuery)
    }
}

/// Path parameters read into `T`; malformed ids answer 422 with `loc: ["path", name]`.
pub struct ValidPath<T>(pub T);

impl<S: Send + Sync, T: FromFields> FromRequestParts<S> for ValidPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("path parameters unavailable: {e}")))?;
        let map: Map<String, Value> = params.iter().map(|(k, v)| (k.to_owned(), Value::String(v.to_owned()))).collect();
        finish(vec![json!("path")], &Value::Object(map)).map(ValidPath)
    }
}

/// `{chat_id}` path segment.
pub struct ChatPath {
    pub chat_id: Uuid,
}

impl FromFields for ChatPath {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(ChatPath { chat_id: f.required("chat_id", uuid_any)? })
    }
}

/// `{chat_id}/messages/{message_id}` path segments.
pub struct MessagePath {
    pub chat_id: Uuid,
    pub message_id: Uuid,
}

impl FromFields for MessagePath {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        let chat_id = f.required("chat_id", uuid_any);
        let message_id = f.required("message_id", uuid_any);
        Some(MessagePath { chat_id: chat_id?, message_id: message_id? })
    }
}

/// `{user_id}` path segment.
pub struct UserPath {
    pub user_id: Uuid,
}

impl FromFields for UserPath {
    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(UserPath { user_id: f.required("user_id", uuid_any)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_messages_match_pydantic() {
        let p = parse_uuid("not-a-uuid").unwrap_err();
        assert_eq!(
            p.msg,
            "Input should be a valid UUID, invalid character: expected an optional prefix of `urn:uuid:` followed by [0-9a-fA-F-], found `n` at 1"
        );
        let p = parse_uuid("123").unwrap_err();
        assert_eq!(p.msg, "Input should be a valid UUID, invalid length: expected length 32 for simple format, found 3");
    }

    #[test]
    fn string_lengths_use_python_wording() {
        assert_eq!(string(1, 100)(&json!("")).unwrap_err().msg, "String should have at least 1 character");
        assert_eq!(string(4, 100)(&json!("ab")).unwrap_err().msg, "String should have at least 4 characters");
        assert_eq!(string(0, 3)(&json!("abcd")).unwrap_err().msg, "String should have at most 3 characters");
        assert!(string(1, 2)(&json!("ÜÜ")).is_ok());
    }

    #[test]
    fn emails_are_checked_and_domain_lowercased() {
        assert_eq!(email(&json!("Dave.Mixed@Example.COM")).unwrap(), "Dave.Mixed@example.com");
        assert_eq!(
            email(&json!("nope")).unwrap_err().msg,
            "value is not a valid email address: An email address must have an @-sign."
        );
        assert!(email(&json!("a@b")).is_err());
    }

    #[test]
    fn literal_lists_choices_like_pydantic() {
        let p = literal(&["user", "assistant", "system", "tool"])(&json!("bot")).unwrap_err();
        assert_eq!(p.msg, "Input should be 'user', 'assistant', 'system' or 'tool'");
    }

    #[test]
    fn json_errors_point_at_the_character() {
        let err = json_body(&Bytes::from_static(b"{\"username\": \"x\",")).unwrap_err();
        let ApiError::Validation(issues) = err else { panic!() };
        assert_eq!(issues[0].kind, "json_invalid");
        assert_eq!(issues[0].loc, vec![json!("body"), json!(17)]);
    }
}
