"""clearmamba: medical image classifiers that can say "I don't know".

The core (``models``, ``uncertainty``, ``evaluation``) imports with torch, numpy, einops and
torchmetrics alone; the data engine, report and web extras load lazily.
"""

__version__ = "0.1.0"
