//! How long the client still wants the answer to the request being handled. Handlers run to
//! completion in their own task (see `routes::run_to_completion`), so they are not cancelled when
//! the client hangs up or the time limit passes; work that is worthless then (hashing a password
//! for a login nobody waits for) asks [`abandoned`] and is skipped.

use std::future::Future;

use tokio_util::sync::CancellationToken;

tokio::task_local! {
    static ABANDONED: CancellationToken;
}

/// Runs `handler` with `abandoned` as its request's token, cancelled once nobody waits for it.
pub fn scope<F: Future>(abandoned: CancellationToken, handler: F) -> impl Future<Output = F::Output> {
    ABANDONED.scope(abandoned, handler)
}

/// The current request's token, when called while handling one.
pub fn abandoned() -> Option<CancellationToken> {
    ABANDONED.try_with(CancellationToken::clone).ok()
}
