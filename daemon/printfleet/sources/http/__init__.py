"""The HTTP layer the vendor sources share (nothing here knows Formlabs or Carbon).

- :mod:`~printfleet.sources.http.budget`: ``RequestBudget`` and its sliding ``WindowLimit``
  windows, so we stay under the vendor's caps instead of learning them from 429s;
- :mod:`~printfleet.sources.http.client`: ``VendorHttp`` (send → authenticate → classify, with
  retries), its ``RetryPolicy``, the ``Authenticator`` protocol and ``HttpOptions``;
- :mod:`~printfleet.sources.http.base`: ``HttpSource``, the base class of the vendor sources,
  and the pagination helpers (``PageGuard``, ``follow_link``, ``dedupe_skipped``).

Import from the submodules; this package re-exports nothing.
"""
