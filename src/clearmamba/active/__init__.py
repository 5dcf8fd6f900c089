"""Active learning: uncertainty-driven acquisition of the next examples to label."""

from clearmamba.active.acquisition import ACQUISITIONS, acquisition_scores, select_top_k

__all__ = ["ACQUISITIONS", "acquisition_scores", "select_top_k"]
