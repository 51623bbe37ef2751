"""Training (paper Sec. 3.3).

state.py   TrainState (parameters, optimizer state, step, PRNG key, parameter EMA), init
optim.py   optimizers chosen by name per tower, warmup + cosine schedules
step.py    the jitted, pmapped InfoNCE train step and the eval step
loop.py    epochs, validation, early stopping, checkpoints, metrics: train_and_evaluate
writer.py  metrics.jsonl and TensorBoard
"""

from dina_jax.training.loop import NonFiniteLossError, Trainer, train_and_evaluate

__all__ = ["NonFiniteLossError", "Trainer", "train_and_evaluate"]
