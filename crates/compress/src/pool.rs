//! Jobs run on a pool of threads, their results taken in submission order: how the chunked
//! compressors (gzip, VMDK grains) keep every core busy and still write a deterministic
//! stream. At most `2 * workers + 2` jobs are in flight, so memory stays bounded.

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

type Done<O> = (u64, io::Result<O>);

/// An ordered parallel map from `I` to `O`.
pub struct Ordered<I, O> {
    /// The work queue; dropping it (with the pool, on an error) stops the workers.
    jobs: Option<SyncSender<(u64, I)>>,
    done: Receiver<Done<O>>,
    max_in_flight: u64,
    sent: u64,
    next: u64,
    /// Results that came back before their turn.
    early: BTreeMap<u64, O>,
}

impl<I: Send + 'static, O: Send + 'static> Ordered<I, O> {
    /// `workers` threads (at least 1) running `f`.
    pub fn new(workers: usize, f: impl Fn(I) -> io::Result<O> + Send + Sync + 'static) -> Self {
        let workers = workers.max(1);
        let (jobs, queue) = mpsc::sync_channel::<(u64, I)>(workers);
        let (results, done) = mpsc::channel::<Done<O>>();
        let queue = Arc::new(Mutex::new(queue));
        let f = Arc::new(f);
        for _ in 0..workers {
            let (queue, results, f) = (Arc::clone(&queue), results.clone(), Arc::clone(&f));
            std::thread::spawn(move || loop {
                // A poisoned lock means another worker panicked: stop too.
                let job = match queue.lock() {
                    Ok(q) => q.recv(),
                    Err(_) => return,
                };
                let Ok((seq, input)) = job else { return };
                if results.send((seq, f(input))).is_err() {
                    return;
                }
            });
        }
        Ordered {
            jobs: Some(jobs),
            done,
            max_in_flight: 2 * workers as u64 + 2,
            sent: 0,
            next: 0,
            early: BTreeMap::new(),
        }
    }

    /// Queues `input`, then hands every result whose turn has come to `out`, waiting while
    /// too many jobs are in flight.
    pub fn submit(&mut self, input: I, out: impl FnMut(O) -> io::Result<()>) -> io::Result<()> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("the pool is finished"))?;
        jobs.send((self.sent, input))
            .map_err(|_| io::Error::other("the worker threads stopped"))?;
        self.sent += 1;
        self.collect(self.max_in_flight, out)
    }

    /// Waits for every job; hands the remaining results to `out`, in order.
    pub fn finish(&mut self, out: impl FnMut(O) -> io::Result<()>) -> io::Result<()> {
        self.collect(0, out)?;
        self.jobs = None;
        Ok(())
    }

    fn collect(&mut self, limit: u64, mut out: impl FnMut(O) -> io::Result<()>) -> io::Result<()> {
        loop {
            while let Some(o) = self.early.remove(&self.next) {
                out(o)?;
                self.next += 1;
            }
            let got = if self.sent - self.next > limit {
                self.done
                    .recv()
                    .map_err(|_| io::Error::other("the worker threads stopped"))?
            } else {
                match self.done.try_recv() {
                    Ok(d) => d,
                    Err(_) => return Ok(()),
                }
            };
            let (seq, o) = got;
            self.early.insert(seq, o?);
        }
    }
}
