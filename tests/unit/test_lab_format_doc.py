"""docs/lab-format.md is what scripts/lab-format-doc makes of labs/lab.schema.json: they cannot drift."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lab_format_page_matches_the_schema():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "lab-format-doc"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_page_names_every_field_of_the_schema():
    import json
    schema = json.loads((ROOT / "labs" / "lab.schema.json").read_text())
    page = (ROOT / "docs" / "lab-format.md").read_text()
    fields = list(schema["properties"]) + [field for name in ("step", "check", "install")
                                           for field in schema["$defs"][name]["properties"]]
    assert [field for field in fields if f"| `{field}` |" not in page] == []
