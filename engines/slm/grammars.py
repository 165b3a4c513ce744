"""Decoding grammars of the slm engine, derived from the contract models (the single source of truth).

- ``extract``: the JSON Schema of :class:`contracts.extract.ExtractOutput` (tool enum, one argument
  schema per tool, the render-intent union), with one mechanical tightening the pydantic schema
  cannot express: ``render_intent.missing`` is a model validator (canonical order, no repeats),
  so its array schema is replaced by the enumeration of the ordered subsets of
  :data:`contracts.vocab.MISSING_VALUES`.
- ``extract_plan`` (``extract_mode=plan``): the small decision document of
  :mod:`engines.slm.extract_plan` (kind first, then slot values read from the text); the engine
  derives the contract document from it.
- ``render_plan`` (``render_mode=plan``): ``{"bot_message": <one of BOT_MESSAGES>, "widgets":
  [{"widget_type": <one of PLAN_WIDGET_TYPES>, "variant": <one of VARIANTS>}] (1-2)}``; the engine
  assembles the envelopes with the deterministic assembler.
- ``render_full`` (``render_mode=full``): ``{"bot_message": str, "widgets": [typed envelope] (1-2)}``:
  :func:`contracts.strict.decoded_render_model`, the typed render output the ``openai`` engine's strict
  form is derived from too.

xgrammar treats ``oneOf`` as ``anyOf`` (:func:`as_decoded` writes it so), and a length stop can
cut any document short, so the fallback layer validates every output after decoding.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from contracts.extract import ExtractOutput
from contracts.strict import decoded_render_model, schema_nodes
from contracts.vocab import MISSING_VALUES

EXTRACT = "extract"
EXTRACT_PLAN = "extract_plan"
RENDER_PLAN = "render_plan"
RENDER_FULL = "render_full"


def render_key(render_mode: str) -> str:
    return RENDER_PLAN if render_mode == "plan" else RENDER_FULL


def extract_key(extract_mode: str) -> str:
    """``plan``: the model writes an :mod:`engines.slm.extract_plan` document; ``full``: the contract document."""
    return EXTRACT_PLAN if extract_mode == "plan" else EXTRACT


def _ordered_subsets(values: tuple[str, ...]) -> list[list[str]]:
    return [list(c) for n in range(1, len(values) + 1) for c in itertools.combinations(values, n)]


@functools.cache
def extract_schema() -> dict[str, Any]:
    schema = ExtractOutput.model_json_schema(by_alias=True)
    subsets = _ordered_subsets(MISSING_VALUES)
    tightened = 0
    for node in schema_nodes(schema):
        props = node.get("properties")
        if isinstance(props, dict) and "missing" in props and props.get("kind", {}).get("const") == "collect_missing":
            props["missing"] = {"enum": subsets, "title": props["missing"].get("title", "Missing")}
            tightened += 1
    if tightened != 1:  # the contract changed shape: fail loudly rather than decode a looser grammar
        raise RuntimeError("could not locate render_intent.missing in the ExtractOutput schema")
    return schema


# --- render plan -------------------------------------------------------------------------------------


@functools.cache
def _plan_models() -> tuple[type[BaseModel], type[BaseModel]]:
    from engines.deterministic.render import BOT_MESSAGES, PLAN_WIDGET_TYPES, VARIANTS

    widget = create_model(
        "PlannedWidget",
        __config__=ConfigDict(extra="forbid"),
        widget_type=(Literal[PLAN_WIDGET_TYPES], ...),  # type: ignore[valid-type]
        variant=(Literal[VARIANTS], ...),  # type: ignore[valid-type]
    )
    plan = create_model(
        "RenderPlan",
        __config__=ConfigDict(extra="forbid"),
        bot_message=(Literal[BOT_MESSAGES], ...),  # type: ignore[valid-type]
        widgets=(Annotated[list[widget], Field(min_length=1, max_length=2)], ...),  # type: ignore[valid-type]
    )
    return widget, plan


def plan_model() -> type[BaseModel]:
    """The pydantic model of a render plan (validates what the model emitted in plan mode)."""
    return _plan_models()[1]


@functools.cache
def plan_schema() -> dict[str, Any]:
    return plan_model().model_json_schema()


# --- full render -------------------------------------------------------------------------------------


@functools.cache
def full_schema() -> dict[str, Any]:
    return decoded_render_model().model_json_schema()


def schema_for(key: str) -> dict[str, Any]:
    if key == EXTRACT:
        return copy.deepcopy(extract_schema())
    if key == EXTRACT_PLAN:
        from engines.slm.extract_plan import plan_schema as extract_plan_schema

        return copy.deepcopy(extract_plan_schema())
    if key == RENDER_PLAN:
        return copy.deepcopy(plan_schema())
    if key == RENDER_FULL:
        return copy.deepcopy(full_schema())
    raise KeyError(f"unknown grammar {key!r}")


def as_decoded(node: Any, parent: str | None = None) -> Any:
    """``node`` with every ``oneOf`` written as the ``anyOf`` that xgrammar decodes it as.

    xgrammar cannot enforce "exactly one branch" and says so on every compile (vLLM compiles per
    request); the grammar states what decoding enforces, and exclusivity is checked after decoding
    by the contract validation of the fallback layer. Property names are left alone.
    """
    if isinstance(node, dict):
        return {("anyOf" if k == "oneOf" and parent != "properties" else k): as_decoded(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [as_decoded(v) for v in node]
    return node


def schema_texts(render_mode: str, extract_mode: str = "full") -> dict[str, str]:
    """The grammars one engine needs, as JSON Schema text keyed by grammar name."""
    keys = (extract_key(extract_mode), render_key(render_mode))
    return {key: json.dumps(as_decoded(schema_for(key)), separators=(",", ":"), sort_keys=False) for key in keys}
