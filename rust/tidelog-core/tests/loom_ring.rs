//! loom model checks of the ring buffer: every interleaving (within the preemption bound) of
//! tiny models (2 producers, 1 consumer, capacity 2) must deliver each item exactly once, in
//! per-producer order, without a data race on a slot, a leaked item, or a lost wake-up (loom
//! reports a deadlock if all threads are parked).
//!
//! Run:
//!   RUSTFLAGS="--cfg loom" cargo test -p tidelog-core --test loom_ring --release
//! The preemption bound defaults to 2 here (1 for the three-thread blocking model); set
//! `LOOM_MAX_PREEMPTIONS` to override it for every model (2 takes about five minutes, 3 much
//! longer). Without `--cfg loom` this file compiles to nothing.

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use tidelog_core::ring::RingBuffer;

/// Runs `f` under loom with preemption bound 2 unless `LOOM_MAX_PREEMPTIONS` says otherwise.
fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(2, f);
}

/// Runs `f` under loom with preemption bound `bound` unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise.
fn model_bounded(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(bound);
    }
    builder.check(f);
}

/// Producer `p`'s `i`-th item.
fn item(p: u32, i: u32) -> u32 {
    p * 100 + i
}

/// Pushes `items` in order with `try_push`, stopping at the first failure; returns how many
/// went in. (No retry loop: loom cannot schedule fairly, so two threads spinning on a third
/// one that was preempted would make the model infinite.)
fn push_until_full(ring: &RingBuffer<u32>, items: &[u32]) -> usize {
    items.iter().take_while(|&&v| ring.try_push(v).is_ok()).count()
}

#[test]
fn try_ops_two_producers_one_consumer() {
    model(|| {
        let ring = Arc::new(RingBuffer::new(2));
        // Three items for two slots: someone may find the buffer full.
        let a = {
            let ring = ring.clone();
            thread::spawn(move || push_until_full(&ring, &[item(0, 0), item(0, 1)]))
        };
        let b = {
            let ring = ring.clone();
            thread::spawn(move || push_until_full(&ring, &[item(1, 0)]))
        };
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || (0..2).filter_map(|_| ring.try_pop()).collect::<Vec<u32>>())
        };
        let mut seen = consumer.join().unwrap();
        let pushed = [a.join().unwrap() as u32, b.join().unwrap() as u32];
        while let Some(v) = ring.try_pop() {
            seen.push(v);
        }
        assert!(ring.is_empty());
        assert_eq!(seen.len() as u32, pushed[0] + pushed[1], "{seen:?}");
        for (p, &n) in pushed.iter().enumerate() {
            let mine: Vec<u32> = seen.iter().copied().filter(|v| v / 100 == p as u32).collect();
            assert_eq!(mine, (0..n).map(|i| item(p as u32, i)).collect::<Vec<_>>(), "{seen:?}");
        }
        // Capacity 2 with at most one pop before the last push: at least two pushes fit.
        assert!(pushed[0] + pushed[1] >= 2);
    });
}

#[test]
fn blocking_ops_never_lose_a_wakeup() {
    // Three threads parking on mutexes and condvars: bound 1 takes seconds, bound 2 about five
    // minutes (`LOOM_MAX_PREEMPTIONS=2`). Bound 1 already finds the lost wake-up when the park
    // check's RMW becomes a plain load, or a claim CAS becomes `Relaxed`.
    model_bounded(1, || {
        let ring = Arc::new(RingBuffer::new(2));
        let producers: Vec<_> = [2, 1]
            .into_iter()
            .enumerate()
            .map(|(p, count)| {
                let ring = ring.clone();
                thread::spawn(move || {
                    for i in 0..count {
                        ring.push_timeout(item(p as u32, i), None).unwrap();
                    }
                })
            })
            .collect();
        // Three items through two slots: a producer may have to park, and so may the consumer.
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || (0..3).map(|_| ring.pop_timeout(None).unwrap()).collect::<Vec<u32>>())
        };
        let mut seen = consumer.join().unwrap();
        for producer in producers {
            producer.join().unwrap();
        }
        assert_eq!(seen.iter().filter(|v| **v < 100).copied().collect::<Vec<_>>(), [item(0, 0), item(0, 1)]);
        seen.sort_unstable();
        assert_eq!(seen, [item(0, 0), item(0, 1), item(1, 0)]);
    });
}

#[test]
fn batch_ops_block_and_wake() {
    model(|| {
        let ring = Arc::new(RingBuffer::new(2));
        let batcher = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut items = vec![item(0, 0), item(0, 1), item(0, 2)];
                assert_eq!(ring.push_many_timeout(&mut items, None), 3);
                assert!(items.is_empty());
            })
        };
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                while seen.len() < 3 {
                    let n = ring.pop_many_timeout(&mut seen, 2, None);
                    assert!((1..=2).contains(&n));
                }
                seen
            })
        };
        let seen = consumer.join().unwrap();
        batcher.join().unwrap();
        assert_eq!(seen, [item(0, 0), item(0, 1), item(0, 2)]);
    });
}

#[test]
fn batch_and_single_pushes_race() {
    model(|| {
        let ring = Arc::new(RingBuffer::new(2));
        let batcher = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut items = vec![item(0, 0), item(0, 1)];
                let n = ring.try_push_many(&mut items);
                assert_eq!(items.len(), 2 - n);
                n as u32
            })
        };
        let single = {
            let ring = ring.clone();
            thread::spawn(move || push_until_full(&ring, &[item(1, 0)]) as u32)
        };
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                ring.pop_many(&mut seen, 3);
                seen
            })
        };
        let mut seen = consumer.join().unwrap();
        let pushed = [batcher.join().unwrap(), single.join().unwrap()];
        ring.pop_many(&mut seen, 3);
        assert_eq!(ring.try_pop(), None);
        assert_eq!(seen.len() as u32, pushed[0] + pushed[1], "{seen:?}");
        for (p, &n) in pushed.iter().enumerate() {
            let mine: Vec<u32> = seen.iter().copied().filter(|v| v / 100 == p as u32).collect();
            assert_eq!(mine, (0..n).map(|i| item(p as u32, i)).collect::<Vec<_>>(), "{seen:?}");
        }
    });
}

#[test]
fn drop_releases_items_left_in_the_buffer() {
    // loom fails the model if any `loom::sync::Arc` is leaked.
    model(|| {
        let ring = Arc::new(RingBuffer::new(2));
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let _ = ring.try_push(Arc::new(1u8));
                let _ = ring.try_push(Arc::new(2u8));
            })
        };
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || drop(ring.try_pop()))
        };
        producer.join().unwrap();
        consumer.join().unwrap();
        drop(ring);
    });
}

#[test]
fn close_wakes_a_parked_consumer_after_the_last_item() {
    model(|| {
        let ring = Arc::new(RingBuffer::new(2));
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                ring.try_push(item(0, 0)).unwrap();
                ring.close();
            })
        };
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || {
                assert_eq!(ring.pop_timeout(None), Some(item(0, 0)));
                assert_eq!(ring.pop_timeout(None), None);
            })
        };
        producer.join().unwrap();
        consumer.join().unwrap();
    });
}

#[test]
fn watermark_wait_is_woken_by_pops() {
    model(|| {
        let ring = Arc::new(RingBuffer::new(2));
        ring.try_push(1u32).unwrap();
        ring.try_push(2).unwrap();
        let waiter = {
            let ring = ring.clone();
            thread::spawn(move || assert!(ring.wait_until_len_at_most(0, None)))
        };
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut out = Vec::new();
                assert_eq!(ring.pop_many(&mut out, 1), 1);
                assert_eq!(ring.try_pop(), Some(2));
            })
        };
        waiter.join().unwrap();
        consumer.join().unwrap();
    });
}
