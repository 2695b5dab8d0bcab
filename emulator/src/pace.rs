//! Timing of chunks.

use std::time::Duration;

/// Sleeps, without touching the timer for a zero delay (a zero sleep would still wait for the
/// next timer tick).
pub(crate) async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// Paces a stream: waits `delay` before every chunk but the first.
pub(crate) struct Pacer {
    delay: Duration,
    first: bool,
}

impl Pacer {
    pub fn new(delay: Duration) -> Self {
        Pacer { delay, first: true }
    }

    pub async fn next(&mut self) {
        if !std::mem::take(&mut self.first) {
            pause(self.delay).await;
        }
    }
}
