"""Evaluation of synthetic labelled text: downstream utility and embedding-space fidelity.

A run on an embedded dataset (embedded:imdb, embedded:newsgroups) is scored against its test split by
default; any other data needs the real held-out test data as the second argument.

>>> from dpsynth.evaluate import evaluate
>>> result = evaluate("runs/demo")   # doctest: +SKIP
>>> result["headline"]["value"], result["headline"]["references"]   # doctest: +SKIP
"""

from dpsynth.evaluate.core import (
    EVALUATION_FILE,
    LabelledTexts,
    embed_synthetic,
    embed_test,
    evaluate,
    load_evaluation,
    load_synthetic,
    load_test,
)
from dpsynth.evaluate.downstream import FinetuneConfig, finetune_utility, logreg_utility
from dpsynth.evaluate.fidelity import (
    frechet_distance,
    label_distribution,
    mauve_score,
    precision_recall,
    text_stats,
)

__all__ = [
    "EVALUATION_FILE",
    "FinetuneConfig",
    "LabelledTexts",
    "embed_synthetic",
    "embed_test",
    "evaluate",
    "finetune_utility",
    "frechet_distance",
    "label_distribution",
    "load_evaluation",
    "load_synthetic",
    "load_test",
    "logreg_utility",
    "mauve_score",
    "precision_recall",
    "text_stats",
]
