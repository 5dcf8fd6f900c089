"""Broken PDFs that a run must record and skip, for tests and benchmarks."""

from __future__ import annotations

import io
import zlib
from pathlib import Path


def write_bad_pdfs(out_dir: str | Path, good: Path) -> dict[str, Path]:
    """Broken inputs that a run must record and skip: encrypted, truncated, not a PDF, a decompression bomb
    (a 20000 x 20000 Flate image that decodes to 400 MB from a few hundred kB) and a huge page."""
    import pypdf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    files = {}
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt("secret-user-password")
    buf = io.BytesIO()
    writer.write(buf)
    files["encrypted"] = out / "bad_encrypted.pdf"
    files["encrypted"].write_bytes(buf.getvalue())
    files["truncated"] = out / "bad_truncated.pdf"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["not_pdf"] = out / "bad_not_a.pdf"
    files["not_pdf"].write_bytes(b"<html>this is not a pdf</html>\n" * 10)
    side = 20000
    comp = zlib.compressobj(9)
    row = bytes(side)
    stream = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    files["bomb"] = out / "bad_bomb.pdf"
    files["bomb"].write_bytes(
        _raw_pdf(
            f"/Type /XObject /Subtype /Image /Width {side} /Height {side} "
            f"/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode",
            stream,
            media=(0, 0, 595, 842),
        )
    )
    files["huge_page"] = out / "bad_huge_page.pdf"
    files["huge_page"].write_bytes(
        _raw_pdf(
            "/Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray /BitsPerComponent 8",
            b"\x00",
            media=(0, 0, 200000, 200000),
        )
    )
    return files


def _raw_pdf(image_dict: str, image_stream: bytes, media: tuple) -> bytes:
    """A minimal one-page PDF whose page paints one image over the whole media box, with a correct xref."""
    w, h = media[2], media[3]
    content = f"q {w} 0 0 {h} 0 0 cm /Im0 Do Q".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [{' '.join(map(str, media))}] "
            f"/Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>"
        ).encode(),
        f"<< {image_dict} /Length {len(image_stream)} >>\nstream\n".encode() + image_stream + b"\nendstream",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
