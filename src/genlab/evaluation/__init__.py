"""genlab.evaluation: metric functions behind `genlab eval` and metrics.json.

- text: token NLL, perplexity, bits per byte, BLEU/chrF (sacrebleu), continuation prompts
- image: FID, KID, precision/recall/density/coverage, classifier score on (N, D) features
- features: the small CNN genlab trains on real images to extract those features
- classify: precision/recall/F1 report with confusion matrix
- robustness: seeded text/image perturbations, metric-vs-strength table and plot
- run / report: `evaluate_run` (the `genlab eval` command for LM runs), `load_run_model`,
  the metrics.json merge and `print_table` (imported on first use: they pull in the
  model, data and checkpoint modules)

Optional heavy dependencies (sacrebleu, scikit-learn's metrics, matplotlib) are imported
inside the functions that need them, so importing this package stays light.
"""

from __future__ import annotations

from genlab.evaluation.classify import classification_report
from genlab.evaluation.features import (
    FeatureClassifier,
    digits_dataset,
    load_or_train_feature_classifier,
)
from genlab.evaluation.image import (
    classifier_score,
    feature_stats,
    fid,
    frechet_distance,
    image_metric_results,
    kid,
    precision_recall_density_coverage,
)
from genlab.evaluation.result import MetricResult
from genlab.evaluation.robustness import (
    IMAGE_PERTURBATIONS,
    TEXT_PERTURBATIONS,
    blur,
    case_change,
    char_noise,
    gaussian_noise,
    plot_robustness,
    robustness_table,
    shift,
    typos,
    word_drop,
)
from genlab.evaluation.text import (
    LikelihoodScore,
    bits_per_byte,
    continuation_pairs,
    corpus_bleu,
    corpus_chrf,
    perplexity,
    score_lm,
    sentence_bleu,
    sentence_chrf,
    target_byte_counter,
    token_nll,
    utf8_byte_count,
)

# Names served lazily by __getattr__ below (module that defines them).
_LAZY = {
    "evaluate_run": "genlab.evaluation.run",
    "load_run_model": "genlab.evaluation.run",
    "print_table": "genlab.evaluation.report",
    "write_metrics_json": "genlab.evaluation.report",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genlab.evaluation' has no attribute {name!r}")


__all__ = [
    "IMAGE_PERTURBATIONS",
    "TEXT_PERTURBATIONS",
    "FeatureClassifier",
    "LikelihoodScore",
    "MetricResult",
    "bits_per_byte",
    "blur",
    "case_change",
    "char_noise",
    "classification_report",
    "classifier_score",
    "continuation_pairs",
    "corpus_bleu",
    "corpus_chrf",
    "digits_dataset",
    "evaluate_run",
    "feature_stats",
    "fid",
    "frechet_distance",
    "gaussian_noise",
    "image_metric_results",
    "kid",
    "load_or_train_feature_classifier",
    "load_run_model",
    "perplexity",
    "plot_robustness",
    "precision_recall_density_coverage",
    "print_table",
    "robustness_table",
    "score_lm",
    "sentence_bleu",
    "sentence_chrf",
    "shift",
    "target_byte_counter",
    "token_nll",
    "typos",
    "utf8_byte_count",
    "word_drop",
    "write_metrics_json",
]
