//! Handle tables: what a C caller holds instead of a pointer.
//!
//! A handle is 64 bits: the table's kind (8 bits), the slot's generation (24 bits) and the
//! slot's index plus one (32 bits). A slot's generation moves on every time it is freed, so a
//! destroyed handle, a handle of another kind, or any number a caller made up is refused: the
//! lookup checks all three before it hands out the object (an `Arc`, so a concurrent destroy
//! cannot free it under the caller).

use std::sync::{Arc, Mutex, MutexGuard};

const GENERATION_BITS: u32 = 24;
const GENERATION_MASK: u64 = (1 << GENERATION_BITS) - 1;

struct Slot<T> {
    generation: u32,
    value: Option<Arc<T>>,
}

/// One kind of object the C ABI hands out.
pub struct Table<T> {
    kind: u8,
    slots: Mutex<Vec<Slot<T>>>,
}

impl<T> Table<T> {
    /// An empty table whose handles carry `kind` (non-zero, distinct per table).
    pub const fn new(kind: u8) -> Self {
        Table {
            kind,
            slots: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Slot<T>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handle(&self, index: usize, generation: u32) -> u64 {
        (u64::from(self.kind) << 56) | ((u64::from(generation) & GENERATION_MASK) << 32) | (index as u64 + 1)
    }

    /// The slot a handle names, if it is of this table's kind.
    fn decode(&self, handle: u64) -> Option<(usize, u32)> {
        if (handle >> 56) as u8 != self.kind {
            return None;
        }
        let index = (handle & 0xffff_ffff).checked_sub(1)? as usize;
        Some((index, ((handle >> 32) & GENERATION_MASK) as u32))
    }

    /// Stores `value`; returns its handle.
    pub fn insert(&self, value: T) -> u64 {
        let mut slots = self.lock();
        let value = Some(Arc::new(value));
        if let Some(index) = slots.iter().position(|s| s.value.is_none()) {
            slots[index].value = value;
            return self.handle(index, slots[index].generation);
        }
        slots.push(Slot { generation: 0, value });
        self.handle(slots.len() - 1, 0)
    }

    /// The object `handle` names, if it is live.
    pub fn get(&self, handle: u64) -> Option<Arc<T>> {
        let (index, generation) = self.decode(handle)?;
        let slots = self.lock();
        let slot = slots.get(index)?;
        (slot.generation == generation).then(|| slot.value.clone()).flatten()
    }

    /// Frees `handle`'s slot; returns the object, if the handle was live.
    pub fn remove(&self, handle: u64) -> Option<Arc<T>> {
        let (index, generation) = self.decode(handle)?;
        let mut slots = self.lock();
        let slot = slots.get_mut(index)?;
        if slot.generation != generation || slot.value.is_none() {
            return None;
        }
        slot.generation = (slot.generation + 1) & GENERATION_MASK as u32;
        slot.value.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_foreign_and_forged_handles_are_refused() {
        let table = Table::new(7);
        let other: Table<u32> = Table::new(8);
        let a = table.insert(1u32);
        assert_eq!(table.get(a).as_deref(), Some(&1));
        assert!(other.get(a).is_none(), "a handle of another kind");
        assert!(table.get(0).is_none() && table.get(u64::MAX).is_none() && table.get(a + 1).is_none());
        assert_eq!(table.remove(a).as_deref(), Some(&1));
        assert!(table.remove(a).is_none(), "a double destroy");
        let b = table.insert(2u32);
        assert_ne!(a, b, "the slot is reused under a new generation");
        assert!(table.get(a).is_none(), "the stale handle stays dead");
        assert_eq!(table.get(b).as_deref(), Some(&2));
    }
}
