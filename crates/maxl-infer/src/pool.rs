//! A fixed pool of exclusive resources (ONNX Runtime sessions, whose `run` needs `&mut`): a
//! caller checks one out, uses it, and it goes back even if the caller panics.

use std::sync::{Condvar, Mutex, PoisonError};

pub(crate) struct Pool<T> {
    idle: Mutex<Vec<T>>,
    returned: Condvar,
    size: usize,
}

impl<T> Pool<T> {
    pub(crate) fn new(items: Vec<T>) -> Self {
        Self {
            size: items.len(),
            idle: Mutex::new(items),
            returned: Condvar::new(),
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Runs `f` with an idle item, waiting for one when all are in use.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let item = loop {
            match idle.pop() {
                Some(item) => break item,
                None => {
                    idle = self
                        .returned
                        .wait(idle)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        };
        drop(idle);
        let mut guard = Guard {
            pool: self,
            item: Some(item),
        };
        f(guard.item.as_mut().expect("checked out"))
    }
}

struct Guard<'a, T> {
    pool: &'a Pool<T>,
    item: Option<T>,
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(item);
            self.pool.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_exclusive_and_come_back() {
        let pool = std::sync::Arc::new(Pool::new(vec![0u32, 0]));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        pool.with(|n| *n += 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total: u32 = pool.idle.lock().unwrap().iter().sum();
        assert_eq!(total, 8000);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.with(|_| panic!("boom"));
        }));
        assert!(caught.is_err());
        assert_eq!(pool.idle.lock().unwrap().len(), 2);
    }
}
