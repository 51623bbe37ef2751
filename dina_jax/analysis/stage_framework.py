"""What an analysis stage is and what it is given: :class:`Stage`, :class:`Inputs` and
:class:`StageContext`, and :func:`describe`, which documents a stage's group in ``analysis.h5``.

A :class:`Stage` tells the orchestrator (:func:`dina_jax.analysis.run.analyze`) all it needs:

  name           its group in ``analysis.h5`` and its entry in the summary (``analysis.json``);
  version        bumped when its results change for the same settings, so stored ones recompute;
  config_block   ``config.analysis.<config_block>``, its settings. Stored results are keyed by
                 the block's fields (less ``memory_fields``), the analysed stimuli and the keys of
                 the stages it ``depends_on``: changing any of them recomputes the stage;
  compute        ``(StageContext) -> (arrays, scalars)``: arrays become datasets of the stage's
                 group, scalars its attributes and its summary entry;
  figures        ``(StageContext) -> [PNG paths]``: its paper figures, drawn on every call
                 right after the stage, from its stored results and those it depends on;
  applies        ``(Inputs) -> bool``: whether it runs for this run (e.g. DINA only);
  depends_on     stages whose stored results it reads (they come first in ``STAGES``);
  memory_fields  block fields that bound memory and change no result; they are not part of the
                 key, so a rerun with a smaller chunk after running out of memory resumes;
  resumable      a partly computed group is kept and ``compute`` continues where it stopped;
  description    what the stage computes: the ``description`` attribute of its group;
  datasets       ``{name: (units, description)}`` of every dataset its group holds: the
                 ``units`` and ``description`` attributes ``analyze`` gives each dataset, and the
                 table of the README's "Outputs" (``stages.datasets_table``). The single place
                 that says what a stored array means; a dataset missing here fails the tests.

The stages themselves, in run order, are :data:`dina_jax.analysis.stages.STAGES`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import h5py
import ml_collections
import numpy as np

from dina_jax import plots


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What every stage is given: the trained run and the analysed test stimuli.

    Attributes:
      model: the dual-tower module (``dina_jax.models.build_model``).
      params: its parameters (the ``"params"`` collection).
      config: the run's ConfigDict (architecture, seed; fields added since training defaulted).
      dataset: the run's ``Dataset``; ``dataset.ground_truth`` is the simulator's truth or None.
      rows: (S,) int64 dataset rows analysed: the first ``analysis.n_images`` test rows.
      images: (S, 68, 270) float32 stimuli of those rows.
      responses: (S, N) float32 stimulus-averaged responses to them.
    """

    model: Any
    params: Any
    config: ml_collections.ConfigDict
    dataset: Any
    rows: np.ndarray
    images: np.ndarray
    responses: np.ndarray

    @property
    def is_dina(self) -> bool:
        """The baselines (VGG16-MLP, ViT-MLP) have no pathways and no population attention."""
        return self.config.model.name == "dina"


@dataclasses.dataclass(frozen=True)
class StageContext:
    """One stage's view of an ``analyze`` call, given to its ``compute`` and ``figures``.

    Attributes:
      inputs: the run and its analysed stimuli.
      block: ``config.analysis.<config_block>``, the stage's settings.
      analysis: the whole ``config.analysis`` (a figure may follow another stage's settings).
      h5: the open ``analysis.h5``; ``h5[name]`` holds the results of a stage this one depends on.
      group: the stage's own group (a resumable stage keeps its partial results there).
      figure_dir: the folder of the figures (``workdir/figures``).
      figures: ``config.figures`` (format and dpi of :meth:`save`); None: PNG at 120 dpi.
      persist: call after each unit of a resumable stage's work; writes ``h5`` to disk now and
        then, so that a killed run resumes from there.
    """

    inputs: Inputs
    block: ml_collections.ConfigDict
    analysis: ml_collections.ConfigDict
    h5: h5py.File
    group: h5py.Group
    figure_dir: str
    figures: ml_collections.ConfigDict | None = None
    persist: Callable[[], None] = lambda: None

    def figure(self, name: str) -> str:
        """Path of the file ``name`` in the figure folder."""
        return os.path.join(self.figure_dir, name)

    def save(self, fig, name: str) -> str:
        """Writes a Figure as ``name`` (its suffix becomes the configured format); the path."""
        options = {} if self.figures is None else dict(self.figures.to_dict())
        return plots.save(fig, self.figure(name), **options)


def always(inputs: Inputs) -> bool:
    """The default ``Stage.applies``: the stage runs for every model and dataset."""
    del inputs
    return True


@dataclasses.dataclass(frozen=True)
class Stage:
    """One analysis as ``analyze`` runs it; see the module docstring for each field."""

    name: str
    version: int
    config_block: str
    compute: Callable[[StageContext], tuple[dict, dict]]
    figures: Callable[[StageContext], list[str]] | None = None
    applies: Callable[[Inputs], bool] = always
    depends_on: tuple[str, ...] = ()
    memory_fields: tuple[str, ...] = ()
    resumable: bool = False
    description: str = ""
    datasets: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


def describe(group, stage: Stage) -> bool:
    """Gives ``group`` (the stage's, in ``analysis.h5``) its ``description`` attribute and each
    of its datasets that ``stage.datasets`` documents its ``units`` and ``description``.

    Returns whether an attribute changed (a stored file then needs saving).
    """
    wanted = [(group, "description", stage.description)] if stage.description else []
    for name, (units, description) in stage.datasets.items():
        if name in group:
            wanted += [(group[name], "units", units), (group[name], "description", description)]
    changed = False
    for obj, key, value in wanted:
        if obj.attrs.get(key) != value:
            obj.attrs[key] = value
            changed = True
    return changed
