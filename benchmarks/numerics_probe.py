"""Which portable setting decides which op's bytes on this CPU: the numerics probe's checks
(`dlprojects.numerics.probe`) run with every portable setting, then with each one left to its
library's own choice in turn, and with torch's matrix products left on MKL. The checks whose
hashes change are the ones that setting protects here. On another vendor's CPU the libraries'
own choices differ again, so run it there too.

    python benchmarks/numerics_probe.py
"""

import json
import os
import subprocess
import sys

CHILD = r'''
import json, os, sys
import dlprojects  # sets every portable setting; the one under test is undone below
left_out = sys.argv[1]
if left_out == "products on MKL":
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_RouteWhenTorchLoads"]
elif left_out != "none":
    del os.environ[left_out]
from dlprojects.numerics import probe
print(json.dumps(probe.run()))
'''


def hashes(left_out: str) -> dict[str, str]:
    result = subprocess.run([sys.executable, "-c", CHILD, left_out], capture_output=True,
                            text=True, check=True, env={**os.environ, "DLPROJECTS_NUMERICS": ""})
    return json.loads(result.stdout.splitlines()[-1])


def main() -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from dlprojects import numerics

    machine = numerics.cpu()
    print(f"{machine['vendor']} {machine['model']} ({machine['isa']})\n")
    every = hashes("none")
    print("| left to its library | checks whose bytes change |\n|---|---|")
    for left_out in [*numerics.PORTABLE, "products on MKL"]:
        found = hashes(left_out)
        changed = [name for name in every if found[name] != every[name]]
        print(f"| {left_out} | {', '.join(changed) or 'none'} |", flush=True)


if __name__ == "__main__":
    main()
