"""The `embed` pipeline: TEXT → tokenizer → encoder → EMBEDDING (+ NUM_TOKENS, TRUNCATED)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tritonforge.ensembles.dag import Ensemble, ModelIO

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig


def embed_ensemble(name: str, tokenizer: ModelIO, encoder: ModelIO) -> ModelConfig:
    """Wire the embedding service; the encoder's inputs are exactly the tokenizer's id outputs."""
    dag = Ensemble(name, max_batch_size=min(tokenizer.max_batch_size, encoder.max_batch_size))
    dag.input("TEXT", "TYPE_STRING", [1])
    ids = {key: key for key in encoder.inputs}
    dag.step(tokenizer, inputs={"TEXT": "TEXT"}, outputs={**ids, "NUM_TOKENS": "NUM_TOKENS", "TRUNCATED": "TRUNCATED"})
    dag.step(encoder, inputs=ids, outputs={"EMBEDDING": "EMBEDDING"})
    for out in ("EMBEDDING", "NUM_TOKENS", "TRUNCATED"):
        dag.output(out)
    return dag.config()
