"""Trust report: one self-contained HTML page on how far each model's answers can be trusted.

``write_report(path, predictions, class_names=..., rules={model: ReferralRule}, provenance=Provenance(...))``
writes it, leading with each checkpoint's operating point and the exams to refer; ``compute_report_metrics(...)``
returns the numbers it shows (for a ``metrics.json``). Matplotlib and Jinja2 are imported only when a page is
drawn.
"""

from clearmamba.report.metrics import compute_report_metrics, headline_metrics
from clearmamba.report.provenance import Provenance
from clearmamba.report.referral_view import GalleryExam
from clearmamba.report.render import render_report, rule_metrics, write_report
from clearmamba.report.summary import take_home_messages

__all__ = [
    "GalleryExam",
    "Provenance",
    "compute_report_metrics",
    "headline_metrics",
    "render_report",
    "rule_metrics",
    "take_home_messages",
    "write_report",
]
