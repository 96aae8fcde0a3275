//! One source's logs as a stream (the README's "What happens in a pass",
//! steps 2 to 5): jobs are planned a chunk at a time while the downloads of
//! earlier chunks run, with a bounded queue between them, so memory does not
//! grow with the number of tasks; outcomes are recorded in batches beside the
//! downloads; tasks that failed for a reason that may pass are fetched again in
//! rounds at the end of the pass.

use super::account::Tally;
use super::sources::Source;
use super::{Archiver, RunError, SNAPSHOT_CHUNK};
use crate::backoff::Retryable;
use crate::fetch::{FetchOutcome, Fetcher, TaskResult};
use crate::index::TaskUpdate;
use crate::model::Job;
use crate::plan::{PlanContext, PlanItem};
use crate::progress::Progress;
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Outcomes are written to the index in batches of at most this many rows.
const RECORD_BATCH: usize = 256;
/// Batches of outcomes that may wait while earlier ones are recorded.
const RECORD_QUEUE: usize = 16;
/// Downloaded logs that may wait for storage to make them durable (local
/// storage batches fsyncs); each holds an open file but no buffer.
const FINISHING: usize = 256;
/// Planned tasks that may wait for a download slot.
const PLAN_QUEUE: usize = 1024;

/// Tasks the planner counted: all it planned, and those sealed.
#[derive(Debug, Default)]
pub(super) struct PlanCounts {
    pub(super) tasks: u64,
    pub(super) sealed: u64,
}

impl Archiver {
    /// Plans, fetches, stores and records the logs of one source's listed
    /// jobs, planning and fetching at the same time. Returns what the planner
    /// counted; the outcomes are counted in `tally`.
    pub(super) async fn plan_and_fetch(
        &self,
        source: &Source,
        jobs: &[Job],
        ctx: &PlanContext<'_>,
        progress: &Progress,
        tally: Tally<'_>,
        cancel: &CancellationToken,
    ) -> Result<PlanCounts, RunError> {
        let listed_tasks: usize = jobs.iter().map(|j| j.tasks.len()).sum();
        progress.add_tasks(listed_tasks as u64);
        let fetcher = self.fetcher(source, progress);
        let (queue, planned) = tokio::sync::mpsc::channel(PLAN_QUEUE);
        let planned = futures::stream::unfold(planned, |mut rx| async move {
            rx.recv().await.map(|item| ((item, 0), rx))
        });
        let (counts, fetched) = tokio::join!(
            self.plan_chunks(jobs, ctx, queue, progress),
            self.fetch_rounds(planned, &fetcher, tally, cancel)
        );
        let counts = counts?;
        fetched?;
        Ok(counts)
    }

    /// The downloads of one source's pass.
    fn fetcher(&self, source: &Source, progress: &Progress) -> Fetcher {
        Fetcher {
            source: source.client.clone(),
            http: self.http.clone(),
            storage: self.storage.clone(),
            config: self.config.fetch.clone(),
            progress: progress.clone(),
            // Per source: a throttled or slow source never holds another's slots.
            slots: Arc::new(Semaphore::new(self.config.fetch.concurrency)),
        }
    }

    /// Plans the listed jobs a chunk at a time and queues the tasks to fetch;
    /// forgets missing copies and records seals on the way. Stops early when
    /// the fetching side has stopped. Returns what it counted.
    async fn plan_chunks(
        &self,
        jobs: &[Job],
        ctx: &PlanContext<'_>,
        queue: tokio::sync::mpsc::Sender<PlanItem>,
        progress: &Progress,
    ) -> Result<PlanCounts, RunError> {
        let mut counts = PlanCounts::default();
        for chunk in jobs.chunks(SNAPSHOT_CHUNK) {
            // Copies found missing are forgotten in the index before the chunk is
            // fetched, so that a job that then turns out to be gone is `lost`,
            // not sealed around an object that does not exist.
            let (records, missing) = self.snapshot(chunk).await?;
            let plan = crate::plan::plan(chunk, &records, ctx);
            let sealed = plan.newly_sealed.len() + plan.already_sealed;
            counts.tasks += (plan.items.len() + sealed) as u64;
            counts.sealed += sealed as u64;
            progress.skipped(sealed as u64);
            let mut updates = missing;
            updates.extend(
                plan.newly_sealed
                    .into_iter()
                    .map(|(job, task)| TaskUpdate::Sealed { job, task }),
            );
            self.record(updates).await?;
            for item in plan.items {
                if queue.send(item).await.is_err() {
                    return Ok(counts);
                }
            }
        }
        Ok(counts)
    }

    /// Fetches the planned tasks; then, while a round archives something and
    /// the pass budget (`[fetch] retry_rounds`) lasts, fetches again, after
    /// `backoff_max`, those that failed for a reason that may pass. Only a
    /// task's final outcome is recorded.
    async fn fetch_rounds(
        &self,
        planned: impl futures::Stream<Item = (PlanItem, u32)>,
        fetcher: &Fetcher,
        mut tally: Tally<'_>,
        cancel: &CancellationToken,
    ) -> Result<(), RunError> {
        let hold = self.config.fetch.retry_rounds > 0;
        let (mut held, mut progressed) = self
            .fetch_round(planned, fetcher, hold, &mut tally, cancel)
            .await?;
        let mut round = 0;
        loop {
            if held.is_empty() {
                return Ok(());
            }
            let again = progressed
                && tokio::select! {
                    _ = cancel.cancelled() => false,
                    _ = tokio::time::sleep(self.config.fetch.backoff_max) => true,
                };
            if !again {
                let updates: Vec<TaskUpdate> =
                    held.into_iter().flat_map(|r| tally.account(r)).collect();
                self.record(updates).await?;
                return Ok(());
            }
            round += 1;
            tracing::info!(
                round,
                tasks = held.len(),
                "fetching again the tasks that failed (end of pass)"
            );
            fetcher.progress.retrying(held.len() as u64);
            let todo = held.into_iter().map(|r| (r.item, r.attempts));
            let hold = round < self.config.fetch.retry_rounds;
            (held, progressed) = self
                .fetch_round(
                    futures::stream::iter(todo),
                    fetcher,
                    hold,
                    &mut tally,
                    cancel,
                )
                .await?;
        }
    }

    /// One round over `todo` (each task with the attempts it already had).
    /// With `hold`, results that failed retryably are returned instead of
    /// recorded; also returns whether any task was archived or found unchanged.
    async fn fetch_round(
        &self,
        todo: impl futures::Stream<Item = (PlanItem, u32)>,
        fetcher: &Fetcher,
        hold: bool,
        tally: &mut Tally<'_>,
        cancel: &CancellationToken,
    ) -> Result<(Vec<TaskResult>, bool), RunError> {
        let mut results = std::pin::pin!(
            todo.map(|(item, before)| {
                fetcher.fetch(item, cancel.clone()).map(move |mut r| {
                    r.attempts += before;
                    r
                })
            })
            // Beyond the download slots, room for logs waiting to be made durable.
            .buffer_unordered(self.config.fetch.concurrency + FINISHING)
            .ready_chunks(RECORD_BATCH)
        );
        let mut held = Vec::new();
        let mut progressed = false;
        // Results are recorded beside the downloads, not between them: while a
        // batch's manifests and rows are written, the next batch gathers
        // (`run/manifests.rs`), so a job's manifest is written about once per
        // batch of its results instead of once per result.
        let (queue, queued) = tokio::sync::mpsc::channel(RECORD_QUEUE);
        let produce = async {
            while let Some(batch) = results.next().await {
                let mut updates = Vec::with_capacity(batch.len());
                for result in batch {
                    match &result.outcome {
                        FetchOutcome::Failed(e) if hold && e.is_retryable() => {
                            // Its bytes were downloaded all the same.
                            tally.totals.downloaded += result.downloaded;
                            held.push(TaskResult {
                                downloaded: 0,
                                ..result
                            });
                            continue;
                        }
                        FetchOutcome::Archived { .. }
                        | FetchOutcome::Unchanged
                        | FetchOutcome::Confirmed => progressed = true,
                        FetchOutcome::Failed(_) => {}
                    }
                    updates.extend(tally.account(result));
                }
                if queue.send(updates).await.is_err() {
                    break; // the recorder stopped on an error
                }
            }
            drop(queue);
        };
        let ((), recorded) = tokio::join!(produce, self.record_queue(queued, cancel));
        recorded?;
        Ok((held, progressed))
    }
}
