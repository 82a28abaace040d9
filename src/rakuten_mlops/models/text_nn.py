"""Neural text branch: a TF-IDF-weighted embedding network trained from scratch in PyTorch.

The tokenizer builds its own vocabulary from the training texts: title words and word
bigrams, character n-grams of the title words (case kept: "PS4" and "ps4" are different
merchants' styles) and description words and bigrams, each kind in its own block. A
product becomes a bag of (feature id, weight) with sublinear TF-IDF weights, L2-normalised
per block so a long description cannot drown the title. The network sums the weighted
embeddings (an `EmbeddingBag`, sparse gradients: fast on CPU), then a non-linearity and a
linear layer: unlike the linear sparse branch it learns dense feature interactions, which
makes the two complementary in the fusion.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from tqdm.auto import tqdm

from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.history import record_validation
from rakuten_mlops.params import TextNNParams

_WORD_RE = re.compile(r"\w+")
_BLOCKS = ("t:", "c:", "d:")
_EMBEDDING_KEY = "embedding.weight"


def strip_accents(text: str) -> str:
    """Text without combining accents ("é" -> "e")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def tokenize(text: str) -> list[str]:
    """Lower-case, accent-free word tokens of a cleaned text."""
    return _WORD_RE.findall(strip_accents(text.casefold()))


def _words_and_bigrams(words: list[str], prefix: str) -> Iterable[str]:
    yield from (prefix + word for word in words)
    yield from (f"{prefix}{a} {b}" for a, b in itertools.pairwise(words))


def _char_ngrams(text: str, low: int, high: int) -> Iterable[str]:
    # Within word boundaries, like scikit-learn's `char_wb`.
    for word in _WORD_RE.findall(strip_accents(text)):
        padded = f" {word} "
        for n in range(low, high + 1):
            for i in range(len(padded) - n + 1):
                yield "c:" + padded[i : i + n]


class TextTokenizer:
    """(title, description) -> feature ids and TF-IDF weights, vocabulary built from data.

    Feature names carry their block as a prefix: `t:` title words and bigrams, `c:` title
    character n-grams, `d:` description words and bigrams. Id 0 is reserved (unused).
    Features outside the vocabulary are dropped, or share `hash_buckets` rows (hashed with
    CRC32, stable across processes unlike `hash()`) placed after the vocabulary.
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        idf: Sequence[float],
        char_ngrams: tuple[int, int],
        max_tokens: int,
        hash_buckets: int = 0,
        oov_idf: float = 1.0,
    ) -> None:
        if len(vocabulary) != len(idf):
            raise ModelError("text tokenizer: vocabulary and idf have different lengths")
        self.vocabulary = list(vocabulary)
        self.idf = [float(value) for value in idf]
        self.ids = {feature: index + 1 for index, feature in enumerate(self.vocabulary)}
        self.char_ngrams = (int(char_ngrams[0]), int(char_ngrams[1]))
        self.max_tokens = max_tokens
        self.hash_buckets = int(hash_buckets)
        self.oov_idf = float(oov_idf)

    @property
    def n_features(self) -> int:
        """Rows of the embedding table (reserved id 0, vocabulary, hash buckets)."""
        return 1 + len(self.vocabulary) + self.hash_buckets

    def _lookup(self, feature: str) -> tuple[int, float] | None:
        index = self.ids.get(feature)
        if index is not None:
            return index, self.idf[index - 1]
        if self.hash_buckets:
            bucket = zlib.crc32(feature.encode("utf-8")) % self.hash_buckets
            return 1 + len(self.vocabulary) + bucket, self.oov_idf
        return None

    def features(self, title: str, description: str) -> Counter[str]:
        """Raw feature counts of one product (all blocks)."""
        counts: Counter[str] = Counter()
        counts.update(_words_and_bigrams(tokenize(title)[: self.max_tokens], "t:"))
        counts.update(_char_ngrams(title, *self.char_ngrams))
        counts.update(_words_and_bigrams(tokenize(description)[: self.max_tokens], "d:"))
        return counts

    @classmethod
    def build(
        cls, titles: Sequence[str], descriptions: Sequence[str], params: TextNNParams
    ) -> TextTokenizer:
        """Vocabulary: features in at least `min_count` training products, most frequent first."""
        probe = cls([], [], params.char_ngrams, params.max_tokens, 0)
        document_frequency: Counter[str] = Counter()
        for title, description in zip(titles, descriptions, strict=True):
            document_frequency.update(probe.features(title, description).keys())
        frequent = [(f, n) for f, n in document_frequency.items() if n >= params.min_count]
        # Ties broken by name: the vocabulary does not depend on the row order.
        frequent.sort(key=lambda item: (-item[1], item[0]))
        frequent = frequent[: params.max_vocab]
        n_docs = len(titles)
        idf = [math.log((1 + n_docs) / (1 + n)) + 1.0 for _, n in frequent]
        # A feature outside the vocabulary is rare: weight it like one seen once.
        oov_idf = math.log((1 + n_docs) / 2) + 1.0
        return cls(
            [f for f, _ in frequent],
            idf,
            params.char_ngrams,
            params.max_tokens,
            params.hash_buckets,
            oov_idf,
        )

    def encode(self, title: str, description: str) -> tuple[list[int], list[float]]:
        """Feature ids and weights (sublinear TF-IDF, L2-normalised per block)."""
        per_block: dict[str, list[tuple[int, float]]] = {block: [] for block in _BLOCKS}
        for feature, count in self.features(title, description).items():
            found = self._lookup(feature)
            if found is not None:
                per_block[feature[:2]].append((found[0], (1.0 + math.log(count)) * found[1]))
        ids: list[int] = []
        weights: list[float] = []
        for pairs in per_block.values():
            norm = math.sqrt(sum(w * w for _, w in pairs)) or 1.0
            ids.extend(i for i, _ in pairs)
            weights.extend(w / norm for _, w in pairs)
        return ids, weights

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (saved with the model)."""
        return {
            "vocabulary": self.vocabulary,
            "idf": self.idf,
            "char_ngrams": list(self.char_ngrams),
            "max_tokens": self.max_tokens,
            "hash_buckets": self.hash_buckets,
            "oov_idf": self.oov_idf,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TextTokenizer:
        """Rebuild a tokenizer saved with `to_dict()`."""
        low, high = state["char_ngrams"]
        return cls(
            state["vocabulary"],
            state["idf"],
            (int(low), int(high)),
            int(state["max_tokens"]),
            int(state.get("hash_buckets", 0)),
            float(state.get("oov_idf", 1.0)),
        )


class TfidfEmbeddingNet(nn.Module):
    """Weighted sum of feature embeddings + bias, ReLU, optional hidden layer, linear head."""

    def __init__(
        self, n_features: int, embedding_dim: int, hidden_dim: int, n_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(n_features, embedding_dim, mode="sum", sparse=True)
        nn.init.normal_(self.embedding.weight, 0.0, 0.05)
        self.bias = nn.Parameter(torch.zeros(embedding_dim))
        layers: list[nn.Module] = [nn.ReLU(), nn.Dropout(dropout)]
        if hidden_dim > 0:
            layers += [nn.Linear(embedding_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden_dim if hidden_dim > 0 else embedding_dim, n_classes))
        self.head = nn.Sequential(*layers)

    def forward(
        self, ids: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Class logits of a batch given as flat ids / offsets / weights (EmbeddingBag style)."""
        pooled = self.embedding(ids, offsets, per_sample_weights=weights) + self.bias
        logits: torch.Tensor = self.head(pooled)
        return logits


def _collate(
    encoded: Sequence[tuple[list[int], list[float]]], rows: Iterable[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids: list[int] = []
    weights: list[float] = []
    offsets: list[int] = []
    for row in rows:
        offsets.append(len(ids))
        ids.extend(encoded[row][0])
        weights.extend(encoded[row][1])
    return (
        torch.tensor(ids, dtype=torch.long),
        torch.tensor(offsets, dtype=torch.long),
        torch.tensor(weights, dtype=torch.float32),
    )


class NeuralTextClassifier:
    """Tokenizer + `TfidfEmbeddingNet`, trained with Adam (sparse Adam for the embeddings)."""

    def __init__(self, params: TextNNParams, seed: int = 42) -> None:
        self.params = params
        self.seed = seed
        self.tokenizer: TextTokenizer | None = None
        self.net: TfidfEmbeddingNet | None = None
        self.n_classes = 0

    def _build_net(self) -> TfidfEmbeddingNet:
        assert self.tokenizer is not None
        p = self.params
        return TfidfEmbeddingNet(
            self.tokenizer.n_features, p.embedding_dim, p.hidden_dim, self.n_classes, p.dropout
        )

    def fit(
        self,
        titles: Sequence[str],
        descriptions: Sequence[str],
        labels: np.ndarray,
        val: tuple[Sequence[str], Sequence[str], np.ndarray] | None = None,
        *,
        progress: bool = True,
    ) -> dict[str, list[float]]:
        """Train on cleaned texts; labels are class indices 0..K-1.

        Returns:
            Per-epoch curves: `train_loss`, and `val_loss` / `val_accuracy` when `val` is given.
        """
        p = self.params
        self.n_classes = int(labels.max()) + 1
        self.tokenizer = TextTokenizer.build(titles, descriptions, p)
        encoded = [self.tokenizer.encode(t, d) for t, d in zip(titles, descriptions, strict=True)]
        val_encoded = (
            [self.tokenizer.encode(t, d) for t, d in zip(val[0], val[1], strict=True)]
            if val
            else None
        )
        history: dict[str, list[float]] = {"train_loss": []}
        if val is not None:
            history.update(val_loss=[], val_accuracy=[])
        generator = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # weights init and dropout
            self.net = self._build_net()
            sparse_opt = torch.optim.SparseAdam(
                list(self.net.embedding.parameters()), lr=p.learning_rate
            )
            dense_opt = torch.optim.AdamW(
                [*self.net.head.parameters(), self.net.bias],
                lr=p.learning_rate / 4,
                weight_decay=p.weight_decay,
            )
            target = torch.as_tensor(labels, dtype=torch.long)
            n_batches = (len(encoded) + p.batch_size - 1) // p.batch_size
            total_steps = max(1, p.epochs * n_batches)
            step = 0
            bar = tqdm(range(p.epochs), desc="text_nn", disable=not progress, unit="epoch")
            for _ in bar:
                self.net.train()
                order = torch.randperm(len(encoded), generator=generator).tolist()
                running = 0.0
                for start in range(0, len(order), p.batch_size):
                    rows = order[start : start + p.batch_size]
                    # Linear decay of the learning rate: fastText's schedule, robust without tuning.
                    scale = 1.0 - step / total_steps
                    for opt, base in (
                        (sparse_opt, p.learning_rate),
                        (dense_opt, p.learning_rate / 4),
                    ):
                        for group in opt.param_groups:
                            group["lr"] = base * scale
                    logits = self.net(*_collate(encoded, rows))
                    loss = functional.cross_entropy(logits, target[rows])
                    sparse_opt.zero_grad()
                    dense_opt.zero_grad()
                    loss.backward()
                    sparse_opt.step()
                    dense_opt.step()
                    running += float(loss.detach()) * len(rows)
                    step += 1
                history["train_loss"].append(running / len(encoded))
                postfix = {"loss": f"{history['train_loss'][-1]:.3f}"}
                if val is not None and val_encoded is not None:
                    accuracy = record_validation(
                        history, self._log_proba_encoded(val_encoded), val[2]
                    )
                    postfix["val_acc"] = f"{accuracy:.3f}"
                bar.set_postfix(postfix)
        # The embedding table is saved in half precision (half the size on disk); round it
        # now so the fitted model and the saved one predict exactly the same.
        with torch.no_grad():
            self.net.embedding.weight.copy_(self.net.embedding.weight.half().float())
        return history

    def _log_proba_encoded(self, encoded: Sequence[tuple[list[int], list[float]]]) -> np.ndarray:
        if self.net is None:
            raise ModelError("the neural text model is not fitted")
        self.net.eval()
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(encoded), 512):
                rows = range(start, min(start + 512, len(encoded)))
                outputs.append(
                    functional.log_softmax(self.net(*_collate(encoded, rows)), dim=1).numpy()
                )
        if not outputs:
            return np.zeros((0, self.n_classes))
        return np.concatenate(outputs).astype(np.float64)

    def predict_log_proba(self, titles: Sequence[str], descriptions: Sequence[str]) -> np.ndarray:
        """Log-probabilities (n, K) of cleaned texts."""
        if self.tokenizer is None:
            raise ModelError("the neural text model is not fitted")
        encoded = [self.tokenizer.encode(t, d) for t, d in zip(titles, descriptions, strict=True)]
        return self._log_proba_encoded(encoded)

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model: tokenizer, sizes, weights."""
        if self.tokenizer is None or self.net is None:
            raise ModelError("the neural text model is not fitted")
        return {
            "tokenizer": self.tokenizer.to_dict(),
            "n_classes": self.n_classes,
            "weights": {
                name: value.half() if name == _EMBEDDING_KEY else value
                for name, value in self.net.state_dict().items()
            },
        }

    @classmethod
    def from_state(
        cls, params: TextNNParams, state: dict[str, Any], seed: int = 42
    ) -> NeuralTextClassifier:
        """Rebuild a model saved with `state()`."""
        model = cls(params, seed)
        model.tokenizer = TextTokenizer.from_dict(state["tokenizer"])
        model.n_classes = int(state["n_classes"])
        model.net = model._build_net()
        weights = {name: value.float() for name, value in state["weights"].items()}
        model.net.load_state_dict(weights)
        model.net.eval()
        return model
