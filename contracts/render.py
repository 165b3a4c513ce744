"""The render pass output and the tool_summary that feeds it (docs/contract.md §2.3 and §5)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from contracts.widgets import TYPED_ENVELOPES, Envelope


class ToolSummaryIn(BaseModel):
    """A tool_summary as callers send it: ``{ok, tool, data}``; provider extras (``isError``) allowed."""

    model_config = ConfigDict(extra="allow")

    ok: StrictBool = True
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


TypedEnvelope = Annotated[Union[tuple(TYPED_ENVELOPES.values())], Field(discriminator="widget_type")]  # noqa: UP007


class TypedRenderOutput(BaseModel):
    """The same contract as :class:`RenderOutput`, with every envelope typed by its widget_type.

    Its JSON Schema is the exported ``render_output.schema.json`` (payload schemas inline), the schema
    of ``response_format`` and of the full-render grammar; :class:`RenderOutput` validates the same
    documents with clearer error messages.
    """

    model_config = ConfigDict(extra="forbid", title="RenderOutput")

    bot_message: str
    widgets: Annotated[list[TypedEnvelope], Field(min_length=1, max_length=2)]
