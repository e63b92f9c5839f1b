//! Multi-threaded stress tests of `RingBuffer`: many producers and consumers on a small
//! buffer, through each family of calls (non-blocking, blocking, batch). Every item must come
//! out exactly once, and every consumer must see each producer's items in that producer's
//! order (positions are claimed in order, so this holds per consumer even with several).
//!
//! Sized to finish in a few seconds in a debug build on two cores.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tidelog_core::ring::RingBuffer;

const PRODUCERS: u64 = 4;
const PER_PRODUCER: u64 = 200_000;

/// Producer `p`'s `i`-th item.
fn item(p: u64, i: u64) -> u64 {
    (p << 32) | i
}

/// How a thread moves items in or out.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `try_push` / `try_pop`, yielding when they fail.
    Try,
    /// `push_timeout` / `pop_timeout` (parking).
    Blocking,
    /// `push_many_timeout` / `pop_many_timeout` in batches of up to 32.
    Batch,
}

/// Pushes producer `p`'s items in order.
fn produce(ring: &RingBuffer<u64>, p: u64, per_producer: u64, mode: Mode) {
    match mode {
        Mode::Try => {
            for i in 0..per_producer {
                let mut value = item(p, i);
                while let Err(back) = ring.try_push(value) {
                    value = back;
                    thread::yield_now();
                }
            }
        }
        Mode::Blocking => {
            for i in 0..per_producer {
                ring.push_timeout(item(p, i), None).unwrap();
            }
        }
        Mode::Batch => {
            let mut next = 0;
            let mut batch = Vec::with_capacity(32);
            while next < per_producer {
                let end = (next + 1 + next % 32).min(per_producer);
                batch.extend((next..end).map(|i| item(p, i)));
                next = end;
                let n = batch.len();
                assert_eq!(ring.push_many_timeout(&mut batch, None), n);
            }
        }
    }
}

/// Pops until the ring is closed and drained; checks per-producer order as it goes and returns
/// what it took.
fn consume(ring: &RingBuffer<u64>, mode: Mode) -> Vec<u64> {
    let mut taken = Vec::new();
    let mut last_seen = [None::<u64>; PRODUCERS as usize];
    let mut check = |value: u64, taken: &mut Vec<u64>| {
        let (p, i) = ((value >> 32) as usize, value & 0xffff_ffff);
        if let Some(last) = last_seen[p] {
            assert!(i > last, "producer {p}: item {i} after {last}");
        }
        last_seen[p] = Some(i);
        taken.push(value);
    };
    match mode {
        Mode::Try => loop {
            match ring.try_pop() {
                Some(value) => check(value, &mut taken),
                None if ring.is_closed() && ring.is_empty() => break,
                None => thread::yield_now(),
            }
        },
        Mode::Blocking => {
            while let Some(value) = ring.pop_timeout(None) {
                check(value, &mut taken);
            }
        }
        Mode::Batch => {
            let mut out = Vec::with_capacity(32);
            while ring.pop_many_timeout(&mut out, 32, None) > 0 {
                for value in out.drain(..) {
                    check(value, &mut taken);
                }
            }
        }
    }
    taken
}

/// Runs `PRODUCERS` producers and `consumers` consumers over a ring of `capacity`, then checks
/// that the union of what the consumers took is every item exactly once.
fn stress(capacity: usize, consumers: usize, per_producer: u64, producer_mode: Mode, consumer_mode: Mode) {
    let ring = Arc::new(RingBuffer::new(capacity));
    let consumer_threads: Vec<_> = (0..consumers)
        .map(|_| {
            let ring = ring.clone();
            thread::spawn(move || consume(&ring, consumer_mode))
        })
        .collect();
    let producer_threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let ring = ring.clone();
            thread::spawn(move || produce(&ring, p, per_producer, producer_mode))
        })
        .collect();
    for producer in producer_threads {
        producer.join().unwrap();
    }
    // Every push has returned, so closing now loses nothing: consumers drain, then stop.
    ring.close();
    let mut all: Vec<u64> = Vec::new();
    for consumer in consumer_threads {
        all.extend(consumer.join().unwrap());
    }
    assert!(ring.is_empty());
    assert_eq!(all.len() as u64, PRODUCERS * per_producer, "items lost or duplicated");
    all.sort_unstable();
    for p in 0..PRODUCERS {
        let mine = &all[(p * per_producer) as usize..((p + 1) * per_producer) as usize];
        assert!(
            mine.iter().copied().eq((0..per_producer).map(|i| item(p, i))),
            "producer {p}: items missing"
        );
    }
}

#[test]
fn four_producers_four_consumers_try_ops() {
    stress(64, 4, PER_PRODUCER, Mode::Try, Mode::Try);
}

#[test]
fn four_producers_four_consumers_blocking() {
    stress(64, 4, PER_PRODUCER / 4, Mode::Blocking, Mode::Blocking);
}

#[test]
fn four_producers_four_consumers_batches() {
    stress(64, 4, PER_PRODUCER, Mode::Batch, Mode::Batch);
}

#[test]
fn four_producers_single_consumer_sees_each_producer_in_order() {
    // One consumer sees the whole stream; `consume` asserts per-producer order.
    stress(16, 1, PER_PRODUCER / 2, Mode::Blocking, Mode::Try);
}

#[test]
fn mixed_calls_on_a_tiny_ring() {
    // Capacity 2 maximizes contention on each slot; batch producers against blocking
    // consumers and the other way round.
    stress(2, 2, PER_PRODUCER / 20, Mode::Batch, Mode::Blocking);
    stress(2, 2, PER_PRODUCER / 20, Mode::Try, Mode::Batch);
}

#[test]
fn timed_waits_under_contention_lose_nothing() {
    // Producers and consumers that keep timing out must neither drop nor duplicate items.
    let ring = Arc::new(RingBuffer::new(4));
    let per_producer = 5_000;
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let ring = ring.clone();
            thread::spawn(move || {
                for i in 0..per_producer {
                    let mut value = item(p, i);
                    while let Err(back) = ring.push_timeout(value, Some(Duration::from_micros(50))) {
                        value = back;
                    }
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut taken = Vec::new();
                loop {
                    match ring.pop_timeout(Some(Duration::from_micros(50))) {
                        Some(value) => taken.push(value),
                        None if ring.is_closed() && ring.is_empty() => return taken,
                        None => {}
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.join().unwrap();
    }
    ring.close();
    let mut all: Vec<u64> = consumers.into_iter().flat_map(|c| c.join().unwrap()).collect();
    all.sort_unstable();
    let expected: Vec<u64> = (0..2).flat_map(|p| (0..per_producer).map(move |i| item(p, i))).collect();
    assert_eq!(all, expected);
}
