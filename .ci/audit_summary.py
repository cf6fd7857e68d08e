"""Read pip-audit's JSON report: list known vulnerabilities, and fail when there are any or
when most pinned packages could not be audited (the advisory data was out of reach: passing
then would say nothing)."""

import json
import sys
from pathlib import Path

dependencies = json.loads(Path(sys.argv[1]).read_text())["dependencies"]
audited = [d for d in dependencies if "skip_reason" not in d]
found = [(d["name"], d["version"], v) for d in audited for v in d["vulns"]]
lines = [
    f"{name}=={version}: {vuln['id']} (fixed in {', '.join(vuln['fix_versions']) or 'nothing yet'})"
    for name, version, vuln in found
]
lines.append(f"{len(audited)} of {len(dependencies)} pinned packages audited, {len(found)} known")
sys.stdout.write("\n".join(lines) + "\n")
if len(audited) < len(dependencies) // 2:
    sys.exit("most packages could not be audited: PyPI's advisory data is out of reach")
sys.exit(1 if found else 0)
