//! A small table read whole and kept for a while (model policies, quotas): requests read the
//! copy in memory; a change made through this process forgets it at once, other processes see
//! it when their copy expires (`USER_CACHE_SECS`).

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::ServiceResult;

type Slot<T> = Option<(Instant, Arc<T>)>;

pub struct Snapshot<T> {
    ttl: Duration,
    slot: Arc<RwLock<Slot<T>>>,
}

impl<T> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Snapshot { ttl: self.ttl, slot: self.slot.clone() }
    }
}

impl<T> Snapshot<T> {
    /// A zero `ttl` reads the table for every use.
    pub fn new(ttl: Duration) -> Self {
        Snapshot { ttl, slot: Arc::new(RwLock::new(None)) }
    }

    /// The kept copy while it is fresh; otherwise what `load` reads, kept.
    pub async fn get_or_load<F: Future<Output = ServiceResult<T>>>(&self, load: impl FnOnce() -> F) -> ServiceResult<Arc<T>> {
        if let Some((loaded_at, value)) = &*self.slot.read().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            if loaded_at.elapsed() < self.ttl {
                return Ok(value.clone());
            }
        }
        let value = Arc::new(load().await?);
        *self.slot.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((Instant::now(), value.clone()));
        Ok(value)
    }

    /// Drops the copy: the next use reads the table.
    pub fn forget(&self) {
        *self.slot.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}
