"""Reproducible studies on real offline data: ``edl_mnist`` (evidential MNIST with OOD sets and the rotating
digit) and ``active_learning`` (uncertainty-driven labelling). Run them with ``clearmamba experiment`` and
``clearmamba active``; nothing here is imported by the core."""
