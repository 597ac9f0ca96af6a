"""Errors shared between the API module and reconcile."""


class Rejected(Exception):
    """The API server refused an object we built (e.g. a resource request above its limit):
    a problem in the spec that no schema could see. Reported in status, never retried blindly."""
