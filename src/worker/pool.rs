//! The HTTP thread pool of a worker. Threads only run connector code (plain Rust, no pgrx):
//! they take tasks from one channel and put results on another, which the main thread reads.

use crate::marketplaces::{http, Connector, PushKind, PushRequest, PushResult};
use crossbeam_channel::{Receiver, Sender};
use std::panic::AssertUnwindSafe;
use std::thread::JoinHandle;
use std::time::Duration;

/// One call: the jobs it carries and their requests, in the same order (one connection).
pub struct Task<J> {
    pub jobs: Vec<J>,
    pub connector: &'static dyn Connector,
    pub requests: Vec<PushRequest>,
}

/// Idle connections each HTTP thread keeps (one per marketplace host it talks to, and a few).
const PER_THREAD_IDLE: usize = 8;

pub struct Done<J> {
    pub job: J,
    pub result: PushResult,
}

pub struct Pool<J: Send + 'static> {
    tasks: Option<Sender<Task<J>>>,
    done: Receiver<Done<J>>,
    threads: Vec<JoinHandle<()>>,
    pub size: usize,
    pub timeout: Duration,
}

impl<J: Send + 'static> Pool<J> {
    pub fn new(size: usize, timeout: Duration) -> Self {
        let (task_tx, task_rx) = crossbeam_channel::unbounded::<Task<J>>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done<J>>();
        let threads = (0..size)
            .filter_map(|i| {
                let rx = task_rx.clone();
                let tx = done_tx.clone();
                // one agent per thread: its few idle connections are its own (one shared pool
                // of `size` connections is a lock every thread takes and a list each searches)
                let agent = http::agent(timeout, PER_THREAD_IDLE);
                std::thread::Builder::new()
                    .name(format!("integ-http-{i}"))
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        while let Ok(task) = rx.recv() {
                            let Task {
                                jobs,
                                connector,
                                requests,
                            } = task;
                            let prices = requests.first().is_some_and(|r| r.price.is_some());
                            let results = std::panic::catch_unwind(AssertUnwindSafe(|| match requests.as_slice() {
                                all if prices => connector.push_prices(&agent, all),
                                [one] => vec![connector.push_stock(&agent, one)],
                                many => connector.push_batch(&agent, many),
                            }))
                            .unwrap_or_default();
                            // a connector that panicked or answered short: those jobs retry
                            let missing = PushResult {
                                kind: PushKind::Retry {
                                    error: "internal error in the connector".into(),
                                    retry_after: None,
                                },
                                http_status: None,
                                latency_ms: 0.0,
                                learned: None,
                            };
                            let mut results = results.into_iter();
                            for job in jobs {
                                let result = results.next().unwrap_or_else(|| missing.clone());
                                if tx.send(Done { job, result }).is_err() {
                                    return;
                                }
                            }
                        }
                    })
                    .ok()
            })
            .collect::<Vec<_>>();
        let size = threads.len().max(1);
        Pool {
            tasks: Some(task_tx),
            done: done_rx,
            threads,
            size,
            timeout,
        }
    }

    #[allow(clippy::result_large_err)] // the task is handed back so its job is not lost
    pub fn submit(&self, task: Task<J>) -> Result<(), Task<J>> {
        match &self.tasks {
            Some(tx) => tx.send(task).map_err(|e| e.0),
            None => Err(task),
        }
    }

    pub fn recv_timeout(&self, d: Duration) -> Option<Done<J>> {
        self.done.recv_timeout(d).ok()
    }

    pub fn try_recv(&self) -> Option<Done<J>> {
        self.done.try_recv().ok()
    }
}

impl<J: Send + 'static> Drop for Pool<J> {
    fn drop(&mut self) {
        self.tasks.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
