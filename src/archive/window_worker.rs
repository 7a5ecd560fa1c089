//! [`WindowWorker`]: the checkpoint windows of an index build, probed and packed beside the scan.
//!
//! Each window is probed (three decodes of the 32 KiB after its checkpoint, see
//! [`WindowProbe`]) and deflated; on the bench archive's 1,763 checkpoints that was a third of the
//! scan's time, all of it on the thread that also inflates the stream. The scan hands the worker
//! each window and the compressed bytes that follow it (only until 32 KiB of output is past the
//! last checkpoint, so most of the archive is never copied), and collects the packed windows at
//! the end. The work runs on its own thread, so on a machine with two cores it overlaps the
//! inflate; when no thread can be started it runs inline, with the same results.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::checkpoint::WindowProbe;

/// Jobs queued before the scan waits for the worker (bounds the memory a slow worker holds).
const QUEUE: usize = 64;

/// One job for the worker, in stream order.
enum Job {
    /// A checkpoint was taken: its index, its window, and its partial byte (bits, value).
    Probe {
        at: usize,
        window: Vec<u8>,
        prime: Option<(u8, u8)>,
    },
    /// The next compressed bytes of the deflate stream.
    Input(Vec<u8>),
}

/// The packed windows: (checkpoint index, deflated window).
pub(crate) type PackedWindows = Vec<(usize, Vec<u8>)>;

/// The probes in flight and the windows done; the worker's whole state.
#[derive(Default)]
struct Probing {
    probes: Vec<(usize, WindowProbe)>,
    packed: PackedWindows,
}

impl Probing {
    /// Applies one job.
    fn run(&mut self, job: Job) {
        match job {
            Job::Probe { at, window, prime } => {
                self.probes.push((at, WindowProbe::new(window, prime)));
            }
            Job::Input(bytes) => {
                for (_, probe) in &mut self.probes {
                    probe.feed(&bytes);
                }
                self.settle(false);
            }
        }
    }

    /// Packs the windows of finished probes (of all of them when `all`: the stream is over).
    fn settle(&mut self, all: bool) {
        let mut i = 0;
        while i < self.probes.len() {
            if all || self.probes[i].1.is_done() {
                let (at, probe) = self.probes.swap_remove(i);
                self.packed.push((at, probe.finish()));
            } else {
                i += 1;
            }
        }
    }

    /// Every window, packed.
    fn finish(mut self) -> PackedWindows {
        self.settle(true);
        self.packed
    }
}

/// Where the probing runs.
enum Runner {
    /// On a thread of its own.
    Thread {
        jobs: SyncSender<Job>,
        handle: JoinHandle<PackedWindows>,
    },
    /// On the caller's thread (no thread could be started).
    Inline(Probing),
}

/// Probes and packs checkpoint windows, on another thread when it can.
pub(crate) struct WindowWorker {
    runner: Runner,
}

impl WindowWorker {
    /// A worker on its own thread, or inline when the thread cannot be started.
    pub(crate) fn start() -> WindowWorker {
        let (jobs, queue) = sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("lazycas-windows".to_string())
            .spawn(move || work(queue));
        let runner = match spawned {
            Ok(handle) => Runner::Thread { jobs, handle },
            Err(e) => {
                tracing::debug!("window probes run inline: {e}");
                Runner::Inline(Probing::default())
            }
        };
        WindowWorker { runner }
    }

    /// A worker that runs on the caller's thread.
    #[cfg(test)]
    pub(crate) fn inline() -> WindowWorker {
        WindowWorker {
            runner: Runner::Inline(Probing::default()),
        }
    }

    /// Checkpoint `at` was taken with `window` (and `prime`, when mid-byte): the bytes passed to
    /// [`WindowWorker::input`] from now on follow it.
    pub(crate) fn probe(&mut self, at: usize, window: Vec<u8>, prime: Option<(u8, u8)>) {
        self.send(Job::Probe { at, window, prime });
    }

    /// The next compressed bytes of the deflate stream.
    pub(crate) fn input(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.send(Job::Input(bytes));
        }
    }

    /// Waits for the worker; returns every window, packed (a probe left unfinished keeps its
    /// whole window), or why the worker failed.
    pub(crate) fn finish(self) -> Result<PackedWindows, String> {
        match self.runner {
            Runner::Inline(probing) => Ok(probing.finish()),
            Runner::Thread { jobs, handle } => {
                drop(jobs);
                handle
                    .join()
                    .map_err(|_| "the window worker panicked".to_string())
            }
        }
    }

    /// Queues a job (or runs it, inline). A worker that is gone (it panicked) drops the job;
    /// [`WindowWorker::finish`] reports it.
    fn send(&mut self, job: Job) {
        match &mut self.runner {
            Runner::Inline(probing) => probing.run(job),
            Runner::Thread { jobs, .. } => {
                let _ = jobs.send(job);
            }
        }
    }
}

/// The worker thread: runs jobs until the scan hangs up.
fn work(queue: Receiver<Job>) -> PackedWindows {
    let mut probing = Probing::default();
    while let Ok(job) = queue.recv() {
        probing.run(job);
    }
    probing.finish()
}

#[cfg(test)]
mod tests {
    use super::super::checkpoint::unpack_window;
    use super::*;
    use std::io::Write;

    /// Runs the same jobs on a worker; returns its packed windows, sorted.
    fn run(mut worker: WindowWorker, window: &[u8], stream: &[u8]) -> PackedWindows {
        worker.probe(0, window.to_vec(), None);
        for piece in stream.chunks(1000) {
            worker.input(piece.to_vec());
        }
        worker.probe(1, window.to_vec(), None);
        let mut packed = worker.finish().unwrap();
        packed.sort();
        packed
    }

    #[test]
    fn thread_and_inline_pack_the_same_windows() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(&data).unwrap();
        let stream = enc.finish().unwrap();
        let window = vec![7u8; 32 * 1024];
        let threaded = run(WindowWorker::start(), &window, &stream);
        let inline = run(WindowWorker::inline(), &window, &stream);
        assert_eq!(threaded, inline);
        assert_eq!(threaded.len(), 2);
        // The stream never reaches into the window: the first probe stores it all zeros; the
        // second saw no input and keeps it whole.
        assert_eq!(unpack_window(&threaded[0].1).unwrap(), vec![0u8; 32 * 1024]);
        assert_eq!(unpack_window(&threaded[1].1).unwrap(), window);
    }
}
