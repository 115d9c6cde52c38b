"""Ensemble pipelines: a typed DAG API (`Ensemble`, `ModelIO`) and the pipelines tritonforge ships."""

from tritonforge.ensembles.dag import Ensemble, ModelIO
from tritonforge.ensembles.embed import embed_ensemble

__all__ = ["Ensemble", "ModelIO", "embed_ensemble"]
