//! Work that lives as long as the server rather than a request (housekeeping loops). It is
//! tracked and stopped with the server, and by dropping the [`BackgroundTasks`] that own it, so
//! that nothing outlives the server that started it (tests start many servers in one process).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's background tasks.
#[derive(Default)]
pub struct BackgroundTasks {
    tracker: TaskTracker,
    stopping: CancellationToken,
}

impl BackgroundTasks {
    /// Runs `work` every `period` (the first time after one period) until the tasks are stopped.
    pub fn every(&self, period: Duration, mut work: impl FnMut() + Send + 'static) {
        self.every_awaiting(period, move || {
            work();
            std::future::ready(())
        });
    }

    /// [`BackgroundTasks::every`] for work that waits (on the database): each run ends before
    /// the next period starts counting.
    pub fn every_awaiting<F>(&self, period: Duration, mut work: impl FnMut() -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send,
    {
        self.spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                work().await;
            }
        });
    }

    /// Runs `task` until it ends or the tasks are stopped, whichever comes first.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.spawner().spawn(task);
    }

    /// A handle that starts more tasks later (e.g. when a provider is added), stopped with these.
    pub fn spawner(&self) -> Spawner {
        Spawner { tracker: self.tracker.clone(), stopping: self.stopping.clone() }
    }

    /// Stops every task and waits until they are gone (with what they hold).
    pub async fn stop(&self) {
        self.stopping.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Starts tasks that belong to a [`BackgroundTasks`]. Cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    tracker: TaskTracker,
    stopping: CancellationToken,
}

impl Spawner {
    /// Runs `task` until it ends or the tasks are stopped, whichever comes first.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stopping = self.stopping.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = task => {}
                () = stopping.cancelled() => {}
            }
        });
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        self.stopping.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn periodic_work_runs_until_stopped_then_lets_go_of_what_it_holds() {
        let tasks = BackgroundTasks::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        tasks.every(Duration::from_millis(5), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(runs.load(Ordering::SeqCst) >= 2);
        tokio::time::timeout(Duration::from_secs(10), tasks.stop()).await.expect("the tasks stop");
        assert_eq!(Arc::strong_count(&runs), 1, "the stopped task dropped its work, so it runs no more");
    }

    #[tokio::test]
    async fn dropping_the_tasks_stops_them() {
        let tasks = BackgroundTasks::default();
        let held = Arc::new(());
        let holder = held.clone();
        tasks.every(Duration::from_secs(60), move || drop(holder.clone()));
        let tracker = tasks.tracker.clone();
        drop(tasks);
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.expect("the task ended");
        assert_eq!(Arc::strong_count(&held), 1);
    }
}
