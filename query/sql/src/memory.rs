//! The memory pool behind `memory_limit`.
//!
//! DataFusion 55's `RepartitionExec`, when the pool refuses memory for a batch it is passing on,
//! writes the batch to a spill file and the reading side waits on that file. With two input
//! tasks spilling at once the reader can wait on the older file while its batch is in the newer
//! one, and the query parks forever with every worker idle (apache/datafusion#24883, fixed after
//! 55.2). A limited statement that should fail with "needs more than the memory limit" hung in
//! about a third of runs here instead.
//!
//! [`NoRepartitionSpill`] keeps the limit for every other operator (sorts and aggregations still
//! spill, or fail naming the limit) but never refuses a repartition's in-flight batches: they are
//! still counted, so the operators they feed meet the limit sooner, and the repartition never
//! takes its spilling path.

use std::fmt;
use std::sync::Arc;

use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
    TrackConsumersPool,
};

/// A pool of `limit` bytes (greedy, reporting its five largest consumers when it refuses) whose
/// repartitions are never refused.
pub(crate) fn limited_pool(limit: usize) -> Arc<dyn MemoryPool> {
    let inner = TrackConsumersPool::new(
        GreedyMemoryPool::new(limit),
        std::num::NonZeroUsize::new(5).expect("five is not zero"),
    );
    Arc::new(NoRepartitionSpill {
        inner: Arc::new(inner),
    })
}

/// Whether a reservation is a repartition's channel buffer (`RepartitionExec[N]`; not the
/// merge of a sort-preserving repartition, `RepartitionExec[Merge N]`, which cannot spill).
fn is_repartition_channel(consumer: &MemoryConsumer) -> bool {
    consumer
        .name()
        .strip_prefix("RepartitionExec[")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct NoRepartitionSpill {
    inner: Arc<dyn MemoryPool>,
}

impl fmt::Display for NoRepartitionSpill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl MemoryPool for NoRepartitionSpill {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if is_repartition_channel(reservation.consumer()) {
            self.inner.grow(reservation, additional);
            Ok(())
        } else {
            self.inner.try_grow(reservation, additional)
        }
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_repartition_channels_are_never_refused() {
        let pool = limited_pool(1000);
        let channel = MemoryConsumer::new("RepartitionExec[3]").register(&pool);
        let merge = MemoryConsumer::new("RepartitionExec[Merge 3]").register(&pool);
        let sort = MemoryConsumer::new("ExternalSorter[0]").register(&pool);
        channel.try_grow(5000).unwrap();
        assert_eq!(pool.reserved(), 5000);
        assert!(merge.try_grow(1).is_err());
        assert!(sort.try_grow(1).is_err());
        channel.shrink(4500);
        sort.try_grow(400).unwrap();
        assert!(sort.try_grow(200).is_err());
        assert_eq!(pool.reserved(), 900);
        drop(channel);
        drop(sort);
        assert_eq!(pool.reserved(), 0);
    }
}
