"""Optional text branch: a pretrained French transformer fine-tuned on the products.

A CamemBERT / FlauBERT-like checkpoint (any model `AutoModelForSequenceClassification`
knows) gets a new classification head and is fine-tuned end to end on (title,
description) sentence pairs. It is off by default (`model.text_transformer`): it needs
the `transformer` extra, a pretrained model on disk (or `allow_download`) and, to train
in reasonable time, a GPU. `transformers` is imported only when the branch is used, so the
package and the default pipeline work without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional
from tqdm.auto import tqdm

from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.history import record_validation
from rakuten_mlops.params import TextTransformerParams

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

SETTING = "model.text_transformer.model_path"
INSTALL_HINT = "pip install 'rakuten-mlops[transformer]'"
# Tokenized texts: one list of ids (and of masks, token types...) per product.
Encoded = dict[str, list[list[int]]]


@contextlib.contextmanager
def _quiet_transformers(quiet: bool) -> Iterator[None]:
    """Silence the progress bars and load reports of `transformers` for a while."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def resolve_model_source(params: TextTransformerParams) -> tuple[str, bool]:
    """Where the pretrained model comes from: (path or hub id, local files only).

    Raises:
        ModelError: `model_path` is empty, or is not a local directory while downloads are
            not allowed.
    """
    source = params.model_path.strip()
    if not source:
        raise ModelError(
            f"{SETTING} is empty: set it to a local directory holding a pretrained model "
            "(config.json, weights, tokenizer files, as written by save_pretrained), or to a "
            "hub id such as almanach/camembert-base with "
            "model.text_transformer.allow_download: true"
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path), True
    if path.exists():
        raise ModelError(f"{SETTING}: {path} is a file, expected a model directory")
    if not params.allow_download:
        raise ModelError(
            f"{SETTING}: {source!r} is not a local directory, and "
            "model.text_transformer.allow_download is false (nothing is downloaded): point "
            "it to a local model directory, or allow the download from the Hugging Face hub"
        )
    return source, False


def check_transformer_setup(params: TextTransformerParams) -> None:
    """Fail fast, before hours of training, on what `fit` would only find out later.

    Raises:
        ModelError: `transformers` is not installed, `model_path` is unusable or the
            device is not available.
    """
    if importlib.util.find_spec("transformers") is None:
        raise ModelError(_missing_package_message())
    resolve_model_source(params)
    resolve_device(params.device)


def _missing_package_message() -> str:
    return f"the transformer text branch needs the `transformers` package: {INSTALL_HINT}"


def _load_pretrained(
    source: str, *, local_only: bool, n_classes: int | None, what: str, quiet: bool
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and sequence-classification model from a directory or a hub id.

    Args:
        n_classes: size of a new classification head (None: keep the saved one).
        what: how the error message names the model (the setting or the saved branch).

    Raises:
        ModelError: `transformers` is missing or the model cannot be loaded.
    """
    try:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError as exc:
        raise ModelError(_missing_package_message()) from exc
    head = {"num_labels": n_classes, "ignore_mismatched_sizes": True} if n_classes else {}
    try:
        with _quiet_transformers(quiet):
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            # float32 master weights: `from_pretrained` would keep a half-precision
            # checkpoint in half precision, which fine-tuning with AdamW does not survive.
            model = AutoModelForSequenceClassification.from_pretrained(
                source, local_files_only=local_only, dtype=torch.float32, **head
            )
    # Loading runs third-party code (config parsing, tokenizer conversion, hub client)
    # whose failures have no common base class; each becomes one clear message.
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelError(f"{what}: cannot load the pretrained model {source!r}: {reason}") from exc
    if tokenizer.pad_token is None:
        # Decoder-style tokenizers have no padding token; batches need one.
        if tokenizer.eos_token is None:
            raise ModelError(f"{what}: the tokenizer of {source!r} has no padding token")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def resolve_device(spec: str, *, strict: bool = True) -> torch.device:
    """The torch device of `model.text_transformer.device` ("auto": cuda when available).

    Args:
        strict: raise when cuda is asked for but unavailable (training); otherwise fall
            back to the CPU with a warning (a model trained on a GPU served on a CPU).

    Raises:
        ModelError: cuda is asked for, is not available and `strict` is true.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        if strict:
            raise ModelError(
                f"model.text_transformer.device is {spec!r} but no CUDA GPU is available: "
                "use auto or cpu"
            )
        logger.warning("model.text_transformer.device %r: no CUDA GPU, using the CPU", spec)
        return torch.device("cpu")
    return device


def _move(model: PreTrainedModel, device: torch.device) -> PreTrainedModel:
    """`model` on `device` (moved in place; `PreTrainedModel.to` is typed for dtypes only)."""
    torch.nn.Module.to(model, device)
    return model


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Mixed precision on a GPU (bf16 where supported, else fp16); full precision on a CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1 over `warmup_steps`, then linear decay to 0."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


class TransformerTextClassifier:
    """A pretrained transformer with a new classification head, fine-tuned on (title, description)."""

    def __init__(self, params: TextTransformerParams, seed: int = 42) -> None:
        self.params = params
        self.seed = seed
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.model: PreTrainedModel | None = None
        self.n_classes = 0
        self.device = torch.device("cpu")

    def _check_fitted(self) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
        if self.tokenizer is None or self.model is None:
            raise ModelError("the transformer text model is not fitted")
        return self.tokenizer, self.model

    def _encode(self, titles: Sequence[str], descriptions: Sequence[str]) -> Encoded:
        """Token ids of (title, description) pairs, unpadded; the longer text is cut first."""
        tokenizer, _ = self._check_fitted()
        if len(titles) != len(descriptions):
            raise ModelError("transformer text model: titles and descriptions differ in length")
        if not titles:
            return {"input_ids": []}
        encoding = tokenizer(
            list(titles),
            list(descriptions),
            truncation="longest_first",
            max_length=self.params.max_length,
        )
        return {key: list(values) for key, values in encoding.items()}

    def _batch(self, encoded: Encoded, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """One padded batch of `rows`, on the model's device."""
        tokenizer, _ = self._check_fitted()
        features = {key: [values[i] for i in rows] for key, values in encoded.items()}
        padded = tokenizer.pad(features, return_tensors="pt")
        return {key: torch.as_tensor(value).to(self.device) for key, value in padded.items()}

    def fit(
        self,
        titles: Sequence[str],
        descriptions: Sequence[str],
        labels: np.ndarray,
        val: tuple[Sequence[str], Sequence[str], np.ndarray] | None = None,
        *,
        progress: bool = True,
    ) -> dict[str, list[float]]:
        """Fine-tune the pretrained model on cleaned texts; labels are class indices 0..K-1.

        Returns:
            Per-epoch curves: `train_loss`, and `val_loss` / `val_accuracy` when `val` is given.

        Raises:
            ModelError: the pretrained model cannot be found or loaded, or the device is
                not available.
        """
        p = self.params
        source, local_only = resolve_model_source(p)
        self.device = resolve_device(p.device)
        self.n_classes = int(labels.max()) + 1
        history: dict[str, list[float]] = {"train_loss": []}
        generator = torch.Generator().manual_seed(self.seed)
        rng_devices: list[int] = []
        if self.device.type == "cuda":
            index = self.device.index
            rng_devices = [torch.cuda.current_device() if index is None else index]
        with torch.random.fork_rng(devices=rng_devices):
            # Seeds the new head's initialisation and dropout (deterministic on a CPU).
            torch.manual_seed(self.seed)
            self.tokenizer, self.model = _load_pretrained(
                source,
                local_only=local_only,
                n_classes=self.n_classes,
                what=SETTING,
                quiet=not progress,
            )
            model = _move(self.model, self.device)
            encoded = self._encode(titles, descriptions)
            val_encoded = self._encode(val[0], val[1]) if val is not None else None
            # No weight decay on biases and normalisation weights (the usual BERT recipe).
            decayed = [w for w in model.parameters() if w.requires_grad and w.ndim >= 2]
            others = [w for w in model.parameters() if w.requires_grad and w.ndim < 2]
            optimizer = torch.optim.AdamW(
                [
                    {"params": decayed, "weight_decay": p.weight_decay},
                    {"params": others, "weight_decay": 0.0},
                ],
                lr=p.learning_rate,
            )
            n_rows = len(titles)
            n_batches = (n_rows + p.batch_size - 1) // p.batch_size
            total_steps = max(1, p.epochs * n_batches)
            warmup_steps = int(p.warmup_ratio * total_steps)
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: linear_warmup_decay(step, warmup_steps, total_steps)
            )
            # Loss scaling only for fp16, whose gradients underflow; bf16 does not need it.
            scaler = torch.amp.GradScaler(
                self.device.type,
                enabled=self.device.type == "cuda" and not torch.cuda.is_bf16_supported(),
            )
            target = torch.as_tensor(labels, dtype=torch.long)
            for epoch in range(p.epochs):
                model.train()
                order = torch.randperm(n_rows, generator=generator).tolist()
                running = 0.0
                # Driven by hand: an exhausted iterator closes its bar before val_acc is shown.
                bar = tqdm(
                    total=n_batches,
                    desc=f"transformer {epoch + 1}/{p.epochs}",
                    disable=not progress,
                    unit="batch",
                )
                for start in range(0, n_rows, p.batch_size):
                    rows = order[start : start + p.batch_size]
                    with _autocast(self.device):
                        logits = model(**self._batch(encoded, rows)).logits
                    loss = functional.cross_entropy(logits.float(), target[rows].to(self.device))
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    running += float(loss.detach()) * len(rows)
                    bar.set_postfix(loss=f"{running / (start + len(rows)):.3f}", refresh=False)
                    bar.update()
                history["train_loss"].append(running / n_rows)
                postfix = {"loss": f"{history['train_loss'][-1]:.3f}"}
                if val is not None and val_encoded is not None:
                    accuracy = record_validation(
                        history, self._log_proba_encoded(val_encoded), val[2]
                    )
                    postfix["val_acc"] = f"{accuracy:.3f}"
                bar.set_postfix(postfix)
                bar.close()
        model.eval()
        return history

    def _log_proba_encoded(self, encoded: Encoded) -> np.ndarray:
        _, model = self._check_fitted()
        model.eval()
        ids = encoded["input_ids"]
        result = np.zeros((len(ids), self.n_classes))
        # Similar lengths batched together: less padding, the same scores in input order.
        order = np.argsort([len(row) for row in ids], kind="stable")
        size = self.params.predict_batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                rows = order[start : start + size].tolist()
                with _autocast(self.device):
                    logits = model(**self._batch(encoded, rows)).logits
                result[rows] = functional.log_softmax(logits.float(), dim=1).cpu().numpy()
        return result

    def predict_log_proba(self, titles: Sequence[str], descriptions: Sequence[str]) -> np.ndarray:
        """Log-probabilities (n, K) of cleaned texts."""
        return self._log_proba_encoded(self._encode(titles, descriptions))

    def save(self, directory: Path) -> None:
        """Write the fine-tuned model and its tokenizer (`save_pretrained`, safetensors)."""
        tokenizer, model = self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers(True):
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
        # The weights file is written owner-only (0600); the model is an artifact that
        # other users (a serving container) read, like every other file of the model.
        umask = os.umask(0)
        os.umask(umask)
        for path in directory.iterdir():
            if path.is_file():
                path.chmod(0o666 & ~umask)

    @classmethod
    def load(
        cls, directory: Path, params: TextTransformerParams, seed: int = 42
    ) -> TransformerTextClassifier:
        """Rebuild a model written by `save` (never touches the network).

        Raises:
            ModelError: `transformers` is missing or the directory holds no readable model.
        """
        branch = cls(params, seed)
        branch.tokenizer, model = _load_pretrained(
            str(directory),
            local_only=True,
            n_classes=None,
            what="transformer text branch",
            quiet=True,
        )
        branch.device = resolve_device(params.device, strict=False)
        branch.model = _move(model, branch.device)
        branch.model.eval()
        n_classes = branch.model.config.num_labels
        if not isinstance(n_classes, int) or n_classes < 2:
            raise ModelError(f"transformer text branch: {directory} has no classification head")
        branch.n_classes = n_classes
        return branch
