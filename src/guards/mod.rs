//! Middleware that protects the API: per-client rate limits, cross-site request refusal, and
//! a time limit on non-streaming requests.

pub mod cross_site;
pub mod rate_limit;
pub mod timeout;

pub use rate_limit::RateLimits;
