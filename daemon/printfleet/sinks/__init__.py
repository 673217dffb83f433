"""Sinks: where deliveries go (MQTT, webhook receivers). They never import sources.

The outbox depends only on the :class:`~printfleet.sinks.base.Sink` protocol; the application
chooses the concrete classes.
"""

from printfleet.sinks.base import Sink

__all__ = ["Sink"]
