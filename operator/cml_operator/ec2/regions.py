"""Which regions exist, from botocore's bundled partition data (no network call).

A region that matches the schema's pattern but does not exist (``us-east-7``) would
otherwise fail every call with a connection error, retried as IntegrationError for
ever; checked here it is a spec error naming ``spec.region``. A region newer than
the installed botocore is refused too: upgrading the operator (and botocore) fixes it.
"""

from __future__ import annotations

from functools import lru_cache

from .botodata import botocore_session


@lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    session = botocore_session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ec2", partition_name=partition))
    return frozenset(regions)


def is_known_region(region: str) -> bool:
    return region in known_regions()
