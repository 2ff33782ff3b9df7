"""
pip-audit over the environment the tests ran in.

Fails (exit 1) on any dependency with a known vulnerability. pip-audit asks
PyPI's JSON API (or OSV) about each package; a machine that only reaches a
package mirror gets no answer, and pip-audit then says "No known
vulnerabilities found" about packages it never checked. So this says what
was and was not audited instead, and an audit that could not be made is
reported as such, not as a pass and not as a failure of the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> int:
    done = subprocess.run(
        [sys.executable, "-m", "pip_audit", "--format", "json", "--progress-spinner", "off"],
        capture_output=True,
        text=True,
    )
    try:
        dependencies = json.loads(done.stdout)["dependencies"]
    except (ValueError, KeyError):
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"pip-audit: NOT AUDITED, no vulnerability database reachable ({reason[:200]})")
        return 0
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    for dependency in vulnerable:
        ids = ", ".join(v["id"] for v in dependency["vulns"])
        print(f"pip-audit: {dependency['name']} {dependency.get('version', '')}: {ids}")
    if vulnerable:
        return 1
    audited = len(dependencies) - len(skipped)
    if audited == 0:
        print(
            f"pip-audit: NOT AUDITED, none of {len(dependencies)} dependencies could be looked up "
            f"({skipped[0]['skip_reason'] if skipped else 'nothing installed'})"
        )
        return 0
    print(
        f"pip-audit: {audited} dependencies audited, no known vulnerabilities"
        + (f"; {len(skipped)} could not be looked up" if skipped else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
