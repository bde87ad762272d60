//! Forward-mode automatic differentiation levels. tch wraps dual tensors (`_make_dual`,
//! `_unpack_dual`) but not entering or leaving a dual level; a small C++ shim
//! (`cpp/shim.cpp`) calls libtorch's `ForwardADLevel::get_next_idx` / `release_idx`.
//!
//! libtorch's levels are process-global and cannot nest, so a level is held behind a
//! process-wide lock for as long as it is open: threads that need one (tests run in parallel)
//! take turns.

use std::sync::{Mutex, MutexGuard};

use crate::TrainError;
use crate::shim::{self, maxl_forward_ad_enter, maxl_forward_ad_exit};

static LEVELS: Mutex<()> = Mutex::new(());

/// An open dual level; leaving it (on drop) clears every tangent made at it.
pub struct DualLevel {
    level: u64,
    _turn: MutexGuard<'static, ()>,
}

impl DualLevel {
    /// Enters a new level, waiting while another thread holds one.
    pub fn enter() -> Result<Self, TrainError> {
        // A panic while a level was open poisons the lock; the level itself was released by
        // the drop during unwinding, so the lock is still good to use.
        let turn = LEVELS.lock().unwrap_or_else(|p| p.into_inner());
        let mut level = 0u64;
        // SAFETY: both pointers are valid for the call; the shim writes at most `len` bytes.
        shim::call(|err, len| unsafe { maxl_forward_ad_enter(&mut level, err, len) })
            .map_err(|m| TrainError::Torch(format!("cannot enter a forward-AD level: {m}")))?;
        Ok(Self { level, _turn: turn })
    }

    /// The level as tch's dual-tensor functions take it.
    pub fn index(&self) -> i64 {
        self.level as i64
    }
}

impl Drop for DualLevel {
    fn drop(&mut self) {
        // SAFETY: the error pointer is valid for the call; the shim writes at most `len` bytes.
        if let Err(m) = shim::call(|err, len| unsafe { maxl_forward_ad_exit(self.level, err, len) })
        {
            tracing::error!("cannot leave forward-AD level {}: {m}", self.level);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn a_dual_tensor_carries_its_tangent_through_ops() {
        let level = DualLevel::enter().unwrap();
        let x = Tensor::from_slice(&[1.0f64, 2.0, 3.0]);
        let v = Tensor::from_slice(&[1.0f64, 0.0, -1.0]);
        let d = Tensor::internal_make_dual(&x, &v, level.index());
        let y = (&d * &d).exp().sum(Kind::Double);
        let (p, t) = Tensor::internal_unpack_dual(&y, level.index());
        // d/dx Σ exp(x²) along v = Σ 2x exp(x²) v.
        let want: f64 = [(1.0f64, 1.0), (2.0, 0.0), (3.0, -1.0)]
            .iter()
            .map(|&(x, v)| 2.0 * x * (x * x).exp() * v)
            .sum();
        let got = t.double_value(&[]);
        assert!((got - want).abs() < 1e-9 * want.abs(), "{got} vs {want}");
        assert!((p.double_value(&[]) - (1f64.exp() + 4f64.exp() + 9f64.exp())).abs() < 1e-9);
        drop(level);
        // Levels are released: the next one can be entered (and they do not nest).
        let again = DualLevel::enter().unwrap();
        drop(again);
    }
}
