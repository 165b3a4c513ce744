"""The render pass output and the tool_summary that feeds it (contract.md sections 2.3 and 5)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.widgets import Envelope


class ToolSummaryIn(BaseModel):
    """A tool_summary as callers send it: ``{ok, tool, data}``; provider extras (``isError``) allowed."""

    model_config = ConfigDict(extra="allow")

    ok: bool = True
    tool: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class ToolSummary(BaseModel):
    """A tool_summary as the deterministic fixtures produce it."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    tool: str
    data: dict[str, Any]


class RenderOutput(BaseModel):
    """``{bot_message, widgets: [Envelope] (1 or 2)}``."""

    model_config = ConfigDict(extra="forbid")

    bot_message: str
    widgets: Annotated[list[Envelope], Field(min_length=1, max_length=2)]
