//! Arrow arrays handed to pyarrow through the Arrow C data interface
//! (<https://arrow.apache.org/docs/format/CDataInterface.html>), without copying a buffer:
//! pyarrow's arrays point at the memory described here and call the release callback when
//! the last of them goes. `RecordBatch.to_arrow()` builds its columns natively and hands
//! them over in one import (see `docs/design/arrow-c-data-unsafe.md` for why not the
//! `arrow` crate or buffers wrapped one by one in Python).
//!
//! Invariants (cited by the `SAFETY` comments below):
//! 1. Every address in an exported tree (buffers, child arrays, the pointer arrays
//!    themselves) points into memory kept alive by the [`Private`] of the node that lists
//!    it, or by the owner every node holds an `Arc` of; nothing there is written or freed
//!    while any node of the tree is unreleased (the owner is only ever shared immutably).
//! 2. A node's `private_data`, `buffers` and `children` come from `Box::into_raw` in
//!    [`export_node`], and only that node's [`release`] turns them back into boxes; it
//!    then sets the node's `release` to null, so it runs at most once per node (the
//!    consumer releases the root once; a parent releases only children whose `release` is
//!    still set, as the specification requires for children moved out by the consumer).
//! 3. An [`Exported`] root is a heap allocation of its own: its address stays valid while
//!    the consumer moves the contents out (which nulls its `release`), and it is freed by
//!    its drop, which first releases the tree if nobody took it.

#![allow(unsafe_code)]

use std::any::Any;
use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

/// `struct ArrowArray` of the C data interface.
#[repr(C)]
pub struct ArrowArray {
    length: i64,
    null_count: i64,
    offset: i64,
    n_buffers: i64,
    n_children: i64,
    buffers: *mut *const c_void,
    children: *mut *mut ArrowArray,
    dictionary: *mut ArrowArray,
    release: Option<unsafe extern "C" fn(*mut ArrowArray)>,
    private_data: *mut c_void,
}

/// What keeps an exported tree's memory alive: dropped when the last node is released.
pub type Owner = Arc<dyn Any + Send + Sync>;

/// One array of a tree to export, as the type's layout wants it (buffer order and count
/// come from the Arrow type the consumer imports it as).
pub struct Node {
    /// Number of elements.
    pub length: usize,
    /// Number of null elements.
    pub null_count: usize,
    /// Buffer addresses, null only for a validity bitmap of an array without nulls. Each
    /// must point into memory the owner keeps alive and unchanged.
    pub buffers: Vec<*const u8>,
    /// Child arrays.
    pub children: Vec<Node>,
}

/// The allocations behind one exported node.
struct Private {
    buffers: *mut [*const c_void],
    children: *mut [*mut ArrowArray],
    _owner: Owner,
}

fn export_node(node: Node, owner: &Owner) -> ArrowArray {
    let children: Box<[*mut ArrowArray]> =
        node.children.into_iter().map(|child| Box::into_raw(Box::new(export_node(child, owner)))).collect();
    let buffers: Box<[*const c_void]> = node.buffers.into_iter().map(|b| b.cast::<c_void>()).collect();
    let (n_buffers, n_children) = (buffers.len() as i64, children.len() as i64);
    let buffers = Box::into_raw(buffers);
    let children = Box::into_raw(children);
    let private = Box::new(Private { buffers, children, _owner: owner.clone() });
    ArrowArray {
        length: node.length as i64,
        null_count: node.null_count as i64,
        offset: 0,
        n_buffers,
        n_children,
        buffers: buffers.cast::<*const c_void>(),
        children: children.cast::<*mut ArrowArray>(),
        dictionary: ptr::null_mut(),
        release: Some(release),
        private_data: Box::into_raw(private).cast::<c_void>(),
    }
}

/// The release callback of every node.
///
/// # Safety
/// `array` points at a node made by [`export_node`] (the consumer's moved copy of it, or
/// the original), as the C data interface guarantees for a release callback.
unsafe extern "C" fn release(array: *mut ArrowArray) {
    // SAFETY: the consumer passes a valid, exclusively owned node (the function's
    // contract); its fields were set by `export_node` (invariant 2).
    let array = unsafe { &mut *array };
    if array.release.is_none() {
        return;
    }
    // SAFETY: `private_data` came from `Box::into_raw` and is turned back only here, once:
    // `release` is set to null below (invariant 2).
    let private = unsafe { Box::from_raw(array.private_data.cast::<Private>()) };
    // SAFETY: as above, the pointer arrays are boxes made by `export_node` (invariant 2).
    let children = unsafe { Box::from_raw(private.children) };
    for &child in children.iter() {
        // SAFETY: each child is a live box of `export_node` (invariant 2); a child moved out
        // by the consumer has a null `release` and is only freed here, not released.
        unsafe {
            if let Some(release_child) = (*child).release {
                release_child(child);
            }
            drop(Box::from_raw(child));
        }
    }
    // SAFETY: made by `Box::into_raw` in `export_node` and freed only here (invariant 2).
    drop(unsafe { Box::from_raw(private.buffers) });
    array.private_data = ptr::null_mut();
    array.release = None;
    // Dropping `private` drops this node's share of the owner (invariant 1): the memory goes
    // with the last node.
}

/// The root of an exported tree, not yet taken by a consumer.
pub struct Exported(Box<ArrowArray>);

impl Exported {
    /// Exports `root`; every node keeps `owner` alive until released.
    pub fn new(root: Node, owner: Owner) -> Self {
        Exported(Box::new(export_node(root, &owner)))
    }

    /// The address of the `struct ArrowArray`, for a consumer to move the tree out of
    /// (pyarrow's `_import_from_c`). Valid while `self` lives.
    pub fn address(&mut self) -> usize {
        ptr::from_mut::<ArrowArray>(&mut self.0) as usize
    }
}

impl Drop for Exported {
    fn drop(&mut self) {
        if let Some(release_root) = self.0.release {
            // SAFETY: the root is still ours (its consumer did not move it out, which would
            // have nulled `release`), made by `export_node` (invariants 2 and 3).
            unsafe { release_root(ptr::from_mut::<ArrowArray>(&mut self.0)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn tree(data: &[i64]) -> Node {
        let leaf = |n| Node {
            length: n,
            null_count: 0,
            buffers: vec![ptr::null(), data.as_ptr().cast()],
            children: vec![],
        };
        Node { length: 2, null_count: 0, buffers: vec![ptr::null()], children: vec![leaf(2), leaf(1)] }
    }

    #[test]
    fn an_unconsumed_tree_frees_its_owner_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let data = vec![1i64, 2];
        let exported = Exported::new(tree(&data), Arc::new(Counted(drops.clone())));
        assert_eq!(exported.0.n_children, 2);
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(exported);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_moved_root_is_released_by_its_consumer_and_children_moved_out_are_skipped() {
        let drops = Arc::new(AtomicUsize::new(0));
        let data = vec![1i64, 2];
        let mut exported = Exported::new(tree(&data), Arc::new(Counted(drops.clone())));
        let at = exported.address() as *mut ArrowArray;
        // What a consumer does: move the root out, null the original's release.
        // SAFETY: `at` is the live root (test only).
        let mut moved = unsafe { ptr::read(at) };
        // SAFETY: as above.
        unsafe { (*at).release = None };
        drop(exported);
        assert_eq!(drops.load(Ordering::SeqCst), 0, "the consumer holds the tree");
        // The consumer moves the first child out and releases it on its own.
        // SAFETY: children are live nodes of `export_node` (test only).
        let child = unsafe { *moved.children };
        // SAFETY: as above.
        let mut taken = unsafe { ptr::read(child) };
        // SAFETY: as above.
        unsafe { (*child).release = None };
        let release_root = moved.release.expect("set");
        // SAFETY: the moved root is a live node.
        unsafe { release_root(&mut moved) };
        assert!(moved.release.is_none());
        assert_eq!(drops.load(Ordering::SeqCst), 0, "the moved-out child still holds the owner");
        let release_child = taken.release.expect("set");
        // SAFETY: the taken child is a live node.
        unsafe { release_child(&mut taken) };
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}
