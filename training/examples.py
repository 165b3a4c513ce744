"""Training examples: the same prompt serializer as serving, and completion-only token labels.

For each labelled record the extract example is the compact extract prompt and the
:func:`engines.slm.extract_plan.plan_of` plan; the render example is the compact render prompt
(labelled extraction and tool summary) and the render plan of the labelled answer. Prompts are
rendered by the tokenizer's chat template with the generation header, exactly as the adapters do
(``apply_chat_template(..., add_generation_prompt=True)``); the completion is tokenized on its
own, as it is generated after the prompt, and ends with the end-of-turn token.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from engines.slm import prompts
from engines.slm.extract_plan import plan_of


def render_plan_of(render: dict[str, Any]) -> dict[str, Any]:
    """The plan-mode document of a rendered answer: bot message and (widget_type, variant) pairs."""
    return {"bot_message": render["bot_message"],
            "widgets": [{"widget_type": w["widget_type"], "variant": w["variant"]} for w in render["widgets"]]}


def pass_examples(record: dict[str, Any]) -> dict[str, tuple[list[dict[str, str]], str]]:
    """``pass -> (messages, completion text)`` for one labelled record (the turn as an engine reads it)."""
    from contracts.turn import Turn

    turn = Turn.model_validate(record["input"]).engine_input()
    expected = record["expected"]
    return {
        "extract": (prompts.extract_messages(turn, "compact", plan=True),
                    prompts.completion(plan_of(turn, expected["extract"]))),
        "render": (prompts.render_messages(turn, expected["extract"], expected["tool_summary"], style="compact"),
                   prompts.completion(render_plan_of(expected["render"]))),
    }


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    pass_name: str


def tokenize(tokenizer: Any, messages: list[dict[str, str]], completion: str, pass_name: str) -> Example:
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    done = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        done.append(eos)
    return Example(prompt_ids + done, [-100] * len(prompt_ids) + done, pass_name)


MAX_COPIES: dict[str, int] = {"extract": 2, "render": 30}
"""How often one example may repeat word for word. The corpora repeat short turns many times: extra
copies cost training time and teach nothing new. Render inputs are few (intent, tool, status,
counts), so each distinct one is kept more often, or the rare answers would be drowned out."""


def build_examples(tokenizer: Any, records: list[dict[str, Any]], *, render_share: float, seed: int,
                   max_copies: dict[str, int] | None = None) -> list[Example]:
    """Every record's extract example, and render examples from a seeded ``render_share`` of records.

    The render plan is a function of the intent and the tool result's status, so a share of the
    records teaches it (the synthetic records, balanced over classes, bring the rare intents).
    """
    limits = {**MAX_COPIES, **(max_copies or {})}
    rng = random.Random(seed)
    seen: Counter[str] = Counter()
    out = []
    for record in records:
        per_pass = pass_examples(record)
        chosen = ["extract", "render"] if rng.random() < render_share else ["extract"]
        for pass_name in chosen:
            messages, done = per_pass[pass_name]
            key = pass_name + "\0" + messages[-1]["content"] + "\0" + done
            seen[key] += 1
            if seen[key] <= limits[pass_name]:
                out.append(tokenize(tokenizer, messages, done, pass_name))
    return out


def length_grouped_batches(examples: list[Example], batch_size: int, seed: int, group: int = 64) -> list[list[int]]:
    """Shuffled batches of similar lengths: shuffle, sort within groups of ``group`` batches, shuffle batches."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    span = batch_size * group
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: len(examples[i].input_ids))
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches
