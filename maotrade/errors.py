"""Errors named by what the caller must do.

- ``TemporaryError``: retrying later may succeed (a timeout, a dropped connection).
- ``OperationalError``: stop and tell a person (bad credentials, bad config).
- ``InvalidOrder``: the order itself is wrong; reject it and never retry it.

Where a built-in exception already says what went wrong, the class also inherits it
(``ValueError``, ``ConnectionError``) so callers can catch either.
"""


class MAOTradeError(Exception):
    """Base class of every error MAOTrade raises on purpose."""


class TemporaryError(MAOTradeError):
    """A failure that may pass by itself; retrying later is safe."""


class BrokerUnavailable(TemporaryError, ConnectionError):
    """The broker cannot be reached now; reconnecting with backoff is the cure."""


class RequestNotSent(TemporaryError):
    """A broker request failed before any byte of it left this process.

    Reporting it refused is safe (the broker cannot have acted on it), and so is sending
    it again later as a new request; the cause is chained (``raise ... from``).
    """


class OperationalError(MAOTradeError):
    """A failure a person must fix (credentials, configuration); retrying will not help."""


class ConfigError(OperationalError, ValueError):
    """A configuration document or setting is missing, mistyped or inconsistent."""


class ConfigServiceError(OperationalError, ConnectionError):
    """The config service did not answer, or answered with an error."""


class BrokerClassError(OperationalError, ImportError):
    """A configured ``brokerClass`` cannot be imported or is not an Account Manager."""


class AuthenticationError(OperationalError):
    """A broker or service refused the credentials."""


class InvalidOrder(MAOTradeError, ValueError):
    """An order is illegal as written; reject it and never retry it unchanged."""


class IllegalTransition(InvalidOrder):
    """An order was asked to move to a state its current state cannot reach."""


class OrderRefused(MAOTradeError):
    """The engine will not route an order now (risk limit, account not ready).

    ``code`` is a stable machine-readable reason such as ``account_not_ready``.
    """

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class ProtocolError(MAOTradeError, ValueError):
    """A message on the bus or from a broker is malformed; drop it, count it, go on."""
