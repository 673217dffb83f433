"""The MQTT sink, in three parts:

* :mod:`~printfleet.sinks.mqtt.topics`: the topic contract (topic names, the payload of a
  delivery, the per-field topics of a printer); pure;
* :mod:`~printfleet.sinks.mqtt.retained`: the retained-state mirror, which remembers hashes of
  what the broker acknowledged so only changes are published;
* :mod:`~printfleet.sinks.mqtt.sink`: :class:`MqttSink`, the connection supervisor (reconnect
  loop, availability) and event delivery.

Home Assistant discovery payloads stay in :mod:`printfleet.sinks.homeassistant`: they are a
contract of their own (Home Assistant's), pure, and tested on their own.
"""
