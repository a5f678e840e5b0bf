"""Style presets (`[styles.NAME]` in the configuration): a template around the user's prompt, a negative prompt,
steps and guidance. Applied before admission, so moderation judges the prompt that will be drawn."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from config.settings import StylePreset
from engine.requests import GenerationRequest

MAX_SUGGESTIONS = 25
"""Discord answers an autocomplete with at most 25 choices."""


class StyleBook:
    def __init__(self, presets: Mapping[str, StylePreset]) -> None:
        self._presets = dict(presets)

    @property
    def names(self) -> list[str]:
        return sorted(self._presets)

    def find(self, name: str) -> str | None:
        """The preset's name as configured for what a user typed (case and spaces forgiven), or None."""
        wanted = name.strip().lower().replace(" ", "-")
        return wanted if wanted in self._presets else None

    def suggestions(self, typed: str) -> list[tuple[str, str]]:
        """(name, label) of the presets that start with, then contain, what was typed: for autocomplete."""
        typed = typed.strip().lower()
        starts = [name for name in self.names if name.startswith(typed)]
        contains = [name for name in self.names if typed in name and name not in starts]
        return [(name, self.label(name)) for name in (starts + contains)[:MAX_SUGGESTIONS]]

    def label(self, name: str) -> str:
        description = self._presets[name].description
        return f"{name} — {description}" if description else name

    def apply(self, name: str, request: GenerationRequest) -> GenerationRequest:
        """The request drawn in style `name` (a name `find` returned)."""
        preset = self._presets[name]
        # str.replace, not format: the user's prompt may hold braces of its own.
        prompt = preset.prompt.replace("{prompt}", request.prompt.strip())
        negative = ", ".join(part for part in (request.negative_prompt.strip(), preset.negative.strip()) if part)
        return replace(
            request,
            prompt=prompt,
            negative_prompt=negative,
            steps=preset.steps or request.steps,
            guidance_scale=preset.guidance or request.guidance_scale,
            style=name,
        )
