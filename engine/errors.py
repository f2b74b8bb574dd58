"""One small exception family. Every message is written for the user: what went wrong, how to fix it."""

from __future__ import annotations


class EngineError(Exception):
    """Base class. `kind` becomes the API's error `type`; `status` its HTTP status."""

    kind = "engine_error"
    status = 500

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str]:
        out = {"type": self.kind, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


class ConfigError(EngineError):
    kind = "config_error"
    status = 400


class InvalidInput(EngineError):
    """Bad input from a user or client: a 4xx."""

    kind = "invalid_request_error"
    status = 400


class NotFound(EngineError):
    kind = "not_found"
    status = 404


class TooLarge(EngineError):
    kind = "too_large"
    status = 413


class ModelUnavailable(EngineError):
    """No model loaded, the model failed to load, or the remote backend is down."""

    kind = "model_unavailable"
    status = 503


class BackendError(EngineError):
    """The backend failed while generating."""

    kind = "backend_error"
    status = 502


class StorageError(EngineError):
    """A write failed (disk full, read-only data dir). Nothing in memory is lost."""

    kind = "storage_error"
    status = 507


class Conflict(EngineError):
    """The request would replace something that exists (a model file): a 409."""

    kind = "conflict"
    status = 409


class HubAccessDenied(EngineError):
    """A gated or private Hugging Face repo, and no token or a token without access."""

    kind = "hub_access_denied"
    status = 403


class HubUnavailable(EngineError):
    """Hugging Face (or the HF_ENDPOINT mirror) could not be reached or answered with an error."""

    kind = "hub_unavailable"
    status = 502
