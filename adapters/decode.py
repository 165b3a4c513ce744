"""The greedy decode loop the transformers and mlx adapters share: grammar, jump-forward, draft verification.

A runtime gives the loop three operations on its model and KV cache, and the loop does the rest:

- ``forward(tokens, rows)``: feed ``tokens`` (appending them to the KV cache) and return the logits of the last
  ``rows`` positions, in whatever form ``choose`` reads;
- ``choose(logits, i)``: the greedy choice on row ``i``, under the grammar's mask when decoding is constrained
  (the runtime fills the mask from the matcher's current state);
- ``rewind(count)``: drop the last ``count`` fed tokens from the KV cache.

Each step feeds the last committed token and the grammar's forced continuation after it (the *draft*,
:func:`adapters.xgrammar_support.jump_forward_draft`); a draft token is committed only when it is the model's
own masked greedy choice at its position and the grammar accepts it, and at the first mismatch the model's
choice (already computed: no extra step) is taken instead and the rest of the draft leaves the cache. The
output is therefore token for token that of single stepping, with one model step per forced run; every step
also yields one token of the model's own (``model_steps + forced_tokens == completion tokens``), except a step
whose draft ends the grammar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from adapters.base import Generation


@dataclass
class Decoded:
    """What one greedy decode produced: the tokens and how they came."""

    tokens: list[int]
    finish_reason: str
    """``stop`` (the grammar ended, or a stop token) or ``length`` (``max_new_tokens`` reached)."""
    model_steps: int
    """Forward passes, the prefill included."""
    forced_tokens: int
    """Draft tokens committed without a step of their own."""
    drafted_tokens: int
    """Draft tokens fed (committed or not)."""
    time_to_first_token_s: float | None
    prefill_s: float

    def generation(self, text: str, prompt_tokens: int, *, mask_seconds: float, extra: dict[str, Any]) -> Generation:
        """The adapter's answer: ``text`` (the decoded tokens) with the figures of this decode."""
        return Generation(
            text=text,
            finish_reason=self.finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(self.tokens),
            time_to_first_token_s=self.time_to_first_token_s,
            mask_seconds=mask_seconds,
            forced_tokens=self.forced_tokens,
            model_steps=self.model_steps,
            extra=extra,
        )


def greedy_decode(
    prompt: list[int],
    *,
    forward: Callable[[list[int], int], Any],
    choose: Callable[[Any, int], int],
    rewind: Callable[[int], None],
    matcher: Any | None,
    stop_ids: Collection[int],
    max_new_tokens: int,
    draft: Callable[[int], list[int]] | None = None,
    verify_drafts: bool = True,
    check: Callable[[], None] = lambda: None,
    started: float | None = None,
) -> Decoded:
    """Decode greedily after ``prompt`` (the prompt tokens not yet in the KV cache; at least one).

    ``matcher``: the request's xgrammar matcher (None: unconstrained); ``stop_ids``: tokens that end the output
    (not part of it); ``draft(budget)``: the forced continuation after the matcher's state, at most ``budget``
    tokens (None: no jump-forward); ``verify_drafts=False`` commits the grammar's own tokenization of a forced
    run without comparing it with the model's choices (fewer steps, the output may differ from greedy);
    ``check()`` runs before every step and raises to stop (a cancelled request); ``started``: the
    ``time.perf_counter()`` instant the time to first token counts from (default: now).
    """
    started = time.perf_counter() if started is None else started
    out: list[int] = []
    steps = forced = drafted = 0
    ttft: float | None = None
    prefill_s = 0.0
    pending, n_draft = list(prompt), 0

    def done() -> bool:
        return matcher is not None and (matcher.is_terminated() or matcher.is_completed())

    def commit(token: int) -> None:
        nonlocal ttft
        out.append(token)
        if ttft is None:
            ttft = time.perf_counter() - started

    finish = "length"
    while True:
        check()
        t0 = time.perf_counter()
        logits = forward(pending, n_draft + 1)
        if steps == 0:
            prefill_s = time.perf_counter() - t0
        steps += 1
        drafted += n_draft
        # the draft: keep each forced token the model would have chosen itself
        token: int | None = None
        accepted = 0
        for i, candidate in enumerate(pending[len(pending) - n_draft:]):
            assert matcher is not None  # drafts come from the grammar
            if verify_drafts:
                choice = choose(logits, i)
                if choice != candidate or not matcher.accept_token(candidate):
                    token = choice  # the model's own choice at this position: the next token, no extra step
                    break
            elif not matcher.accept_token(candidate):
                break
            accepted += 1
            forced += 1
            commit(candidate)
            if done() or len(out) >= max_new_tokens:
                break
        if accepted < n_draft:
            rewind(n_draft - accepted)
        if done():
            finish = "stop"
            break
        if len(out) >= max_new_tokens:
            break
        # the next token: the model's choice after the last committed one
        if token is None:
            token = choose(logits, accepted)
        if token in stop_ids:
            finish = "stop"
            break
        if matcher is not None and not matcher.accept_token(token):  # cannot happen under the mask: be loud
            raise RuntimeError(f"the grammar rejected the masked choice {token}")
        commit(token)
        if done():
            finish = "stop"
            break
        if len(out) >= max_new_tokens:
            break
        # room for the draft and for the model's own token the same step yields after it
        budget = max_new_tokens - len(out) - 1
        forced_run = draft(budget) if draft is not None and matcher is not None and budget > 0 else []
        pending, n_draft = [token, *forced_run], len(forced_run)
    return Decoded(out, finish, steps, forced, drafted, ttft, prefill_s)
