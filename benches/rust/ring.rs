//! Throughput of `tidelog_core::ring::RingBuffer` against `crossbeam_queue::ArrayQueue`, in
//! the same run, with the same capacity (1024) and item type (`u64`):
//! - `spsc`: one producer thread, one consumer thread;
//! - `mpmc_4x4`: four producers, four consumers.
//!
//! Both queues are driven through their non-blocking calls (`try_push`/`try_pop` and
//! `push`/`pop`) with the same retry loop, so the comparison is of the queues themselves.
//! `spsc/ring_batch` adds our batch calls (`try_push_many`/`pop_many`, 64 at a time).
//!
//! Run: `cargo bench -p tidelog-benches --bench ring -- --warm-up-time 1 --measurement-time 3`

use std::hint::{black_box, spin_loop};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use tidelog_core::ring::RingBuffer;

/// Slots in every queue under test.
const CAPACITY: usize = 1024;
/// Items moved through the queue per measured iteration.
const ITEMS: u64 = 200_000;
/// Items per call in the batch variant.
const BATCH: usize = 64;

/// The two queues behind one interface.
trait Queue: Send + Sync + 'static {
    fn push(&self, item: u64) -> Result<(), u64>;
    fn pop(&self) -> Option<u64>;
}

impl Queue for RingBuffer<u64> {
    #[inline]
    fn push(&self, item: u64) -> Result<(), u64> {
        self.try_push(item)
    }
    #[inline]
    fn pop(&self) -> Option<u64> {
        self.try_pop()
    }
}

impl Queue for ArrayQueue<u64> {
    #[inline]
    fn push(&self, item: u64) -> Result<(), u64> {
        ArrayQueue::push(self, item)
    }
    #[inline]
    fn pop(&self) -> Option<u64> {
        ArrayQueue::pop(self)
    }
}

/// Retry policy on a full or empty queue: spin a little, then give the core away (the bench
/// machine may have fewer cores than threads).
struct Retry(u32);

impl Retry {
    #[inline]
    fn wait(&mut self) {
        self.0 += 1;
        if self.0 < 16 {
            spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

/// Moves `ITEMS` items from `producers` threads to `consumers` threads; returns the time from
/// the start signal until every consumer has its share.
fn run<Q: Queue>(queue: &Arc<Q>, producers: u64, consumers: u64) -> Duration {
    let start = Arc::new(Barrier::new((producers + consumers + 1) as usize));
    let mut handles = Vec::new();
    for _ in 0..producers {
        let (queue, start) = (queue.clone(), start.clone());
        handles.push(thread::spawn(move || {
            start.wait();
            for i in 0..ITEMS / producers {
                let mut item = i;
                let mut retry = Retry(0);
                while let Err(back) = queue.push(item) {
                    item = back;
                    retry.wait();
                }
            }
        }));
    }
    for _ in 0..consumers {
        let (queue, start) = (queue.clone(), start.clone());
        handles.push(thread::spawn(move || {
            start.wait();
            let mut sum = 0u64;
            for _ in 0..ITEMS / consumers {
                let mut retry = Retry(0);
                loop {
                    if let Some(item) = queue.pop() {
                        sum = sum.wrapping_add(item);
                        break;
                    }
                    retry.wait();
                }
            }
            black_box(sum);
        }));
    }
    start.wait();
    let started = Instant::now();
    for handle in handles {
        handle.join().unwrap();
    }
    started.elapsed()
}

/// Like [`run`] with one producer and one consumer using our batch calls.
fn run_batched(ring: &Arc<RingBuffer<u64>>) -> Duration {
    let start = Arc::new(Barrier::new(3));
    let producer = {
        let (ring, start) = (ring.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            let mut batch = Vec::with_capacity(BATCH);
            let mut next = 0;
            while next < ITEMS || !batch.is_empty() {
                while batch.len() < BATCH && next < ITEMS {
                    batch.push(next);
                    next += 1;
                }
                let mut retry = Retry(0);
                while ring.try_push_many(&mut batch) == 0 {
                    retry.wait();
                }
            }
        })
    };
    let consumer = {
        let (ring, start) = (ring.clone(), start.clone());
        thread::spawn(move || {
            start.wait();
            let mut out = Vec::with_capacity(BATCH);
            let mut taken = 0;
            let mut sum = 0u64;
            while taken < ITEMS {
                let mut retry = Retry(0);
                while ring.pop_many(&mut out, BATCH) == 0 {
                    retry.wait();
                }
                taken += out.len() as u64;
                sum = out.drain(..).fold(sum, u64::wrapping_add);
            }
            black_box(sum);
        })
    };
    start.wait();
    let started = Instant::now();
    producer.join().unwrap();
    consumer.join().unwrap();
    started.elapsed()
}

fn bench_config(c: &mut Criterion, name: &str, producers: u64, consumers: u64) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(ITEMS));
    group.sample_size(20);
    group.bench_function(BenchmarkId::from_parameter("ring"), |b| {
        let ring = Arc::new(RingBuffer::<u64>::new(CAPACITY));
        b.iter_custom(|iters| (0..iters).map(|_| run(&ring, producers, consumers)).sum());
    });
    group.bench_function(BenchmarkId::from_parameter("array_queue"), |b| {
        let queue = Arc::new(ArrayQueue::<u64>::new(CAPACITY));
        b.iter_custom(|iters| (0..iters).map(|_| run(&queue, producers, consumers)).sum());
    });
    if producers == 1 && consumers == 1 {
        group.bench_function(BenchmarkId::from_parameter("ring_batch"), |b| {
            let ring = Arc::new(RingBuffer::<u64>::new(CAPACITY));
            b.iter_custom(|iters| (0..iters).map(|_| run_batched(&ring)).sum());
        });
    }
    group.finish();
}

fn ring_vs_array_queue(c: &mut Criterion) {
    bench_config(c, "spsc", 1, 1);
    bench_config(c, "mpmc_4x4", 4, 4);
}

criterion_group!(benches, ring_vs_array_queue);
criterion_main!(benches);
