"""Prometheus metrics (DESIGN §7) on a registry the application owns.

* :mod:`~printfleet.metrics.observer`: :class:`Metrics`, the Observer the daemon reports
  into (counters and histograms fed as things happen);
* :mod:`~printfleet.metrics.fleet`: the scrape-time collectors, :class:`FleetCollector`
  (gauges read from the current FleetView) and :class:`PrintCounters` (``prints_total``);
* :mod:`~printfleet.metrics.exposition`: the ``/metrics`` text writer the health server
  serves, which lets collectors that can write their own text do so.
"""
