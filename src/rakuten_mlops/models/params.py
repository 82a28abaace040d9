"""Hyperparameters of the classifier, one dataclass per branch.

`params.yaml` (section `model:`) overrides the defaults below key by key; a key that no
branch knows is refused with a message that names it, so a typo cannot silently fall
back to a default.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from rakuten_mlops.errors import ModelError

_DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _check_integer(params: object, where: str, name: str, *, minimum: int) -> None:
    value = getattr(params, name)
    # YAML `true` is a bool, which Python also counts as an int.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelError(f"`{where}.{name}` must be an integer >= {minimum}, got {value!r}")


def _check_bool(params: object, where: str, *names: str) -> None:
    for name in names:
        value = getattr(params, name)
        if not isinstance(value, bool):
            raise ModelError(f"`{where}.{name}` must be true or false, got {value!r}")


def _check_number(
    params: object,
    where: str,
    name: str,
    *,
    minimum: float,
    strict: bool = False,
    below: float | None = None,
) -> None:
    value = getattr(params, name)
    bounds = f"> {minimum}" if strict else f">= {minimum}"
    if below is not None:
        bounds += f" and < {below}"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
        or (strict and value == minimum)
        or (below is not None and value >= below)
    ):
        # PyYAML reads `3e-5` (no dot) as a string: say how to write it.
        hint = " (YAML reads 3e-5 as text: write 3.0e-5)" if isinstance(value, str) else ""
        raise ModelError(f"`{where}.{name}` must be a number {bounds}, got {value!r}{hint}")


@dataclass(frozen=True)
class SparseParams:
    """TF-IDF + linear models on title and description (the fast, strong branch).

    The scores of the LinearSVC, the NB-SVM (`nb_svm`) and the second view's LinearSVC
    (`second_view`) are averaged: cross-validated, the fused default gains +0.56 point of
    weighted F1 with the three over the LinearSVC alone, for 3.4x its training time
    (bench/README.md).
    """

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
    # Also fit an NB-SVM on the same features (one LinearSVC per class on the features scaled
    # by that class's naive-Bayes log-count ratios) and average its scores with the others.
    nb_svm: bool = True
    # Also fit a LinearSVC on a second view of the text: words 1-2 of title + description
    # read as one text, and character 3-5-grams of the description (both min_df 2). Its
    # scores are averaged with the others.
    second_view: bool = True
    # Also fit an SGD (modified Huber) model on the same features and average the scores.
    sgd_alpha: float = 0.0
    max_iter: int = 2000

    def __post_init__(self) -> None:
        _check_bool(self, "model.sparse", "enabled", "title_char_cased", "nb_svm", "second_view")


@dataclass(frozen=True)
class TextNNParams:
    """Neural text model: TF-IDF-weighted embedding bag + non-linear head (from scratch).

    Off by default: cross-validated on the sample (5 folds, `bench/bench_cv.py`), fused with
    the sparse branch it changes weighted F1 by -0.25 to +0.05 point (sparse weight 0.5 to
    0.75), inside the noise, and halves the text-only throughput (bench/README.md).
    `enabled: true` puts it in the fusion.
    """

    enabled: bool = False
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
    # After the fusion is fit on held-out scores, refit every branch on train + val (same
    # hyperparameters): the model learns from every labelled product but the test split.
    refit: bool = True
    # Relative weights of the calibrated text branches in their average (the transformer's
    # only counts when `model.text_transformer` is enabled).
    sparse_weight: float = 0.5
    text_nn_weight: float = 0.5
    transformer_weight: float = 1.0
    # L2 penalty on the per-class biases of the fusion (keeps it close to the branches).
    bias_l2: float = 0.01
    max_iter: int = 200

    def __post_init__(self) -> None:
        _check_bool(self, "model.fusion", "refit")
        for name in ("sparse_weight", "text_nn_weight", "transformer_weight"):
            _check_number(self, "model.fusion", name, minimum=0.0)


@dataclass(frozen=True)
class TextTransformerParams:
    """Optional pretrained French transformer (CamemBERT, FlauBERT...) fine-tuned on the titles.

    Off by default: it needs the `transformer` extra, a pretrained model and, to train in
    reasonable time, a GPU. `model_path` is a local directory (`save_pretrained` layout)
    or, only with `allow_download`, a Hugging Face hub id.
    """

    enabled: bool = False
    model_path: str = ""
    # False: nothing is fetched from the network, `model_path` must be a local directory.
    allow_download: bool = False
    # Tokens of the (title, description) pair; the longer text is cut first.
    max_length: int = 128
    epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 3e-5
    weight_decay: float = 0.01
    # Share of the training steps with a linearly increasing learning rate.
    warmup_ratio: float = 0.1
    # "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:<index>".
    device: str = "auto"
    predict_batch_size: int = 64

    def __post_init__(self) -> None:
        where = "model.text_transformer"
        _check_bool(self, where, "enabled", "allow_download")
        if not isinstance(self.model_path, str):
            raise ModelError(f"`{where}.model_path` must be a string, got {self.model_path!r}")
        # Room for the special tokens of a pair ([CLS] a [SEP] b [SEP]) and some text.
        _check_integer(self, where, "max_length", minimum=8)
        for name in ("epochs", "batch_size", "predict_batch_size"):
            _check_integer(self, where, name, minimum=1)
        _check_number(self, where, "learning_rate", minimum=0.0, strict=True)
        _check_number(self, where, "weight_decay", minimum=0.0)
        _check_number(self, where, "warmup_ratio", minimum=0.0, below=1.0)
        if not isinstance(self.device, str) or not _DEVICE_RE.fullmatch(self.device):
            raise ModelError(
                f"`{where}.device` must be auto, cpu, cuda or cuda:<index>, got {self.device!r}"
            )


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
        raise ModelError(
            f"unknown key(s) in params `{where}`: {', '.join(unknown)} "
            f"(valid keys: {', '.join(sorted(known))})"
        )
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
        raise ModelError(
            f"unknown section(s) in params `model`: {', '.join(unknown)} "
            f"(valid sections: {', '.join(sorted(sections))})"
        )
    built = {name: _build(cls, params.get(name), f"model.{name}") for name, cls in sections.items()}
    return ModelParams(**built)
