"""Hyperparameters of the classifier, one dataclass per branch.

`params.yaml` (section `model:`) overrides the defaults below key by key; a key that no
branch knows is refused with a message that names it, so a typo cannot silently fall
back to a default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from rakuten_mlops.errors import ModelError


@dataclass(frozen=True)
class SparseParams:
    """TF-IDF + linear models on title and description (the fast, strong branch)."""

    enabled: bool = True
    # Title: words and character n-grams inside word boundaries (robust to typos, plurals).
    title_word_ngrams: tuple[int, int] = (1, 2)
    title_char_ngrams: tuple[int, int] = (2, 5)
    title_char_cased: bool = True
    # Description: words only; long descriptions are cut, their tail is mostly boilerplate.
    description_word_ngrams: tuple[int, int] = (1, 2)
    description_max_chars: int = 2000
    min_df: int = 1
    max_features: int = 500_000
    # Weight of the one-hot text statistics (lengths, capitals, digits); 0 disables them.
    statistics_weight: float = 0.2
    # LinearSVC regularisation (larger = fits the training data harder).
    svc_c: float = 0.7
    # Also fit an SGD (modified Huber) model on the same features and average the scores.
    sgd_alpha: float = 0.0
    max_iter: int = 2000


@dataclass(frozen=True)
class TextNNParams:
    """Neural text model: TF-IDF-weighted embedding bag + non-linear head (from scratch)."""

    enabled: bool = True
    embedding_dim: int = 128
    # 0: embeddings -> ReLU -> classes; > 0 adds a hidden layer of that size.
    hidden_dim: int = 0
    # Features (words, bigrams, char n-grams) in fewer training products are dropped.
    min_count: int = 1
    max_vocab: int = 300_000
    # Features left out of the vocabulary share this many hashed rows (0: they are dropped).
    hash_buckets: int = 0
    char_ngrams: tuple[int, int] = (2, 5)
    max_tokens: int = 300
    dropout: float = 0.3
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 0.007
    weight_decay: float = 0.01


@dataclass(frozen=True)
class ImageParams:
    """Compact CNN trained from scratch on downscaled product images."""

    enabled: bool = True
    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 256)
    dropout: float = 0.3
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 0.003
    weight_decay: float = 0.0005
    # Where decoded, resized images are cached between trainings ("" disables the cache).
    cache_dir: str = "data/interim/image_cache"
    # Optional local state_dict of the backbone (same architecture) to start from.
    pretrained_weights: str | None = None


@dataclass(frozen=True)
class FusionParams:
    """Late fusion of the calibrated branches, fit on held-out scores.

    With `cross_fit_folds` >= 2 the text branches are cross-fitted over train + val: the
    temperatures and the fusion are fit on their out-of-fold scores, then the text branches
    are refit on all of train + val. 0 keeps the holdout behaviour (fit on train, fusion on
    val). The image branch is always fit on train and fused on val (cost: see bench/README).
    """

    cross_fit_folds: int = 0
    # Relative weights of the two calibrated text branches in their average.
    sparse_weight: float = 0.5
    text_nn_weight: float = 0.5
    # L2 penalty on the per-class biases of the fusion (keeps it close to the branches).
    bias_l2: float = 0.01
    max_iter: int = 200


@dataclass(frozen=True)
class TextTransformerParams:
    """Reserved: a pretrained French transformer branch (not in this version; must stay off)."""

    enabled: bool = False
    model_path: str = ""
    max_length: int = 64
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 3e-5


@dataclass(frozen=True)
class ModelParams:
    """All hyperparameters of `ProductClassifier`."""

    sparse: SparseParams = field(default_factory=SparseParams)
    text_nn: TextNNParams = field(default_factory=TextNNParams)
    image: ImageParams = field(default_factory=ImageParams)
    fusion: FusionParams = field(default_factory=FusionParams)
    text_transformer: TextTransformerParams = field(default_factory=TextTransformerParams)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (tuples as lists) for JSON, YAML and MLflow."""
        return _listify(asdict(self))


_T = TypeVar("_T")


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _listify(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_listify(item) for item in value]
    return value


def _build(cls: type[_T], values: Any, where: str) -> _T:
    """Build one params dataclass from a mapping, refusing unknown keys."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ModelError(f"params `{where}` must be a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ModelError(f"unknown key(s) in params `{where}`: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if isinstance(default, tuple) and isinstance(value, list | tuple):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def parse_model_params(params: dict[str, Any] | None) -> ModelParams:
    """Merge the `model:` section of `params.yaml` over the defaults.

    Raises:
        ModelError: a section is not a mapping or holds an unknown key.
    """
    params = dict(params or {})
    sections: dict[str, type[Any]] = {
        "sparse": SparseParams,
        "text_nn": TextNNParams,
        "image": ImageParams,
        "fusion": FusionParams,
        "text_transformer": TextTransformerParams,
    }
    unknown = sorted(set(params) - set(sections))
    if unknown:
        raise ModelError(f"unknown section(s) in params `model`: {', '.join(unknown)}")
    built = {name: _build(cls, params.get(name), f"model.{name}") for name, cls in sections.items()}
    return ModelParams(**built)
