"""Features: the family schema, cross-species harmonisation and NWB extraction."""

from ephys2tx.schemas import (
    HUMAN_IPFX_SCHEMA,
    MOUSE_VISP_SCHEMA,
    FamilySchema,
    validate_families,
)

__all__ = ["FamilySchema", "HUMAN_IPFX_SCHEMA", "MOUSE_VISP_SCHEMA", "validate_families"]
