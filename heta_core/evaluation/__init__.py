"""Evaluation: faithfulness and plausibility metrics, ``heta eval``'s harness and suite, and the demo models.

``metrics`` (rankings, hit@k, F1, DSA, AOPC), ``faithfulness`` (Soft-NC/NS, comprehensiveness,
sufficiency, deletion/insertion curves), ``stats`` (rank agreement, Wilson intervals), ``harness`` (datasets,
``evaluate``, the report), ``suite`` (``heta eval --suite``: per-condition results with intervals and
HETA's ablations, its table and plot), ``agreement`` (``heta eval --agreement``: a quantized, bf16 or split
model against float32) and ``demo`` (the builtin models' tasks, conditions and training).
"""

from .harness import (
    EvalSettings,
    Item,
    bootstrap_ci,
    evaluate,
    example_items,
    metric_names,
    prepare,
    qa_items,
    render,
    synthetic_items,
)
from .suite import SuiteSettings, run_suite

__all__ = [
    "EvalSettings",
    "Item",
    "SuiteSettings",
    "bootstrap_ci",
    "evaluate",
    "example_items",
    "metric_names",
    "prepare",
    "qa_items",
    "render",
    "run_suite",
    "synthetic_items",
]
