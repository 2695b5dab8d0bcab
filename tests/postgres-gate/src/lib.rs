//! `#[postgres_gate::needs_test_database_url]` marks a test `#[ignore]`d when the tests were built
//! without `TEST_DATABASE_URL`, so a run without PostgreSQL reports its PostgreSQL tests as
//! "ignored, TEST_DATABASE_URL is not set" instead of counting them as passed.
//!
//! libtest cannot skip a test at run time, so the decision is made when the tests are built:
//! `option_env!` records the variable in this crate's dependency info, and Cargo rebuilds this
//! crate, and the tests using it, whenever the variable changes between two `cargo test`s. Only
//! the test binaries depend on this crate, so the server itself is not rebuilt.

use proc_macro::TokenStream;

/// Why a PostgreSQL test did not run, as libtest prints it.
const REASON: &str = "TEST_DATABASE_URL is not set";

#[proc_macro_attribute]
pub fn needs_test_database_url(arguments: TokenStream, test: TokenStream) -> TokenStream {
    assert!(arguments.is_empty(), "needs_test_database_url takes no arguments");
    match option_env!("TEST_DATABASE_URL") {
        Some(url) if !url.is_empty() => test,
        _ => {
            let mut ignored: TokenStream = format!("#[ignore = {REASON:?}]").parse().expect("an attribute");
            ignored.extend(test);
            ignored
        }
    }
}
