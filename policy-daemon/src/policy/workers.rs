//! The threads that serve policy connections: one per CPU, each running a
//! current-thread runtime with its own epoll set; accepted connections
//! are handed out round-robin and stay on their thread.
//!
//! A policy request is a few microseconds of work between two system
//! calls. On the shared work-stealing runtime every answer also paid for
//! one thread waking another to steal the task; here a connection's
//! wake-ups never leave its thread, as in a C epoll server. The engine,
//! its caches and the counters stay shared by all threads.
//!
//! A worker stops once the listener is gone and its last connection has
//! closed; connections finish their request first, as before.

use std::{future::Future, io, pin::Pin, thread};

use tokio::{sync::mpsc, task::JoinSet};

/// A connection to serve, converted to the worker's runtime when first
/// polled there.
pub(super) type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The connection-serving threads of one listener.
#[derive(Debug)]
pub(super) struct Workers {
    queues: Vec<mpsc::UnboundedSender<Job>>,
    next: usize,
}

impl Workers {
    /// Starts one worker per CPU.
    pub(super) fn start() -> io::Result<Self> {
        let count = thread::available_parallelism().map_or(1, usize::from);
        let mut queues = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (send, mut receive) = mpsc::unbounded_channel::<Job>();
            thread::Builder::new()
                .name(format!("policy-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let mut connections = JoinSet::new();
                        loop {
                            tokio::select! {
                                job = receive.recv() => match job {
                                    Some(job) => {
                                        connections.spawn(job);
                                    }
                                    None => break,
                                },
                                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                            }
                        }
                        while connections.join_next().await.is_some() {}
                    });
                })?;
            queues.push(send);
        }
        Ok(Self { queues, next: 0 })
    }

    /// Serves `job` on the next worker, or on the calling runtime if that
    /// worker is gone.
    pub(super) fn run(&mut self, job: Job) {
        let queue = &self.queues[self.next % self.queues.len()];
        self.next = self.next.wrapping_add(1);
        if let Err(mpsc::error::SendError(job)) = queue.send(job) {
            tokio::spawn(job);
        }
    }
}
