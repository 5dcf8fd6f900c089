"""Trust report: one self-contained HTML page on how far each model's answers can be trusted.

``write_report(path, predictions, class_names=...)`` writes it; ``compute_report_metrics(...)`` returns
the numbers it shows (for a ``metrics.json``). Matplotlib is imported only when figures are drawn.
"""

from clearmamba.report.metrics import compute_report_metrics, headline_metrics
from clearmamba.report.render import render_report, write_report
from clearmamba.report.summary import take_home_messages

__all__ = ["compute_report_metrics", "headline_metrics", "render_report", "take_home_messages", "write_report"]
