//! Per-thread caches keyed by collector, shared by the usage counters and the request tracker:
//! each thread keeps, for every collector it tracked into, the cache that lets it find its own
//! counters without locks.

use std::cell::RefCell;
use std::thread::LocalKey;

/// A thread's caches: (collector id, cache) pairs; almost always one.
pub type Caches<L> = RefCell<Vec<(usize, L)>>;

/// This thread's cache for collector `id`, created on first use.
pub fn entry<L: Default>(caches: &mut Vec<(usize, L)>, id: usize) -> &mut L {
    let index = match caches.iter().position(|(owner, _)| *owner == id) {
        Some(i) => i,
        None => {
            caches.push((id, L::default()));
            caches.len() - 1
        }
    };
    &mut caches[index].1
}

/// Forgets the calling thread's cache of a collector that is gone (other threads' caches go
/// with their threads).
pub fn forget<L: 'static>(key: &'static LocalKey<Caches<L>>, id: usize) {
    let _ = key.try_with(|caches| {
        if let Ok(mut caches) = caches.try_borrow_mut() {
            caches.retain(|(owner, _)| *owner != id);
        }
    });
}

/// Cuts a name to `max` bytes on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
