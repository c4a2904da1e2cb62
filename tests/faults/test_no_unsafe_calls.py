"""The package never unpickles files, runs shells or evaluates strings: a grep keeps it that way."""

import re
from pathlib import Path

import latentwm

UNSAFE = ["weights_only=False", "allow_pickle=True", "shell=True", "pickle.load", "eval(", "exec("]


def test_no_unsafe_calls_in_the_package():
    root = Path(latentwm.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pat in UNSAFE:
                # `eval(` / `exec(` as calls, not as the end of another name (model.eval(), _eval(...))
                rx = re.escape(pat) if pat[-1] != "(" else rf"(?<![\w.]){re.escape(pat)}"
                if re.search(rx, code.replace(" ", "") if "=" in pat else code):
                    found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not found, "unsafe calls in src/latentwm:\n" + "\n".join(found)
