"""README's example of the shipped fakes runs as written (section "Test fakes")."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).parents[3] / "README.md").read_text()


def test_the_readme_example_runs() -> None:
    section = README.split("### Test fakes (`sidecar.testing`)", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None, "the section lost its example"
    code = found.group(1)
    assert "clock.run(main())" in code
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
