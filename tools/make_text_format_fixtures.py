"""What real Caffe's prototxt parser (libprotobuf's C++ TextFormat) makes of number and string
literals: writes ``tests/fixtures/text_format/literals.json``.

Each literal is put in a tiny net that BVLC Caffe loads in a fresh process (a parse error aborts
Caffe): an integer as the third legacy ``input_dim`` (read back as the data blob's height), a float
as a Power layer's ``scale`` (read back from the forward on ones), a string as a layer name (read
back from ``net._layer_names`` as UTF-8 hex, or ``"not UTF-8"`` when Caffe made bytes that are not
UTF-8). Run from the repository root with the oracle
(tools/README.md)::

    GLOG_minloglevel=2 PYTHONPATH=/work/oracle/brocolli-caffe-9.0.2/python \\
      /work/oracle/venv/bin/python tools/make_text_format_fixtures.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "text_format" / "literals.json"

# positive and non-zero: a zero or negative height fails in Caffe's Reshape, not in the parser
INTEGERS = ["16", "010", "07", "0x10", "0X1F", "0x1f", "09", "08", "0128", "010.5", "1e2", "1.0",
            "1f", "12abc", "0x", "0xg", "1_000", "2147483647", "2147483648", "99999999999"]
FLOATS = ["1", "0", "0.5", ".5", "5.", "1e2", "1.e2", "1E5F", "1.5e3f", "1f", "1.5f", "0e1",
          "010", "07", "00", "0x10", "0X1F", "010.5", "00.5", "09", "09.5", "1e", "1e+", "1.5.3",
          "inf", "-inf", "Infinity", "nan", "-2.5", "1e40", "-1e40", "1e-50"]
STRINGS = [r"\x41", r"\x4", r"\101", r"\777", r"\u00e9", r"\U0001F600", r"\U0010FFFF",
           r"\uD83D\uDE00", r"\ud800", r"\udc00", r"\ud800x", r"\U0000D800", r"\U00110000",
           r"\q", r"\x", r"\u12", r"\'", r"\"", r"\?", r"\a\b\f\v"]  # fmt: skip

_RUN = r"""
import sys, tempfile, caffe
caffe.set_mode_cpu()
kind, literal = sys.argv[1], sys.argv[2]
height, scale, name = "3", "1", "p"
if kind == "int":
    height = literal
elif kind == "float":
    scale = literal
else:
    name = literal
text = ('input: "data" input_dim: 1 input_dim: 1 input_dim: %s input_dim: 1\n'
        'layer { name: "%s" type: "Power" bottom: "data" top: "out" power_param { scale: %s } }\n'
        % (height, name, scale))
with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as handle:
    handle.write(text)
net = caffe.Net(handle.name, caffe.TEST)
if kind == "int":
    print(repr(int(net.blobs["data"].shape[2])))
elif kind == "float":
    net.blobs["data"].data[...] = 1
    print(repr(float(net.forward()["out"].flat[0])))
else:
    try:
        print(repr(net._layer_names[1].encode("utf-8").hex()))
    except UnicodeDecodeError:  # Caffe took the literal; pycaffe cannot decode the bytes it made
        print(repr("not UTF-8"))
"""


def run(kind: str, literal: str) -> dict[str, object]:
    """Caffe's verdict on one literal: accepted with its value, or refused."""
    result = subprocess.run(
        [sys.executable, "-c", _RUN, kind, literal], capture_output=True, text=True, timeout=120
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode == 0 and lines:
        value = eval(lines[-1], {"inf": float("inf"), "nan": float("nan")})  # our own repr output
        if isinstance(value, float) and value != value:
            value = "nan"
        elif isinstance(value, float) and value in (float("inf"), float("-inf")):
            value = str(value)
        return {"kind": kind, "literal": literal, "accepted": True, "value": value}
    reason = next((line for line in result.stderr.splitlines() if "Error parsing" in line), "")
    return {"kind": kind, "literal": literal, "accepted": False, "caffe_error": reason.strip()[-160:]}


def main() -> int:
    import caffe  # noqa: F401  (fails early without the oracle on PYTHONPATH)

    cases = [("int", v) for v in INTEGERS] + [("float", v) for v in FLOATS] + [("string", v) for v in STRINGS]
    records = [run(kind, literal) for kind, literal in cases]
    for record in records:
        if not record["accepted"] and not record["caffe_error"]:
            raise SystemExit(f"Caffe failed on {record['literal']!r} without a parse error: check the net")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=OUT.parent, delete=False) as handle:
        json.dump({"made_by": "BVLC Caffe (libprotobuf C++ TextFormat), tools/make_text_format_fixtures.py",
                   "cases": records}, handle, indent=1)  # fmt: skip
        handle.write("\n")
    Path(handle.name).replace(OUT)
    print(f"{len(records)} literals -> {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
