"""The OpenAPI document of the proxy's own routes, served at `GET /openapi.json`.

The image schemas follow OpenAI's (`openai/openai-openapi`: CreateImageRequest,
CreateImageEditRequest, CreateImageVariationRequest, ImagesResponse, Error),
widened where the proxy accepts more (any model id, any `WxH` size, since
model families decide) and with every error status the proxy answers, so a
schema-driven fuzzer (tests/test_hardening_fuzz.py) can hold the server to
"no 5xx for bad input, every error an envelope".

    doc = openapi_document()
    doc["paths"]["/v1/images/generations"]["post"]["operationId"]   # 'createImage'
"""

from __future__ import annotations

import copy
from typing import Any

Schema = dict[str, Any]

_SIZES = ["auto", "256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "1792x1024", "1024x1792"]
_STREAM_EVENTS = [
    "image_generation.partial_image",
    "image_generation.completed",
    "image_edit.partial_image",
    "image_edit.completed",
    "error",
]
_QUALITIES = ["standard", "hd", "low", "medium", "high", "auto"]


def _nullable(schema: Schema, **extra: Any) -> Schema:
    return {"anyOf": [schema, {"type": "null"}], **extra}


def _enum(*values: str, **extra: Any) -> Schema:
    return _nullable({"type": "string", "enum": list(values)}, **extra)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


_BINARY: Schema = {"type": "string", "format": "binary"}
_MODEL = _nullable(
    {"type": "string"},
    description="A model id or a configured alias; the proxy's default if absent.",
    example="gpt-image-1.5",
)
_SIZE = _nullable(
    {"anyOf": [{"type": "string", "enum": _SIZES}, {"type": "string", "pattern": "^[0-9]{1,5}x[0-9]{1,5}$"}]},
    description="WIDTHxHEIGHT or auto; which sizes are allowed depends on the model family.",
)
_N = _nullable({"type": "integer", "minimum": 1, "maximum": 10}, default=1)
_RESPONSE_FORMAT = _enum(
    "url",
    "b64_json",
    default="url",
    description="GPT-image and Gemini models return base64; the proxy hosts URLs for them.",
)
_COMMON_GPT: dict[str, Schema] = {
    "background": _enum("transparent", "opaque", "auto", default="auto"),
    "output_format": _enum("png", "jpeg", "webp", default="png"),
    "output_compression": _nullable({"type": "integer", "minimum": 0, "maximum": 100}, default=100),
    "stream": _nullable({"type": "boolean"}, default=False),
    "partial_images": _nullable({"type": "integer", "minimum": 0, "maximum": 3}, default=0),
    "quality": _enum(*_QUALITIES, default="auto"),
}

_SCHEMAS: dict[str, Schema] = {
    "CreateImageRequest": {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {
                "type": "string",
                "description": "What to draw. Max 32000 chars (GPT), 4000 (dall-e-3), 1000 (dall-e-2).",
                "example": "a watercolor kestrel",
            },
            "model": _MODEL,
            "n": _N,
            "size": _SIZE,
            "response_format": _RESPONSE_FORMAT,
            "style": _enum("vivid", "natural", default="vivid"),
            "moderation": _enum("low", "auto", default="auto"),
            "user": {"type": "string"},
            **_COMMON_GPT,
        },
    },
    "CreateImageEditRequest": {
        "type": "object",
        "required": ["image", "prompt"],
        "properties": {
            "image": {
                "anyOf": [_BINARY, {"type": "array", "items": _BINARY, "minItems": 1, "maxItems": 16}],
                "description": "The image(s) to edit (PNG, JPEG or WEBP), as `image` or repeated `image[]`.",
            },
            "prompt": {"type": "string", "example": "add a full moon"},
            "mask": {
                **_BINARY,
                "description": "A PNG with alpha, the size of the first image; alpha 0 marks the area to edit.",
            },
            "model": _MODEL,
            "n": _N,
            "size": _SIZE,
            "response_format": _RESPONSE_FORMAT,
            "input_fidelity": _enum("high", "low"),
            "user": {"type": "string"},
            **_COMMON_GPT,
        },
    },
    "CreateImageVariationRequest": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {**_BINARY, "description": "One square PNG under 4 MB."},
            "model": _MODEL,
            "n": _N,
            "response_format": _RESPONSE_FORMAT,
            "size": _enum("256x256", "512x512", "1024x1024", default="1024x1024"),
            "user": {"type": "string"},
        },
    },
    "Image": {
        "type": "object",
        "properties": {
            "b64_json": {"type": "string"},
            "url": {"type": "string"},
            "revised_prompt": {"type": "string"},
        },
    },
    "ImagesUsage": {
        "type": "object",
        "required": ["total_tokens", "input_tokens", "output_tokens", "input_tokens_details"],
        "properties": {
            "total_tokens": {"type": "integer"},
            "input_tokens": {"type": "integer"},
            "output_tokens": {"type": "integer"},
            "input_tokens_details": {
                "type": "object",
                "required": ["text_tokens", "image_tokens"],
                "properties": {"text_tokens": {"type": "integer"}, "image_tokens": {"type": "integer"}},
            },
            "output_tokens_details": {
                "type": "object",
                "properties": {"text_tokens": {"type": "integer"}, "image_tokens": {"type": "integer"}},
            },
        },
    },
    "ImagesResponse": {
        "type": "object",
        "required": ["created"],
        "properties": {
            "created": {"type": "integer"},
            "data": {"type": "array", "items": _ref("Image")},
            "background": {"type": "string", "enum": ["transparent", "opaque"]},
            "output_format": {"type": "string", "enum": ["png", "webp", "jpeg"]},
            "size": {"type": "string"},
            "quality": {"type": "string", "enum": ["low", "medium", "high"]},
            "usage": _ref("ImagesUsage"),
        },
    },
    "ImageStreamEvent": {
        "type": "object",
        "description": "The JSON of one SSE event: ImageGenStreamEvent / ImageEditStreamEvent, or an error.",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": _STREAM_EVENTS},
            "b64_json": {"type": "string"},
            "created_at": {"type": "integer"},
            "size": {"type": "string"},
            "quality": {"type": "string"},
            "background": {"type": "string"},
            "output_format": {"type": "string"},
            "partial_image_index": {"type": "integer"},
            "usage": _ref("ImagesUsage"),
            "error": _ref("Error"),
        },
    },
    "ServerSentEvent": {
        "type": "object",
        "description": "One event of a stream: `event: <type>` and `data: <one-line JSON>`, the type in both.",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string", "enum": _STREAM_EVENTS},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": _ref("ImageStreamEvent"),
            },
        },
    },
    "Error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {
            "message": {"type": "string", "minLength": 1},
            "type": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]},
        },
    },
    "ErrorResponse": {"type": "object", "required": ["error"], "properties": {"error": _ref("Error")}},
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    },
    "ListModelsResponse": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _ref("Model")},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "provider": {"type": "string"},
            "default_model": {"type": "string"},
        },
    },
}

# Every error status the proxy itself answers on image routes, and when.
_ERRORS = {
    "400": "Bad input: malformed JSON or multipart, a wrong type, a value the model family does not allow, "
    "an image that is not an image.",
    "401": "No usable API key, or a wrong access token.",
    "404": "Unknown route, model or hosted file.",
    "405": "Wrong method for the route.",
    "408": "The request head or body arrived too slowly.",
    "413": "The body exceeds the proxy's limit (50 MB by default).",
    "415": "A Content-Type the route does not take.",
    "429": "The provider's rate limit, relayed.",
    "502": "The provider could not be reached or answered something unusable.",
    "503": "Too many requests in flight in the proxy, or the provider is unavailable.",
    "504": "The provider did not answer in time.",
}


def _error_responses(*statuses: str) -> dict[str, Schema]:
    envelope = {"application/json": {"schema": _ref("ErrorResponse")}}
    chosen = statuses or tuple(_ERRORS)
    out: dict[str, Schema] = {status: {"description": _ERRORS[status], "content": envelope} for status in chosen}
    out["default"] = {
        "description": "Any other error, relayed from the provider in the same envelope.",
        "content": envelope,
    }
    return out


_HEADERS: list[Schema] = [
    {
        "name": "X-ALLM-Api-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "The provider key for this request (beats the proxy's configured key).",
    },
    {
        "name": "X-ALLM-Session",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Replay and fake-script cursor: parallel test workers each use their own.",
    },
]


def _images_operation(op_id: str, summary: str, media: str, schema: str, *, streams: bool) -> Schema:
    ok: dict[str, Schema] = {"application/json": {"schema": _ref("ImagesResponse")}}
    if streams:
        # Before OpenAPI 3.2 (itemSchema), an event stream's `schema` describes each event.
        ok["text/event-stream"] = {"schema": _ref("ServerSentEvent")}
    return {
        "operationId": op_id,
        "summary": summary,
        "tags": ["Images"],
        "parameters": _HEADERS,
        "requestBody": {"required": True, "content": {media: {"schema": _ref(schema)}}},
        "responses": {"200": {"description": "OK", "content": ok}, **_error_responses()},
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this proxy (a fresh dict each call)."""
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "allm-proxy",
                "version": "0.1.0",
                "description": "The OpenAI Images API, served locally in front of OpenAI, Gemini or a fake. "
                "Every route is also served without the /v1 prefix.",
            },
            "servers": [{"url": "/"}],
            "security": [{"ApiKeyAuth": []}],
            "paths": {
                "/v1/images/generations": {
                    "post": _images_operation(
                        "createImage",
                        "Creates images from a prompt.",
                        "application/json",
                        "CreateImageRequest",
                        streams=True,
                    )
                },
                "/v1/images/edits": {
                    "post": _images_operation(
                        "createImageEdit",
                        "Edits or extends images from a prompt.",
                        "multipart/form-data",
                        "CreateImageEditRequest",
                        streams=True,
                    )
                },
                "/v1/images/variations": {
                    "post": _images_operation(
                        "createImageVariation",
                        "Creates variations of an image.",
                        "multipart/form-data",
                        "CreateImageVariationRequest",
                        streams=False,
                    )
                },
                "/v1/images/files/{file_id}": {
                    "get": {
                        "operationId": "getHostedImage",
                        "summary": "An image the proxy hosts for response_format=url (expires after file_ttl).",
                        "tags": ["Images"],
                        "security": [],
                        "parameters": [
                            {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}
                        ],
                        "responses": {
                            "200": {
                                "description": "The image bytes.",
                                "content": {m: {"schema": _BINARY} for m in ("image/png", "image/jpeg", "image/webp")},
                            },
                            **_error_responses("404"),
                        },
                    }
                },
                "/v1/models": {
                    "get": {
                        "operationId": "listModels",
                        "summary": "The default model and the configured aliases.",
                        "tags": ["Models"],
                        "responses": {
                            "200": {
                                "description": "OK",
                                "content": {"application/json": {"schema": _ref("ListModelsResponse")}},
                            },
                            **_error_responses("401"),
                        },
                    }
                },
                "/v1/models/{model}": {
                    "get": {
                        "operationId": "retrieveModel",
                        "summary": "One model or alias.",
                        "tags": ["Models"],
                        "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                        "responses": {
                            "200": {"description": "OK", "content": {"application/json": {"schema": _ref("Model")}}},
                            **_error_responses("401", "404"),
                        },
                    }
                },
                "/healthz": {
                    "get": {
                        "operationId": "health",
                        "summary": "Liveness, the default provider and model.",
                        "security": [],
                        "responses": {
                            "200": {"description": "OK", "content": {"application/json": {"schema": _ref("Health")}}}
                        },
                    }
                },
            },
            "components": {
                "schemas": _SCHEMAS,
                "securitySchemes": {
                    "ApiKeyAuth": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A provider key passed through, or the proxy's access token when it has one.",
                    }
                },
            },
        }
    )
