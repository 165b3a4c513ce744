"""The greedy decode loop the transformers and mlx adapters share (:mod:`adapters.decode`), on a scripted model.

The model here is a script: after any prefix it prefers the next token of ``TARGET``; the grammar accepts
``TARGET`` and nothing else. What the loop must guarantee whatever the runtime: the output is single stepping's,
drafts save steps without changing it, a rejected draft leaves the KV cache, and the limits hold.
"""

from __future__ import annotations

from typing import Any

import pytest

from adapters.decode import greedy_decode

PROMPT = [1, 2, 3]
TARGET = [10, 11, 12, 13, 14, 15, 16, 17]
STOP = 0


class Matcher:
    """A grammar that accepts TARGET exactly (then it is terminated)."""

    def __init__(self, target: list[int] = TARGET) -> None:
        self.target = target
        self.pos = 0

    def accept_token(self, token: int) -> bool:
        if self.pos < len(self.target) and token == self.target[self.pos]:
            self.pos += 1
            return True
        return False

    def is_terminated(self) -> bool:
        return self.pos == len(self.target)

    def is_completed(self) -> bool:
        return self.is_terminated()


class Runtime:
    """A KV cache as a token list; the model prefers ``prefers(generated)`` (default: the next TARGET token, then
    STOP)."""

    def __init__(self, prefers: Any = None) -> None:
        self.cache: list[int] = []
        self.forwards: list[list[int]] = []
        self.rewinds: list[int] = []
        self.prefers = prefers or (lambda done: TARGET[len(done)] if len(done) < len(TARGET) else STOP)

    def forward(self, tokens: list[int], rows: int) -> list[int]:
        self.forwards.append(list(tokens))
        self.cache.extend(tokens)
        # the choice after each of the last `rows` positions
        return [self.prefers(self.cache[len(PROMPT):len(self.cache) - rows + 1 + r]) for r in range(rows)]

    def choose(self, logits: list[int], i: int) -> int:
        return logits[i]

    def rewind(self, count: int) -> None:
        self.rewinds.append(count)
        del self.cache[-count:]


def _run(runtime: Runtime, matcher: Matcher | None, *, max_new: int = 32, draft: Any = None, **kw: Any) -> Any:
    return greedy_decode(list(PROMPT), forward=runtime.forward, choose=runtime.choose, rewind=runtime.rewind,
                         matcher=matcher, stop_ids={STOP}, max_new_tokens=max_new, draft=draft, **kw)


def _forced_after(matcher: Matcher, spans: dict[int, list[int]]) -> Any:
    """The grammar's forced continuation: ``spans[position]`` when the matcher is at that position."""
    return lambda budget: spans.get(matcher.pos, [])[:budget]


def test_single_stepping_reaches_the_end_of_the_grammar() -> None:
    runtime, matcher = Runtime(), Matcher()
    out = _run(runtime, matcher)
    assert out.tokens == TARGET and out.finish_reason == "stop"
    assert out.model_steps == len(TARGET)  # the prefill yields the first token; the grammar ends the last
    assert out.forced_tokens == out.drafted_tokens == 0 and out.time_to_first_token_s is not None
    assert runtime.forwards[0] == PROMPT and runtime.cache == PROMPT + TARGET[:-1]


def test_accepted_drafts_save_steps_and_change_nothing() -> None:
    plain = _run(Runtime(), Matcher())
    runtime, matcher = Runtime(), Matcher()
    jumped = _run(runtime, matcher, draft=_forced_after(matcher, {1: [11, 12, 13], 5: [15, 16]}))
    assert jumped.tokens == plain.tokens and jumped.finish_reason == plain.finish_reason
    assert jumped.forced_tokens == 5 and jumped.drafted_tokens == 5
    assert jumped.model_steps == plain.model_steps - 5
    assert jumped.model_steps + jumped.forced_tokens == len(jumped.tokens)  # each step yields one own token
    assert runtime.forwards[1] == [10, 11, 12, 13] and runtime.rewinds == []


def test_a_rejected_draft_takes_the_models_own_choice_and_leaves_the_cache() -> None:
    runtime, matcher = Runtime(), Matcher()
    # at position 1 the forced run is tokenized differently from what the model writes: 11 then 99 (not 12)
    out = _run(runtime, matcher, draft=_forced_after(matcher, {1: [11, 99, 98]}))
    assert out.tokens == TARGET and out.finish_reason == "stop"
    assert out.forced_tokens == 1 and out.drafted_tokens == 3
    assert runtime.rewinds == [2]  # 99 and 98 left the cache
    assert 99 not in runtime.cache and 98 not in runtime.cache
    # the model's choice after 11 (12) came from the same step: the next step feeds it
    assert runtime.forwards[2][0] == 12


def test_unverified_drafts_commit_the_grammars_tokenization() -> None:
    runtime, matcher = Runtime(), Matcher()
    out = _run(runtime, matcher, draft=_forced_after(matcher, {1: [11, 12, 99]}), verify_drafts=False)
    assert out.tokens == TARGET and out.forced_tokens == 2 and runtime.rewinds == [1]


def test_the_token_limit_ends_the_output_in_a_draft_too() -> None:
    plain = _run(Runtime(), Matcher(), max_new=3)
    assert plain.tokens == TARGET[:3] and plain.finish_reason == "length"
    runtime, matcher = Runtime(), Matcher()
    jumped = _run(runtime, matcher, max_new=3, draft=_forced_after(matcher, {1: [11, 12, 13, 14]}))
    assert jumped.tokens == TARGET[:3] and jumped.finish_reason == "length"
    # the draft leaves room for the model's own token of the same step: one forced, then the limit
    assert runtime.forwards[1] == [10, 11] and jumped.forced_tokens == 1
    assert jumped.model_steps + jumped.forced_tokens == len(jumped.tokens)


def test_unconstrained_decoding_ends_at_a_stop_token_it_does_not_emit() -> None:
    out = _run(Runtime(), None)
    assert out.tokens == TARGET and out.finish_reason == "stop" and STOP not in out.tokens
    out = _run(Runtime(), None, max_new=4, draft=lambda budget: [1, 2])  # no grammar: no draft either
    assert out.tokens == TARGET[:4] and out.forced_tokens == 0 and out.finish_reason == "length"


def test_a_grammar_that_rejects_the_masked_choice_is_loud() -> None:
    with pytest.raises(RuntimeError, match="rejected the masked choice 10"):
        _run(Runtime(), Matcher(target=[20, 21]))


def test_check_stops_between_steps() -> None:
    runtime, steps = Runtime(), []

    def check() -> None:
        steps.append(len(runtime.forwards))
        if len(steps) == 3:
            raise TimeoutError("cancelled")

    with pytest.raises(TimeoutError):
        _run(runtime, Matcher(), check=check)
    assert len(runtime.forwards) == 2 and runtime.cache == [*PROMPT, 10]


def test_the_generation_carries_the_figures() -> None:
    out = _run(Runtime(), Matcher())
    generation = out.generation("text", len(PROMPT), mask_seconds=0.5, extra={"k": 1})
    assert (generation.text, generation.finish_reason, generation.prompt_tokens, generation.completion_tokens) == (
        "text", "stop", 3, len(TARGET))
    assert generation.model_steps == out.model_steps and generation.forced_tokens == 0
    assert generation.mask_seconds == 0.5 and generation.extra == {"k": 1}
