"""docs/sam.md's example stays true: its template imports to exactly the document shown."""

from __future__ import annotations

import re
from pathlib import Path

from coalmine.integrations.sam import ImportOptions, import_template, parse_template

PAGE = Path(__file__).resolve().parents[2] / "docs" / "sam.md"


def test_the_example_template_imports_to_the_document_shown() -> None:
    template, document = re.findall(r"^```yaml\n(.*?)^```", PAGE.read_text(), re.S | re.M)[:2]
    result = import_template(
        parse_template(template, "template.yaml"), ImportOptions(stack_name="food-ordering")
    )
    assert result.document() == document
