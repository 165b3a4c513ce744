"""The pass contracts as the JSON Schemas that constrain decoding: typed, strict and back again.

One home for the schema forms that the ``openai`` engine, the slm grammars and the OpenAI API share
(they used to be built in each):

- :func:`contract_model` / :func:`contract_schema`: the pass contract as validated
  (:class:`contracts.extract.ExtractOutput`, :class:`contracts.render.RenderOutput`);
- :func:`typed_model` / :func:`typed_schema`: the same contract with every render envelope typed by its
  ``widget_type`` (the union :data:`contracts.render.TypedEnvelope` of
  :data:`contracts.widgets.TYPED_ENVELOPES`); :func:`decoded_render_model` is that union as the slm's
  full-render grammar decodes it (closed, a plain ``anyOf``);
- :func:`strict_schema`: the *strict form* OpenAI structured outputs need (every object closed, every key
  required, optional keys made nullable, ``oneOf`` as ``anyOf``, only the formats OpenAI accepts), and
  :func:`destrict`, which maps an answer in that form back to the contract (the nulls it added dropped);
- :func:`schema_matches_contract`: whether a schema a client sent is (semantically) the pass contract.

Everything here is derived from the contract models, cached, and returned as a fresh copy.
"""

from __future__ import annotations

import contextlib
import copy
import json
import typing
from collections.abc import Iterator
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from contracts.extract import ExtractOutput
from contracts.render import RenderOutput, TypedEnvelope
from contracts.vocab import PASSES

#: JSON Schema keywords whose value is a map of name -> subschema.
SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
#: keywords whose value is one subschema.
SCHEMA_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
              "unevaluatedProperties", "unevaluatedItems")
#: keywords whose value is a list of subschemas.
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
#: annotations: ignored when schemas are compared.
ANNOTATIONS = frozenset({"title", "description", "examples", "$schema", "$id", "$comment"})
#: string formats OpenAI structured outputs accept.
OPENAI_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
#: "any value" in the strict form, which cannot say "anything" (an open object is not allowed)
_ANY_SCALAR: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}
#: the exported contract files (``travel-slm schemas``), accepted as the contract too
_EXPORTED = Path(__file__).resolve().parent / "schemas"


# --- the models ----------------------------------------------------------------------------------------


def contract_model(pass_: str) -> type[BaseModel]:
    """The pass contract as validated: ``ExtractOutput`` for ``extract``, ``RenderOutput`` otherwise."""
    return ExtractOutput if pass_ == "extract" else RenderOutput


def _typed_render(name: str, envelope: Any, config: ConfigDict | None) -> type[BaseModel]:
    """``{bot_message, widgets: [envelope] (1 or 2)}``: the render output over a typed envelope union."""
    return create_model(  # type: ignore[call-overload, no-any-return]
        name,
        __config__=config,
        bot_message=(str, ...),
        widgets=(Annotated[list[envelope], Field(min_length=1, max_length=2)], ...),  # type: ignore[valid-type]
    )


@lru_cache(maxsize=2)
def typed_model(pass_: str) -> type[BaseModel]:
    """The pass output with every payload typed: the render envelopes as the discriminated union
    :data:`contracts.render.TypedEnvelope` (the strict form is derived from this model)."""
    if pass_ == "extract":
        return contract_model("extract")
    return _typed_render("RenderOutputTyped", TypedEnvelope, None)


@cache
def decoded_render_model() -> type[BaseModel]:
    """The typed render output as the slm's full-render grammar decodes it: closed, and the envelope
    union as a plain ``anyOf`` (xgrammar decodes no discriminator; the fallback layer validates after)."""
    plain_union = typing.get_args(TypedEnvelope)[0]  # the Union inside Annotated[..., discriminator]
    return _typed_render("FullRender", plain_union, ConfigDict(extra="forbid"))


# --- the schemas (cached as text; every call returns a fresh copy) ----------------------------------------


@lru_cache(maxsize=2)
def _contract_schema_text(pass_: str) -> str:
    return json.dumps(contract_model(pass_).model_json_schema())


@lru_cache(maxsize=2)
def _typed_schema_text(pass_: str) -> str:
    return json.dumps(typed_model(pass_).model_json_schema())


@lru_cache(maxsize=2)
def _strict_schema_text(pass_: str) -> str:
    schema = json.loads(_typed_schema_text(pass_))
    return json.dumps(_strictify(schema, schema.get("$defs", {})))


def contract_schema(pass_: str) -> dict[str, Any]:
    """The pass contract as JSON Schema (``ExtractOutput`` / ``RenderOutput``)."""
    return json.loads(_contract_schema_text(pass_))  # type: ignore[no-any-return]


def typed_schema(pass_: str) -> dict[str, Any]:
    """The JSON Schema of :func:`typed_model`."""
    return json.loads(_typed_schema_text(pass_))  # type: ignore[no-any-return]


def strict_schema(pass_: str) -> dict[str, Any]:
    """The OpenAI strict form of the pass contract (what the ``openai`` engine sends)."""
    return json.loads(_strict_schema_text(pass_))  # type: ignore[no-any-return]


def warm(passes: tuple[str, ...] = PASSES) -> None:
    """Build the cached schemas now, so that the first request does not pay for them."""
    for pass_ in passes:
        _strict_schema_text(pass_)
        _typed_schema_text(pass_)


def schema_nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every object in a JSON document (a schema: every subschema, and every object inside a keyword's value)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from schema_nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from schema_nodes(value)


# --- the strict form -------------------------------------------------------------------------------------


def resolve(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with its local ``$ref`` chain followed into ``defs`` (at most 32 hops)."""
    seen = 0
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and seen < 32:
        ref = node["$ref"]
        name = ref.rsplit("/", 1)[-1]
        if not ref.startswith("#/$defs/") or name not in defs:
            return node
        node = defs[name]
        seen += 1
    return node


def _allows_null(node: Any, defs: dict[str, Any]) -> bool:
    node = resolve(node, defs)
    if not isinstance(node, dict):
        return True
    if not node or set(node) <= ANNOTATIONS:
        return True  # any value
    kind = node.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if "const" in node and node["const"] is None:
        return True
    if isinstance(node.get("enum"), list) and None in node["enum"]:
        return True
    return any(_allows_null(b, defs) for key in ("anyOf", "oneOf") for b in node.get(key, []) or [])


def _strictify(node: Any, defs: dict[str, Any]) -> Any:
    if not isinstance(node, dict):
        return node
    if not node or set(node) <= ANNOTATIONS:
        return copy.deepcopy(_ANY_SCALAR)  # "any value" is not expressible in strict mode
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("default", "discriminator", "examples"):
            continue
        if key == "format" and value not in OPENAI_FORMATS:
            continue
        if key == "oneOf":
            key = "anyOf"
        if key == "const":
            out["enum"] = [value]
            continue
        if key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _strictify(sub, defs) for name, sub in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_strictify(sub, defs) for sub in value]
        elif key in SCHEMA_ONE and isinstance(value, dict):
            out[key] = _strictify(value, defs)
        else:
            out[key] = copy.deepcopy(value)
    is_object = out.get("type") == "object" or "properties" in out
    if is_object:
        props: dict[str, Any] = out.get("properties") or {}
        required = set(node.get("required") or [])
        for name, sub in list(props.items()):
            if name not in required and not _allows_null(node["properties"][name], defs):
                props[name] = {"anyOf": [sub, {"type": "null"}]}
        out["type"] = "object"
        out["properties"] = props
        out["required"] = list(props)
        out["additionalProperties"] = False
        out.pop("patternProperties", None)
    return out


# --- back from the strict form ---------------------------------------------------------------------------


def destrict(pass_: str, document: Any) -> Any:
    """Drop the ``null`` values of optional keys (the strict form makes every key required); guided by the typed schema."""
    schema = json.loads(_typed_schema_text(pass_))
    return _destrict(document, schema, schema.get("$defs", {}))


def _branch_matches(value: Any, branch: Any, defs: dict[str, Any]) -> bool:
    branch = resolve(branch, defs)
    if not isinstance(branch, dict):
        return True
    kind = branch.get("type")
    if isinstance(value, dict):
        if kind not in (None, "object") and not (isinstance(kind, list) and "object" in kind):
            return False
        props = branch.get("properties") or {}
        for name, sub in props.items():
            sub = resolve(sub, defs)
            if name in value and isinstance(sub, dict):
                if "const" in sub and value[name] != sub["const"]:
                    return False
                if isinstance(sub.get("enum"), list) and value[name] not in sub["enum"]:
                    return False
        if branch.get("additionalProperties") is False and props and any(k not in props for k in value):
            return False
        return all(name in value for name in branch.get("required") or [])
    if isinstance(value, list):
        return kind in (None, "array")
    return kind != "object" and kind != "array"


def _destrict(value: Any, schema: Any, defs: dict[str, Any]) -> Any:
    schema = resolve(schema, defs)
    if not isinstance(schema, dict):
        return value
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list):
        if value is None:
            return None
        for branch in branches:
            if _branch_matches(value, branch, defs):
                return _destrict(value, branch, defs)
        return value
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        for key, sub in value.items():
            spec = props.get(key)
            if spec is None:
                out[key] = sub
            elif sub is None and key not in required:
                # The strict form makes every key required; an optional key the model had no value for
                # comes back as null. The oracle never writes null into an optional key, so drop it.
                continue
            else:
                out[key] = _destrict(sub, spec, defs)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_destrict(item, schema["items"], defs) for item in value]
    return value


# --- is this schema the contract? ------------------------------------------------------------------------


def normalize_schema(node: Any) -> Any:
    """A schema without annotations (title, description, $schema, ...), for semantic comparison."""
    if isinstance(node, list):
        return [normalize_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ANNOTATIONS:
            continue
        if key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: normalize_schema(sub) for name, sub in value.items()}
        elif key in ("required", "enum") and isinstance(value, list):
            out[key] = sorted(value, key=lambda v: json.dumps(v, sort_keys=True))
        else:
            out[key] = normalize_schema(value)
    return out


@lru_cache(maxsize=2)
def _accepted(pass_: str) -> tuple[str, ...]:
    candidates: list[Any] = [
        contract_model(pass_).model_json_schema(),
        contract_model(pass_).model_json_schema(mode="serialization"),
        typed_schema(pass_),
        strict_schema(pass_),
    ]
    exported = _EXPORTED / f"{pass_}_output.schema.json"
    if exported.is_file():
        with contextlib.suppress(OSError, ValueError):
            candidates.append(json.loads(exported.read_text(encoding="utf-8")))
    return tuple(json.dumps(normalize_schema(c), sort_keys=True) for c in candidates)


def schema_matches_contract(pass_: str, schema: Any) -> bool:
    """Whether ``schema`` is (semantically) the pass contract: the pydantic schema, the exported file,
    the typed form or the strict form; annotations and key order are ignored."""
    if not isinstance(schema, dict):
        return False
    return json.dumps(normalize_schema(schema), sort_keys=True) in _accepted(pass_)
