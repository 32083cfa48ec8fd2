"""AWS SAM templates imported as coalmine config: ``coalmine import sam TEMPLATE``.

=================  ===========================================================
module             owns
=================  ===========================================================
``template``       reading YAML or JSON, CloudFormation's short tags, places
``intrinsics``     resolving ``Ref``, ``Fn::Sub``, ``Fn::If``... offline
``merge``          ``Globals.Function`` merged into each function (SAM's rules)
``names``          coalmine names from logical ids and descriptions
``preference``     the functions' deployment preferences made one release
``convert``        the template made a coalmine.yaml, with notes
=================  ===========================================================

Needs PyYAML (the ``aws`` extra). Nothing here calls AWS: what only AWS knows
is reported, never guessed.
"""

from __future__ import annotations

from coalmine.integrations.sam.convert import ImportOptions, SamImport, import_template
from coalmine.integrations.sam.intrinsics import Pseudo, Resolver, Unresolved
from coalmine.integrations.sam.template import (
    SERVERLESS_TRANSFORM,
    Template,
    TemplateError,
    parse_template,
    read_template,
)

__all__ = [
    "SERVERLESS_TRANSFORM",
    "ImportOptions",
    "Pseudo",
    "Resolver",
    "SamImport",
    "Template",
    "TemplateError",
    "Unresolved",
    "import_template",
    "parse_template",
    "read_template",
]
