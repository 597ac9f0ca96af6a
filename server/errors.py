"""Errors carry their HTTP status; one handler renders every error as {"error": "..."}.

The error classes are plain exceptions (model.py raises them without knowing
about HTTP frameworks); `register` wires the one JSON handler into a Flask app.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from flask import Flask, Response
    from werkzeug.exceptions import HTTPException

log = logging.getLogger("batcomputer.server")


class ServerError(Exception):
    """Base: a message for the client and the status code that goes with it."""

    status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServerError):
    """The body is not valid JSON, or not an object or a list of objects."""

    status = 400


class UnsupportedMediaType(ServerError):
    status = 415


class PayloadTooLarge(ServerError):
    """Too many rows in a batch (an oversized body is werkzeug's 413)."""

    status = 413


class InvalidInput(ServerError):
    """Well-formed JSON whose values the model cannot take (422)."""

    status = 422


class NotFound(ServerError):
    """No such model or version (Open Inference Protocol routes)."""

    status = 404


class NotReady(ServerError):
    status = 503


def json_error(message: str, status: int) -> Response:
    from flask import Response

    return Response(json.dumps({"error": message}) + "\n", status=status,
                    mimetype="application/json")


def register(app: Flask) -> None:
    """Install the JSON handler for our errors, werkzeug's HTTP errors and anything else."""
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(ServerError)
    def _ours(exc: ServerError) -> Response:
        return json_error(exc.message, exc.status)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            message = (f"request body too large: at most {app.config['MAX_CONTENT_LENGTH']} "
                       "bytes; send fewer rows per request")
        else:
            message = _describe(exc)
        response = json_error(message, status)
        if status == 405:  # keep the Allow header
            response.headers["Allow"] = exc.get_response().headers.get("Allow", "")
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("Unhandled error")
        return json_error("internal server error", 500)


def _describe(exc: HTTPException) -> str:
    if exc.code == 404:
        return "not found; see /api/docs for the API"
    if exc.code == 405:
        return "method not allowed"
    return (exc.description or exc.name).strip()
