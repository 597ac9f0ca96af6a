"""The base of errors that are the user's to fix: the CLI prints them in one line."""


class UserError(Exception):
    """Bad input, bad data or an environment that cannot work, with what to do about it."""
