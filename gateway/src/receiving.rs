//! Deliveries to `integ.receive_webhook`, grouped when they arrive together: a few statements in
//! flight at a time (`--webhook-concurrency`); deliveries that arrive while they run go out in
//! the next one, each still its own call of the function (`--webhook-batch` at most per
//! statement). One statement and one commit for many deliveries is where the database's time
//! per delivery goes down (group commit); a lone delivery waits for nothing.
//!
//! A batch is one transaction: if any call in it raises, nothing of it is kept and each
//! delivery is sent again alone, so one bad delivery never decides another's answer.

use crate::db::{self, DbError};
use axum::body::Bytes;
use deadpool_postgres::Pool;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// A batch stops growing past this many body bytes (a delivery may be up to
/// `integ.webhook_max_bytes` alone).
const BATCH_BYTES: usize = 1 << 20;

/// Every delivery of the batch in order, each answered by the same function a lone one is.
pub const RECEIVE_WEBHOOKS: &str = "SELECT d.i, integ.receive_webhook(d.m, d.h, d.b)
                                      FROM unnest($1::text[], $2::jsonb[], $3::bytea[]) WITH ORDINALITY AS d(m, h, b, i)";

pub struct Delivery {
    pub marketplace: String,
    pub headers: Value,
    pub body: Bytes,
}

struct Job {
    delivery: Delivery,
    answer: oneshot::Sender<Result<Value, DbError>>,
}

#[derive(Clone)]
pub struct Receiver {
    queue: mpsc::Sender<Job>,
}

impl Receiver {
    /// Starts `concurrency` senders on the current runtime.
    pub fn start(pool: Pool, concurrency: usize, batch: usize) -> Self {
        // bounded: a database that stops answering holds requests (until their pool wait runs
        // out), not unbounded memory
        let (queue, jobs) = mpsc::channel(concurrency.max(1) * batch.max(1) * 4);
        let jobs = Arc::new(Mutex::new(Queue { jobs, held: None }));
        for _ in 0..concurrency.max(1) {
            tokio::spawn(send_batches(pool.clone(), jobs.clone(), batch.max(1)));
        }
        Receiver { queue }
    }

    /// `integ.receive_webhook`'s answer for one delivery.
    pub async fn receive(&self, delivery: Delivery) -> Result<Value, DbError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Job { delivery, answer })
            .await
            .map_err(|_| DbError::Unavailable("shutting_down"))?;
        answered.await.unwrap_or(Err(DbError::Internal("sender_lost")))
    }
}

/// The waiting deliveries, and the one that did not fit in the last batch taken.
struct Queue {
    jobs: mpsc::Receiver<Job>,
    held: Option<Job>,
}

impl Queue {
    /// The next batch: whatever is waiting, up to `batch` deliveries and BATCH_BYTES (at least
    /// one); waits for one when none is. None once the gateway shuts down.
    async fn take(&mut self, batch: usize) -> Option<Vec<Job>> {
        let first = match self.held.take() {
            Some(j) => j,
            None => self.jobs.recv().await?,
        };
        let mut bytes = first.delivery.body.len();
        let mut taken = vec![first];
        while taken.len() < batch {
            let Ok(j) = self.jobs.try_recv() else { break };
            bytes += j.delivery.body.len();
            if bytes > BATCH_BYTES {
                self.held = Some(j);
                break;
            }
            taken.push(j);
        }
        Some(taken)
    }
}

async fn send_batches(pool: Pool, queue: Arc<Mutex<Queue>>, batch: usize) {
    loop {
        let Some(taken) = queue.lock().await.take(batch).await else {
            return;
        };
        if taken.len() == 1 {
            for j in taken {
                let answer = one(&pool, &j.delivery).await;
                let _ = j.answer.send(answer);
            }
            continue;
        }
        match many(&pool, &taken).await {
            Ok(answers) => {
                for (j, a) in taken.into_iter().zip(answers) {
                    let _ = j.answer.send(Ok(a));
                }
            }
            // the database cannot answer: none of them was kept, each is told to retry
            Err(DbError::Unavailable(code)) => {
                for j in taken {
                    let _ = j.answer.send(Err(DbError::Unavailable(code)));
                }
            }
            // one of them raised: the batch was rolled back; each alone gets its own answer
            Err(_) => {
                for j in taken {
                    let answer = one(&pool, &j.delivery).await;
                    let _ = j.answer.send(answer);
                }
            }
        }
    }
}

async fn one(pool: &Pool, d: &Delivery) -> Result<Value, DbError> {
    let body: &[u8] = &d.body;
    db::one(pool, db::RECEIVE_WEBHOOK, &[&d.marketplace, &d.headers, &body]).await
}

/// The answers of a batch, in the order of `jobs`.
async fn many(pool: &Pool, jobs: &[Job]) -> Result<Vec<Value>, DbError> {
    let marketplaces: Vec<&str> = jobs.iter().map(|j| j.delivery.marketplace.as_str()).collect();
    let headers: Vec<&Value> = jobs.iter().map(|j| &j.delivery.headers).collect();
    let bodies: Vec<&[u8]> = jobs.iter().map(|j| &j.delivery.body[..]).collect();
    let client = db::client(pool).await?;
    let statement = client.prepare_cached(RECEIVE_WEBHOOKS).await?;
    let rows = client.query(&statement, &[&marketplaces, &headers, &bodies]).await?;
    let mut answers = vec![Value::Null; jobs.len()];
    for row in rows {
        let i: i64 = row.try_get(0).map_err(|_| DbError::Internal("unexpected_result"))?;
        let a: Value = row.try_get(1).map_err(|_| DbError::Internal("unexpected_result"))?;
        match usize::try_from(i).ok().and_then(|i| answers.get_mut(i.wrapping_sub(1))) {
            Some(slot) => *slot = a,
            None => return Err(DbError::Internal("unexpected_result")),
        }
    }
    if answers.iter().any(Value::is_null) {
        return Err(DbError::Internal("unexpected_result"));
    }
    Ok(answers)
}
