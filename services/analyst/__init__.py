"""Analyst service: scene descriptions from Gemini (or an honest offline summary).

Modules: ``config`` (the ``analyst`` config section), ``processor`` (the worker
runtime plug-in: decides when to analyse), ``triggers`` (events stream reader),
``jobs`` (latest-per-camera pending analyses), ``analyzer`` (limits, retries,
fallback, publishing), ``limits`` (token buckets, circuit breaker, daily budget),
``providers`` (registry: ``gemini``, ``offline``), ``prompt`` and ``scene``.
"""
