"""One source of truth for every table; see `schemas.tables`."""
from schemas.core import Field, Table, schema_mismatches  # noqa: F401
from schemas.tables import (  # noqa: F401
    ALL, ALL_SURFACES, CAMPAIGN_DELIVERY, CAPACITY, DAILY_AGGREGATES, DEAD_LETTERS, DELIVERY_RECONCILIATION,
    ENGAGEMENT, ENROLLMENTS, ENROLLMENT_STATUSES, INPUTS, OUTPUTS, PROMOTION_SCORES,
    PROMOTION_SURFACES, SNAPSHOTS, SURFACE_TOTALS,
)
