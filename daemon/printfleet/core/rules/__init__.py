"""The rule engine: which events become notifications, when, and to whom.

Pure: no clock, no I/O, no logging. The caller passes ``now`` to every call and persists
:meth:`RuleEngine.state <printfleet.core.rules.engine.RuleEngine.state>` (a JSON-able dict)
after each call, so hold-down timers, repeats, throttle windows and grouped batches survive a
restart.

Modules, in the order a notification passes through them:
    model     what a loaded rule pack is: :class:`Rule`, :class:`MqttAction`, :class:`RuleSet`,
              the event types and which event resolves which (``RESOLUTIONS``)
    windows   :class:`Silence` and its weekly schedules and time zones
    names     what a ``when`` expression or template sees of an event, and the load-time
              check of field paths against it
    wording   the default title and text of a notification
    records   the engine's working records: one event occurrence, one condition, one batch
    engine    :class:`RuleEngine` (throttled -> silenced -> deliveries), :class:`Decision`,
              :class:`RuleCounters`
    state     the engine's state as JSON-able data, and restoring it after a restart

Nothing is re-exported here: import from the module that owns a name.

Vocabulary
    *event*        a CloudEvent dict as produced by :func:`printfleet.core.events.to_cloudevent`.
    *names*        the flat view of an event that ``when`` expressions and templates see
                   (:func:`~printfleet.core.rules.names.event_names`): ``type``, ``source``
                   (the account name), ``vendor``, ``subject``, ``time``, ``severity``,
                   ``printer``, ``print``, ``changes``, ``data`` and the event's detail keys
                   (``alert``, ``milestone``...).
    *condition*    a rule that matched for one subject and is waiting (hold-down, ``for``) or
                   firing (kept for ``resolve``/``repeat``) until the resolving event arrives.
    *notification* one decision to tell the rule's receivers; it becomes one
                   :class:`~printfleet.core.delivery.Delivery` per receiver (and one for the
                   rule's own MQTT topic), or joins a group batch (``group_by``).
"""
