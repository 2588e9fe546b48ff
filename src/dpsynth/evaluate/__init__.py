"""Evaluation of synthetic labelled text: downstream utility and embedding-space fidelity.

A run on an embedded dataset (embedded:imdb, embedded:newsgroups) is scored against its test split by
default; any other data needs the real held-out test data as the second argument.

>>> from dpsynth.evaluate import evaluate
>>> result = evaluate("runs/demo")   # doctest: +SKIP
>>> result["headline"]["value"], result["headline"]["references"]   # doctest: +SKIP
"""

from dpsynth.evaluate.core import EVALUATION_FILE, evaluate, load_evaluation
from dpsynth.evaluate.downstream import ClassifierFinetuneConfig, finetune_utility, logreg_utility
from dpsynth.evaluate.fidelity import (
    frechet_distance,
    label_distribution,
    mauve_score,
    precision_recall,
    text_stats,
)
from dpsynth.evaluate.inputs import LabelledTexts, embed_synthetic, embed_test, load_synthetic, load_test

__all__ = [
    "EVALUATION_FILE",
    "ClassifierFinetuneConfig",
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
