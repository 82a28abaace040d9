"""Where registered models look for their hyperparameters' classes.

The fitted sparse branch is pickled with its `SparseParams`; models registered before the
parameters moved to `rakuten_mlops.params` name this module, so it keeps the names they
need. New code imports from `rakuten_mlops.params`.
"""

from rakuten_mlops.params import (
    FusionParams,
    ImageParams,
    ModelParams,
    SparseParams,
    TextNNParams,
    TextTransformerParams,
)

__all__ = [
    "FusionParams",
    "ImageParams",
    "ModelParams",
    "SparseParams",
    "TextNNParams",
    "TextTransformerParams",
]
