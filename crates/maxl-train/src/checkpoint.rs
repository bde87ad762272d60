//! Checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! A checkpoint is a directory (`<run>/checkpoints/last`, `<run>/checkpoints/best`) with
//! `multitask.safetensors` and `label_generator.safetensors` (parameters and batch-norm running
//! statistics under PyTorch state-dict names — `safetensors.torch.load_file` reads them),
//! `optimizer.safetensors` (SGD momentum buffers, `<network>.<parameter>.momentum_buffer`), and
//! `state.yaml` (epochs and steps done, best validation accuracy). The data order and
//! augmentation of every epoch are derived from (seed, epoch), so no RNG state needs saving.
//!
//! A checkpoint is written to `<name>.tmp` and renamed into place: a crash leaves the previous
//! checkpoint intact.

use std::path::Path;

use tch::{Device, Tensor};

use crate::net::ParamStore;
use crate::optim::Sgd;
use crate::run_files::{
    GENERATOR_FILE, MULTITASK_FILE, OPTIMIZER_FILE, STATE_FILE, STATE_FORMAT, TrainState,
    read_tensors, write_tensors,
};
use crate::trainer::Trainer;
use crate::{TrainError, first_line};

fn momentum_named(prefix: &str, store: &ParamStore, opt: &Sgd) -> Vec<(String, Tensor)> {
    store
        .param_names()
        .into_iter()
        .zip(&opt.momentum_buffers)
        .filter_map(|(n, b)| {
            b.as_ref()
                .map(|b| (format!("{prefix}.{n}.momentum_buffer"), b.shallow_clone()))
        })
        .collect()
}

/// Writes the trainer's state as the checkpoint directory `dir`.
pub fn save(dir: &Path, trainer: &Trainer, state: &TrainState) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::output(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::output(&tmp, e))?;
    write_tensors(&tmp.join(MULTITASK_FILE), &trainer.f.store.named())?;
    let mut momentum = momentum_named("multitask", &trainer.f.store, &trainer.opt_f);
    if let Some(g) = &trainer.g {
        write_tensors(&tmp.join(GENERATOR_FILE), &g.net.store.named())?;
        momentum.extend(momentum_named("label_generator", &g.net.store, &g.opt));
    }
    if momentum.is_empty() {
        // safetensors files may not be empty of tensors in every reader; record "no buffers".
        momentum.push((
            "none".into(),
            Tensor::zeros([0], (tch::Kind::Float, Device::Cpu)),
        ));
    }
    write_tensors(&tmp.join(OPTIMIZER_FILE), &momentum)?;
    let yaml = serde_yaml_ng::to_string(state).expect("state serialises");
    std::fs::write(tmp.join(STATE_FILE), yaml)
        .map_err(|e| TrainError::output(&tmp.join(STATE_FILE), e))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| TrainError::output(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::output(dir, e))
}

/// Restores weights, running statistics, momentum buffers and counters from `dir`.
pub fn load(dir: &Path, trainer: &mut Trainer) -> Result<TrainState, TrainError> {
    let state_path = dir.join(STATE_FILE);
    let text =
        std::fs::read_to_string(&state_path).map_err(|e| TrainError::output(&state_path, e))?;
    let state: TrainState = serde_yaml_ng::from_str(&text)
        .map_err(|e| TrainError::output(&state_path, first_line(&e.to_string())))?;
    if state.format != STATE_FORMAT {
        return Err(TrainError::output(
            &state_path,
            format!(
                "checkpoint format {} (this maxl-train reads {STATE_FORMAT})",
                state.format
            ),
        ));
    }
    let (kind, device) = (
        trainer.f.store.params[0].kind(),
        trainer.f.store.params[0].device(),
    );
    let f_path = dir.join(MULTITASK_FILE);
    let named = read_tensors(&f_path)?;
    trainer.f.store = ParamStore::from_named(trainer.f.store.specs.clone(), &named, kind, device)
        .map_err(|m| TrainError::output(&f_path, m))?;
    let momentum_path = dir.join(OPTIMIZER_FILE);
    let momentum = read_tensors(&momentum_path)?;
    restore_momentum(
        &momentum,
        "multitask",
        &trainer.f.store,
        &mut trainer.opt_f,
        device,
    )
    .map_err(|m| TrainError::output(&momentum_path, m))?;
    if let Some(g) = trainer.g.as_mut() {
        let g_path = dir.join(GENERATOR_FILE);
        let named = read_tensors(&g_path)?;
        g.net.store = ParamStore::from_named(g.net.store.specs.clone(), &named, kind, device)
            .map_err(|m| TrainError::output(&g_path, m))?;
        restore_momentum(
            &momentum,
            "label_generator",
            &g.net.store,
            &mut g.opt,
            device,
        )
        .map_err(|m| TrainError::output(&momentum_path, m))?;
    }
    trainer.epochs_done = state.epochs_done;
    trainer.steps_done = state.steps_done;
    Ok(state)
}

fn restore_momentum(
    named: &[(String, Tensor)],
    prefix: &str,
    store: &ParamStore,
    opt: &mut Sgd,
    device: Device,
) -> Result<(), String> {
    for ((name, param), buf) in store
        .param_names()
        .into_iter()
        .zip(&store.params)
        .zip(opt.momentum_buffers.iter_mut())
    {
        let key = format!("{prefix}.{name}.momentum_buffer");
        *buf = match named.iter().find(|(n, _)| *n == key) {
            None => None,
            // A buffer that does not fit its parameter would fail later, inside an update.
            Some((_, t)) if t.size() != param.size() || t.kind() != param.kind() => {
                return Err(format!(
                    "{key}: {:?} {:?}, expected {:?} {:?}",
                    t.kind(),
                    t.size(),
                    param.kind(),
                    param.size()
                ));
            }
            Some((_, t)) => Some(t.to_device(device).copy()),
        };
    }
    Ok(())
}
