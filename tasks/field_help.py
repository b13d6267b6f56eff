"""One sentence per parameter that several endpoints share (what it does, its usual value, where it makes sense):
shown under the control, in the MCP tool description and in docs/api.md. A field's own ``info`` takes precedence;
guidance parameters carry theirs in the registry (``RuleParam.info``).
"""

from __future__ import annotations

FIELD_HELP: dict[str, str] = {}
