"""The text-only baseline: which answer a person prefers, predicted from the two answers' words alone.

A reward model built on reading behaviour must beat what the text by itself says, or the behaviour adds nothing.
No pretrained embedding model is in the lock (none ships its weights inside a PyPI package that serves, and nothing may
be downloaded at run time), so the baseline is learned from the training rows only: TF-IDF of word uni- and bigrams
(vocabulary fitted on the training answers), the left answer's vector minus the right one's, and a logistic
regression without intercept trained on every row and its swap. Swapping the answers negates the input, so
P(left, right) = 1 - P(right, left) exactly: the baseline cannot learn a side habit, only content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

__all__ = ["TextOnly", "TextPairs", "text_pairs"]


@dataclass(frozen=True)
class TextPairs:
    """The two answers of each row (pairwise: left = `llm_response_1`, right = `llm_response_2`), row-aligned."""

    left: list[str]
    right: list[str]

    def take(self, rows: npt.NDArray[np.intp]) -> TextPairs:
        return TextPairs([self.left[i] for i in rows], [self.right[i] for i in rows])


def text_pairs(root: Path | str, query_ids: Sequence[Any]) -> TextPairs:
    """The answers of `query_ids` (in that order) from an IFLLM folder's query log; a missing answer is ''."""
    from tacit.ifllm.tables import read_queries

    by_id = {q.query_id: q for q in read_queries(root)}
    missing = [qid for qid in query_ids if int(qid) not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} query ids are not in {root}'s query log (first: {missing[0]})")
    rows = [by_id[int(qid)] for qid in query_ids]
    return TextPairs([q.response_1 for q in rows], [q.response_2 or "" for q in rows])


class TextOnly:
    """TF-IDF difference + swap-augmented logistic regression (see the module docstring)."""

    def __init__(self, *, c: float = 1.0, max_features: int = 20000) -> None:
        self.c = c
        self.vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2), max_features=max_features)
        self.model = LogisticRegression(C=c, fit_intercept=False, max_iter=2000)

    def _difference(self, texts: TextPairs) -> sp.csr_matrix:
        return sp.csr_matrix(self.vectorizer.transform(texts.left) - self.vectorizer.transform(texts.right))

    def fit(self, texts: TextPairs, y: npt.ArrayLike) -> TextOnly:
        labels = np.asarray(y, dtype=np.int64)
        self.vectorizer.fit([*texts.left, *texts.right])
        diff = self._difference(texts)
        self.model.fit(sp.vstack([diff, -diff]), np.concatenate([labels, 1 - labels]))
        return self

    def predict_proba(self, texts: TextPairs) -> npt.NDArray[np.float64]:
        """P(class 1) of each row (pairwise: the right answer preferred), as one column per class like sklearn."""
        return np.asarray(self.model.predict_proba(self._difference(texts)), dtype=np.float64)
