"""Evaluation: faithfulness and plausibility metrics, ``heta eval``'s harness and the heta-demo model.

``metrics`` (rankings, hit@k, F1, DSA, AOPC), ``faithfulness`` (Soft-NC/NS, comprehensiveness,
sufficiency, deletion/insertion curves), ``stats`` (rank agreement), ``harness`` (datasets,
``evaluate``, the report) and ``demo`` (the builtin model's task and training).
"""

from .harness import EvalSettings, Item, bootstrap_ci, evaluate, metric_names, prepare, qa_items, render, synthetic_items

__all__ = ["EvalSettings", "Item", "bootstrap_ci", "evaluate", "metric_names", "prepare", "qa_items", "render", "synthetic_items"]
