"""ma-pipeline: a real-time marketing-automation event pipeline.

An event travels through the package top to bottom:

- ``collect/``   the HTTP collector (beacons, pixels, signed email links, contacts)
- ``stitch/``    identity stitching: which contact an anonymous cookie belongs to
- ``score/``     lead scoring and lifecycle stages
- ``trigger/``   trigger rules, delays, caps; the public ``ma.triggers`` topic
- ``sink/``      ClickHouse tables for analysts, segments

Shared: ``models/`` (messages), ``rules/`` (the ``MA_CONFIG`` file), ``settings`` (``MA_*``
environment), ``topics`` (topic registry), ``identity`` (contact ids and email hygiene),
``clock`` and ``codec``.
"""

from pipeline.identity import CONTACT_NAMESPACE, contact_id_for

__all__ = ["CONTACT_NAMESPACE", "__version__", "contact_id_for"]
__version__ = "0.1.0"
