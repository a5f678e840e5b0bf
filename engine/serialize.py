"""Requests and results to and from JSON, for the job store, the review queue and button payloads."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from engine.requests import GeneratedImage, GenerationRequest, ImagePrompt, Requester, Variation


def request_to_dict(request: GenerationRequest) -> dict[str, Any]:
    data = asdict(request)
    data["size"] = list(request.size) if request.size else None
    return data


def request_from_dict(data: dict[str, Any]) -> GenerationRequest:
    data = dict(data)
    data["requester"] = Requester(**data["requester"])
    if data.get("variation"):
        data["variation"] = Variation(**data["variation"])
    if data.get("image_prompt"):
        data["image_prompt"] = ImagePrompt(**data["image_prompt"])
    if data.get("size"):
        data["size"] = tuple(data["size"])
    return GenerationRequest(**data)


def request_to_json(request: GenerationRequest) -> str:
    return json.dumps(request_to_dict(request), ensure_ascii=False, sort_keys=True)


def request_from_json(text: str) -> GenerationRequest:
    return request_from_dict(json.loads(text))


def image_to_dict(image: GeneratedImage) -> dict[str, Any]:
    data = asdict(image)
    data["screening_reasons"] = list(image.screening_reasons)
    return data


def image_from_dict(data: dict[str, Any]) -> GeneratedImage:
    data = dict(data)
    data["screening_reasons"] = tuple(data.get("screening_reasons") or ())
    return GeneratedImage(**data)
