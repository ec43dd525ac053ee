"""Helpers the emulator's modules share: the control API's 400 error, number checks, AWS time
formats, AWS errors raised by the emulator's own code, and WSGI request body buffering."""

import datetime
import functools
import io


class BadRequest(Exception):
    """A control API request that cannot be applied (answered 400)."""


def number(value, key):
    """`value` when it is a number >= 0 (not a bool); BadRequest naming `key` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise BadRequest(f"{key} must be a number >= 0")
    return value


def rate(value, key):
    """`value` when it is a number between 0 and 1."""
    if number(value, key) > 1:
        raise BadRequest(f"{key} must be between 0 and 1")
    return value


def utc(ts):
    """A Unix time as an aware UTC datetime (botocore serialises it)."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)


def iso(ts):
    """A Unix time as AWS's ISO 8601 text with milliseconds: 2024-01-02T03:04:05.678Z."""
    return utc(ts).strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc(ts).microsecond // 1000:03d}Z"


@functools.lru_cache(maxsize=None)
def _error_class():
    from moto.core.exceptions import ServiceException

    class EmulatorError(ServiceException):
        """An AWS error answered by the emulator's own code. (It must live outside the
        moto package: moto looks up a moto-module exception's service by its module.)"""

    return EmulatorError


def service_error(code, message):
    """An exception moto answers as the AWS error `code` with `message`."""
    return _error_class()(code, message)


def buffer_body(environ):
    """Read the whole body and put it back so moto can read it again."""
    length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    if length:
        body = stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
        environ.pop("HTTP_TRANSFER_ENCODING", None)
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body
