"""NIAS: the shared package (settings, job states, messages, errors, AMQP helpers, the client)."""

__version__ = "0.1.0"
