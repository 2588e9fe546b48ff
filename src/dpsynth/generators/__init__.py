"""Generator backends behind one protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dpsynth.config import GeneratorConfig
    from dpsynth.generators.base import Generator

__all__ = ["build_generator", "check_generator"]


def check_generator(cfg: GeneratorConfig) -> None:
    """What ``build_generator`` would refuse that needs no model: a model file that is not there (an embedded
    model's package, assembled once), an openai entry without its URL or key or whose server does not answer
    (``probe_server``), a transformers model path that is not there (a hub id is left to the load) or a CUDA
    device without CUDA."""
    if cfg.backend == "llamacpp":
        from dpsynth.generators.models import resolve_model

        resolve_model(cfg.model, cfg.name)
    elif cfg.backend == "openai":
        from dpsynth.generators.openai_http import check_settings, probe_server

        probe_server(cfg, check_settings(cfg))
    elif cfg.backend == "transformers":
        from dpsynth.errors import GeneratorError
        from dpsynth.lm.device import pick_device
        from dpsynth.lm.loading import model_source

        model_source(cfg.model, f"generators[{cfg.name}].model")  # a missing path, an embedded model's package
        # a CUDA device on a machine without CUDA, as the load would refuse it
        pick_device(cfg.device, field=f"generators[{cfg.name}].device", mps=True, error=GeneratorError)


def build_generator(cfg: GeneratorConfig) -> Generator:
    """Build the backend named by ``cfg.backend`` (imports it only now)."""
    if cfg.backend == "llamacpp":
        from dpsynth.generators.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(cfg)
    if cfg.backend == "openai":
        from dpsynth.generators.openai_http import OpenAIHttpGenerator

        return OpenAIHttpGenerator(cfg)
    if cfg.backend == "transformers":
        from dpsynth.generators.transformers_backend import TransformersGenerator

        return TransformersGenerator(cfg)
    from dpsynth.errors import GeneratorError

    raise GeneratorError(
        f"generators[{cfg.name}].backend: unknown backend {cfg.backend!r}; use llamacpp, openai or transformers"
    )
