//! The threads transcodes run on: a fixed set of long-lived OS threads, one
//! per IMAGE_TRANSCODE_CONCURRENCY slot, never an async worker.
//!
//! Why not `spawn_blocking`: tokio's blocking pool starts a new thread
//! whenever none is idle at that instant, so a stream of makes lands on
//! many threads, and the allocator keeps each thread's freed pages for
//! reuse by that thread. Measured through the server (release, 1024 px PNG
//! to a 256 px WebP): 8 makes one after another took the process from 33
//! to 77 MiB and 32 at once (2 slots) to 127 MiB with `spawn_blocking`.
//! On a fixed set of threads the next make reuses the pages the last one
//! freed.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

pub(super) struct CpuPool {
    jobs: mpsc::Sender<Job>,
}

impl CpuPool {
    /// Starts `threads` threads; they end when the pool is dropped.
    pub(super) fn new(threads: usize) -> Result<CpuPool, String> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("transcode-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job.
                    let next = super::lock(&queue).recv();
                    match next {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .map_err(|e| format!("cannot start transcode threads: {e}"))?;
        }
        Ok(CpuPool { jobs })
    }

    /// Runs `f` on a pool thread and waits for it without blocking the
    /// caller's async worker. A panic comes back as an error.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(std::panic::catch_unwind(AssertUnwindSafe(f)));
        });
        self.jobs
            .send(job)
            .map_err(|_| "the transcode threads are gone".to_string())?;
        match result.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err("a transcode panicked".into()),
            Err(_) => Err("a transcode thread went away".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_on_its_threads_and_survives_a_panic() {
        let pool = CpuPool::new(2).unwrap();
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("transcode-"));
        assert!(pool.run(|| panic!("boom")).await.is_err());
        assert_eq!(pool.run(|| 7).await.unwrap(), 7, "still serving");
    }
}
