"""The core must import with torch, numpy, einops and torchmetrics alone."""

import subprocess
import sys

HEAVY = ["scipy", "sklearn", "skimage", "matplotlib", "cv2", "monai", "lightning", "fastapi", "pypdfium2", "PIL"]


def test_core_imports_without_optional_stacks():
    code = (
        "import sys\n"
        "import clearmamba.uncertainty, clearmamba.evaluation, clearmamba.models\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
