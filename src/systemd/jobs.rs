//! Matches systemd's `JobRemoved` signals to the jobs we queued.
//!
//! One match rule for the whole daemon instead of one per call. The signal for a fast job
//! can be processed before the caller has read the reply carrying the job's path, so
//! results nobody waits for yet are kept (bounded) and handed over when they ask.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use zbus::zvariant::OwnedObjectPath;

use super::proxies::ManagerProxy;
use super::JobResult;

/// How many unclaimed results to remember; far above the ~512 jobs systemd can hold.
const KEEP_FINISHED: usize = 4096;

#[derive(Default)]
pub struct Jobs {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<OwnedObjectPath, oneshot::Sender<JobResult>>,
    finished: HashMap<OwnedObjectPath, JobResult>,
    order: VecDeque<OwnedObjectPath>,
    closed: bool,
}

impl Jobs {
    pub async fn spawn(manager: &ManagerProxy<'static>) -> Result<Arc<Self>> {
        let mut stream = manager
            .receive_job_removed()
            .await
            .context("watching systemd's JobRemoved signal")?;
        let jobs = Arc::new(Self::default());
        let weak = Arc::downgrade(&jobs);
        tokio::spawn(async move {
            while let Some(signal) = stream.next().await {
                let Some(jobs) = weak.upgrade() else { return };
                match signal.args() {
                    Ok(a) => jobs.finish(
                        OwnedObjectPath::from(a.job.to_owned()),
                        JobResult::from(a.result),
                    ),
                    Err(e) => log::warn!("ignoring malformed JobRemoved signal: {e}"),
                }
            }
            if let Some(jobs) = weak.upgrade() {
                jobs.close();
            }
        });
        Ok(jobs)
    }

    fn finish(&self, job: OwnedObjectPath, result: JobResult) {
        let mut inner = self.inner.lock().expect("jobs lock");
        if let Some(tx) = inner.waiting.remove(&job) {
            let _ = tx.send(result);
            return;
        }
        inner.finished.insert(job.clone(), result);
        inner.order.push_back(job);
        while inner.order.len() > KEEP_FINISHED {
            if let Some(old) = inner.order.pop_front() {
                inner.finished.remove(&old);
            }
        }
    }

    fn close(&self) {
        let mut inner = self.inner.lock().expect("jobs lock");
        inner.closed = true;
        for (_, tx) in inner.waiting.drain() {
            let _ = tx.send(JobResult::Disconnected);
        }
    }

    /// The job's result; [`JobResult::Disconnected`] when the bus went away first.
    pub async fn wait(&self, job: OwnedObjectPath) -> JobResult {
        let rx = {
            let mut inner = self.inner.lock().expect("jobs lock");
            if let Some(result) = inner.finished.remove(&job) {
                return result;
            }
            if inner.closed {
                return JobResult::Disconnected;
            }
            let (tx, rx) = oneshot::channel();
            inner.waiting.insert(job, tx);
            rx
        };
        rx.await.unwrap_or(JobResult::Disconnected)
    }
}
