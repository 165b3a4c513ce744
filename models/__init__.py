"""Trained model packages shipped with travel-slm (written by ``travel-slm package``).

``SHIPPED`` is the default ``slm.model`` (``shipped``): a LoRA adapter over the bundled
SmolLM2-135M-Instruct, with its tokenizer, model card, evaluation report and lineage.
"""

from pathlib import Path

SHIPPED_NAME = "travel-slm-smollm2-135m-lora"
SHIPPED: Path = Path(__file__).resolve().parent / SHIPPED_NAME
