"""Sparse text branch: TF-IDF on title and description, linear classifiers.

The title is short and decisive, the description long and noisy. Separate vectorizers keep
the title's weight (one L2-normalised block each) and character n-grams on the title make
it robust to typos, plurals and glued words ("lot2", "ps4").

The branch averages the scores of up to three linear models that err differently: a
LinearSVC on those features, an NB-SVM on the same features (Wang & Manning, 2012), and a
LinearSVC on a second view of the text (title + description words read as one text, and
description character n-grams). Cross-validated, the three together gain more than any
change of features or regularisation of one model (bench/README.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from rakuten_mlops.errors import ModelError
from rakuten_mlops.params import SparseParams

# Words are runs of letters/digits, single characters included ("2", "x", "l").
_TOKEN_PATTERN = r"(?u)\b\w+\b"
# Settings of every TF-IDF block of both views.
_TFIDF = {"sublinear_tf": True, "strip_accents": "unicode", "dtype": np.float32}


def text_statistics(designation: Sequence[str], description: Sequence[str]) -> np.ndarray:
    """Shape statistics of each product's text, (n, 6) floats.

    Lengths, emptiness of the description, share of capitals and digits in the title, words
    in the title. They separate look-alike categories that differ by how merchants write
    (a used book's bare Title Case title vs a new book's publisher blurb).
    """
    rows = []
    for title, text in zip(designation, description, strict=True):
        n_title = len(title) + 1
        rows.append(
            (
                math.log1p(len(title)),
                math.log1p(len(text)),
                float(not text),
                sum(ch.isupper() for ch in title) / n_title,
                sum(ch.isdigit() for ch in title) / n_title,
                float(len(title.split())),
            )
        )
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def fit_statistics_bins(stats: np.ndarray, n_bins: int = 8) -> list[np.ndarray]:
    """Quantile bin edges of each statistic (duplicates dropped)."""
    quantiles = np.linspace(0, 1, n_bins + 1)[1:-1]
    return [np.unique(np.quantile(stats[:, j], quantiles)) for j in range(stats.shape[1])]


def bin_statistics(stats: np.ndarray, edges: list[np.ndarray]) -> sp.csr_matrix:
    """One-hot bins of the statistics (a linear model can then fit any shape per bin)."""
    blocks = []
    for j, column_edges in enumerate(edges):
        bins = np.digitize(stats[:, j], column_edges)
        one_hot = sp.csr_matrix(
            (np.ones(len(bins), dtype=np.float32), (np.arange(len(bins)), bins)),
            shape=(len(bins), len(column_edges) + 1),
        )
        blocks.append(one_hot)
    return sp.hstack(blocks, format="csr")


class LinearScores:
    """A fitted linear scorer, `features @ coef_.T + intercept_` (one column per class)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef_ = np.asfortranarray(coef)
        self.intercept_ = intercept

    def decision_function(self, features: sp.csr_matrix) -> np.ndarray:
        return np.asarray(features @ self.coef_.T) + self.intercept_


def fit_nb_svm(
    features: sp.csr_matrix,
    labels: np.ndarray,
    n_classes: int,
    *,
    c: float,
    max_iter: int,
    seed: int,
) -> LinearScores:
    """One-vs-rest NB-SVM: per class, a LinearSVC on the features scaled by the class's
    naive-Bayes log-count ratios of feature presence (smoothing 1).

    The scaling is folded into the coefficients, so the result scores the unscaled features.
    """
    present = features.copy()
    present.data[:] = 1.0
    one_hot = sp.csr_matrix(
        (np.ones(len(labels), dtype=np.float64), (labels, np.arange(len(labels)))),
        shape=(n_classes, len(labels)),
    )
    in_class = np.asarray((one_hot @ present).todense()) + 1.0  # (K, F)
    total = np.asarray(present.sum(axis=0)).ravel() + 2.0
    coef = np.zeros((n_classes, features.shape[1]), dtype=np.float32)
    intercept = np.zeros(n_classes, dtype=np.float32)
    for k in range(n_classes):
        positive, negative = in_class[k], total - in_class[k]
        ratio = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
        svc = LinearSVC(C=c, max_iter=max_iter, random_state=seed)
        svc.fit(features @ sp.diags(ratio.astype(np.float32)), (labels == k).astype(np.int64))
        coef[k] = svc.coef_[0] * ratio
        intercept[k] = svc.intercept_[0]
    return LinearScores(coef, intercept)


class SparseTextModel:
    """TF-IDF features (title words + title chars + description words) and linear models.

    `decision_function` returns one score per class (columns = class indices 0..K-1 of the
    labels given to `fit`), the mean of the linear models' scores; the pipeline turns them
    into probabilities.
    """

    def __init__(self, params: SparseParams, seed: int = 42) -> None:
        self.params = params
        self.seed = seed
        self.vectorizers: dict[str, TfidfVectorizer] = {}
        self.models: list[LinearSVC | SGDClassifier | LinearScores] = []
        self.statistics_edges: list[np.ndarray] | None = None
        # The second view (`params.second_view`): its own vectorizers and LinearSVC.
        self.view2_vectorizers: dict[str, TfidfVectorizer] = {}
        self.view2_models: list[LinearSVC] = []
        self.n_classes = 0

    def _build_vectorizers(self) -> dict[str, TfidfVectorizer]:
        p = self.params
        vectorizers = {
            "title_words": TfidfVectorizer(
                analyzer="word",
                ngram_range=p.title_word_ngrams,
                token_pattern=_TOKEN_PATTERN,
                min_df=p.min_df,
                max_features=p.max_features,
                **_TFIDF,
            ),
            "title_chars": TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=p.title_char_ngrams,
                min_df=max(p.min_df, 2),
                max_features=p.max_features,
                **_TFIDF,
            ),
            "description_words": TfidfVectorizer(
                analyzer="word",
                ngram_range=p.description_word_ngrams,
                token_pattern=_TOKEN_PATTERN,
                min_df=p.min_df,
                max_features=p.max_features,
                **_TFIDF,
            ),
        }
        if p.title_char_cased:
            # Case is also a merchant's style ("PS4", "Lot De 3"): a second, case-sensitive
            # block adds it while the lower-case block keeps "PISCINE" close to "piscine".
            vectorizers["title_chars_cased"] = TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=p.title_char_ngrams,
                lowercase=False,
                min_df=max(p.min_df, 2),
                max_features=p.max_features,
                **_TFIDF,
            )
        return vectorizers

    def _build_view2_vectorizers(self) -> dict[str, TfidfVectorizer]:
        return {
            "text_words": TfidfVectorizer(
                analyzer="word",
                ngram_range=(1, 2),
                token_pattern=_TOKEN_PATTERN,
                min_df=2,
                max_features=self.params.max_features,
                **_TFIDF,
            ),
            "description_chars": TfidfVectorizer(
                analyzer="char_wb",
                ngram_range=(3, 5),
                min_df=2,
                max_features=self.params.max_features,
                **_TFIDF,
            ),
        }

    def _columns(
        self, designation: Sequence[str], description: Sequence[str]
    ) -> dict[str, list[str]]:
        limit = self.params.description_max_chars
        titles = list(designation)
        return {
            "title_words": titles,
            "title_chars": titles,
            "title_chars_cased": titles,
            "description_words": [text[:limit] for text in description],
        }

    def _view2_columns(
        self, designation: Sequence[str], description: Sequence[str]
    ) -> dict[str, list[str]]:
        limit = self.params.description_max_chars
        cut = [text[:limit] for text in description]
        return {
            "text_words": [f"{title} {text}" for title, text in zip(designation, cut, strict=True)],
            "description_chars": cut,
        }

    def _transform_view2(
        self, designation: Sequence[str], description: Sequence[str]
    ) -> sp.csr_matrix:
        columns = self._view2_columns(designation, description)
        return sp.hstack(
            [vec.transform(columns[name]) for name, vec in self.view2_vectorizers.items()],
            format="csr",
        )

    def transform(self, designation: Sequence[str], description: Sequence[str]) -> sp.csr_matrix:
        """TF-IDF feature matrix of cleaned texts (fitted vectorizers)."""
        if not self.vectorizers:
            raise ModelError("the sparse text model is not fitted")
        columns = self._columns(designation, description)
        blocks = [vec.transform(columns[name]) for name, vec in self.vectorizers.items()]
        if self.statistics_edges is not None:
            stats = text_statistics(designation, description)
            blocks.append(
                self.params.statistics_weight * bin_statistics(stats, self.statistics_edges)
            )
        return sp.hstack(blocks, format="csr")

    def fit(
        self,
        designation: Sequence[str],
        description: Sequence[str],
        labels: np.ndarray,
        *,
        progress: bool = False,
    ) -> SparseTextModel:
        """Fit the vectorizers and the linear models.

        Args:
            designation: cleaned titles.
            description: cleaned descriptions ("" when none).
            labels: class indices 0..K-1, every index present at least once.
        """
        self.n_classes = int(labels.max()) + 1
        p = self.params
        self.vectorizers = self._build_vectorizers()
        self.view2_vectorizers = self._build_view2_vectorizers() if p.second_view else {}
        steps_total = (
            len(self.vectorizers)
            + 1
            + int(p.nb_svm)
            + len(self.view2_vectorizers)
            + int(p.second_view)
        )
        with tqdm(total=steps_total, desc="sparse", disable=not progress, unit="step") as steps:
            columns = self._columns(designation, description)
            features = sp.hstack(
                self._fit_blocks(self.vectorizers, columns, steps, optional=False), format="csr"
            )
            if p.statistics_weight > 0:
                stats = text_statistics(designation, description)
                self.statistics_edges = fit_statistics_bins(stats)
                features = sp.hstack(
                    [features, p.statistics_weight * bin_statistics(stats, self.statistics_edges)],
                    format="csr",
                )
            steps.set_postfix_str("LinearSVC")
            self.models = [self._svc().fit(features, labels)]
            steps.update()
            if p.nb_svm:
                steps.set_postfix_str("NB-SVM")
                self.models.append(
                    fit_nb_svm(
                        features,
                        labels,
                        self.n_classes,
                        c=p.svc_c,
                        max_iter=p.max_iter,
                        seed=self.seed,
                    )
                )
                steps.update()
            if p.sgd_alpha > 0:
                sgd = SGDClassifier(
                    loss="modified_huber",
                    alpha=p.sgd_alpha,
                    max_iter=50,
                    tol=None,
                    random_state=self.seed,
                )
                self.models.append(sgd.fit(features, labels))
            self.view2_models = []
            if p.second_view:
                # A block of the second view with no term seen twice (e.g. no description
                # at all) is left out, and the view altogether if no block is left.
                view2 = self._fit_blocks(
                    self.view2_vectorizers,
                    self._view2_columns(designation, description),
                    steps,
                    optional=True,
                )
                steps.set_postfix_str("second view")
                if view2:
                    self.view2_models = [self._svc().fit(sp.hstack(view2, format="csr"), labels)]
                steps.update()
            for model in (*self.models, *self.view2_models):
                # Single precision halves the saved model (27 x ~450k coefficients); done
                # here so the fitted and the saved model predict exactly the same. Column
                # order makes `coef_.T` C-contiguous: a sparse row times it is then read in
                # place (a C-ordered `coef_` is copied at every call, ~16 ms for one product).
                model.coef_ = np.asfortranarray(model.coef_, dtype=np.float32)
                model.intercept_ = model.intercept_.astype(np.float32)
        return self

    def _svc(self) -> LinearSVC:
        return LinearSVC(C=self.params.svc_c, max_iter=self.params.max_iter, random_state=self.seed)

    @staticmethod
    def _fit_blocks(
        vectorizers: dict[str, TfidfVectorizer],
        columns: dict[str, list[str]],
        steps: tqdm,
        *,
        optional: bool,
    ) -> list[sp.csr_matrix]:
        """Fit each vectorizer on its column, one TF-IDF block each.

        A vectorizer left with no term (every text empty, or no term in `min_df` texts) is
        an error, or, when `optional`, is removed from `vectorizers` with no block.
        """
        blocks = []
        for name, vec in list(vectorizers.items()):
            steps.set_postfix_str(name)
            try:
                blocks.append(vec.fit_transform(columns[name]))
            except ValueError as exc:  # empty vocabulary
                if not optional:
                    raise ModelError(
                        f"sparse text model: cannot build `{name}` features: {exc}"
                    ) from exc
                del vectorizers[name]
            steps.update()
        return blocks

    def decision_function(
        self, designation: Sequence[str], description: Sequence[str]
    ) -> np.ndarray:
        """Class scores, shape (n, K), averaged over the linear models of both views."""
        members = self.member_scores(designation, description)
        scores = np.zeros((len(designation), self.n_classes), dtype=np.float64)
        for member in members:
            scores += member
        return scores / len(members)

    def member_scores(
        self, designation: Sequence[str], description: Sequence[str]
    ) -> list[np.ndarray]:
        """Class scores (n, K) of each linear model: the first view's (LinearSVC, then the
        NB-SVM and the SGD model when fitted), then the second view's."""
        features = self.transform(designation, description)
        scores = [_class_scores(model, features) for model in self.models]
        # Models saved before the second view existed have no such attributes.
        view2_models = getattr(self, "view2_models", [])
        if view2_models:
            view2 = self._transform_view2(designation, description)
            scores += [_class_scores(model, view2) for model in view2_models]
        return scores


def _class_scores(
    model: LinearSVC | SGDClassifier | LinearScores, features: sp.csr_matrix
) -> np.ndarray:
    """One score per class, (n, K): a two-class scikit-learn model answers one column, the
    score of class 1, which becomes (-score, score)."""
    scores = np.asarray(model.decision_function(features))
    return scores if scores.ndim == 2 else np.column_stack([-scores, scores])
