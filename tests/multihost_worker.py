"""One process of a simulated multi-host run, for ``tests/test_multihost.py``.

Usage::

    python tests/multihost_worker.py OUT_DIR CACHE_DIR WORKDIR NUM_PROCESSES PROCESS_ID PORT

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=<local devices>`` and
``JAX_PLATFORMS=cpu``. With NUM_PROCESSES > 1 the process first joins a ``jax.distributed``
cluster on ``localhost:PORT`` (CPU collectives over gloo), as every host of a pod would. It then
trains the tiny config for one epoch of exactly two global batches with the project's own
:class:`~dina_jax.training.loop.Trainer` (batch split over processes and devices, validation,
metrics and checkpoints into the shared WORKDIR) and writes its own replica of the final state
to ``OUT_DIR/process<PROCESS_ID>.npz``.
"""

from __future__ import annotations

import os
import sys

BATCH_SIZE = 48  # 2 full batches of the tiny split's 130 training images; 6 per device of 8.


def main(out_dir: str, cache_dir: str, workdir: str, num_processes: int, process_id: int, port):
    import jax

    if num_processes > 1:
        # gloo is the default on recent jaxlib; older ones (0.4.x) had no CPU collectives unless
        # asked for, and then a psum across processes fails.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"localhost:{port}",
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=120,
        )
    import numpy as np

    from dina_jax.config import load_config
    from dina_jax.training import loop
    from dina_jax.training import step as step_lib

    config = load_config("tiny")
    config.data.cache_dir = cache_dir
    config.train.batch_size = BATCH_SIZE
    config.train.num_epochs = 1
    # Also a mid-epoch save after step 1, due by time: process 0's clock decides for both
    # processes (a broadcast), so both call the collective save.
    config.train.checkpoint_every_steps = 0
    config.train.checkpoint_every_minutes = 1e-9
    config.train.evaluate_at_end = False
    config.train.distributed = num_processes > 1  # a no-op here: initialized above
    loop.maybe_initialize_distributed(config)
    assert jax.process_count() == num_processes, jax.process_count()
    assert jax.device_count() == 8, jax.devices()

    trainer = loop.Trainer(config, workdir)
    assert trainer.steps_per_epoch == 2, trainer.steps_per_epoch
    result = trainer.run()
    state = step_lib.unreplicate_to_host(trainer.rstate)
    leaves = {
        f"params/{jax.tree_util.keystr(path)}": np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)
    }
    # Every local device must hold the same replica after the cross-process psum.
    for leaf in jax.tree.leaves(trainer.rstate.params):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        assert all(np.array_equal(shards[0], s) for s in shards[1:])
    np.savez(
        os.path.join(out_dir, f"process{process_id}.npz"),
        step=np.asarray(state.step),
        final_step=result["final_step"],
        local_devices=jax.local_device_count(),
        **leaves,
    )


if __name__ == "__main__":
    out, cache, work, n, pid, port = sys.argv[1:7]
    main(out, cache, work, int(n), int(pid), int(port))
