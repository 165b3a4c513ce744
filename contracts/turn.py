"""The pass input: a planner turn (docs/contract.md §2.1), and the render request around it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.render import ToolSummaryIn


def unwrap_slot_state(value: Any) -> Any:
    """Unwrap the Firestore read envelope ``{found, path, document: {..., data: {...}}}``.

    ``found: false`` means an empty slot state. A flat dict (the oracle's own form) is returned
    as is; anything that is not a dict is returned unchanged so that validation can refuse it.
    """
    if isinstance(value, dict) and "found" in value and isinstance(value.get("found"), bool) and (
        "document" in value or "path" in value
    ):
        if not value["found"]:
            return {}
        document = value.get("document")
        if not isinstance(document, dict):
            return {}
        data = document.get("data")
        return data if isinstance(data, dict) else {}
    return value


class Turn(BaseModel):
    """One user turn. Unknown keys (ids, labels, provenance) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    event_type: str | None = Field(default="user_message", description="user_message, user_widget_submit, "
                            "user_widget_cta_click; any other string behaves like user_message; null means "
                            "user_message.")
    event_payload: dict[str, Any] | None = Field(default_factory=dict, description="text/message/label, "
                                                 "submitted_value/value, action_id; null means {}.")
    slot_state: dict[str, Any] | None = Field(default_factory=dict, description="Pre-turn slots: a flat dict "
                                              "or the Firestore read envelope {found, path, document: {data}}; "
                                              "null means {}.")
    tool_summary: dict[str, Any] | None = None
    tool_error: Any = None
    thread_context: list[Any] | None = None
    duffel_env: str | None = None

    @field_validator("event_type", mode="before")
    @classmethod
    def _event_type(cls, v: Any) -> Any:
        return "user_message" if v is None else v

    @field_validator("event_payload", mode="before")
    @classmethod
    def _payload(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("slot_state", mode="before")
    @classmethod
    def _slot_state(cls, v: Any) -> Any:
        return {} if v is None else unwrap_slot_state(v)

    def engine_input(self) -> dict[str, Any]:
        """The plain dict every engine reads (slot_state already unwrapped)."""
        return self.model_dump(exclude_none=True)


class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    turn: Turn


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    turn: Turn
    extraction: dict[str, Any] | None = Field(default=None, description="An extract output; computed "
                                              "with the same engine when absent.")
    tool_summary: ToolSummaryIn | None = Field(default=None, description="Falls back to turn.tool_summary, "
                                               "then to the deterministic fixture.")
