//! The contract between the delivery worker ([`crate::delivery`]) and every
//! sink: a [`Sink`] takes a batch of records and answers with [`Outcomes`],
//! one result per record; a failed result is a [`DeliveryError`] saying
//! whether trying again may help.
//!
//! A record counts as delivered only when its result is `Ok`, and a sink
//! answers `Ok` only once its destination confirmed the record (a 2xx, an
//! fsync, a broker's ack). [`Outcomes`] can only be built from the batch
//! itself, so it always holds exactly one result per record: there is no
//! count to lose, and no slot left without a result that could be taken for
//! a delivery. A record a sink could not find out about is a retriable
//! failure, said so explicitly ([`Outcomes::unsettled`]).
//!
//! The lowest module of `sinks`: the sink modules and the worker import it,
//! it imports none of them.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;

use crate::record::StoredRecord;

/// A boxed future, so sinks can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A delivery target.
pub trait Sink: Send + Sync {
    /// Delivers `records`, answering for each of them, in order, with the
    /// one [`Outcomes`] the batch allows: `Ok` only for a record the target
    /// has confirmed.
    fn deliver_batch<'a>(&'a self, records: &'a [StoredRecord]) -> BoxFuture<'a, Outcomes>;

    /// Reopens any file the sink holds (SIGHUP); most sinks hold none.
    fn reopen(&self) {}

    /// Whether only one process at a time may deliver to it: true for a sink
    /// that writes a file on its host. With several replicas on one
    /// PostgreSQL spool, one replica at a time holds such a sink.
    fn single_writer(&self) -> bool {
        false
    }
}

/// Why a delivery failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: the target may recover (network error, timeout, 5xx, disk full).
    #[error("{reason}")]
    Retriable {
        /// What went wrong.
        reason: String,
        /// How long the target asked us to wait (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    /// Retrying the same record cannot succeed (the target rejected it).
    #[error("{reason}")]
    Permanent {
        /// What went wrong.
        reason: String,
    },
}

impl DeliveryError {
    /// A failure worth retrying, with no wait asked for by the target.
    pub fn retriable(reason: impl Into<String>) -> Self {
        Self::Retriable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A failure that retrying the same record cannot mend.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
        }
    }
}

/// A record's result: delivered, or why not.
pub type DeliveryResult = Result<(), DeliveryError>;

/// One result per record of a batch, in the batch's order.
///
/// Every constructor takes the batch and makes one result per record of it,
/// and no method adds or removes one, so the length is the batch's by
/// construction. Read it as a slice (it dereferences to one) or iterate it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a batch's outcomes are what the worker settles; dropping them loses the answer"]
pub struct Outcomes(Vec<DeliveryResult>);

impl Outcomes {
    /// Each record's result, from `deliver` called once per record in order.
    pub fn from_fn<'r>(
        records: &'r [StoredRecord],
        deliver: impl FnMut(&'r StoredRecord) -> DeliveryResult,
    ) -> Self {
        Self(records.iter().map(deliver).collect())
    }

    /// The same result for every record: one durable write for the whole
    /// batch, or a target that none of it could reach.
    pub fn all(records: &[StoredRecord], outcome: DeliveryResult) -> Self {
        Self(vec![outcome; records.len()])
    }

    /// Each record's result from the future `deliver` makes for it, with at
    /// most `limit` (at least 1) of them running at once; the results stay
    /// in the batch's order whatever order the futures finish in.
    pub async fn buffered<'r, F, Fut>(records: &'r [StoredRecord], limit: usize, deliver: F) -> Self
    where
        F: FnMut(&'r StoredRecord) -> Fut,
        Fut: Future<Output = DeliveryResult>,
    {
        // Made first, then driven: a lazy `map` held across the await would
        // make the caller's future's `Send` bound unprovable.
        let attempts: Vec<Fut> = records.iter().map(deliver).collect();
        Self(
            futures_util::stream::iter(attempts)
                .buffered(limit.max(1))
                .collect()
                .await,
        )
    }

    /// Every record a retriable failure for `reason` until [`Self::set`]
    /// gives it its result: for a sink that learns the results one by one
    /// and may stop part-way (a connection reset), so that a record it never
    /// got to is said to be not delivered, never taken for delivered.
    pub fn unsettled(records: &[StoredRecord], reason: impl Into<String>) -> Self {
        Self::all(records, Err(DeliveryError::retriable(reason)))
    }

    /// Gives record `index` of the batch its result. An index beyond the
    /// batch names no record and is ignored: it cannot change the length.
    pub fn set(&mut self, index: usize, outcome: DeliveryResult) {
        if let Some(slot) = self.0.get_mut(index) {
            *slot = outcome;
        }
    }

    /// Turns every success into `failure`, the failures staying as they
    /// are: for when the write or flush that would have confirmed the
    /// whole batch failed after the records were handed over.
    pub fn fail_successes(&mut self, failure: &DeliveryError) {
        for outcome in self.0.iter_mut().filter(|outcome| outcome.is_ok()) {
            *outcome = Err(failure.clone());
        }
    }
}

impl Deref for Outcomes {
    type Target = [DeliveryResult];

    fn deref(&self) -> &[DeliveryResult] {
        &self.0
    }
}

impl IntoIterator for Outcomes {
    type Item = DeliveryResult;
    type IntoIter = std::vec::IntoIter<DeliveryResult>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Outcomes {
    type Item = &'a DeliveryResult;
    type IntoIter = std::slice::Iter<'a, DeliveryResult>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<const N: usize> PartialEq<[DeliveryResult; N]> for Outcomes {
    fn eq(&self, other: &[DeliveryResult; N]) -> bool {
        self.0 == other
    }
}

impl PartialEq<Vec<DeliveryResult>> for Outcomes {
    fn eq(&self, other: &Vec<DeliveryResult>) -> bool {
        &self.0 == other
    }
}

/// Runs CPU-heavy synchronous work (serialising or logging a whole batch)
/// without stalling the requests that share this worker thread: on the
/// multi-threaded runtime the thread's other tasks move elsewhere meanwhile.
/// A current-thread runtime (as in tests) cannot do that; there it runs inline.
pub(crate) fn run_blocking<R>(work: impl FnOnce() -> R) -> R {
    let multi_threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_threaded {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// Test helper: delivers `record` as a batch of its own and returns its one
/// outcome; panics if the sink answered with any other number.
#[cfg(test)]
pub(crate) async fn deliver_alone(sink: &dyn Sink, record: &StoredRecord) -> DeliveryResult {
    let outcomes: Vec<DeliveryResult> = sink
        .deliver_batch(std::slice::from_ref(record))
        .await
        .into_iter()
        .collect();
    let [outcome] = <[DeliveryResult; 1]>::try_from(outcomes).expect("one outcome for one record");
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(len: usize) -> Vec<StoredRecord> {
        (0..len)
            .map(|n| StoredRecord {
                id: format!("e{n}"),
                event_type: 100,
                json: "{}".to_owned(),
            })
            .collect()
    }

    #[tokio::test]
    async fn every_constructor_answers_once_for_every_record_of_the_batch() {
        for len in [0, 1, 3, 300] {
            let records = batch(len);
            let lengths = [
                Outcomes::from_fn(&records, |_| Ok(())).len(),
                Outcomes::all(&records, Ok(())).len(),
                Outcomes::unsettled(&records, "not attempted").len(),
                Outcomes::buffered(&records, 8, |_| async { Ok(()) })
                    .await
                    .len(),
                // A limit of 0 still makes progress instead of waiting forever.
                Outcomes::buffered(&records, 0, |_| async { Ok(()) })
                    .await
                    .len(),
            ];
            assert_eq!(lengths, [len; 5], "batch of {len}");
        }
    }

    #[tokio::test]
    async fn results_stay_in_the_batch_order_whatever_order_they_finish_in() {
        let records = batch(5);
        let outcomes = Outcomes::buffered(&records, 5, |record| async move {
            // The first records finish last.
            let n: u64 = record.id[1..].parse().unwrap();
            tokio::time::sleep(Duration::from_millis(50 - n * 10)).await;
            Err(DeliveryError::permanent(record.id.clone()))
        })
        .await;
        let reasons: Vec<String> = outcomes
            .iter()
            .map(|outcome| outcome.clone().unwrap_err().to_string())
            .collect();
        assert_eq!(reasons, ["e0", "e1", "e2", "e3", "e4"]);
    }

    #[test]
    fn a_record_never_given_a_result_is_a_retriable_failure_and_set_cannot_change_the_length() {
        let records = batch(3);
        let mut outcomes = Outcomes::unsettled(&records, "not attempted");
        outcomes.set(0, Ok(()));
        outcomes.set(3, Ok(()));
        outcomes.set(usize::MAX, Ok(()));
        assert_eq!(
            outcomes,
            [
                Ok(()),
                Err(DeliveryError::retriable("not attempted")),
                Err(DeliveryError::retriable("not attempted")),
            ]
        );
    }

    #[test]
    fn failing_the_successes_keeps_the_other_failures_as_they_were() {
        let records = batch(3);
        let mut outcomes = Outcomes::from_fn(&records, |record| match record.id.as_str() {
            "e1" => Err(DeliveryError::permanent("unreadable")),
            _ => Ok(()),
        });
        outcomes.fail_successes(&DeliveryError::retriable("flush failed"));
        assert_eq!(
            outcomes,
            [
                Err(DeliveryError::retriable("flush failed")),
                Err(DeliveryError::permanent("unreadable")),
                Err(DeliveryError::retriable("flush failed")),
            ]
        );
    }
}
