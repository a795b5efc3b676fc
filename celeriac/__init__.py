"""Code shared by the broker, the worker and the client.

``celeriac.v1`` is generated from proto/celeriac/v1 by ``make proto`` (do not edit it); the other
modules here are hand-written: broker addresses (:mod:`celeriac.address`), the configuration
checks (:mod:`celeriac.settings`) and the command lines' common flags (:mod:`celeriac.cli`).
"""
